"""SVCCA figures: layer × iteration heat-map (thesis figs. 5.2-5.4), per-layer bars (fig. 5.5)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def checkpoint_heatmap(rows: list[dict]):
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    steps = sorted({r["iteration"] for r in rows})
    grid = np.full((len(layers), len(steps)), np.nan)
    for r in rows:
        grid[layers.index(r["layer"]), steps.index(r["iteration"])] = r["svcca"]
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(steps) + 3), 0.35 * len(layers) + 1.8))
    im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_yticks(range(len(layers)), layers, fontsize=8)
    ax.set_xticks(range(len(steps)), steps, rotation=60, fontsize=7)
    ax.set_xlabel("iteration of the intermediate checkpoint")
    ax.set_title("SVCCA similarity to the converged model, per layer")
    fig.colorbar(im, ax=ax, label="mean SVCCA correlation")
    fig.tight_layout()
    return fig


def layer_bars(rows: list[dict], title: str):
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(rows) + 2), 3.8))
    ax.bar(range(len(rows)), [r["svcca"] for r in rows], color="tab:purple")
    ax.set_xticks(range(len(rows)), [r["layer"] for r in rows], rotation=60, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean SVCCA correlation")
    ax.set_title(f"SVCCA per layer: {title}")
    fig.tight_layout()
    return fig
