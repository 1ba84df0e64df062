"""Learning from unlabelled CT: coarse boxes, patch sampling, encoding, pseudo-label assignment."""
