"""SVCCA against the properties Raghu et al. (2017) state for it, each with an exact expected
value: invariance to orthogonal transforms, isotropic scaling and translation of either side
(mean correlation exactly 1), and representations built with a known number of shared directions
(exactly k canonical correlations of 1 and the rest 0, so the mean is known); the 99 % variance
rule on a spectrum whose cut is known; then activations collected from every block.

The expected values come from the construction of the data, not from a second implementation;
one plainly written covariance-based version remains as a cross-check on generic data."""

import numpy as np
import pytest
import torch

from covidseg.analysis.activations import collect_activations
from covidseg.analysis.svcca import cca_correlations, reduce_by_variance, svcca
from covidseg.models.factory import ModelSpec, build_model


def orthonormal_columns(n: int, d: int, seed: int) -> np.ndarray:
    """(n, d): d centred, orthonormal directions over n data points."""
    x = np.random.default_rng(seed).normal(size=(n, d))
    q, _ = np.linalg.qr(x - x.mean(0))
    return q


def random_orthogonal(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def _acts(seed, n=600, p=24, rank=12):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, rank)) @ rng.normal(size=(rank, p)) + 0.05 * rng.normal(size=(n, p))


def test_identical_activations_give_one():
    a = _acts(0)
    assert svcca(a, a) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("keep", [0.99, 1.0])
def test_invariant_to_rotation_scaling_and_translation_of_either_side(keep):
    """An orthogonal map times a scale keeps every singular value's share of the variance, so even
    the 99 % truncation picks the same subspace: the mean correlation is exactly 1; a constant
    offset per neuron disappears with the centring."""
    a = _acts(1)
    q = random_orthogonal(24, 2)
    for b in (a @ q, 7.5 * a @ q, 0.01 * a @ q + 3.0, a + np.arange(24) * 100.0):
        assert svcca(a, b, keep) == pytest.approx(1.0, abs=1e-9)
        assert svcca(b, a, keep) == pytest.approx(1.0, abs=1e-9)
    # and every canonical correlation is 1, not just their mean
    rho = cca_correlations(reduce_by_variance(a, keep), reduce_by_variance(5 * a @ q - 2, keep))
    np.testing.assert_allclose(rho, 1.0, atol=1e-9)


def test_invariant_to_an_invertible_linear_map():
    a = _acts(1)
    m = np.random.default_rng(2).normal(size=(24, 24))
    assert abs(np.linalg.det(m)) > 1e-3
    # CCA itself is exactly invariant; the 99 % truncation before it only approximately
    assert svcca(a, a @ m, keep=1.0) == pytest.approx(1.0, abs=1e-6)
    assert svcca(a, a @ m) == pytest.approx(1.0, abs=0.02)
    assert svcca(a @ m, a) == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("k, d", [(0, 5), (1, 6), (3, 8), (6, 6), (5, 10)])
def test_sharing_k_of_d_directions_gives_k_ones_and_zeros(k, d):
    """a and b span d directions each, k of them the same and the rest mutually orthogonal: the
    canonical correlations are exactly k ones and d - k zeros, the mean k / d.  Both sides are
    then mixed by invertible maps (and scaled), which must not change that."""
    q = orthonormal_columns(400, 2 * d - k, seed=10 + k + d)
    shared, only_a, only_b = q[:, :k], q[:, k:d], q[:, d:]
    a = np.hstack([shared, only_a]) @ random_orthogonal(d, 1) * 3.0
    b = np.hstack([shared, only_b]) @ random_orthogonal(d, 2) * 0.2 + 1.0
    rho = cca_correlations(reduce_by_variance(a, 1.0), reduce_by_variance(b, 1.0))
    assert rho.shape == (d,)
    np.testing.assert_allclose(rho, [1.0] * k + [0.0] * (d - k), atol=1e-9)
    # equal variance in every direction: the 99 % rule keeps all d of them
    assert svcca(a, b) == pytest.approx(k / d, abs=1e-9)
    # more neurons than directions (mixed copies): still d directions, the same correlations
    wide = np.hstack([a, a @ np.random.default_rng(3).normal(size=(d, d))])
    assert reduce_by_variance(wide, 1.0).shape == (400, d)
    assert svcca(wide, b, keep=1.0) == pytest.approx(k / d, abs=1e-9)


def test_a_subspace_of_the_other_correlates_fully():
    """b spans 3 of a's 7 directions: min(7, 3) = 3 correlations, all of them 1."""
    q = orthonormal_columns(300, 7, seed=4)
    a = q @ random_orthogonal(7, 5)
    b = q[:, [1, 4, 6]] @ np.diag([2.0, 0.5, 9.0])
    np.testing.assert_allclose(cca_correlations(reduce_by_variance(a, 1.0),
                                                reduce_by_variance(b, 1.0)), 1.0, atol=1e-9)
    assert svcca(a, b, keep=1.0) == pytest.approx(1.0, abs=1e-9)


def test_the_99_percent_rule_keeps_the_directions_holding_the_variance():
    """Variances 90, 8, 1.5, 0.5 % : the first three hold 99.5 % (two hold 98 %), so three
    directions are kept; directions below 1 % of the variance take no part in the comparison."""
    q = orthonormal_columns(500, 7, seed=6)
    x = q[:, :4] @ np.diag(np.sqrt([90.0, 8.0, 1.5, 0.5]))
    assert reduce_by_variance(x).shape == (500, 3)
    assert reduce_by_variance(x, keep=0.98).shape == (500, 2)
    assert reduce_by_variance(x, keep=1.0).shape == (500, 4)
    # a = 3 strong directions plus 3 weak ones (1e-6 of the variance); b = exactly the weak ones
    a = np.hstack([q[:, :3] * 10.0, q[:, 3:6] * 0.01])
    b = q[:, 3:6]
    assert svcca(a, b, keep=1.0) == pytest.approx(1.0, abs=1e-9)   # b lies in a's span
    assert svcca(a, b) == pytest.approx(0.0, abs=1e-9)             # but not in its 99 %


def test_independent_activations_are_dissimilar():
    assert svcca(_acts(3), _acts(4)) < 0.3


def reference_svcca(a, b, keep=0.99):
    """Cross-check only: SVD to 99 % variance, then CCA from covariance matrices (inverse square
    roots), the mean canonical correlation — written plainly."""
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
    n = len(x)
    sxx, syy, sxy = x.T @ x / n, y.T @ y / n, x.T @ y / n
    rho = np.linalg.svd(inv_sqrt(sxx) @ sxy @ inv_sqrt(syy), compute_uv=False)
    return float(np.mean(rho[: min(x.shape[1], y.shape[1])]))


def test_agrees_with_a_covariance_based_version_on_generic_data():
    a = _acts(5, p=20)
    b = 0.5 * a[:, :16] @ np.random.default_rng(9).normal(size=(16, 16)) + _acts(6, p=16)
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
