"""Calibration of lesion probabilities, accumulated over cases (validation logs ``val_ece``,
``val_lesion_probability``, ``val_background_confident``; the slice benchmark merges the folds'
out-of-fold pixels): expected calibration error, a reliability table, and how right and how
complete a confident lesion target would be."""

from __future__ import annotations

import numpy as np


class Calibration:
    """How well lesion probabilities match lesion frequencies, accumulated over cases:
    the pixels of a region (CT: inside the image, where preprocessing left values; a 2D slice:
    every pixel) binned by predicted probability into ``bins`` equal bins.

    * ``ece`` — expected calibration error: Σ_b (n_b / N) · |mean p_b − lesion fraction_b|;
    * ``lesion_probability`` — the mean probability on reference lesion pixels (1 for a network
      that is sure where it is right; the round-two network's ~0.5 is what broke every
      confidence threshold downstream);
    * ``background_confident`` — the share of non-lesion pixels with p ≤ 0.03 (what
      ``pseudolabel``'s default confidence 0.97 keeps as background);
    * :meth:`table` — per bin: count, mean probability, lesion fraction (a reliability diagram).
    """

    def __init__(self, bins: int = 10):
        self.bins = bins
        self.count = np.zeros(bins)
        self.prob_sum = np.zeros(bins)
        self.lesion = np.zeros(bins)
        self.lesion_prob_sum, self.lesion_n = 0.0, 0
        self.background_confident, self.background_n = 0, 0

    def add(self, prob: np.ndarray, ref: np.ndarray, region: np.ndarray | None = None) -> None:
        p = np.asarray(prob, dtype=np.float64)
        r = np.asarray(ref, dtype=bool)
        if region is not None:
            p, r = p[region], r[region]
        p, r = p.ravel(), r.ravel()
        idx = np.minimum((p * self.bins).astype(int), self.bins - 1)
        self.count += np.bincount(idx, minlength=self.bins)
        self.prob_sum += np.bincount(idx, weights=p, minlength=self.bins)
        self.lesion += np.bincount(idx, weights=r.astype(np.float64), minlength=self.bins)
        self.lesion_prob_sum += float(p[r].sum())
        self.lesion_n += int(r.sum())
        self.background_confident += int((p[~r] <= 0.03).sum())
        self.background_n += int((~r).sum())

    def merge(self, other: Calibration) -> None:
        """Add another accumulator's pixels (e.g. the folds of a cross-validation)."""
        if other.bins != self.bins:
            raise ValueError(f"cannot merge calibrations of {other.bins} and {self.bins} bins")
        self.count = self.count + other.count
        self.prob_sum = self.prob_sum + other.prob_sum
        self.lesion = self.lesion + other.lesion
        self.lesion_prob_sum += other.lesion_prob_sum
        self.lesion_n += other.lesion_n
        self.background_confident += other.background_confident
        self.background_n += other.background_n

    def to_dict(self) -> dict:
        """The accumulated counts (JSON-ready): :meth:`from_dict` gives the accumulator back, so
        folds run apart (on several machines) merge into one."""
        return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in vars(self).items()}

    @classmethod
    def from_dict(cls, state: dict) -> Calibration:
        cal = cls(int(state["bins"]))
        for k, v in state.items():
            setattr(cal, k, np.asarray(v, dtype=np.float64) if isinstance(v, list) else v)
        return cal

    def table(self) -> list[dict]:
        rows = []
        for b in range(self.bins):
            n = self.count[b]
            rows.append({"bin_low": b / self.bins, "bin_high": (b + 1) / self.bins,
                         "pixels": int(n),
                         "mean_probability": float(self.prob_sum[b] / n) if n else float("nan"),
                         "lesion_fraction": float(self.lesion[b] / n) if n else float("nan")})
        return rows

    def confident_lesion(self, threshold: float) -> dict:
        """How right and how complete a lesion target ``p ≥ threshold`` is (``threshold`` on a bin
        edge): ``precision`` — the lesion fraction of those pixels; ``recall`` — the share of
        the reference lesion they cover; ``share`` — of all pixels.  What a confidence-masked
        semi-supervised target (UniMatch, self-training) has to select from."""
        first = round(threshold * self.bins)
        if not np.isclose(first, threshold * self.bins) or not 0 <= first < self.bins:
            raise ValueError(f"threshold {threshold} is not a bin edge of {self.bins} bins")
        n, lesion = self.count[first:].sum(), self.lesion[first:].sum()
        return {"precision": float(lesion / n) if n else float("nan"),
                "recall": float(lesion / self.lesion.sum()) if self.lesion.sum() else float("nan"),
                "share": float(n / self.count.sum()) if self.count.sum() else float("nan")}

    def summary(self) -> dict:
        total = self.count.sum()
        gaps = np.abs(self.prob_sum - self.lesion)  # n_b · |mean p_b − fraction_b|
        return {"ece": float(gaps.sum() / total) if total else float("nan"),
                "lesion_probability": (self.lesion_prob_sum / self.lesion_n if self.lesion_n
                                       else float("nan")),
                "background_confident": (self.background_confident / self.background_n
                                         if self.background_n else float("nan"))}
