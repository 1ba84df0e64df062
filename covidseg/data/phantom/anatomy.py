"""The anatomy of a phantom chest in Hounsfield units: body and bones, lungs, vessels, lesion
blobs, on a grid of millimetres centred in the field of view; every draw from a seeded
generator."""

from __future__ import annotations

import hashlib

import numpy as np
from scipy import ndimage as ndi

AIR_HU = -1000.0
LUNG_HU = -850.0
MUSCLE_HU = 40.0
FAT_HU = -100.0
BONE_HU = 700.0
MARROW_HU = 250.0
BLOOD_HU = 40.0



def seeded_rng(seed: int, *salt: str) -> np.random.Generator:
    """A generator determined by the seed and the salt words (one stream per purpose)."""
    digest = hashlib.sha256(("|".join([str(seed), *salt])).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def smooth_noise(rng: np.random.Generator, shape, scale_px: float) -> np.ndarray:
    """Zero-mean, unit-std random field with features about ``scale_px`` voxels wide.

    Drawn on a coarse grid and interpolated up, which is much cheaper than filtering a full-size
    white-noise volume with a wide Gaussian.
    """
    coarse = [max(2, int(np.ceil(s / max(scale_px, 1.0))) + 2) for s in shape]
    field = ndi.gaussian_filter(rng.standard_normal(coarse), 0.7)
    field = ndi.zoom(field, [s / c for s, c in zip(shape, coarse)], order=1, grid_mode=True,
                     mode="nearest")
    field = field[tuple(slice(0, s) for s in shape)]
    std = field.std()
    return ((field - field.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def mm_grid(nz: int, size: int, spacing_xy: float, step_z: float = 1.0):
    """Coordinates in mm centred in the field of view: z (``step_z`` mm), y (posterior +), x."""
    half = size * spacing_xy / 2.0
    c = (np.arange(size, dtype=np.float32) + 0.5) * spacing_xy - half
    z = ((np.arange(nz, dtype=np.float32) + 0.5) - nz / 2.0) * step_z
    return z[:, None, None], c[None, :, None], c[None, None, :], half


def body_and_bones(Z, Y, X, fov_half: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """HU map of body, fat, bones, heart and table (lungs carved later), and the body mask."""
    shape = np.broadcast_shapes(Z.shape, Y.shape, X.shape)
    bx, by = 0.88 * fov_half, 0.64 * fov_half
    hu = np.full(shape, AIR_HU, dtype=np.float32)
    r_body = (X / bx) ** 2 + (Y / by) ** 2
    body = np.broadcast_to(r_body <= 1.0, shape)
    hu[body] = MUSCLE_HU
    fat = np.broadcast_to((r_body > 0.80) & (r_body <= 0.93), shape)
    hu[fat] = FAT_HU
    # heart / mediastinum: anterior, slightly to the patient's left (+x in LPS)
    heart = ((X - 0.10 * bx) / (0.24 * bx)) ** 2 + ((Y + 0.10 * by) / (0.36 * by)) ** 2 <= 1.0
    hu[np.broadcast_to(heart, shape)] = BLOOD_HU
    # spine: vertebral body with cortical ring and spinal canal, posterior midline
    sy, sr = 0.62 * by, 0.11 * fov_half
    rs = np.sqrt(X ** 2 + (Y - sy) ** 2)
    hu[np.broadcast_to(rs <= sr, shape)] = MARROW_HU
    hu[np.broadcast_to((rs > 0.75 * sr) & (rs <= sr), shape)] = BONE_HU
    canal = np.sqrt(X ** 2 + (Y - sy - 1.25 * sr) ** 2) <= 0.35 * sr
    hu[np.broadcast_to(canal, shape)] = MUSCLE_HU - 20
    # sternum
    st = ((X / (0.06 * bx)) ** 2 + ((Y + 0.86 * by) / (0.05 * by)) ** 2) <= 1.0
    hu[np.broadcast_to(st, shape)] = BONE_HU
    # ribs: small bony sections along the chest wall, present on slices where the oblique rib
    # crosses (phase depends on the angle around the body)
    angle = np.arctan2(Y / by, X / bx)
    ring = np.broadcast_to((r_body > 0.72) & (r_body <= 0.80), shape)
    phase = rng.uniform(0, 2 * np.pi)
    period = max(6.0, 0.55 * fov_half)
    rib = np.sin(2 * np.pi * Z / period + 3.0 * angle + phase) > 0.55
    rib &= np.cos(9.0 * angle) > 0.2
    hu[ring & rib] = BONE_HU
    # CT table below the patient
    table = np.broadcast_to((Y > 0.96 * fov_half) & (Y < 0.99 * fov_half)
                            & (np.abs(X) < 0.9 * fov_half), shape)
    hu[table] = 150.0
    return hu, body


def lung_fields(Z, Y, X, fov_half: float, rng, nz: int) -> np.ndarray:
    """Boolean lung mask: two superellipse lungs with irregular pleura, shrinking to the apex."""
    shape = np.broadcast_shapes(Z.shape, Y.shape, X.shape)
    bx, by = 0.88 * fov_half, 0.64 * fov_half
    # lung size along z: larger at the base (z < 0) than at the apex
    zrel = Z / max(float(np.ptp(Z)) + 1.0, 1.0)
    scale = (1.0 - 0.35 * (zrel + 0.5) ** 2).astype(np.float32)
    spacing_px = (2 * fov_half) / Y.shape[1]
    wobble = 0.06 * smooth_noise(rng, shape, scale_px=0.35 * fov_half / spacing_px)
    lungs = np.zeros(shape, dtype=bool)
    for side in (-1.0, 1.0):  # -x = patient's right in LPS
        cx = side * 0.45 * bx
        ax, ay = 0.38 * bx * scale, 0.70 * by * scale
        r = (np.abs(X - cx) / ax) ** 2.4 + (np.abs(Y + 0.04 * by) / ay) ** 2.4
        lungs |= (r + wobble) <= 1.0
    # cardiac notch and mediastinum keep the lungs apart
    heart = ((X - 0.10 * bx) / (0.27 * bx)) ** 2 + ((Y + 0.10 * by) / (0.39 * by)) ** 2 <= 1.0
    lungs &= ~np.broadcast_to(heart, shape)
    lungs &= ~np.broadcast_to(np.abs(X) < 0.07 * bx, shape)
    lungs &= np.broadcast_to((X / bx) ** 2 + (Y / by) ** 2 <= 0.70, shape)  # inside the chest wall
    return lungs


def vessels(rng, shape, spacing_xy: float, lungs: np.ndarray, X, fov_half: float) -> np.ndarray:
    """Vessel-likeness in [0, 1]: tubes where two smooth random fields both cross zero.

    The intersection of two zero level-sets is a set of curves; a Gaussian of the distance gives
    tubes whose thickness (and so partial-volume density) falls from the hilum to the periphery.
    """
    scale = 0.12 * fov_half / spacing_xy
    n1 = smooth_noise(rng, shape, scale)
    n2 = smooth_noise(rng, shape, scale)
    hilum = 1.0 - np.clip(np.abs(X) / (0.9 * fov_half), 0, 1)  # thicker near the midline
    width = 0.08 + 0.16 * hilum
    v = np.exp(-(n1 ** 2 + n2 ** 2) / (2 * width ** 2))
    return (v * lungs).astype(np.float32)


def blob(rng, grid, centre_mm, radii_mm, irregularity: float, softness_mm: float,
         spacing_xy: float) -> np.ndarray:
    """Soft membership in [0, 1] of an irregular ellipsoid (restricted to its bounding box) on
    ``grid``, the (Z, Y, X) coordinates in mm."""
    Z, Y, X = grid
    shape = np.broadcast_shapes(Z.shape, Y.shape, X.shape)
    cz, cy, cx = centre_mm
    rz, ry, rx = radii_mm
    rmax = max(radii_mm) * 1.6 + 3 * softness_mm
    zs = np.flatnonzero(np.abs(Z.ravel() - cz) <= rmax)
    ys = np.flatnonzero(np.abs(Y.ravel() - cy) <= rmax)
    xs = np.flatnonzero(np.abs(X.ravel() - cx) <= rmax)
    out = np.zeros(shape, dtype=np.float32)
    if len(zs) == 0 or len(ys) == 0 or len(xs) == 0:
        return out
    sl = (slice(zs[0], zs[-1] + 1), slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
    z = Z.ravel()[sl[0]][:, None, None]
    y = Y.ravel()[sl[1]][None, :, None]
    x = X.ravel()[sl[2]][None, None, :]
    d = np.sqrt(((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2)
    sub_shape = np.broadcast_shapes(z.shape, y.shape, x.shape)
    noise = smooth_noise(rng, sub_shape, scale_px=max(2.0, 0.5 * min(ry, rx) / spacing_xy))
    signed = (1.0 - d) * min(ry, rx) + irregularity * min(ry, rx) * 0.5 * noise  # ~mm inside
    with np.errstate(over="ignore"):  # exp → inf far outside the blob: membership 0, as meant
        out[sl] = 1.0 / (1.0 + np.exp(-signed / max(softness_mm, 0.2)))
    return out


def pick_lung_point(rng, lungs: np.ndarray, dist: np.ndarray, near_pleura_mm: float | None,
                     min_depth_mm: float = 0.0):
    """A random lung voxel, optionally within ``near_pleura_mm`` of the pleura (subpleural)."""
    ok = lungs & (dist >= min_depth_mm)
    if near_pleura_mm is not None:
        ok &= dist <= near_pleura_mm
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        idx = np.flatnonzero(lungs)
    if idx.size == 0:
        return None
    return np.unravel_index(idx[rng.integers(idx.size)], lungs.shape)
