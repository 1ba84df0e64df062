"""A manifest of cases into the cached preprocessed dataset (its on-disk format:
:mod:`covidseg.data.store`): each case through :func:`~covidseg.data.steps.preprocess_case`, then
splits, fingerprint, figures and ``dataset.json``.  No MLflow here: what a run logs of the
dataset is decided by the stage, :mod:`covidseg.stages.preprocess`.

Each labelled case also keeps its reference mask on the original grid (canonical orientation,
``original.npz``) with that grid's geometry, so that evaluation can score predictions where
published results are scored.  The dataset is keyed by a content hash of the input files and the
settings (this code's digest included), so an identical second run is a cache hit.  Bad cases are
recorded and skipped (``strict=true`` stops instead).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import NamedTuple

from covidseg.base.errors import CaseError, ConfigError
from covidseg.base.paths import cache_root
from covidseg.data import figures
from covidseg.data.case import HIST_BINS_DISPLAY, HIST_BINS_HU, HIST_BINS_Z, CaseOutput
from covidseg.data.fingerprint import dataset_fingerprint
from covidseg.data.layouts import CaseRecord, write_manifest
from covidseg.data.lungs import find_lungmask_weights
from covidseg.data.readers import is_slice_image
from covidseg.data.settings import PreprocessSettings, SplitSettings
from covidseg.data.splits import Splits, make_splits
from covidseg.data.steps import preprocess_case
from covidseg.data.store import (
    PreprocessedDataset,
    content_key,
    file_digest,
    read_case_meta,
    write_case,
)

log = logging.getLogger("covidseg.preprocess")

PREPROCESS_VERSION = 3  # 2: truth.npy (oracle lesions of unlabelled demo cases); 3: original.npz
CODE = ("preprocess.py", "steps.py", "case.py", "masks.py", "inputs.py", "intensity.py",
        "lungs.py", "geometry.py", "readers.py",
        *(f"layouts/{m}.py" for m in ("__init__", "manifest", "public", "nnunet_raw", "patterns",
                                      "adapters", "sources")),
        "splits.py", "fingerprint.py", "store.py", "settings.py", "vocabulary.py")


def code_digest() -> str:
    """Digest of the code that shapes a preprocessed dataset: a change re-processes, not reuses."""
    import hashlib

    here = Path(__file__).parent
    h = hashlib.sha256()
    for name in CODE:
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def _settings(settings: PreprocessSettings, splits: SplitSettings, weights: Path | None) -> dict:
    """What the dataset's key covers besides its input files."""
    return {
        "version": PREPROCESS_VERSION,
        "code": code_digest(),
        "intensity": settings.intensity, "lung_method": settings.lung_method,
        "lung_weights": file_digest(weights) if weights else None,
        "image_size": settings.image_size, "window": list(settings.window),
        "hist_eq": settings.hist_eq, "store_dtype": settings.store_dtype,
        "slice_fit": settings.slice_fit, "labels": settings.labels,
        "test_cases": splits.test_cases, "folds": splits.folds, "seed": splits.seed,
    }


def _lung_weights(settings: PreprocessSettings, records: list[CaseRecord]) -> Path | None:
    """The local lungmask weights the run uses (None: classical extraction)."""
    if settings.lung_method not in ("auto", "lungmask"):
        return None
    weights = find_lungmask_weights(settings.lung_weights or None, settings.lung_model)
    if settings.lung_method == "lungmask" and weights is None:
        raise ConfigError("lung_method=lungmask needs local weights: pass lung_weights=FILE "
                          "(covidseg never downloads them)")
    volumes = any(not is_slice_image(Path(r.image)) for r in records)
    if weights is None and volumes:  # 2D slice images get no lung extraction anyway
        log.warning("lungmask weights not found locally: using the classical lung extraction")
    return weights


class Built(NamedTuple):
    dataset: PreprocessedDataset
    cache_hit: bool
    seconds: float  # building it (or finding it)


def build_dataset(records: list[CaseRecord], settings: PreprocessSettings,
                  splits: SplitSettings, params: dict[str, str], root: Path | None = None,
                  dataset: str = "manifest", strict: bool = False, device: str = "auto",
                  progress: bool = True) -> Built:
    """Preprocess the cases of a manifest into the cache, or find them there (``params``: the
    run's parameters, ``root``: the data folder, ``dataset``: its layout, all recorded in
    ``dataset.json``; ``strict``: stop at the first bad case; ``device``: auto, cpu or cuda, where
    lungmask runs)."""
    root = root or Path(".")
    weights = _lung_weights(settings, records)
    key = content_key(records, _settings(settings, splits, weights))
    out = cache_root() / "preprocessed" / key
    cache_hit = (out / "dataset.json").exists()
    t0 = time.time()
    if not cache_hit:
        out.mkdir(parents=True, exist_ok=True)
        write_manifest(records, out / "manifest.csv")
        metas, failed, example, slice_examples = _process_cases(
            settings, records, weights, out, strict, device, progress)
        _describe(records, metas, failed, example, slice_examples, splits, params,
                  out, dataset, root, key)
    elif strict:  # the cached dataset may hold failures recorded by a non-strict run
        with open(out / "failed.csv", newline="") as fh:
            first = next(csv.DictReader(fh), None)
        if first:
            raise CaseError(first["path"], first["error"].split(": ", 1)[-1], first["case_id"])
    return Built(PreprocessedDataset(out), cache_hit, time.time() - t0)


