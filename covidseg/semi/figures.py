"""Pseudo-labelling figures: the similarity histogram (thesis fig. 5.7) and example patches with
their pseudo masks (fig. 5.8).  Patches are 2D slices: "slice" is in the names."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def similarity_histogram(top1: np.ndarray, cfg):
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.hist(top1, bins=50, color="tab:blue", alpha=0.85)
    if cfg.rule == "top1-band":
        ax.axvspan(cfg.sim_low, cfg.sim_high, color="tab:green", alpha=0.15,
                   label=f"accepted band [{cfg.sim_low}, {cfg.sim_high}]")
    else:
        ax.axvline(cfg.sim_min, color="tab:green", ls="--", label=f"both > {cfg.sim_min}")
    ax.set_xlabel("cosine similarity to the most similar labelled patch (2D slice patches)")
    ax.set_ylabel("unlabelled patches")
    ax.set_title(f"similarity of {len(top1)} unlabelled patches ({cfg.rule})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def example_patches(unlabelled: np.ndarray, assignment, labelled, n: int = 8):
    """Accepted unlabelled patches (top) with their soft pseudo masks, and the labelled patch
    each was matched to (bottom)."""
    acc = assignment.accepted[:n]
    cols = max(1, len(acc))
    fig, axes = plt.subplots(2, cols, figsize=(2.2 * cols, 4.8), squeeze=False)
    for j in range(cols):
        for ax in axes[:, j]:
            ax.axis("off")
        if j >= len(acc):
            axes[0, j].set_title("no patch accepted", fontsize=8)
            continue
        i = acc[j]
        axes[0, j].imshow(unlabelled[i], cmap="gray")
        axes[0, j].imshow(np.ma.masked_less(assignment.masks[j], 0.05), cmap="autumn", alpha=0.45,
                          vmin=0, vmax=1)
        axes[0, j].set_title(f"sim {assignment.top_sim[i, 0]:.3f}", fontsize=8)
        k = assignment.top_idx[i, 0]
        axes[1, j].imshow(labelled.images[k], cmap="gray")
        if labelled.masks[k].any():
            axes[1, j].contour(labelled.masks[k], levels=[0.5], colors="lime", linewidths=0.8)
        axes[1, j].set_title(labelled.case_ids[k], fontsize=7)
    fig.suptitle("slice patches: unlabelled + pseudo mask (top), matched labelled patch (bottom)",
                 fontsize=9)
    fig.tight_layout()
    return fig
