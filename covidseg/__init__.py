"""covidseg: label-efficient COVID-19 lung-infection segmentation in chest CT, tracked in MLflow."""

__version__ = "0.1.0"