def _describe(records, metas: dict[str, dict], failed: list[dict], example, slice_examples,
              split_settings: SplitSettings, params: dict[str, str], out: Path, dataset: str,
              root: Path, key: str) -> None:
    """Splits, fingerprint, failures, figures and ``dataset.json`` of the processed cases."""
    ok = [m for m in metas.values()]
    if not ok:
        raise ConfigError(f"{root}: no case could be preprocessed ({len(failed)} failed; first: "
                          f"{failed[0]['error'] if failed else 'none'})")
    splits = _splits(ok, split_settings)
    fp = dataset_fingerprint(ok, n_failed=len(failed))
    (out / "splits.json").write_text(json.dumps(splits.to_json(), indent=1))
    (out / "fingerprint.json").write_text(json.dumps(fp, indent=1))
    with open(out / "failed.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["case_id", "path", "kind", "error"])
        w.writeheader()
        w.writerows(failed)
    _draw_figures(out / "figures", ok, example, slice_examples)
    descriptor = {
        "key": key,
        "store_version": 1,
        "dataset": dataset,
        "data_root": str(root),
        "config": dict(params),
        "n_cases": len(ok),
        "n_failed": len(failed),
        "cases": [metas[r.case_id] for r in records if r.case_id in metas],
        "fingerprint": fp,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    tmp = out / f"dataset.json.{os.getpid()}.tmp"  # processes building the same key at once
    tmp.write_text(json.dumps(descriptor, indent=1, default=float))
    tmp.replace(out / "dataset.json")


def _process_cases(settings: PreprocessSettings, records, weights, out: Path, strict: bool,
                   device: str, progress: bool):
    """Each case preprocessed and written (one finished by an interrupted run is kept): (metas by
    id, failures, the volume with the most lesion, up to 4 slices with lesion — for figures)."""
    import torch
    from tqdm import tqdm

    force_cpu = not (device in ("auto", "cuda") and torch.cuda.is_available())
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
            res = preprocess_case(rec, settings, weights, force_cpu=force_cpu, keep_before=True)
        except CaseError as exc:
            if strict:
                raise
            failed.append({"case_id": rec.case_id, "path": exc.path or rec.image,
                           "kind": exc.kind, "error": str(exc)})
            log.warning("case %s failed: %s", rec.case_id, exc)
            continue
        write_case(case_dir, res.image, res.infection, res.lung, res.meta, settings.store_dtype,
                   truth=res.truth, original=res.original)
        metas[rec.case_id] = res.meta
        if res.meta["slice_image"]:
            if len(slice_examples) < 4 and (res.meta["lesion_pixels"] or 0) > 0:
                slice_examples.append(res)
        elif example is None or _lesion(res) > _lesion(example):
            example = res
    bar.close()
    return metas, failed, example, slice_examples


def _splits(ok: list[dict], settings: SplitSettings) -> Splits:
    """Test set, folds, the unlabelled pool and the auxiliary (labelled non-COVID) cases."""
    target = [m for m in ok if m["labelled"] and m["task"] == "infection"]
    labelled = [m["case_id"] for m in target]
    official = [m["case_id"] for m in target if m.get("split") == "test"]
    not_test = [m["case_id"] for m in target if m.get("split") == "train"]
    given = {m["case_id"]: int(m["split"][4:]) for m in target  # a dataset's own folds (nnunet)
             if str(m.get("split") or "").startswith("fold") and m["split"][4:].isdigit()}
    # the unlabelled pool is COVID CT: a non-COVID source's unlabelled volumes stay out of it
    unlabelled = [m["case_id"] for m in ok if not m["labelled"] and m["task"] == "infection"]
    auxiliary = [m["case_id"] for m in ok if m["labelled"] and m["task"] != "infection"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = make_splits(labelled, settings.test_cases, settings.folds, settings.seed,
                             official, unlabelled, not_test, given) \
            if labelled else Splits(seed=settings.seed, test=[], test_is_official=False,
                                    folds=[], unlabelled=unlabelled)
    for w in caught:
        log.warning("%s", w.message)
    splits.auxiliary = sorted(auxiliary)  # labelled non-COVID cases (supervised pretraining)
    return splits


def _draw_figures(fig_dir: Path, ok: list[dict], example: CaseOutput | None,
                  slice_examples: list[CaseOutput]) -> None:
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


def _lesion(res: CaseOutput) -> float:
    return float(res.meta["lesion_volume_ml"] or res.meta["lesion_pixels"] or 0)
