"""SVCCA against its defining properties and a straightforward reference of the published
algorithm; activations collected from every block."""

import numpy as np
import pytest
import torch

from covidseg.analysis.activations import collect_activations
from covidseg.analysis.svcca import svcca
from covidseg.models.factory import ModelSpec, build_model


def reference_svcca(a, b, keep=0.99):
    """Raghu et al.: SVD to 99 % variance, then CCA from covariance matrices (inverse square
    roots), the mean canonical correlation — written plainly, for comparison."""
    def svd_reduce(x):
        x = x - x.mean(0)
        u, s, vt = np.linalg.svd(x, full_matrices=False)
        frac = np.cumsum(s ** 2) / np.sum(s ** 2)
        k = 1
        while frac[k - 1] < keep:
            k += 1
        return x @ vt[:k].T

    def inv_sqrt(m):
        w, v = np.linalg.eigh(m)
        return v @ np.diag(1 / np.sqrt(w)) @ v.T

    x, y = svd_reduce(a), svd_reduce(b)
    x, y = x - x.mean(0), y - y.mean(0)
    n = len(x)
    sxx, syy, sxy = x.T @ x / n, y.T @ y / n, x.T @ y / n
    rho = np.linalg.svd(inv_sqrt(sxx) @ sxy @ inv_sqrt(syy), compute_uv=False)
    return float(np.mean(rho[: min(x.shape[1], y.shape[1])]))


def _acts(seed, n=600, p=24, rank=12):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, rank)) @ rng.normal(size=(rank, p)) + 0.05 * rng.normal(size=(n, p))


def test_identical_activations_give_one():
    a = _acts(0)
    assert svcca(a, a) == pytest.approx(1.0, abs=1e-9)


def test_invariant_to_an_invertible_linear_map():
    a = _acts(1)
    m = np.random.default_rng(2).normal(size=(24, 24))
    assert abs(np.linalg.det(m)) > 1e-3
    # CCA itself is exactly invariant; the 99 % truncation before it only approximately
    assert svcca(a, a @ m, keep=1.0) == pytest.approx(1.0, abs=1e-6)
    assert svcca(a, a @ m) == pytest.approx(1.0, abs=0.02)
    assert svcca(a @ m, a) == pytest.approx(1.0, abs=0.02)


def test_independent_activations_are_dissimilar():
    assert svcca(_acts(3), _acts(4)) < 0.3


@pytest.mark.parametrize("seeds", [(5, 5), (5, 6), (7, 8)])
def test_matches_the_reference_algorithm(seeds):
    a = _acts(seeds[0], p=20)
    b = 0.5 * a[:, :16] @ np.random.default_rng(9).normal(size=(16, 16)) + _acts(seeds[1], p=16)
    assert svcca(a, b) == pytest.approx(reference_svcca(a, b), abs=1e-6)


def test_activations_of_every_block_on_the_same_points():
    torch.manual_seed(0)
    model = build_model(ModelSpec("unet", "resnet18"))
    probe = torch.randn(3, 1, 64, 64)
    a = collect_activations(model, probe, max_points=500, seed=1)
    b = collect_activations(model, probe, max_points=500, seed=1)
    assert list(a)[:6] == [f"encoder.level{i}" for i in range(1, 6)] + ["decoder.0"]
    assert list(a)[-1] == "head"
    assert all(a[k].shape == b[k].shape and np.array_equal(a[k], b[k]) for k in a)
    assert a["encoder.level5"].shape == (3 * 2 * 2, 512)  # fewer positions than max_points
    assert a["decoder.4"].shape == (500, 16)
