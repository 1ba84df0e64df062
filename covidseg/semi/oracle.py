"""How right are the pseudo-labels?  Scored against the truth of the unlabelled cohort where it
exists (the demo phantoms know their lesions), never used for training.

Per item (a patch or a slice), only its *valid* pixels count (weight > 0 for accepted labels):

* ``dice`` — mean over items of the Dice of the target thresholded at 0.5 vs the truth, with the
  project's empty-case policy (both empty → 1, one empty → 0);
* ``dice_pooled`` — one Dice over all valid pixels of all items (not inflated by the many items
  that correctly contain nothing);
* ``precision`` / ``recall`` — pooled over all valid pixels (NaN when undefined);
* ``lesion_fraction`` — share of items whose truth has lesion on a valid pixel.
"""

from __future__ import annotations

import numpy as np


def oracle_scores(targets: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> dict:
    """Scores of soft ``targets`` (n, H, W) against binary ``truth`` on ``valid`` pixels."""
    n = len(targets)
    if n == 0:
        return {"n": 0, "dice": float("nan"), "dice_pooled": float("nan"),
                "precision": float("nan"), "recall": float("nan"),
                "lesion_fraction": float("nan")}
    valid = np.ones(targets.shape, bool) if valid is None else np.asarray(valid, bool)
    pred = (np.asarray(targets) >= 0.5) & valid
    true = np.asarray(truth).astype(bool) & valid
    tp = (pred & true).reshape(n, -1).sum(1).astype(float)
    ps, ts = pred.reshape(n, -1).sum(1).astype(float), true.reshape(n, -1).sum(1).astype(float)
    per_item = np.where(ps + ts == 0, 1.0, 2 * tp / np.maximum(ps + ts, 1))
    TP, P, T = tp.sum(), ps.sum(), ts.sum()
    return {"n": n, "dice": float(per_item.mean()),
            "dice_pooled": float(2 * TP / (P + T)) if P + T else 1.0,
            "precision": float(TP / P) if P else float("nan"),
            "recall": float(TP / T) if T else float("nan"),
            "lesion_fraction": float((ts > 0).mean())}


def oracle_metrics(accepted: dict, rejected: dict) -> dict:
    """``oracle_pseudo_*`` / ``oracle_rejected_*`` metrics (NaN values left out)."""
    out = {}
    for prefix, s in (("oracle_pseudo", accepted), ("oracle_rejected", rejected)):
        for k in ("dice", "dice_pooled", "precision", "recall"):
            out[f"{prefix}_{k}"] = s[k]
        out[f"oracle_{'accepted' if prefix == 'oracle_pseudo' else 'rejected'}_lesion_fraction"] = \
            s["lesion_fraction"]
        out[f"{prefix}_items"] = s["n"]
    return {k: float(v) for k, v in out.items() if v == v}
