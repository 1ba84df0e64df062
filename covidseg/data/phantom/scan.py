"""One phantom scan: the acquisition sites (:data:`CENTRES`), the chest and its lesions
(:mod:`~covidseg.data.phantom.anatomy`), then the site's blur, slab averaging, noise and
calibration offset (:func:`make_phantom`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from covidseg.data.phantom.anatomy import (
    BLOOD_HU,
    LUNG_HU,
    blob,
    body_and_bones,
    lung_fields,
    mm_grid,
    pick_lung_point,
    seeded_rng,
    smooth_noise,
    vessels,
)

DISPLAY_WINDOW = (-1250.0, 250.0)  # how "display value" (0-255) phantoms are encoded


@dataclass(frozen=True)
class Centre:
    """One acquisition site: what makes its images look different from another site's."""

    name: str
    spacing_mm: tuple[float, float]  # range of in-plane spacing
    thickness_mm: tuple[float, ...]  # slice thicknesses this site uses
    noise_hu: float  # scanner noise standard deviation
    blur_mm: float  # reconstruction kernel: 0 = sharp, larger = smooth
    hu_offset: float  # calibration offset


CENTRES: dict[str, Centre] = {
    "A": Centre("A", (0.60, 0.75), (1.0, 1.5, 2.0), noise_hu=15.0, blur_mm=0.3, hu_offset=0.0),
    "B": Centre("B", (0.65, 0.85), (2.5, 3.0, 5.0), noise_hu=28.0, blur_mm=0.8, hu_offset=15.0),
    "C": Centre("C", (0.70, 0.90), (5.0, 8.0), noise_hu=40.0, blur_mm=1.2, hu_offset=-25.0),
    "D": Centre("D", (0.60, 0.90), (1.0, 3.0, 8.0), noise_hu=20.0, blur_mm=0.1, hu_offset=30.0),
}

# Which centres each cohort is drawn from: the unlabelled cohort is shifted on purpose.
COHORT_CENTRES = {
    "covid": ("A", "B"),
    "unlabelled": ("C", "D", "B"),
    "noncovid": ("A", "D"),
}


@dataclass
class Phantom:
    image: np.ndarray  # (z, y, x) float32 HU (or 0-255 display values when hu=False)
    infection: np.ndarray  # (z, y, x) uint8, COVID lesions (or nodules for the non-COVID cohort)
    lung: np.ndarray  # (z, y, x) uint8, 1 = lung
    spacing: tuple[float, float, float]  # (x, y, z) in mm, SimpleITK order
    centre: str
    kind: str
    seed: int
    hu: bool = True

    @property
    def thickness(self) -> float:
        return self.spacing[2]



@dataclass(frozen=True)
class Sampling:
    """How a phantom is sampled: in-plane spacing, slice thickness, output slices and the 1 mm
    (at most) sub-slices averaged into each."""

    spacing_xy: float
    thickness: float
    slices: int
    sub: int

    @property
    def step_z(self) -> float:
        return self.thickness / self.sub


def make_phantom(seed: int, size: int = 128, depth_mm: int = 48, kind: str = "covid",
                 centre: str | None = None, difficulty: float = 0.5, hu: bool = True) -> Phantom:
    """Build one phantom volume.

    kind: ``covid`` (GGO + consolidation lesions), ``noncovid`` (solid nodules / tumours) or
    ``healthy`` (no lesion).  ``difficulty`` in [0, 1]: fainter ground-glass, softer borders,
    smaller lesions and more noise as it grows.  ``hu=False`` stores 0-255 display values (as half
    of COVID-19-CT-Seg does) instead of Hounsfield units.
    """
    if kind not in ("covid", "noncovid", "healthy"):
        raise ValueError(f"unknown phantom kind {kind!r}")
    d = float(np.clip(difficulty, 0.0, 1.0))
    rng = seeded_rng(seed, kind, str(size), str(depth_mm))
    if centre is None:
        pool = COHORT_CENTRES["noncovid" if kind == "noncovid" else "covid"]
        centre = pool[rng.integers(len(pool))]
    site = CENTRES[centre]
    spacing_xy = float(np.round(rng.uniform(*site.spacing_mm), 3))
    thickness = float(site.thickness_mm[rng.integers(len(site.thickness_mm))])
    nz_out = max(2, int(round(depth_mm / thickness)))
    t = int(np.ceil(thickness))  # sub-slices of at most 1 mm, averaged to the slice thickness
    sampling = Sampling(spacing_xy, thickness, nz_out, t)
    nz = nz_out * t
    Z, Y, X, fov_half = mm_grid(nz, size, spacing_xy, step_z=sampling.step_z)
    shape = (nz, size, size)

    hu_map, body = body_and_bones(Z, Y, X, fov_half, rng)
    lungs = lung_fields(Z, Y, X, fov_half, rng, nz)
    texture = 25.0 * smooth_noise(rng, shape, scale_px=1.5)
    hu_map[lungs] = LUNG_HU + texture[lungs]
    vessel = vessels(rng, shape, spacing_xy, lungs, X, fov_half)
    hu_map += vessel * (BLOOD_HU - hu_map) * lungs

    lesion = np.zeros(shape, dtype=np.float32)
    if kind != "healthy" and lungs.any():
        dist = ndi.distance_transform_edt(lungs, sampling=(sampling.step_z, spacing_xy,
                                                           spacing_xy))
        lung_half_width = 0.40 * 0.88 * fov_half
        draw = covid_lesions if kind == "covid" else nodules
        lesion, lesion_hu = draw(rng, (Z, Y, X), lungs, dist, lung_half_width, d, spacing_xy)
        lesion *= lungs
        # lesions replace the parenchyma but keep vessels visible through ground-glass
        hu_map = np.maximum(hu_map * (1 - lesion) + (lesion_hu + 0.5 * texture) * lesion, hu_map)

    hu_out, lung_out, les_out = acquire(site, rng, sampling, d, hu_map, lungs, lesion)
    infection = (les_out & lung_out).astype(np.uint8)
    image = hu_out if hu else hu_to_display(hu_out)
    return Phantom(image=image, infection=infection, lung=lung_out.astype(np.uint8),
                   spacing=(spacing_xy, spacing_xy, float(thickness)), centre=centre, kind=kind,
                   seed=seed, hu=hu)


