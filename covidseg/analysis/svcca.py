"""SVCCA (Raghu et al. 2017): how similar two layers' representations are, invariant to invertible
linear transforms of either side.

For activations ``a`` (n data points × p1 neurons) and ``b`` (n × p2) of the same n inputs:

1. centre each neuron;
2. SVD, keeping the fewest directions that hold ``keep`` (99 %) of the variance — the published
   rule (the widely copied reference notebooks keep a fixed 20 instead);
3. CCA between the two reduced subspaces: the canonical correlations are the singular values of
   ``Qaᵀ Qb`` with ``Qa``, ``Qb`` orthonormal bases of the reduced activations;
4. the mean canonical correlation.

All of it is a handful of dense factorisations: no loop over neurons.
"""

from __future__ import annotations

import numpy as np


def reduce_by_variance(x: np.ndarray, keep: float = 0.99) -> np.ndarray:
    """The centred (n, p) activations projected on the fewest singular directions holding
    ``keep`` of the variance: (n, k)."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    var = s ** 2
    total = var.sum()
    if total <= 0:
        return x[:, :0]
    k = int(np.searchsorted(np.cumsum(var) / total, keep - 1e-12) + 1)
    return u[:, :k] * s[:k]


def cca_correlations(a: np.ndarray, b: np.ndarray, eps: float = 1e-10) -> np.ndarray:
    """Canonical correlations between two centred (n, k) matrices (descending)."""
    def basis(x):
        q, r = np.linalg.qr(x)
        return q[:, np.abs(np.diag(r)) > eps * max(1.0, np.abs(r).max())]

    qa, qb = basis(a), basis(b)
    if qa.shape[1] == 0 or qb.shape[1] == 0:
        return np.zeros(0)
    return np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), 0.0, 1.0)


def svcca(a: np.ndarray, b: np.ndarray, keep: float = 0.99) -> float:
    """Mean SVCCA correlation of two (n, p) activation matrices over the same n data points."""
    if len(a) != len(b):
        raise ValueError(f"activations cover {len(a)} and {len(b)} data points; need the same")
    rho = cca_correlations(reduce_by_variance(a, keep), reduce_by_variance(b, keep))
    return float(rho.mean()) if rho.size else float("nan")
