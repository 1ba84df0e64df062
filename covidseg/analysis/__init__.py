"""Looking inside networks: layer activations and SVCCA (Raghu et al. 2017)."""