def covid_lesions(rng, grid, lungs, dist, half_width: float, d: float, spacing_xy: float):
    """COVID-like lesions: 1-6 peripheral / subpleural ground-glass blobs, fainter and smaller
    as ``d`` (difficulty) grows, some with a consolidation core.  Returns (weight, HU) maps."""
    Z, Y, X = grid
    lesion = np.zeros(lungs.shape, dtype=np.float32)
    lesion_hu = np.zeros(lungs.shape, dtype=np.float32)
    n_lesions = int(rng.integers(1, 7))
    for _ in range(n_lesions):
        p = pick_lung_point(rng, lungs, dist, near_pleura_mm=0.25 * half_width,
                            min_depth_mm=0.05 * half_width)
        if p is None:
            break
        centre_mm = (Z.ravel()[p[0]], Y.ravel()[p[1]], X.ravel()[p[2]])
        r = half_width * rng.uniform(0.25, 0.75) * (1.0 - 0.3 * d)
        radii = (max(2.0, r * rng.uniform(0.6, 1.4)), r * rng.uniform(0.7, 1.3),
                 r * rng.uniform(0.7, 1.3))
        w = blob(rng, grid, centre_mm, radii, irregularity=0.6 + 0.6 * d,
                 softness_mm=0.6 + 2.0 * d, spacing_xy=spacing_xy)
        ggo_high = -300.0 - 300.0 * d
        target = rng.uniform(ggo_high - 150.0, ggo_high)
        upd = w > lesion
        lesion_hu[upd] = target
        lesion = np.maximum(lesion, w)
        if rng.random() < 0.45:  # consolidation core
            core = blob(rng, grid, centre_mm, tuple(0.45 * x for x in radii),
                        irregularity=0.5, softness_mm=0.5 + d, spacing_xy=spacing_xy)
            upd = core > 0.5
            lesion_hu[upd] = rng.uniform(-100.0, 50.0)
            lesion = np.maximum(lesion, core)
    return lesion, lesion_hu


def nodules(rng, grid, lungs, dist, half_width: float, d: float, spacing_xy: float):
    """Non-COVID lesions: 1-3 solid nodules / tumours anywhere in the lung (``d`` unused: their
    contrast does not fade).  Returns (weight, HU) maps."""
    Z, Y, X = grid
    lesion = np.zeros(lungs.shape, dtype=np.float32)
    lesion_hu = np.zeros(lungs.shape, dtype=np.float32)
    for _ in range(int(rng.integers(1, 4))):
        r = half_width * rng.uniform(0.10, 0.35)
        p = pick_lung_point(rng, lungs, dist, near_pleura_mm=None, min_depth_mm=0.3 * r)
        if p is None:
            break
        centre_mm = (Z.ravel()[p[0]], Y.ravel()[p[1]], X.ravel()[p[2]])
        radii = (max(2.0, r * rng.uniform(0.8, 1.2)), r, r * rng.uniform(0.8, 1.2))
        w = blob(rng, grid, centre_mm, radii, irregularity=0.4, softness_mm=0.5,
                 spacing_xy=spacing_xy)
        upd = w > lesion
        lesion_hu[upd] = rng.uniform(0.0, 60.0)
        lesion = np.maximum(lesion, w)
    return lesion, lesion_hu


def acquire(site: Centre, rng, sampling: Sampling, d: float, hu_map, lungs, lesion):
    """The site's acquisition of the 1 mm volume: kernel blur in-plane, partial-volume slab
    averaging to the slice thickness, noise (more as ``d`` grows), calibration offset.  Returns
    the image (HU) and the lung and lesion masks on the output slices."""
    s, t, n = sampling.spacing_xy, sampling.sub, sampling.slices
    size = hu_map.shape[-1]
    if site.blur_mm > 0:
        hu_map = ndi.gaussian_filter(hu_map, sigma=(0.3, site.blur_mm / s, site.blur_mm / s))
    hu_out = hu_map[: n * t].reshape(n, t, size, size).mean(axis=1)
    lung_out = lungs[: n * t].reshape(n, t, size, size).mean(axis=1) >= 0.5
    les_out = lesion[: n * t].reshape(n, t, size, size).mean(axis=1) >= 0.5
    noise_sd = site.noise_hu * (1.0 + 0.8 * d)
    noise = rng.standard_normal(hu_out.shape).astype(np.float32)
    noise = ndi.gaussian_filter(noise, sigma=(0, 0.6, 0.6))
    noise *= noise_sd / max(float(noise.std()), 1e-6)
    hu_out = hu_out + noise * (hu_out > -1500) + site.hu_offset
    hu_out = np.clip(hu_out, -1024.0, 3071.0).astype(np.float32)
    return hu_out, lung_out, les_out


def hu_to_display(hu: np.ndarray) -> np.ndarray:
    """Map HU to 0-255 display values with the lung window (how some public sets store CT)."""
    lo, hi = DISPLAY_WINDOW
    return np.round(np.clip((hu - lo) / (hi - lo), 0, 1) * 255.0).astype(np.float32)
