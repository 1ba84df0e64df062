"""The pseudo-label similarity search and SVCCA are vectorised (SPEC §6).

* Similarity search: :func:`covidseg.semi.assign.assign_pseudo_labels` (top-2 cosine search +
  the top1-band rule) for ``--unlabelled`` (10k) unlabelled × ``--labelled`` (1k) labelled patch
  features of ``--dim`` (512, ResNet-34's deepest block) with 68 × 68 labelled masks.
* SVCCA: :func:`covidseg.analysis.svcca.svcca` on two activation matrices of ``--points`` (5k)
  data points × ``--neurons`` (256).

Each is timed at full size, and against a naive reference written with Python loops (per pair of
patches; per pair of neurons for the covariances) at a small size where the loops finish — the
ratio is measured there, on the same inputs, and both must give the same answer.

    python benchmarks/similarity_svcca.py [--unlabelled 10000] [--labelled 1000] [--points 5000]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from bench import header, ratios, table, timed


def naive_top2(unlabelled: np.ndarray, labelled: np.ndarray):
    """Cosine similarity patch by patch, keeping the best two (pure Python loops)."""
    sims, idx = [], []
    norms = [math.sqrt(float(v @ v)) for v in labelled]
    for u in unlabelled:
        nu = math.sqrt(float(u @ u))
        best = [(-2.0, -1), (-2.0, -1)]
        for j, v in enumerate(labelled):
            s = float(u @ v) / (nu * norms[j])
            if s > best[0][0]:
                best = [(s, j), best[0]]
            elif s > best[1][0]:
                best[1] = (s, j)
        sims.append([best[0][0], best[1][0]])
        idx.append([best[0][1], best[1][1]])
    return np.array(sims), np.array(idx)


def naive_svcca(a: np.ndarray, b: np.ndarray, keep: float = 0.99) -> float:
    """SVCCA with covariances built neuron pair by neuron pair, then eigen-decompositions."""
    def centred(x):
        x = np.array(x, dtype=np.float64)
        for j in range(x.shape[1]):
            x[:, j] -= x[:, j].mean()
        return x

    def cov(x, y):
        c = np.empty((x.shape[1], y.shape[1]))
        for i in range(x.shape[1]):
            for j in range(y.shape[1]):
                c[i, j] = float(x[:, i] @ y[:, j])
        return c

    def reduce(x):
        w, v = np.linalg.eigh(cov(x, x))
        order = np.argsort(w)[::-1]
        w, v = np.clip(w[order], 0, None), v[:, order]
        k = int(np.searchsorted(np.cumsum(w) / w.sum(), keep - 1e-12) + 1)
        return x @ v[:, :k]

    def inv_sqrt(c):
        w, v = np.linalg.eigh(c)
        return v @ np.diag(1.0 / np.sqrt(np.clip(w, 1e-12, None))) @ v.T

    ra, rb = reduce(centred(a)), reduce(centred(b))
    m = inv_sqrt(cov(ra, ra)) @ cov(ra, rb) @ inv_sqrt(cov(rb, rb))
    return float(np.clip(np.linalg.svd(m, compute_uv=False), 0, 1).mean())


def features(rng, n: int, dim: int, centres: np.ndarray) -> np.ndarray:
    """Clustered non-negative features (post-ReLU-like), so similarities spread over the band."""
    pick = centres[rng.integers(len(centres), size=n)]
    return np.maximum(pick + 0.55 * rng.standard_normal((n, dim)), 0).astype(np.float32)


def activations(rng, n: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Two layers' activations sharing a low-rank signal (mean CCA strictly between 0 and 1)."""
    shared = rng.standard_normal((n, 24))
    a = shared @ rng.standard_normal((24, p)) + 0.5 * rng.standard_normal((n, p))
    b = np.tanh(shared @ rng.standard_normal((24, p))) + 0.5 * rng.standard_normal((n, p))
    return a.astype(np.float32), b.astype(np.float32)


