"""Training and evaluation figures; the level (slice or volume) is in every name."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def overlay_slices(image: np.ndarray, ref: np.ndarray, pred: np.ndarray, case_id: str, row: dict,
                   n: int = 4):
    """Axial slices with the most reference lesion: reference contour green, prediction red."""
    area = ref.sum(axis=(1, 2)) + 0.5 * pred.sum(axis=(1, 2))
    zs = sorted(np.argsort(area)[::-1][:n].tolist())
    one = image.shape[0] == 1  # a 2D slice case: its Dice is a 2D Dice
    fig, axes = plt.subplots(1, len(zs), figsize=(max(3.2 * len(zs), 6.4), 3.8 if one else 3.5),
                             squeeze=False)
    vmin, vmax = np.percentile(image, [1, 99.5]) if image.any() else (0, 1)
    for ax, z in zip(axes[0], zs):
        ax.imshow(image[z], cmap="gray", vmin=vmin, vmax=vmax)
        if ref[z].any():
            ax.contour(ref[z], levels=[0.5], colors="lime", linewidths=1.0)
        if pred[z].any():
            ax.contour(pred[z], levels=[0.5], colors="red", linewidths=1.0)
        inter = (ref[z] & pred[z]).sum()
        denom = ref[z].sum() + pred[z].sum()
        d = 2 * inter / denom if denom else 1.0
        ax.set_title(f"as the network saw it: Dice {d:.2f}" if one else
                     f"slice z={z}  slice Dice {d:.2f}", fontsize=9)
        ax.axis("off")
    level = "2D Dice on the original image" if one else "volume Dice"
    fig.suptitle(f"{case_id}: reference (green) vs prediction (red)\n{level} "
                 f"{row.get('volume_dice', float('nan')):.3f}", fontsize=10)
    fig.tight_layout()
    return fig


def dice_per_volume(rows: list[dict], split: str, slices: bool = False):
    """Dice per case; ``slices``: the cases are 2D slices (2D Dice per image)."""
    rows = sorted(rows, key=lambda r: r["volume_dice"])
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(rows) + 2), 3.6))
    ax.bar(range(len(rows)), [r["volume_dice"] for r in rows], color="tab:blue")
    ax.set_xticks(range(len(rows)), [r["case_id"] for r in rows], rotation=75, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("2D Dice per image" if slices else "volume-level 3D Dice")
    mean = float(np.mean([r["volume_dice"] for r in rows]))
    ax.axhline(mean, color="k", ls="--", lw=1)
    what = "2D Dice per slice image" if slices else "volume Dice per case"
    grid = rows[0].get("grid", "original") if rows else "original"
    ax.set_title(f"{split}: {what} on the {grid} grid (mean {mean:.3f}, n={len(rows)})")
    fig.tight_layout()
    return fig


def training_curves(history: list[dict], monitor: str):
    """The three curves that matter, one figure: the training loss and ``monitor`` (the
    validation score) per epoch, and below them the learning rate."""
    epochs = [h["epoch"] for h in history]
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(6, 4.8), sharex=True,
                                    gridspec_kw={"height_ratios": [3, 1]})
    # markers and a dashed second line: with few epochs both curves can run corner to corner on
    # their own axes and hide each other
    ax.plot(epochs, [h["train_loss"] for h in history], label="train loss", color="tab:orange",
            marker="o", markersize=3)
    ax.set_ylabel("train loss")
    ax2 = ax.twinx()
    ax2.plot(epochs, [h.get(monitor, np.nan) for h in history], label=monitor, color="tab:blue",
             linestyle="--", marker="s", markersize=3)
    ax2.set_ylabel(monitor)
    lr = [h.get("lr", np.nan) for h in history]
    ax_lr.plot(epochs, lr, color="tab:green", marker=".", markersize=3)
    if np.nanmin(np.asarray(lr, float), initial=np.inf) > 0:
        ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate", fontsize=8)
    ax_lr.set_xlabel("epoch")
    fig.legend(loc="upper center", ncol=2, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def grid_figure(table: list[dict]):
    labels = [f"{r['arch']}\n{r.get('init', '')}\n{r['cell']}\n{r['regime']}" for r in table]
    x = np.arange(len(table))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(table) + 2), 4.2))
    for i, (split, color) in enumerate((("train", "tab:gray"), ("val", "tab:blue"),
                                        ("test", "tab:orange"))):
        means = [r[f"{split}_mean"] or 0 for r in table]
        stds = [r[f"{split}_std"] or 0 for r in table]
        ax.bar(x + (i - 1) * 0.27, means, 0.27, yerr=stds, capsize=3, color=color, label=split)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("volume-level 3D Dice (mean ± std over folds)")
    ax.legend(fontsize=8)
    ax.set_title("grid: architecture × init × strategy × regime")
    fig.tight_layout()
    return fig


def reliability_diagram(table: list[dict], split: str, summary: dict):
    """Lesion fraction against mean predicted probability per bin (the diagonal: calibrated),
    with each bin's share of the pixels."""
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(5.2, 6.2), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    rows = [r for r in table if r["pixels"]]
    centres = [(r["bin_low"] + r["bin_high"]) / 2 for r in table]
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="calibrated")
    ax.plot([r["mean_probability"] for r in rows], [r["lesion_fraction"] for r in rows], "o-",
            label="this model")
    ax.set_ylabel("lesion fraction of the pixels")
    ax.set_title(f"{split}: pixel calibration — ECE {summary['ece']:.4f}, mean p on lesion "
                 f"{summary['lesion_probability']:.2f}", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    total = sum(r["pixels"] for r in table) or 1
    ax2.bar(centres, [r["pixels"] / total for r in table], width=0.9 / len(table))
    ax2.set_yscale("log")
    ax2.set_xlabel("predicted lesion probability")
    ax2.set_ylabel("share of pixels")
    fig.tight_layout()
    return fig
