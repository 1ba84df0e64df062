"""Synthetic chest-CT phantoms in Hounsfield units, deterministic by seed.

A phantom is a small chest: air outside a body ellipse (muscle ~40 HU, fat ring ~-100 HU),
spine and ribs (~700 HU cortical bone), heart and mediastinum, a CT table, and two lungs
(~-850 HU parenchyma texture) crossed by vessel-like tubes whose partial volume gives them the
same density range as ground-glass.  COVID-like lesions are peripheral / subpleural ground-glass
opacities (-700..-300 HU, faint at high ``difficulty``) with soft irregular borders, sometimes with
a consolidation core (-100..50 HU).  The non-COVID cohort carries solid nodules / tumours instead.

Acquisition is simulated per *centre* (a scanner/site profile): in-plane spacing, slice
thickness (partial-volume averaging of 1 mm sub-slices), reconstruction-kernel blur, noise and a
HU calibration offset.  Labelled and unlabelled cohorts come from different centres, so a model
trained on the labelled ones meets a domain shift, as on real multi-centre data.

Anatomy is scaled to the field of view (``size`` pixels × spacing), so a 64 px phantom is a
miniature chest that still has every structure.  Arrays are (z, y, x) with y pointing posterior
(LPS), so the spine is at the bottom of an axial slice shown with ``origin="upper"``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

AIR_HU = -1000.0
LUNG_HU = -850.0
MUSCLE_HU = 40.0
FAT_HU = -100.0
BONE_HU = 700.0
MARROW_HU = 250.0
BLOOD_HU = 40.0

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


def _rng(seed: int, *salt: str) -> np.random.Generator:
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


def _grid(nz: int, size: int, spacing_xy: float, step_z: float = 1.0):
    """Coordinates in mm centred in the field of view: z (``step_z`` mm), y (posterior +), x."""
    half = size * spacing_xy / 2.0
    c = (np.arange(size, dtype=np.float32) + 0.5) * spacing_xy - half
    z = ((np.arange(nz, dtype=np.float32) + 0.5) - nz / 2.0) * step_z
    return z[:, None, None], c[None, :, None], c[None, None, :], half


def _body_and_bones(Z, Y, X, fov_half: float, rng) -> tuple[np.ndarray, np.ndarray]:
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


def _lungs(Z, Y, X, fov_half: float, rng, nz: int) -> np.ndarray:
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


def _vessels(rng, shape, spacing_xy: float, lungs: np.ndarray, X, fov_half: float) -> np.ndarray:
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


def _blob(rng, Z, Y, X, centre_mm, radii_mm, irregularity: float, softness_mm: float,
          spacing_xy: float) -> np.ndarray:
    """Soft membership in [0, 1] of an irregular ellipsoid (restricted to its bounding box)."""
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


def _pick_lung_point(rng, lungs: np.ndarray, dist: np.ndarray, near_pleura_mm: float | None,
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
    rng = _rng(seed, kind, str(size), str(depth_mm))
    if centre is None:
        pool = COHORT_CENTRES["noncovid" if kind == "noncovid" else "covid"]
        centre = pool[rng.integers(len(pool))]
    site = CENTRES[centre]
    spacing_xy = float(np.round(rng.uniform(*site.spacing_mm), 3))
    thickness = float(site.thickness_mm[rng.integers(len(site.thickness_mm))])
    nz_out = max(2, int(round(depth_mm / thickness)))
    t = int(np.ceil(thickness))  # sub-slices of at most 1 mm, averaged to the slice thickness
    nz = nz_out * t
    Z, Y, X, fov_half = _grid(nz, size, spacing_xy, step_z=thickness / t)
    shape = (nz, size, size)

    hu_map, body = _body_and_bones(Z, Y, X, fov_half, rng)
    lungs = _lungs(Z, Y, X, fov_half, rng, nz)
    texture = 25.0 * smooth_noise(rng, shape, scale_px=1.5)
    hu_map[lungs] = LUNG_HU + texture[lungs]
    vessel = _vessels(rng, shape, spacing_xy, lungs, X, fov_half)
    hu_map += vessel * (BLOOD_HU - hu_map) * lungs

    lesion = np.zeros(shape, dtype=np.float32)
    lesion_hu = np.zeros(shape, dtype=np.float32)
    if kind != "healthy" and lungs.any():
        dist = ndi.distance_transform_edt(lungs, sampling=(thickness / t, spacing_xy, spacing_xy))
        lung_half_width = 0.40 * 0.88 * fov_half
        if kind == "covid":
            n_lesions = int(rng.integers(1, 7))
            for _ in range(n_lesions):
                p = _pick_lung_point(rng, lungs, dist, near_pleura_mm=0.25 * lung_half_width,
                                     min_depth_mm=0.05 * lung_half_width)
                if p is None:
                    break
                centre_mm = (Z.ravel()[p[0]], Y.ravel()[p[1]], X.ravel()[p[2]])
                r = lung_half_width * rng.uniform(0.25, 0.75) * (1.0 - 0.3 * d)
                radii = (max(2.0, r * rng.uniform(0.6, 1.4)), r * rng.uniform(0.7, 1.3),
                         r * rng.uniform(0.7, 1.3))
                w = _blob(rng, Z, Y, X, centre_mm, radii, irregularity=0.6 + 0.6 * d,
                          softness_mm=0.6 + 2.0 * d, spacing_xy=spacing_xy)
                ggo_high = -300.0 - 300.0 * d
                target = rng.uniform(ggo_high - 150.0, ggo_high)
                upd = w > lesion
                lesion_hu[upd] = target
                lesion = np.maximum(lesion, w)
                if rng.random() < 0.45:  # consolidation core
                    core = _blob(rng, Z, Y, X, centre_mm, tuple(0.45 * x for x in radii),
                                 irregularity=0.5, softness_mm=0.5 + d, spacing_xy=spacing_xy)
                    upd = core > 0.5
                    lesion_hu[upd] = rng.uniform(-100.0, 50.0)
                    lesion = np.maximum(lesion, core)
        else:  # noncovid: solid nodules / tumours anywhere in the lung
            for _ in range(int(rng.integers(1, 4))):
                r = lung_half_width * rng.uniform(0.10, 0.35)
                p = _pick_lung_point(rng, lungs, dist, near_pleura_mm=None, min_depth_mm=0.3 * r)
                if p is None:
                    break
                centre_mm = (Z.ravel()[p[0]], Y.ravel()[p[1]], X.ravel()[p[2]])
                radii = (max(2.0, r * rng.uniform(0.8, 1.2)), r, r * rng.uniform(0.8, 1.2))
                w = _blob(rng, Z, Y, X, centre_mm, radii, irregularity=0.4, softness_mm=0.5,
                          spacing_xy=spacing_xy)
                upd = w > lesion
                lesion_hu[upd] = rng.uniform(0.0, 60.0)
                lesion = np.maximum(lesion, w)
        lesion *= lungs
        # lesions replace the parenchyma but keep vessels visible through ground-glass
        hu_map = np.maximum(hu_map * (1 - lesion) + (lesion_hu + 0.5 * texture) * lesion, hu_map)

    # acquisition: kernel blur in-plane, partial-volume slab averaging, noise, calibration offset
    if site.blur_mm > 0:
        hu_map = ndi.gaussian_filter(hu_map, sigma=(0.3, site.blur_mm / spacing_xy,
                                                    site.blur_mm / spacing_xy))
    hu_out = hu_map[: nz_out * t].reshape(nz_out, t, size, size).mean(axis=1)
    lung_out = lungs[: nz_out * t].reshape(nz_out, t, size, size).mean(axis=1) >= 0.5
    les_out = lesion[: nz_out * t].reshape(nz_out, t, size, size).mean(axis=1) >= 0.5
    noise_sd = site.noise_hu * (1.0 + 0.8 * d)
    noise = rng.standard_normal(hu_out.shape).astype(np.float32)
    noise = ndi.gaussian_filter(noise, sigma=(0, 0.6, 0.6))
    noise *= noise_sd / max(float(noise.std()), 1e-6)
    hu_out = hu_out + noise * (hu_out > -1500) + site.hu_offset
    hu_out = np.clip(hu_out, -1024.0, 3071.0).astype(np.float32)
    infection = (les_out & lung_out).astype(np.uint8)
    image = hu_out if hu else hu_to_display(hu_out)
    return Phantom(image=image, infection=infection, lung=lung_out.astype(np.uint8),
                   spacing=(spacing_xy, spacing_xy, float(thickness)), centre=centre, kind=kind,
                   seed=seed, hu=hu)


def hu_to_display(hu: np.ndarray) -> np.ndarray:
    """Map HU to 0-255 display values with the lung window (how some public sets store CT)."""
    lo, hi = DISPLAY_WINDOW
    return np.round(np.clip((hu - lo) / (hi - lo), 0, 1) * 255.0).astype(np.float32)


def write_phantom(ph: Phantom, image_path: Path, infection_path: Path | None = None,
                  lung_path: Path | None = None, image: bool = True) -> None:
    """Write a phantom as NIfTI (or any SimpleITK format, by extension); ``image=False`` writes
    only its masks."""
    import SimpleITK as sitk

    def _img(arr, dtype):
        im = sitk.GetImageFromArray(arr.astype(dtype))
        im.SetSpacing(ph.spacing)
        nz, ny, nx = arr.shape
        im.SetOrigin((-nx * ph.spacing[0] / 2, -ny * ph.spacing[1] / 2, -nz * ph.spacing[2] / 2))
        return im

    if image:
        image_path.parent.mkdir(parents=True, exist_ok=True)
        img_dtype = np.int16 if ph.hu else np.uint8
        sitk.WriteImage(_img(np.round(ph.image), img_dtype), str(image_path), useCompression=True)
    if infection_path is not None:
        infection_path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(_img(ph.infection, np.uint8), str(infection_path), useCompression=True)
    if lung_path is not None:
        lung_path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(_img(ph.lung, np.uint8), str(lung_path), useCompression=True)


@dataclass(frozen=True)
class DemoSpec:
    """Size of the built-in demo cohort (``data=demo``)."""

    labelled: int = 30
    unlabelled: int = 20
    noncovid: int = 10
    size: int = 128
    depth_mm: int = 48
    difficulty: float = 0.5
    display_fraction: float = 0.0  # share of labelled cases stored as 0-255 display values
    seed: int = 0

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True) + f"|phantom-v{PHANTOM_VERSION}"
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


PHANTOM_VERSION = 2  # 2: the unlabelled cohort's true lesions are written (oracle truth)

# Folder layout of a demo cohort (read by the "demo" layout adapter): images, infection masks,
# lungs, and the oracle truth of unlabelled cases — their lesions, never used for training, only
# to measure pseudo-labels (``pseudolabel``'s ``oracle_*`` metrics)
DEMO_LAYOUT = {
    "labelled": ("covid/images", "covid/infection", "covid/lungs", None),
    "unlabelled": ("unlabelled/images", None, "unlabelled/lungs", "unlabelled/truth"),
    "noncovid": ("noncovid/images", "noncovid/masks", "noncovid/lungs", None),
}


def build_cohort(root: Path, spec: DemoSpec, progress: bool = False) -> Path:
    """Write the three demo cohorts under ``root`` (skipped when already complete)."""
    root = Path(root)
    done = root / "cohort.json"
    if done.exists():
        return root
    jobs = []
    for i in range(spec.labelled):
        hu = not (spec.display_fraction > 0 and (i % max(1, round(1 / spec.display_fraction))) == 1)
        jobs.append(("labelled", f"covid_{i:03d}", "covid", COHORT_CENTRES["covid"], hu, 1000 + i))
    for i in range(spec.unlabelled):
        jobs.append(("unlabelled", f"unlab_{i:03d}", "covid", COHORT_CENTRES["unlabelled"], True,
                     5000 + i))
    for i in range(spec.noncovid):
        jobs.append(("noncovid", f"nodule_{i:03d}", "noncovid", COHORT_CENTRES["noncovid"], True,
                     9000 + i))
    tmp = root.with_name(root.name + f".partial-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    iterator = jobs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(jobs, desc="building demo phantoms", unit="vol")
    for cohort, case_id, kind, centres, hu, offset in iterator:
        seed = spec.seed * 100_003 + offset
        centre = centres[_rng(seed, "centre").integers(len(centres))]
        ph = make_phantom(seed, size=spec.size, depth_mm=spec.depth_mm, kind=kind, centre=centre,
                          difficulty=spec.difficulty, hu=hu)
        img_dir, inf_dir, lung_dir, truth_dir = DEMO_LAYOUT[cohort]
        name = f"{case_id}.nii.gz"
        write_phantom(ph, tmp / img_dir / name, tmp / inf_dir / name if inf_dir else None,
                      tmp / lung_dir / name)
        if truth_dir:
            write_phantom(ph, tmp / img_dir / name, tmp / truth_dir / name, None, image=False)
    (tmp / "cohort.json").write_text(json.dumps({"spec": asdict(spec), "key": spec.key()},
                                                indent=1))
    if root.exists():  # another process finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, root)
    return root


# --- a public-looking 2D slice set --------------------------------------------------------------

SLICE_EXPORT_VERSION = 1


def export_demo_slices(out_dir, n_labelled: int = 60, n_test: int = 30, n_unlabelled: int = 0,
                       size=(100, 200), seed: int = 0, phantom_size: int = 192,
                       depth_mm: int = 48, slices_per_volume: int = 3,
                       difficulty: float = 0.5, jpg_fraction: float = 0.0,
                       empty_fraction: float = 0.0, min_lesion_px: int = 30) -> dict:
    """Write axial slices of phantom volumes the way a public 2D COVID set looks; return a summary.

    Each slice is mapped to 0-255 with the lung window (:data:`DISPLAY_WINDOW`), cut to the
    chest (the body's bounding box, table included, with a random margin of -3..12 % per side, so
    crops are not square) and resized so that its longer side is drawn from ``size`` (a
    ``(low, high)`` range in pixels, or one number); images are 8-bit PNG (a ``jpg_fraction`` share
    of them JPEG, quality 90), masks 0/255 PNG with the image's stem::

        train/images/train_v003_z07.png   train/masks/train_v003_z07.png
        test/images/test_v001_z04.png     test/masks/test_v001_z04.png
        unlabelled/images/unlab_v000_z05.png   (n_unlabelled > 0)

    Training, test and unlabelled slices come from different volumes (no patient in two splits),
    at most ``slices_per_volume`` per volume, at least 2 apart in z; the labelled ones are drawn
    among slices with at least ``min_lesion_px`` lesion pixels, in proportion to their lesion
    area (``empty_fraction``: share of slices drawn from lesion-free ones instead).  Volumes are
    the demo cohort's (``make_phantom``, the COVID cohort's centres for train/test, the shifted
    unlabelled centres for unlabelled).
    Deterministic by ``seed``; an export already in ``out_dir`` with the same settings is reused.
    The summary's ``images``/``masks``/``test_images``/``test_masks``/``unlabelled`` are glob
    patterns for ``preprocess dataset=glob``.
    """
    import cv2

    out = Path(out_dir)
    lo, hi = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if not 16 <= lo <= hi:
        raise ValueError(f"size={size!r}: need 16 <= low <= high")
    settings = {"version": SLICE_EXPORT_VERSION, "n_labelled": n_labelled, "n_test": n_test,
                "n_unlabelled": n_unlabelled, "size": [lo, hi], "seed": seed,
                "phantom_size": phantom_size, "depth_mm": depth_mm,
                "slices_per_volume": slices_per_volume, "difficulty": difficulty,
                "jpg_fraction": jpg_fraction, "empty_fraction": empty_fraction,
                "min_lesion_px": min_lesion_px, "phantom_version": PHANTOM_VERSION}
    index = out / "slices.json"
    if index.exists():
        done = json.loads(index.read_text())
        if done.get("settings") == settings:
            return done
    jobs = (("train", n_labelled, "covid", 1000, True), ("test", n_test, "covid", 3000, True),
            ("unlabelled", n_unlabelled, "unlabelled", 5000, False))
    files: dict[str, list[dict]] = {}
    for split, n_slices, cohort, offset, labelled in jobs:
        if n_slices <= 0:
            continue
        prefix = "unlab" if split == "unlabelled" else split
        rows: list[dict] = []
        volume = 0
        while len(rows) < n_slices:
            if volume > 20 * n_slices + 20:
                raise RuntimeError(f"export_demo_slices: not enough {split} slices with lesion")
            vseed = seed * 100_003 + offset + volume
            rng = _rng(vseed, "slice-export")
            pool = COHORT_CENTRES[cohort]
            centre = pool[_rng(vseed, "centre").integers(len(pool))]
            ph = make_phantom(vseed, size=phantom_size, depth_mm=depth_mm, kind="covid",
                              centre=centre, difficulty=difficulty, hu=True)
            area = ph.infection.reshape(ph.infection.shape[0], -1).sum(axis=1)
            lesion_z = np.flatnonzero(area >= min_lesion_px)
            empty_z = np.flatnonzero(area == 0)
            take = min(slices_per_volume, n_slices - len(rows))
            picks: list[int] = []
            for _ in range(take):
                want_empty = labelled and empty_fraction > 0 and rng.random() < empty_fraction
                cands = (empty_z if want_empty else lesion_z) if labelled else \
                    np.arange(area.size)  # unlabelled: any slice
                cands = np.array([z for z in cands if all(abs(z - p) >= 2 for p in picks)], int)
                if cands.size:  # lesion slices in proportion to their lesion area
                    w = area[cands].astype(float) + 1.0 if labelled and not want_empty else None
                    picks.append(int(rng.choice(cands, p=None if w is None else w / w.sum())))
            for z in sorted(picks):
                stem = f"{prefix}_v{volume:03d}_z{z:02d}"
                image, mask = _crop_slice(ph.image[z], ph.infection[z], rng, lo, hi)
                ext = ".jpg" if jpg_fraction > 0 and rng.random() < jpg_fraction else ".png"
                img_path = out / split / "images" / f"{stem}{ext}"
                img_path.parent.mkdir(parents=True, exist_ok=True)
                params = [cv2.IMWRITE_JPEG_QUALITY, 90] if ext == ".jpg" else []
                cv2.imwrite(str(img_path), image, params)
                row = {"stem": stem, "image": str(img_path.relative_to(out)),
                       "shape": [int(image.shape[0]), int(image.shape[1])], "centre": ph.centre,
                       "lesion_px": int((mask > 0).sum())}
                if labelled:
                    mask_path = out / split / "masks" / f"{stem}.png"
                    mask_path.parent.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(mask_path), mask)
                    row["mask"] = str(mask_path.relative_to(out))
                rows.append(row)
            volume += 1
        files[split] = rows
    summary = {"root": str(out), "settings": settings,
               "counts": {k: len(v) for k, v in files.items()},
               "images": "train/images/*" if "train" in files else "",
               "masks": "train/masks/*.png" if "train" in files else "",
               "test_images": "test/images/*" if "test" in files else "",
               "test_masks": "test/masks/*.png" if "test" in files else "",
               "unlabelled": "unlabelled/images/*" if "unlabelled" in files else "",
               "files": files}
    out.mkdir(parents=True, exist_ok=True)
    index.write_text(json.dumps(summary, indent=1))
    return summary


def _crop_slice(hu: np.ndarray, infection: np.ndarray, rng: np.random.Generator, lo: int,
                hi: int) -> tuple[np.ndarray, np.ndarray]:
    """(8-bit image, 0/255 mask) of one HU slice: lung window, chest crop, resized."""
    import cv2

    body = hu > -400.0
    ys, xs = np.nonzero(body)
    if ys.size == 0:
        ys, xs = np.array([0, hu.shape[0] - 1]), np.array([0, hu.shape[1] - 1])
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    h, w = y1 - y0, x1 - x0
    m = rng.uniform(-0.03, 0.12, 4)
    y0 = int(np.clip(y0 - m[0] * h, 0, hu.shape[0] - 8))
    y1 = int(np.clip(y1 + m[1] * h, y0 + 8, hu.shape[0]))
    x0 = int(np.clip(x0 - m[2] * w, 0, hu.shape[1] - 8))
    x1 = int(np.clip(x1 + m[3] * w, x0 + 8, hu.shape[1]))
    image = hu_to_display(hu[y0:y1, x0:x1]).astype(np.uint8)
    mask = infection[y0:y1, x0:x1].astype(np.uint8)
    longer = int(rng.integers(lo, hi + 1))
    scale = longer / max(image.shape)
    new_w = max(8, int(round(image.shape[1] * scale)))
    new_h = max(8, int(round(image.shape[0] * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    image = cv2.resize(image, (new_w, new_h), interpolation=interp)
    mask = cv2.resize(mask * 255, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return image, np.where(mask >= 128, 255, 0).astype(np.uint8)
