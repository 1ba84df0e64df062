"""Preprocessing figures: spacing per source (thesis fig. 3.7), intensity histograms before /
after normalisation (fig. 3.8), a volume before / after lung filtering in three views (fig. 3.6)."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

log = logging.getLogger("covidseg.figures")


def save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def build(name: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` → a figure, or None with a warning when it cannot be drawn: a
    figure never fails a run (every stage draws its figures through this)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any drawing failure is only a missing figure
        plt.close("all")
        log.warning("figure %s skipped: %s: %s", name, type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "")
        return None


def draw(path: Path, fn, *args, **kwargs) -> Path | None:
    """:func:`build` the figure and save it as ``path`` (None when it was skipped)."""
    fig = build(Path(path).name, fn, *args, **kwargs)
    if fig is None:
        return None
    try:
        return save(fig, path)
    except Exception as exc:  # noqa: BLE001
        plt.close("all")
        log.warning("figure %s skipped: %s", Path(path).name, exc)
        return None


def spacing_scatter(metas: list[dict]):
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    volumes = [m for m in metas if not m.get("slice_image")]
    rng = np.random.default_rng(0)
    for src in sorted({m["source"] for m in volumes}):
        ms = [m for m in volumes if m["source"] == src]
        xy = np.array([m["spacing_in"][0] for m in ms])
        z = np.array([m["spacing_in"][2] for m in ms])
        jitter = rng.uniform(-0.05, 0.05, size=z.shape)  # equal thicknesses would overlap
        ax.scatter(xy, z + jitter, label=f"{src} (n={len(ms)})", alpha=0.75, s=28)
    ax.set_xlabel("in-plane spacing (mm)")
    ax.set_ylabel("slice thickness (mm, jittered)")
    ax.set_title("Voxel spacing per source (before resampling to 1 × 1 mm in-plane)")
    ax.grid(alpha=0.3)
    if volumes:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "2D slice images only: no physical spacing", ha="center",
                transform=ax.transAxes)
    return fig


def intensity_histograms(metas: list[dict], bins_hu, bins_display, bins_z):
    fig, axes = plt.subplots(2, 1, figsize=(7.5, 6.4))
    colours = {"hu": "tab:blue", "display": "tab:orange", "image": "tab:green"}
    for mode, bins, title in (("hu", bins_hu, "HU"), ("display", bins_display, "8-bit display "
                                                      "value, mapped alike"),
                              ("image", bins_display, "value, z-scored per image")):
        ms = [m for m in metas if m["intensity"] == mode]
        if not ms:
            continue
        centres = (np.asarray(bins)[:-1] + np.asarray(bins)[1:]) / 2
        for m in ms[:40]:
            h = np.asarray(m["hist_before"], float)
            axes[0].plot(centres, h / max(h.sum(), 1), alpha=0.35, lw=0.9, color=colours[mode])
        axes[0].plot([], [], color=colours[mode],
                     label=f"{mode}: {len(ms)} cases ({title})")
    axes[0].set_title("Before: intensities inside the lungs, or the foreground where there are "
                      "none (one line per case)", fontsize=10)
    axes[0].set_xlabel("HU (blue) / value 0-255 (orange: 8-bit display, green: other)")
    axes[0].set_ylabel("fraction of voxels")
    axes[0].legend(fontsize=8)
    centres_z = (np.asarray(bins_z)[:-1] + np.asarray(bins_z)[1:]) / 2
    for m in metas[:40]:
        h = np.asarray(m["hist_after"], float)
        axes[1].plot(centres_z, h / max(h.sum(), 1), alpha=0.35, lw=0.9,
                     color=colours.get(m["intensity"], "tab:gray"))
    axes[1].axvline(0, color="k", lw=0.6)
    axes[1].set_title("After: normalised intensities in the same region (HU and per-image: mean "
                      "0, std 1 per case)", fontsize=10)
    axes[1].set_xlabel("normalised value")
    axes[1].set_ylabel("fraction of voxels")
    fig.tight_layout()
    return fig


def lung_filtering_views(before: np.ndarray, after: np.ndarray, lung, infection, meta: dict):
    """Top row: resampled volume in HU (or display values); bottom: after lung filtering and
    normalisation; columns: axial, coronal, sagittal through the lesion centre (or the middle)."""
    ref = infection if infection is not None and infection.any() else lung
    if ref is not None and ref.any():  # the planes that cut the most infection (or lung)
        zc = int(np.argmax(ref.sum(axis=(1, 2))))
        yc = int(np.argmax(ref.sum(axis=(0, 2))))
        xc = int(np.argmax(ref.sum(axis=(0, 1))))
    else:
        zc, yc, xc = (s // 2 for s in after.shape)
    sz = (meta.get("spacing") or [1, 1, 1])[2]
    views = [("axial", lambda a: a[zc], 1.0), ("coronal", lambda a: a[:, yc, :], sz),
             ("sagittal", lambda a: a[:, :, xc], sz)]
    fig, axes = plt.subplots(2, 3, figsize=(12, 7.5))
    hu = meta["intensity"] == "hu"
    vmin, vmax = (-1250, 250) if hu else (0, 255)
    for j, (name, cut, aspect) in enumerate(views):
        axes[0, j].imshow(cut(before), cmap="gray", vmin=vmin, vmax=vmax, aspect=aspect,
                          origin="upper" if j == 0 else "lower")
        axes[0, j].set_title(f"{name}: before ({'HU' if hu else 'display values'})")
        axes[1, j].imshow(cut(after), cmap="gray", vmin=-3, vmax=3, aspect=aspect,
                          origin="upper" if j == 0 else "lower")
        if infection is not None and cut(infection).any():
            axes[1, j].contour(cut(infection), levels=[0.5], colors="r", linewidths=0.8)
        axes[1, j].set_title(f"{name}: after (z-score, lungs only)")
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"Volume {meta['case_id']} ({meta['source']}) before / after lung filtering "
                 f"(lungs: {meta['lung_method']}; red = infection mask)")
    fig.tight_layout()
    return fig


def slice_views(examples: list[tuple]):
    """2D slice sets: each example slice before (its own values) and after normalisation, with
    the lesion mask's contour (the 3-view figure of a volume has no other views to show)."""
    fig, axes = plt.subplots(2, len(examples), figsize=(3.4 * len(examples), 6.6), squeeze=False)
    for j, (before, after, infection, meta) in enumerate(examples):
        b = before[0]
        lo, hi = np.percentile(b, [0.5, 99.5]) if b.size else (0, 1)
        axes[0, j].imshow(b, cmap="gray", vmin=lo, vmax=hi)
        axes[0, j].set_title(f"{meta['case_id']}: before", fontsize=9)
        axes[1, j].imshow(after[0], cmap="gray", vmin=-3, vmax=3)
        if infection is not None and np.any(infection[0]):
            axes[1, j].contour(np.asarray(infection[0]) > 0, levels=[0.5], colors="r",
                               linewidths=0.8)
        size = meta["canonical_geometry"]["size"]
        axes[1, j].set_title(f"after ({meta['intensity']} z-score; {size[0]}×{size[1]} → "
                             f"{meta['slice_fit']})", fontsize=8)
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("2D slices before / after preprocessing (red = lesion mask)")
    fig.tight_layout()
    return fig