def main() -> None:
    import torch

    from covidseg.analysis.svcca import svcca
    from covidseg.semi.assign import assign_pseudo_labels, top_k_cosine

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--unlabelled", type=int, default=10_000)
    ap.add_argument("--labelled", type=int, default=1_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--patch", type=int, default=68)
    ap.add_argument("--points", type=int, default=5_000)
    ap.add_argument("--neurons", type=int, default=256)
    ap.add_argument("--small", type=float, default=0.2,
                    help="size of the naive comparison, as a fraction of the full one")
    args = ap.parse_args()
    header("similarity search and SVCCA: vectorised vs naive loops", torch.device("cpu"),
           search=f"{args.unlabelled}x{args.labelled}x{args.dim}",
           svcca=f"{args.points}x{args.neurons}")
    rng = np.random.default_rng(0)
    centres = np.abs(rng.standard_normal((40, args.dim))).astype(np.float32)
    U = features(rng, args.unlabelled, args.dim, centres)
    L = features(rng, args.labelled, args.dim, centres)
    masks = (rng.random((args.labelled, args.patch, args.patch)) > 0.7).astype(np.float32)
    A, B = activations(rng, args.points, args.neurons)

    rows = []
    t_full = timed(lambda: assign_pseudo_labels(U, L, masks), repeat=3)
    accepted = assign_pseudo_labels(U, L, masks).acceptance_rate
    nu, nl = max(1, int(args.unlabelled * args.small)), max(2, int(args.labelled * args.small))
    u, lab = U[:nu], L[:nl]
    t_vec_small = timed(lambda: top_k_cosine(u, lab, 2), repeat=3)
    t_naive_small = timed(lambda: naive_top2(u, lab), repeat=1, warmup=0)
    s_naive, i_naive = naive_top2(u, lab)
    s_vec, i_vec = (t.numpy() for t in top_k_cosine(u, lab, 2))
    same_search = bool(np.allclose(s_naive, s_vec, atol=1e-5)
                       and (i_naive[:, 0] == i_vec[:, 0]).all())
    rows += [
        {"task": "pseudo-label search", "size": f"{args.unlabelled}x{args.labelled}",
         "impl": "covidseg (assign_pseudo_labels)", "seconds": t_full, "same answer": "-"},
        {"task": "pseudo-label search", "size": f"{nu}x{nl}", "impl": "covidseg top_k_cosine",
         "seconds": t_vec_small, "same answer": str(same_search)},
        {"task": "pseudo-label search", "size": f"{nu}x{nl}", "impl": "naive Python loops",
         "seconds": t_naive_small, "same answer": str(same_search)},
    ]
    t_svcca = timed(lambda: svcca(A, B), repeat=3)
    npts, nn = max(64, int(args.points * args.small)), max(8, int(args.neurons * args.small))
    a, b = A[:npts, :nn], B[:npts, :nn]
    t_svcca_small = timed(lambda: svcca(a, b), repeat=3)
    t_naive_svcca = timed(lambda: naive_svcca(a, b), repeat=1, warmup=0)
    v_ours, v_naive = svcca(a, b), naive_svcca(a, b)
    same_svcca = bool(abs(v_ours - v_naive) < 1e-6)
    rows += [
        {"task": "SVCCA", "size": f"{args.points}x{args.neurons}", "impl": "covidseg (svcca)",
         "seconds": t_svcca, "same answer": f"mean CCA {svcca(A, B):.3f}"},
        {"task": "SVCCA", "size": f"{npts}x{nn}", "impl": "covidseg (svcca)",
         "seconds": t_svcca_small, "same answer": f"{same_svcca} ({v_ours:.6f})"},
        {"task": "SVCCA", "size": f"{npts}x{nn}", "impl": "naive neuron-pair loops",
         "seconds": t_naive_svcca, "same answer": f"{same_svcca} ({v_naive:.6f})"},
    ]
    table(rows, floatfmt="{:.4g}")
    print(f"top1-band acceptance at full size: {accepted:.1%}")
    ratios(search_naive_over_covidseg=t_naive_small / t_vec_small,
           svcca_naive_over_covidseg=t_naive_svcca / t_svcca_small,
           search_full_seconds=t_full, svcca_full_seconds=t_svcca)


if __name__ == "__main__":
    main()
