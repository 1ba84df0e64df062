"""Pseudo-label assignment by cosine similarity in the encoder's feature space (thesis 5.3.4).

The similarity search is one matrix product per chunk of unlabelled patches (normalised features,
``U @ Lᵀ``), keeping only the top two matches of each row — never a Python loop over patches and
never the full matrix in memory when it is large.

Rules (both selectable):

* ``top1-band`` (thesis ch. 5) — the label of the most similar labelled patch when its similarity
  lies in [``sim_low``, ``sim_high``] (0.87, 0.96): too similar is a near-duplicate that teaches
  nothing, too dissimilar is noise;
* ``top2-weighted`` (thesis ch. 1) — the similarity-weighted mix of the two most similar labels,
  when both similarities exceed ``sim_min`` (0.90).

The thresholds come from ``band``:

* ``absolute`` — the numbers above, as the thesis set them for its features;
* ``quantile`` (default) — relative to the observed similarities: the ``accept_fraction`` of the
  unlabelled patches that are most similar (by the top similarity for ``top1-band``, by the
  second one for ``top2-weighted``) are accepted.  An absolute band chosen for one feature space
  accepts nothing in another (on the demo, raw GAP similarities crowd in 0.94-0.99), so a
  quantile band never accepts nothing; the thresholds it used are returned.

Each accepted patch gets a soft mask and a weight: the top similarity (``top1-band``) or the mean of
the two (``top2-weighted``); the weight scales that patch's loss in the mean-teacher.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from covidseg.base.errors import ConfigError

RULES = ("top1-band", "top2-weighted")
BANDS = ("quantile", "absolute")


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=1, eps=1e-8)


def top_k_cosine(queries, keys, k: int = 2, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities, indices), each (n_queries, k), of the k most similar keys per query."""
    q, kk = _normalise(torch.as_tensor(queries)), _normalise(torch.as_tensor(keys))
    k = min(k, kk.shape[0])
    values, indices = [], []
    for start in range(0, q.shape[0], chunk):
        sim = q[start:start + chunk] @ kk.T
        v, i = sim.topk(k, dim=1)
        values.append(v)
        indices.append(i)
    return torch.cat(values), torch.cat(indices)


@dataclass
class Assignment:
    top_sim: np.ndarray       # (n_unlabelled, 2) best two similarities of every unlabelled patch
    top_idx: np.ndarray       # (n_unlabelled, 2) their labelled-patch indices
    accepted: np.ndarray      # (n_accepted,) indices of the accepted unlabelled patches
    masks: np.ndarray         # (n_accepted, H, W) float32 soft masks
    weights: np.ndarray       # (n_accepted,) float32 loss weights
    thresholds: dict          # the band actually applied, e.g. {"sim_low": .., "sim_high": ..}

    @property
    def acceptance_rate(self) -> float:
        return float(len(self.accepted) / max(1, len(self.top_sim)))


def accepted_by_band(sims: np.ndarray, rule: str, band: str, sim_low: float, sim_high: float,
                     sim_min: float, accept_fraction: float) -> tuple[np.ndarray, dict]:
    """Indices of the accepted rows of ``sims`` (n, 2: best and second-best similarity) and the
    thresholds applied."""
    if band == "quantile":
        score = sims[:, 0] if rule == "top1-band" else sims[:, 1]
        k = int(round(accept_fraction * len(score)))
        accepted = np.sort(np.argsort(-score, kind="stable")[:k])
        cut = float(score[accepted].min()) if k else float("inf")
        return accepted, ({"sim_low": cut, "sim_high": float(sims[:, 0].max())}
                          if rule == "top1-band" else {"sim_min": cut})
    if rule == "top1-band":
        ok = (sims[:, 0] >= sim_low) & (sims[:, 0] <= sim_high)
        return np.nonzero(ok)[0], {"sim_low": sim_low, "sim_high": sim_high}
    return np.nonzero((sims[:, 0] > sim_min) & (sims[:, 1] > sim_min))[0], {"sim_min": sim_min}


def assign_pseudo_labels(unlabelled_features, labelled_features, labelled_masks: np.ndarray,
                         rule: str = "top1-band", sim_low: float = 0.87, sim_high: float = 0.96,
                         sim_min: float = 0.90, chunk: int = 4096, band: str = "absolute",
                         accept_fraction: float = 0.2) -> Assignment:
    if rule not in RULES:
        raise ConfigError(f"rule={rule!r} is not one of {', '.join(RULES)}")
    if band not in BANDS:
        raise ConfigError(f"band={band!r} is not one of {', '.join(BANDS)}")
    if band == "quantile" and not 0.0 < accept_fraction <= 1.0:
        raise ConfigError(f"accept_fraction={accept_fraction} must lie in (0, 1]")
    if rule == "top1-band" and sim_low > sim_high:
        raise ConfigError(f"sim_low={sim_low} must not exceed sim_high={sim_high}")
    if len(labelled_masks) == 0:
        raise ConfigError("no labelled patches to assign labels from")
    sims, idx = top_k_cosine(unlabelled_features, labelled_features, 2, chunk)
    sims, idx = sims.numpy(), idx.numpy()
    if sims.shape[1] == 1:  # a single labelled patch: no second match
        sims = np.concatenate([sims, np.full_like(sims, -1.0)], axis=1)
        idx = np.concatenate([idx, idx], axis=1)
    labels = np.asarray(labelled_masks, dtype=np.float32)
    accepted, thresholds = accepted_by_band(sims, rule, band, sim_low, sim_high, sim_min,
                                            accept_fraction)
    if rule == "top1-band":
        masks = labels[idx[accepted, 0]]
        weights = sims[accepted, 0]
    else:
        s1, s2 = sims[accepted, 0, None, None], sims[accepted, 1, None, None]
        masks = (s1 * labels[idx[accepted, 0]] + s2 * labels[idx[accepted, 1]]) / (s1 + s2)
        weights = sims[accepted].mean(axis=1)
    return Assignment(sims.astype(np.float32), idx, accepted, masks.astype(np.float32),
                      weights.astype(np.float32), thresholds)
