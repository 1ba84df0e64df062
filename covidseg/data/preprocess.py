"""Preprocessing: volumes in, a cached preprocessed dataset out (SPEC §3 preprocess).

Per case, in this order:

1. read (SimpleITK) and reorient to LPS; check masks against the image (shape, geometry,
   binary values) and the image for NaN;
2. choose the intensity scheme (``auto``: ``hu`` when the values look like HU, else ``image``);
3. extract the lungs on the original grid (lungmask with local weights on HU cases, the
   classical method otherwise, the dataset's own masks with ``provided``, nothing with ``none``);
4. resample in-plane to 1 × 1 mm, slice spacing unchanged (masks nearest neighbour); 2D slices
   (image files, which have no physical spacing, and one-slice volumes) are fitted to
   ``image_size`` instead (``slice_fit``: resized or padded, never cut);
5. ``hu``: clip to the lung window and z-score with the lung voxels' mean and std; ``image``:
   z-score over the lungs (or the foreground when there are none); outside the lungs → 0;
6. optionally crop/pad in-plane to ``image_size`` around the lungs; store.

Each labelled case also keeps its reference mask on the original grid (canonical orientation,
``original.npz``) with that grid's geometry, so that evaluation can score predictions where
published results are scored.  The dataset is keyed by a content hash of the input files and the settings, so an identical
second run is a cache hit.  Bad cases are recorded and skipped (``strict=true`` stops instead).
"""

from __future__ import annotations

import csv
import json
import logging
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from covidseg.config import PreprocessConfig
from covidseg.data import figures
from covidseg.data.fingerprint import dataset_fingerprint, fingerprint_metrics
from covidseg.data.geometry import (
    crop_box_in_plane,
    crop_or_pad_in_plane,
    resample_in_plane,
    resize_slices,
)
from covidseg.data.intensity import (
    choose_intensity_mode,
    foreground_mask,
    image_zscore,
    lung_window_zscore,
)
from covidseg.data.layouts import CaseRecord, build_manifest, combine_sources, write_manifest
from covidseg.data.lungs import (
    classical_lung_mask,
    find_lungmask_weights,
    lungmask_lung_mask,
)
from covidseg.data.readers import geometry_of, is_slice_image, read_image, to_canonical
from covidseg.data.splits import make_splits
from covidseg.data.store import (
    PreprocessedDataset,
    content_key,
    dataset_size_mb,
    file_digest,
    read_case_meta,
    write_case,
)
from covidseg.errors import (
    CaseError,
    ConfigError,
    EmptyMask,
    GeometryMismatch,
    MissingInput,
    NaNValues,
    NonBinaryMask,
    ShapeMismatch,
)
from covidseg.paths import cache_root
from covidseg.tracking import NullTracker

log = logging.getLogger("covidseg.preprocess")

HIST_BINS_HU = np.linspace(-1250.0, 250.0, 76)
HIST_BINS_DISPLAY = np.linspace(0.0, 255.0, 52)
HIST_BINS_Z = np.linspace(-5.0, 5.0, 81)
PREPROCESS_VERSION = 3  # 2: truth.npy (oracle lesions of unlabelled demo cases); 3: original.npz


@dataclass
class CaseOutput:
    image: np.ndarray
    infection: np.ndarray | None
    lung: np.ndarray | None
    meta: dict
    before: np.ndarray | None = None  # resampled intensities before normalisation (figures)
    truth: np.ndarray | None = None  # oracle lesions of an unlabelled demo case
    original: np.ndarray | None = None  # the reference mask on the original (canonical) grid
    lung_original: np.ndarray | None = None  # the lung mask on the original (canonical) grid


# --- inputs ---------------------------------------------------------------------------------

