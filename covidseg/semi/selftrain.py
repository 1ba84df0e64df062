"""``source=model``: pseudo-labels from the network's own predictions (self-training).

The fine-tuned (or teacher) network predicts every slice of every unlabelled volume, and each
pixel gets the hard label ``p >= 0.5``.  Confidence masking (FixMatch-style; Semi-Inf-Net's
progressive pseudo-labels) is asymmetric: every predicted-lesion pixel is kept, a background
pixel only when the network is sure of it (``1 - p >= confidence``); the uncertain band in
between gets weight 0.  A symmetric rule (``max(p, 1-p) >= confidence``) was measured first and
kept no lesion at all: a network trained with a Dice term is badly calibrated on the lesion side
(on the demo, the fine-tuned network's lesion probabilities never exceeded 0.54), so the
pseudo-labels became "all background" (oracle Dice 0).  Kept pixels weigh 1.  Slices with no
tissue are left out.  Whole slices, so every unlabelled slice can teach.
"""

from __future__ import annotations

import numpy as np

from covidseg.data.slices import pad_to
from covidseg.inference import predict_volume
from covidseg.semi.patches import tissue_mask


def confident_labels(prob: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """(hard target, per-pixel weight) of a probability map: lesion pixels and confident
    background pixels weigh 1, the uncertain background band 0."""
    lesion = prob >= 0.5
    keep = lesion | (1.0 - prob >= confidence)
    return lesion.astype(np.float32), keep.astype(np.float32)


def model_pseudo_labels(model, uds, case_ids, device, confidence: float = 0.9,
                        multiple: int = 32, truth_of=None) -> dict:
    """Whole-slice pseudo-labels of ``case_ids``: arrays images, masks, weights (n, H, W) padded
    to one size (weight 0 on padding), case_ids, coords (z, 0, 0).  ``truth_of`` (case id → its
    true mask): the oracle — the true masks in place of the network's probabilities (every
    pixel kept), the upper bound of what pseudo-labels could give."""
    items = []
    for c in case_ids:
        image, _, lung = uds.load(c)
        image = np.asarray(image, np.float32)
        prob = (np.asarray(truth_of(c), np.float32) if truth_of is not None
                else predict_volume(model, image, device))
        on_tissue = tissue_mask(image, lung).any(axis=(1, 2))
        target, weight = confident_labels(prob, confidence)
        for z in np.nonzero(on_tissue & (weight > 0).any(axis=(1, 2)))[0]:
            items.append((c, int(z), image[z], target[z], weight[z]))
    if not items:
        return {"images": np.zeros((0, multiple, multiple), np.float32), "masks": None,
                "weights": None, "case_ids": [], "coords": np.zeros((0, 3), int)}
    H = -(-max(i[2].shape[0] for i in items) // multiple) * multiple
    W = -(-max(i[2].shape[1] for i in items) // multiple) * multiple
    stack = lambda k: np.stack([pad_to(i[k], (H, W)) for i in items])  # noqa: E731
    offsets = [((H - i[2].shape[0]) // 2, (W - i[2].shape[1]) // 2) for i in items]
    return {"images": stack(2), "masks": stack(3), "weights": stack(4),
            "case_ids": [i[0] for i in items],
            # top-left of the slice in the padded canvas, negated: the slice's corner in canvas
            # coordinates is (-y, -x) as for patches (patch corner on the slice)
            "coords": np.array([(i[1], -oy, -ox) for i, (oy, ox) in zip(items, offsets)])}
