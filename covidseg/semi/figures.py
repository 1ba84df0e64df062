"""Pseudo-labelling figures: the similarity histogram (thesis fig. 5.7), example patches with
their pseudo masks (fig. 5.8), where the unlabelled patches were sampled, and examples of
model-made (self-training) pseudo-labels.  Patches are 2D slices: "slice" is in the names."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def similarity_histogram(top1: np.ndarray, thresholds: dict, band: str, rule: str, feature: str,
                         accept_fraction: float = 0.0):
    """Each unlabelled patch's similarity to its most similar labelled patch, with the accepted
    band (``thresholds`` as :func:`covidseg.semi.assign.assign_pseudo_labels` chose them with
    ``band``, ``accept_fraction``, ``rule``) and the ``feature`` the similarities compare."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.hist(top1, bins=50, color="tab:blue", alpha=0.85)
    how = f"{band}" + (f", top {accept_fraction:.0%}" if band == "quantile" else "")
    if "sim_low" in thresholds:
        lo, hi = thresholds["sim_low"], thresholds["sim_high"]
        ax.axvspan(lo, hi, color="tab:green", alpha=0.15,
                   label=f"accepted band [{lo:.3f}, {hi:.3f}] ({how})")
    else:
        mn = thresholds["sim_min"]
        ax.axvline(mn, color="tab:green", ls="--", label=f"both >= {mn:.3f} ({how})")
    ax.set_xlabel("cosine similarity to the most similar labelled patch (2D slice patches)")
    ax.set_ylabel("unlabelled patches")
    ax.set_title(f"similarity of {len(top1)} unlabelled patches ({rule}, {feature})",
                 fontsize=10)
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


def patch_centres(uds, patches, n_cases: int = 3):
    """Where the unlabelled patches were sampled: for a few volumes, the middle tissue slice with
    the lung / tissue outline and the heat map of patch centres over all of its slices."""
    from covidseg.semi.patches import tissue_mask

    cases = list(dict.fromkeys(patches.case_ids))[:n_cases]
    size = patches.images.shape[-1]
    fig, axes = plt.subplots(1, max(1, len(cases)), figsize=(3.4 * max(1, len(cases)), 3.6),
                             squeeze=False)
    for ax, c in zip(axes[0], cases):
        image, _, lung = uds.load(c)
        image = np.asarray(image, np.float32)
        tissue = tissue_mask(image, lung)
        per_slice = tissue.sum(axis=(1, 2))
        z = int(np.argmax(per_slice))
        heat = np.zeros(image.shape[1:], np.float32)
        for cid, (_, y0, x0) in zip(patches.case_ids, patches.coords):
            if cid == c:
                cy, cx = y0 + size // 2, x0 + size // 2
                if 0 <= cy < heat.shape[0] and 0 <= cx < heat.shape[1]:
                    heat[cy, cx] += 1
        from scipy import ndimage as ndi

        heat = ndi.gaussian_filter(heat, 2.0)
        ax.imshow(image[z], cmap="gray")
        ax.contour(tissue[z], levels=[0.5], colors="lime", linewidths=0.7)
        ax.imshow(np.ma.masked_less(heat, heat.max() * 0.05 if heat.max() else 1), cmap="hot",
                  alpha=0.6)
        ax.set_title(f"{c}: slice {z}, centres of all slices", fontsize=8)
        ax.axis("off")
    fig.suptitle("unlabelled patch centres (heat) over tissue (green outline)", fontsize=9)
    fig.tight_layout()
    return fig


def model_examples(items: dict, n: int = 6):
    """Self-training pseudo-labels: unlabelled slices with the confident lesion label (red) and
    the image pixels left out as unconfident (blue; the zero padding around a slice is not
    marked), most lesion first."""
    from matplotlib.colors import ListedColormap

    red, blue = ListedColormap(["red"]), ListedColormap(["royalblue"])
    order = np.argsort(-(items["masks"] * (items["weights"] > 0)).sum(axis=(1, 2)))[:n]
    cols = max(1, len(order))
    fig, axes = plt.subplots(1, cols, figsize=(2.6 * cols, 3.0), squeeze=False)
    for ax, i in zip(axes[0], order):
        ax.imshow(items["images"][i], cmap="gray")
        confident = items["weights"][i] > 0
        lesion = confident & (items["masks"][i] > 0.5)
        unsure = ~confident & (items["images"][i] != 0)
        ax.imshow(np.ma.masked_where(~lesion, lesion), cmap=red, alpha=0.5, vmin=0, vmax=1)
        ax.imshow(np.ma.masked_where(~unsure, unsure), cmap=blue, alpha=0.45, vmin=0, vmax=1)
        ax.set_title(f"{items['case_ids'][i]} z{items['coords'][i][0]}", fontsize=7)
        ax.axis("off")
    fig.suptitle("model pseudo-labels on unlabelled slices: lesion (red), unconfident (blue)",
                 fontsize=9)
    fig.tight_layout()
    return fig