def _mm(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ") mm"


def _check_geometry(mask_img: sitk.Image, ref: sitk.Image, path, ref_path) -> None:
    if mask_img.GetSize() != ref.GetSize():
        raise ShapeMismatch(path, f"mask size {mask_img.GetSize()} differs from image size "
                                  f"{ref.GetSize()} ({Path(ref_path).name})")
    sp_m, sp_i = np.array(mask_img.GetSpacing()), np.array(ref.GetSpacing())
    if not np.allclose(sp_m, sp_i, rtol=1e-3, atol=1e-4):
        raise GeometryMismatch(path, f"mask spacing {_mm(sp_m)} differs from the image's "
                                     f"{_mm(sp_i)} ({Path(ref_path).name})")
    tol = 0.5 * float(sp_i.min())
    if not np.allclose(mask_img.GetOrigin(), ref.GetOrigin(), atol=tol):
        raise GeometryMismatch(path, f"mask origin {_mm(mask_img.GetOrigin())} differs from the "
                                     f"image's {_mm(ref.GetOrigin())} ({Path(ref_path).name})")
    if not np.allclose(mask_img.GetDirection(), ref.GetDirection(), atol=1e-3):
        raise GeometryMismatch(path, f"mask orientation differs from the image's ({Path(ref_path).name})")


def read_mask(path, ref_image: sitk.Image, ref_path, kind: str,
              labels: str = "binary") -> np.ndarray:
    """A (z, y, x) mask aligned with the canonical image: binary (lung label maps and 0/255
    masks become binary), or with ``labels=multiclass`` an infection label map
    (0 background, 1 ground-glass, 2 consolidation) as uint8."""
    m = read_image(path)
    if is_slice_image(Path(path)):
        m.CopyInformation(ref_image) if m.GetSize() == ref_image.GetSize() else None
    m = to_canonical(m)
    _check_geometry(m, ref_image, path, ref_path)
    arr = sitk.GetArrayFromImage(m)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise NaNValues(path, "mask has NaN or infinite values")
        if not np.all(arr == np.round(arr)):
            raise NonBinaryMask(path, "mask has fractional values; expected 0/1 labels")
    values = np.unique(arr)
    if kind == "infection":
        shown = ", ".join(str(v) for v in values[:6]) + (" …" if len(values) > 6 else "")
        if labels == "multiclass":
            if set(values.tolist()) - {0, 1, 2}:
                raise NonBinaryMask(path, f"labels=multiclass expects 0 background, 1 ground-glass, "
                                          f"2 consolidation (values {shown})")
            return arr.astype(np.uint8)
        if set(values.tolist()) - {0, 1} and set(values.tolist()) - {0, 255}:
            hint = " (labels=multiclass reads 0/1/2 as ground-glass/consolidation)" \
                if set(values.tolist()) <= {0, 1, 2} else ""
            raise NonBinaryMask(path, f"infection mask is not binary (values {shown}){hint}")
    elif values.min() < 0:
        raise NonBinaryMask(path, "lung mask has negative labels")
    return arr > 0


def _decide_lung_method(requested: str, hu: bool, slice_mode: bool, weights: Path | None,
                        record: CaseRecord) -> tuple[str, str]:
    """(method, note)."""
    if requested == "auto":
        if slice_mode:
            return "none", "2D slice image"
        if weights is not None and hu:
            return "lungmask", ""
        return "classical", "" if weights is None else "lungmask skipped: not HU"
    if requested == "lungmask" and not hu:
        return "classical", "lungmask skipped: not HU"
    if requested == "provided" and not record.lung:
        raise MissingInput(record.image, "lung_method=provided but this case has no lung mask")
    return requested, ""


def _histogram(values: np.ndarray, bins: np.ndarray) -> list[int]:
    return np.histogram(values, bins=bins)[0].astype(int).tolist()


def preprocess_case(record: CaseRecord, cfg: PreprocessConfig, weights: Path | None,
                    force_cpu: bool = True, keep_before: bool = False,
                    original: sitk.Image | None = None) -> CaseOutput:
    """Preprocess one case (``original``: its image, when the caller has read it already);
    raises a one-line :class:`CaseError` on bad input."""
    original = original if original is not None else read_image(record.image)
    geometry = geometry_of(original)
    image = to_canonical(original)
    arr = sitk.GetArrayFromImage(image).astype(np.float32)
    n_bad = int(arr.size - np.isfinite(arr).sum())
    if n_bad:
        raise NaNValues(record.image, f"{n_bad} voxels are NaN or infinite")
    # image files and one-slice volumes alike are 2D slices: fitted to image_size, never cut
    slice_mode = is_slice_image(Path(record.image)) or image.GetSize()[2] == 1
    infection = read_mask(record.infection, image, record.image, "infection", cfg.labels) \
        if record.infection else None
    truth = read_mask(record.truth, image, record.image, "infection") if record.truth else None
    mode, hu_like = choose_intensity_mode(arr, cfg.intensity, record.image)
    method, note = _decide_lung_method(cfg.lung_method, mode == "hu", slice_mode, weights, record)

    lung = None
    if method == "lungmask":
        lung = lungmask_lung_mask(image, weights, force_cpu=force_cpu)
    elif method == "classical":
        lung = classical_lung_mask(arr, image.GetSpacing(), hu=(mode == "hu"))
    elif method == "provided":
        lung = read_mask(record.lung, image, record.image, "lung")
    if lung is not None and not lung.any():
        raise EmptyMask(record.lung if method == "provided" else record.image,
                        f"lung extraction ({method}) found no lung voxels")
    coverage = None
    if infection is not None and lung is not None and infection.any():
        lesion_o = infection > 0  # a multi-class label map counts each lesion voxel once
        coverage = float((lesion_o & lung).sum() / lesion_o.sum())

    # 4. geometry
    spacing_in = [float(s) for s in image.GetSpacing()]
    if slice_mode:
        size, fit = cfg.image_size, cfg.slice_fit
        fill = float(arr.min())

        def _fit(mask):
            if mask is None or not size:
                return mask
            out = resize_slices(mask.astype(np.uint8), size, label=True, fit=fit)
            return out.astype(bool) if mask.dtype == bool else out

        arr_r = resize_slices(arr, size, fill=fill, fit=fit) if size else arr
        inf_r, lung_r, truth_r = _fit(infection), _fit(lung), _fit(truth)
        spacing_out = None  # pixel units: a slice's spacing (if any) is kept for original-grid metrics
    else:
        fill = float(arr.min())
        arr_r = sitk.GetArrayFromImage(resample_in_plane(sitk.Cast(image, sitk.sitkFloat32), 1.0,
                                                         fill=fill))

        def _res(mask):
            if mask is None:
                return None
            m = sitk.GetImageFromArray(mask.astype(np.uint8))
            m.CopyInformation(image)
            out = sitk.GetArrayFromImage(resample_in_plane(m, 1.0, label=True))
            return out.astype(bool) if mask.dtype == bool else out

        inf_r, lung_r, truth_r = _res(infection), _res(lung), _res(truth)
        spacing_out = [1.0, 1.0, spacing_in[2]]

    # 5. intensity
    region = lung_r
    if mode == "hu":
        if region is None:
            region = foreground_mask(arr_r)
        out, stats = lung_window_zscore(arr_r, region, (cfg.window_min, cfg.window_max), cfg.hist_eq)
    else:
        out, stats = image_zscore(arr_r, region, cfg.hist_eq, zero_outside=region is not None)
        if region is None:
            region = foreground_mask(arr_r)

    # 6. in-plane crop / pad around the lungs on the 1 mm grid
    crop = None
    lung_lost = 0.0
    if cfg.image_size and not slice_mode:
        ref = lung_r if lung_r is not None and lung_r.any() else region
        ys, xs = np.nonzero(ref.any(axis=0))
        centre = ((ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2) if ys.size else \
            (out.shape[1] / 2, out.shape[2] / 2)
        crop = crop_box_in_plane(out.shape[1:], cfg.image_size, centre)
        before_lung = int(lung_r.sum()) if lung_r is not None else 0
        out = crop_or_pad_in_plane(out, cfg.image_size, crop, 0.0)
        inf_r = crop_or_pad_in_plane(inf_r, cfg.image_size, crop, 0) if inf_r is not None else None
        lung_r = crop_or_pad_in_plane(lung_r, cfg.image_size, crop, False) if lung_r is not None else None
        truth_r = crop_or_pad_in_plane(truth_r, cfg.image_size, crop, False) if truth_r is not None else None
        if before_lung:
            lung_lost = 1.0 - float(lung_r.sum()) / before_lung
        region = crop_or_pad_in_plane(region, cfg.image_size, crop, False)
        arr_r = crop_or_pad_in_plane(arr_r, cfg.image_size, crop, fill)

    voxel_ml = (spacing_out[0] * spacing_out[1] * spacing_out[2] / 1000.0) if spacing_out else None
    vals_before = arr_r[region]
    lesion = inf_r > 0 if inf_r is not None else None
    meta = {
        "case_id": record.case_id,
        "source": record.source,
        "labelled": bool(infection is not None),
        "split": record.split,
        "grade": record.grade,
        "task": record.task,
        "has_truth": truth_r is not None,
        "slice_image": slice_mode,
        "slice_fit": cfg.slice_fit if slice_mode else None,
        "labels": cfg.labels,
        "canonical_geometry": geometry_of(image),  # the grid original-grid metrics are scored on
        "intensity": mode,
        "looked_like_hu": hu_like,
        "lung_method": method,
        "lung_note": note,
        "shape": list(out.shape),
        "spacing": spacing_out,
        "spacing_in": spacing_in,
        "geometry": geometry,  # original geometry, to write predictions back
        "crop_corner_yx": list(crop) if crop else None,
        "lung_lost_by_crop": lung_lost,
        "infection_in_lung": coverage,
        "lesion_fraction": (float(lesion[lung_r].mean()) if (lesion is not None and lung_r is not None
                                                             and lung_r.any()) else
                            (float(lesion.mean()) if lesion is not None else None)),
        "lung_volume_ml": float(lung_r.sum() * voxel_ml) if (lung_r is not None and voxel_ml) else None,
        "lesion_volume_ml": float(lesion.sum() * voxel_ml) if (lesion is not None and voxel_ml) else None,
        "lesion_pixels": int(lesion.sum()) if lesion is not None else None,
        "lesion_slices": int(lesion.any(axis=(1, 2)).sum()) if lesion is not None else None,
        "before_mean": float(vals_before.mean()) if vals_before.size else None,
        "before_std": float(vals_before.std()) if vals_before.size else None,
        "before_p1": float(np.percentile(vals_before, 1)) if vals_before.size else None,
        "before_p99": float(np.percentile(vals_before, 99)) if vals_before.size else None,
        "hist_before": _histogram(vals_before, HIST_BINS_HU if mode == "hu" else HIST_BINS_DISPLAY),
        "hist_after": _histogram(out[region], HIST_BINS_Z),
        **stats,
    }
    if cfg.labels == "multiclass" and inf_r is not None:
        meta["class_pixels"] = [int((inf_r == k).sum()) for k in (1, 2)]
    return CaseOutput(out, inf_r, lung_r, meta, arr_r if keep_before else None, truth_r,
                      infection, lung)


# --- dataset --------------------------------------------------------------------------------

def resolve_inputs(cfg: PreprocessConfig, progress: bool = True) -> tuple[Path, str, list[CaseRecord]]:
    """The data folder (building the demo cohort for ``data=demo``), its layout and manifest."""
    patterns = {k: getattr(cfg, k) for k in ("images", "masks", "test_images", "test_masks",
                                              "unlabelled", "lungs")}
    if cfg.sources:
        if cfg.task:
            raise ConfigError(f"task={cfg.task} applies to one data folder: with sources= give "
                              "each source its own task")
        records = combine_sources(cfg.sources)
        return Path(cfg.sources).expanduser().resolve().parent, "sources", _with_task(records, cfg)
    given = {k: v for k, v in patterns.items() if v}
    if given:
        return _glob_inputs(cfg, patterns, given)
    if cfg.dataset == "glob":
        raise ConfigError("dataset=glob needs glob patterns: images= (with masks=), test_images= "
                          "or unlabelled=" + (" (data=demo is the synthetic cohort)"
                                              if cfg.data == "demo" else ""))
    if cfg.data == "demo":
        from covidseg.data.phantom import DemoSpec, build_cohort

        spec = DemoSpec(labelled=cfg.demo_labelled, unlabelled=cfg.demo_unlabelled,
                        noncovid=cfg.demo_noncovid, size=cfg.demo_size, depth_mm=cfg.demo_depth,
                        difficulty=cfg.demo_difficulty,
                        display_fraction=cfg.demo_display_fraction, seed=0)
        root = build_cohort(cache_root() / "demo" / spec.key(), spec, progress=progress)
        dataset = "demo" if cfg.dataset == "auto" else cfg.dataset
        return (root, *build_manifest(root, dataset))
    if not cfg.data:
        raise ConfigError("data= is empty: give a folder or 'demo'")
    root = Path(cfg.data).expanduser()
    if not root.exists():
        raise ConfigError(f"{root}: data folder does not exist")
    dataset, records = build_manifest(root, cfg.dataset, **patterns)
    return root, dataset, _with_task(records, cfg)


def _glob_inputs(cfg: PreprocessConfig, patterns: dict, given: dict):
    """The glob adapter for patterns given on the command line: relative to ``data`` (a folder),
    or absolute (then ``data`` may stay ``demo`` or empty: the patterns say where the data is)."""
    import os

    if not any(given.get(k) for k in ("images", "test_images", "unlabelled")):
        raise ConfigError(f"{', '.join(k + '=' for k in given)} given without images=, "
                          "test_images= or unlabelled=: masks pair with images by name")
    for img, msk in (("images", "masks"), ("test_images", "test_masks")):
        if given.get(msk) and not given.get(img):
            raise ConfigError(f"{msk}= given without {img}=")
    if cfg.dataset not in ("auto", "glob"):
        raise ConfigError(f"images=/masks=/unlabelled= patterns are read by dataset=glob, "
                          f"not dataset={cfg.dataset}")
    patterns = {k: os.path.expanduser(v) if v else v for k, v in patterns.items()}
    relative = [f"{k}={v}" for k, v in given.items() if not Path(patterns[k]).is_absolute()]
    if cfg.data in ("demo", ""):
        if relative:
            raise ConfigError(f"{relative[0]} is a relative pattern: give data=FOLDER (what it is "
                              "relative to) or an absolute pattern"
                              + (" (data=demo is the synthetic cohort)" if cfg.data else ""))
        fixed = [re.split(r"[*?\[]", patterns[k], maxsplit=1)[0] for k in given]
        root = Path(os.path.commonpath([os.path.dirname(f) or "/" for f in fixed]))
    else:
        root = Path(cfg.data).expanduser()
        if not root.exists():
            raise ConfigError(f"{root}: data folder does not exist")
    dataset, records = build_manifest(root, "glob", **patterns)
    return root, dataset, _with_task(records, cfg)


def _with_task(records: list[CaseRecord], cfg: PreprocessConfig) -> list[CaseRecord]:
    for r in records if cfg.task else []:
        r.task = cfg.task
    return records


def code_digest() -> str:
    """Digest of the code that shapes a preprocessed dataset: a change re-processes, not reuses."""
    import hashlib

    here = Path(__file__).parent
    h = hashlib.sha256()
    for name in ("preprocess.py", "intensity.py", "lungs.py", "geometry.py", "readers.py",
                 "layouts.py", "splits.py", "fingerprint.py", "store.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def _settings(cfg: PreprocessConfig, weights: Path | None) -> dict:
    return {
        "version": PREPROCESS_VERSION,
        "code": code_digest(),
        "intensity": cfg.intensity, "lung_method": cfg.lung_method,
        "lung_weights": file_digest(weights) if weights else None,
        "image_size": cfg.image_size, "window": [cfg.window_min, cfg.window_max],
        "hist_eq": cfg.hist_eq, "store_dtype": cfg.store_dtype,
        "slice_fit": cfg.slice_fit, "labels": cfg.labels,
        "test_cases": cfg.test_cases, "folds": cfg.folds, "seed": cfg.seed,
    }


def preprocess_dataset(cfg: PreprocessConfig, tracker=None, progress: bool = True) -> dict:
    """Build (or find in the cache) the preprocessed dataset; log it; return a summary."""
    tracker = tracker or NullTracker()
    cfg.validate()
    if cfg.window_min >= cfg.window_max:
        raise ConfigError(f"window_min={cfg.window_min} must be below window_max={cfg.window_max}")
    root, dataset, records = resolve_inputs(cfg, progress)
    return preprocess_records(records, cfg, tracker, root=root, dataset=dataset, progress=progress)


def preprocess_records(records: list[CaseRecord], cfg: PreprocessConfig, tracker=None,
                       root: Path | None = None, dataset: str = "manifest",
                       progress: bool = True) -> dict:
    """Preprocess the cases of a manifest into the cache (or find them there); log; summarise."""
    tracker = tracker or NullTracker()
    root = root or Path(".")
    weights = None
    if cfg.lung_method in ("auto", "lungmask"):
        weights = find_lungmask_weights(cfg.lung_weights or None, cfg.lung_model)
        if cfg.lung_method == "lungmask" and weights is None:
            raise ConfigError("lung_method=lungmask needs local weights: pass lung_weights=FILE "
                              "(covidseg never downloads them)")
        volumes = any(not is_slice_image(Path(r.image)) for r in records)
        if weights is None and volumes:  # 2D slice images get no lung extraction anyway
            log.warning("lungmask weights not found locally: using the classical lung extraction")
    key = content_key(records, _settings(cfg, weights))
    out = cache_root() / "preprocessed" / key
    cache_hit = (out / "dataset.json").exists()
    t0 = time.time()
    if not cache_hit:
        _build(cfg, records, weights, out, dataset, root, key, progress)
    elif cfg.strict:  # the cached dataset may hold failures recorded by a non-strict run
        with open(out / "failed.csv", newline="") as fh:
            first = next(csv.DictReader(fh), None)
        if first:
            raise CaseError(first["path"], first["error"].split(": ", 1)[-1], first["case_id"])
    ds = PreprocessedDataset(out)
    summary = _log_dataset(ds, tracker, cfg, cache_hit, time.time() - t0)
    return summary


def _build(cfg, records, weights, out: Path, dataset: str, root: Path, key: str,
           progress: bool) -> None:
    import torch
    from tqdm import tqdm

    force_cpu = not (cfg.device in ("auto", "cuda") and torch.cuda.is_available())
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(records, out / "manifest.csv")
    metas: dict[str, dict] = {}
    failed: list[dict] = []
    example: CaseOutput | None = None  # the volume with the most lesion, for the 3-view figure
    slice_examples: list[CaseOutput] = []  # 2D slices with lesion, for the slice figure
    bar = tqdm(records, desc="preprocess", unit="case", disable=not progress)
    for rec in bar:
        case_dir = out / "cases" / rec.case_id
        done = read_case_meta(case_dir)
        if done is not None:  # finished by an earlier, interrupted run
            metas[rec.case_id] = done
            continue
        try:
            res = preprocess_case(rec, cfg, weights, force_cpu=force_cpu, keep_before=True)
        except CaseError as exc:
            if cfg.strict:
                raise
            failed.append({"case_id": rec.case_id, "path": exc.path or rec.image,
                           "kind": exc.kind, "error": str(exc)})
            log.warning("case %s failed: %s", rec.case_id, exc)
            continue
        write_case(case_dir, res.image, res.infection, res.lung, res.meta, cfg.store_dtype,
                   truth=res.truth, original=res.original)
        metas[rec.case_id] = res.meta
        if res.meta["slice_image"]:
            if len(slice_examples) < 4 and (res.meta["lesion_pixels"] or 0) > 0:
                slice_examples.append(res)
        elif example is None or _lesion(res) > _lesion(example):
            example = res
    bar.close()
    ok = [m for m in metas.values()]
    if not ok:
        raise ConfigError(f"{root}: no case could be preprocessed ({len(failed)} failed; first: "
                          f"{failed[0]['error'] if failed else 'none'})")
    target = [m for m in ok if m["labelled"] and m["task"] == "infection"]
    labelled = [m["case_id"] for m in target]
    official = [m["case_id"] for m in target if m.get("split") == "test"]
    not_test = [m["case_id"] for m in target if m.get("split") == "train"]
    # the unlabelled pool is COVID CT: a non-COVID source's unlabelled volumes stay out of it
    unlabelled = [m["case_id"] for m in ok if not m["labelled"] and m["task"] == "infection"]
    auxiliary = [m["case_id"] for m in ok if m["labelled"] and m["task"] != "infection"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = make_splits(labelled, cfg.test_cases, cfg.folds, cfg.seed, official, unlabelled,
                             not_test) \
            if labelled else {"seed": cfg.seed, "test": [], "test_is_official": False, "folds": [],
                              "unlabelled": unlabelled}
    for w in caught:
        log.warning("%s", w.message)
    splits["auxiliary"] = sorted(auxiliary)  # labelled non-COVID cases (supervised pretraining)
    fp = dataset_fingerprint(ok, n_failed=len(failed))
    (out / "splits.json").write_text(json.dumps(splits, indent=1))
    (out / "fingerprint.json").write_text(json.dumps(fp, indent=1))
    with open(out / "failed.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["case_id", "path", "kind", "error"])
        w.writeheader()
        w.writerows(failed)
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    # a figure that cannot be drawn is skipped with a warning: it never fails the run
    figures.draw(fig_dir / "spacing_per_source.png", figures.spacing_scatter, ok)
    figures.draw(fig_dir / "intensity_histogram_before_after.png", figures.intensity_histograms,
                 ok, HIST_BINS_HU, HIST_BINS_DISPLAY, HIST_BINS_Z)
    if example is not None:
        figures.draw(fig_dir / f"lung_filtering_3views_volume_{example.meta['case_id']}.png",
                     figures.lung_filtering_views, example.before, example.image, example.lung,
                     example.infection, example.meta)
    if slice_examples:
        figures.draw(fig_dir / "slices_before_after.png", figures.slice_views,
                     [(e.before, e.image, e.infection, e.meta) for e in slice_examples])
    descriptor = {
        "key": key,
        "store_version": 1,
        "dataset": dataset,
        "data_root": str(root),
        "config": cfg.to_params(),
        "n_cases": len(ok),
        "n_failed": len(failed),
        "cases": [metas[r.case_id] for r in records if r.case_id in metas],
        "fingerprint": fp,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    tmp = out / "dataset.json.tmp"
    tmp.write_text(json.dumps(descriptor, indent=1, default=float))
    tmp.replace(out / "dataset.json")


def _lesion(res: CaseOutput) -> float:
    return float(res.meta["lesion_volume_ml"] or res.meta["lesion_pixels"] or 0)


def _log_dataset(ds: PreprocessedDataset, tracker, cfg, cache_hit: bool, seconds: float) -> dict:
    root = ds.root
    desc = ds.descriptor
    fp = desc["fingerprint"]
    tracker.set_tags({"covidseg.dataset_key": ds.key, "covidseg.cache_hit": str(cache_hit).lower(),
                      "covidseg.dataset_path": str(root), "covidseg.layout": desc["dataset"]})
    metrics = fingerprint_metrics(fp)
    metrics.update({"n_cases": desc["n_cases"], "n_failed": desc["n_failed"],
                    "n_unlabelled": len(ds.splits["unlabelled"]),
                    "n_auxiliary": len(ds.splits.get("auxiliary", [])),
                    "n_test": len(ds.splits["test"]), "n_folds": len(ds.splits["folds"]),
                    "seconds": seconds})
    tracker.log_metrics(metrics)
    for name in ("dataset.json", "splits.json", "fingerprint.json", "failed.csv", "manifest.csv"):
        tracker.log_artifact(root / name, "dataset" if name == "dataset.json" else "preprocess")
    for png in sorted((root / "figures").glob("*.png")):
        tracker.log_artifact(png, "figures")
    per_case = [{k: m.get(k) for k in ("case_id", "source", "labelled", "intensity", "looked_like_hu",
                                       "lung_method", "lung_note", "spacing_in", "shape",
                                       "slice_fit",
                                       "lesion_fraction", "infection_in_lung", "lung_volume_ml",
                                       "lesion_volume_ml")} for m in desc["cases"]]
    tracker.log_table(per_case, "preprocess/cases.csv")
    size_mb = dataset_size_mb(root)
    # the arrays go to the server once per dataset key: a cache hit points at the run that has them
    holder = tracker.find_run({"covidseg.dataset_key": ds.key, "covidseg.dataset_uploaded": "true"}) \
        if cache_hit else None
    uploaded = holder is None and size_mb <= cfg.log_dataset_mb
    if uploaded:
        tracker.log_artifacts(root / "cases", "dataset/cases")
        tracker.log_artifact(root / "splits.json", "dataset")
        holder = tracker.run_id
    tracker.set_tags({"covidseg.dataset_uploaded": str(uploaded).lower(),
                      **({"covidseg.dataset_run": holder} if holder else {})})
    modes = {m["intensity"] for m in desc["cases"]}
    if len(modes) > 1 or cfg.intensity == "auto" and "image" in modes:
        n_img = sum(m["intensity"] == "image" for m in desc["cases"])
        log.warning("intensity=auto: %d of %d cases are not in HU and were z-scored as images "
                    "(column 'intensity' of preprocess/cases.csv)", n_img, len(desc["cases"]))
    return {"dataset_path": str(root), "key": ds.key, "cache_hit": cache_hit,
            "n_cases": desc["n_cases"], "n_failed": desc["n_failed"], "size_mb": size_mb,
            "uploaded": uploaded, "run_id": tracker.run_id}
