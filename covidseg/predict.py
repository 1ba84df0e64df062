"""``predict`` and ``evaluate``: a trained model applied to new CT, or scored on a labelled set.

The model folder carries the preprocessing settings it was trained with (``model.json``:
``preprocess``), so a new volume goes through exactly that pipeline — never re-typed by the user.
Predictions are mapped back to the input's original grid and orientation (un-crop, in-plane
resampling back from 1 mm, LPS back to the file's direction) and written as NIfTI with a JSON
report: lung and lesion volume (ml), % of lung involved and the MosMed-style severity class
CT-0 (0 %), CT-1 (< 25 %), CT-2 (25-50 %), CT-3 (50-75 %), CT-4 (> 75 %).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import fields
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from covidseg.config import (
    EvaluateConfig,
    PredictConfig,
    PreprocessConfig,
    parse_value,
    threshold_value,
)
from covidseg.data.geometry import to_canonical_grid
from covidseg.data.layouts import CaseRecord
from covidseg.data.readers import (
    VOLUME_SUFFIXES,
    is_slice_image,
    read_image,
    stem_of,
    suffix_of,
)
from covidseg.device import place_model, resolve_device
from covidseg.errors import CaseError, ConfigError
from covidseg.inference import output_classes, predict_volume
from covidseg.models.checkpoint import load_model
from covidseg.tracking import NullTracker

log = logging.getLogger("covidseg.predict")


def severity_class(percent: float | None) -> str | None:
    """MosMed CT-0..CT-4 from the % of lung involved (boundaries 25/50/75 belong to the lower
    class's upper range: 25 → CT-2, 50 → CT-2, 75 → CT-3)."""
    if percent is None:
        return None
    if percent <= 0:
        return "CT-0"
    if percent < 25:
        return "CT-1"
    if percent <= 50:
        return "CT-2"
    if percent <= 75:
        return "CT-3"
    return "CT-4"


def preprocess_config_of(model_config: dict) -> PreprocessConfig:
    """The PreprocessConfig a model was trained with (stored as strings in ``model.json``)."""
    stored = model_config.get("preprocess") or {}
    kwargs = {f.name: parse_value(f, stored[f.name]) for f in fields(PreprocessConfig)
              if f.name in stored}
    return PreprocessConfig(**kwargs)


class Predictor:
    """A loaded model plus the preprocessing it was trained with."""

    def __init__(self, model: torch.nn.Module, config: dict, device: torch.device,
                 batch_size: int = 16):
        self.model, self.config, self.device = place_model(model, device).eval(), config, device
        self.preprocess = preprocess_config_of(config)
        self.batch_size = batch_size
        self._weights, self._warned = None, False
        if self.preprocess.lung_method in ("auto", "lungmask"):
            from covidseg.data.lungs import find_lungmask_weights

            self._weights = find_lungmask_weights(self.preprocess.lung_weights or None,
                                                  self.preprocess.lung_model)

    @classmethod
    def from_dir(cls, directory, device: str = "auto", batch_size: int = 16) -> "Predictor":
        model, config = load_model(Path(directory))
        return cls(model, config, resolve_device(device), batch_size)

    @property
    def threshold(self) -> float:
        """The decision threshold stored with the model (0.5 for models that stored none)."""
        return float(self.config.get("threshold") or 0.5)

    def decision_threshold(self, requested=None) -> float:
        """``requested`` (a probability) or, for None / ``model``, the model's own."""
        value = threshold_value(requested, "model") if requested is not None else None
        return self.threshold if value is None else value

    def predict_slices(self, slices: np.ndarray) -> np.ndarray:
        """Lesion probabilities of preprocessed (N, H, W) slices."""
        return predict_volume(self.model, slices, self.device, self.batch_size)

    def predict_file(self, path, output, threshold=None, restrict_to_lungs: bool = True,
                     probabilities: bool = False, lung=None) -> dict:
        """Predict one CT volume / DICOM folder / slice image; write masks + report into ``output``
        (``threshold``: None = the model's; ``probabilities``: also the probability map;
        ``lung``: its lung mask file, for a model trained with ``lung_method=provided``)."""
        return self.predict_prepared(self.prepare(path, lung), output, threshold,
                                     restrict_to_lungs, probabilities)

    def prepare(self, path, lung=None) -> tuple:
        """The CPU half of a prediction — read and preprocess (lung extraction included) —
        separate so that ``predict`` runs it for the next files while the network works."""
        from covidseg.data.preprocess import preprocess_case

        path = Path(path)
        case_id = path.name if path.is_dir() else stem_of(path)
        original = read_image(path)
        prep = preprocess_case(CaseRecord(case_id=case_id, image=str(path),
                                          lung=str(lung) if lung else None), self.preprocess,
                               self._weights, force_cpu=self.device.type != "cuda",
                               original=original)
        return path, case_id, original, prep

    def predict_prepared(self, prepared: tuple, output, threshold=None,
                         restrict_to_lungs: bool = True, probabilities: bool = False) -> dict:
        """The network and the writing half of :meth:`predict_file`."""
        threshold = self.decision_threshold(threshold)
        path, case_id, original, prep = prepared
        trained = self.config.get("lung_methods") or []
        if trained and prep.meta["lung_method"] not in trained and not self._warned:
            self._warned = True
            log.warning("lung extraction here is %s, the model was trained on %s lungs (lungmask "
                        "weights present on one machine only?): predictions may differ",
                        prep.meta["lung_method"], "/".join(trained))
        multiclass = output_classes(self.model) > 1
        probs = predict_volume(self.model, prep.image, self.device, self.batch_size,
                               classes=multiclass)
        prob = 1.0 - probs[0] if multiclass else probs
        lung = prep.lung.astype(np.float32) if prep.lung is not None else None
        prob_o = self._to_original(prob, prep.meta, original)
        lung_o = self._to_original(lung, prep.meta, original) > 0.5 if lung is not None else None
        mask = prob_o > threshold
        if restrict_to_lungs and lung_o is not None:
            mask &= lung_o
        labels = None
        if multiclass:  # each lesion voxel gets its more probable class (1 ground-glass, 2 cons.)
            consolidation = self._to_original(probs[2], prep.meta, original) > \
                self._to_original(probs[1], prep.meta, original)
            labels = (mask.astype(np.uint8) * (1 + consolidation)).astype(np.uint8)
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        as_png = is_slice_image(path)  # a slice image's outputs are images of its size too
        files = {"infection": out / f"{case_id}_infection.{'png' if as_png else 'nii.gz'}"}
        self._write(mask if labels is None else labels, original, files["infection"])
        if probabilities:
            files["probability"] = self._write_probability(prob_o, original, out, case_id, as_png)
        if lung_o is not None:
            files["lung"] = out / f"{case_id}_lung.nii.gz"
            self._write(lung_o, original, files["lung"])
        sp = original.GetSpacing()
        voxel_ml = float(np.prod(sp)) / 1000.0 if not prep.meta["slice_image"] else None
        lesion_ml = float(mask.sum() * voxel_ml) if voxel_ml else None
        lung_ml = float(lung_o.sum() * voxel_ml) if (voxel_ml and lung_o is not None) else None
        percent = (100.0 * float((mask & lung_o).sum()) / float(lung_o.sum())
                   if lung_o is not None and lung_o.any() else None)
        report = {
            "case_id": case_id, "input": path.name,
            "lung_volume_ml": lung_ml, "lesion_volume_ml": lesion_ml,
            "lesion_pixels": int(mask.sum()) if voxel_ml is None else None,
            "involvement_percent": percent, "severity": severity_class(percent),
            "intensity": prep.meta["intensity"], "lung_method": prep.meta["lung_method"],
            "threshold": threshold, "restrict_to_lungs": bool(restrict_to_lungs and lung_o is not None),
            "size": list(original.GetSize()), "spacing_mm": [float(s) for s in sp],
            "infection_mask": files["infection"].name,
            "probability_map": files["probability"].name if "probability" in files else None,
            "lung_mask": files["lung"].name if "lung" in files else None,
        }
        (out / f"{case_id}_report.json").write_text(json.dumps(report, indent=1))
        return report

    @staticmethod
    def _to_original(volume: np.ndarray, meta: dict, original: sitk.Image) -> np.ndarray:
        """A float map on the preprocessed grid → the input file's own grid and orientation."""
        canonical = to_canonical_grid(volume, meta)
        g = meta["canonical_geometry"]
        if tuple(g["direction"]) == tuple(original.GetDirection()):
            return canonical  # the file is LPS already: the same voxels
        # LPS back to the file's orientation: a permutation / flip of the axes, no interpolation
        img = sitk.GetImageFromArray(canonical)
        img.SetSpacing(g["spacing"])
        img.SetOrigin(g["origin"])
        img.SetDirection(g["direction"])
        code = sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(
            original.GetDirection())
        back = sitk.DICOMOrient(img, code)
        if back.GetSize() != original.GetSize() or not np.allclose(
                back.GetDirection(), original.GetDirection(), atol=1e-6):  # oblique: resample
            back = sitk.Resample(img, original, sitk.Transform(), sitk.sitkLinear, 0.0,
                                 sitk.sitkFloat32)
        return sitk.GetArrayFromImage(back)

    @staticmethod
    def _write_probability(prob: np.ndarray, original: sitk.Image, out: Path, case_id: str,
                           as_png: bool) -> Path:
        """The lesion probability map: NIfTI float32 on the input's grid, or for a slice image an
        8-bit PNG of its size (probability × 255, as 2D evaluation tools read maps)."""
        if as_png:
            path = out / f"{case_id}_probability.png"
            img = sitk.GetImageFromArray(np.clip(np.round(prob[0] * 255), 0, 255).astype(np.uint8))
            sitk.WriteImage(img, str(path))
            return path
        path = out / f"{case_id}_probability.nii.gz"
        img = sitk.GetImageFromArray(prob.astype(np.float32))
        img.CopyInformation(original)
        sitk.WriteImage(img, str(path), useCompression=True)
        return path

    @staticmethod
    def _write(mask: np.ndarray, original: sitk.Image, path: Path) -> None:
        """A mask on the input's grid: NIfTI, or for a slice image a PNG (binary 0/255 as 2D sets
        ship them; a multi-class label map keeps its labels 0/1/2)."""
        if path.suffix == ".png":
            arr = mask[0].astype(np.uint8)
            sitk.WriteImage(sitk.GetImageFromArray(arr * 255 if mask.dtype == bool else arr),
                            str(path))
            return
        img = sitk.GetImageFromArray(mask.astype(np.uint8))
        img.CopyInformation(original)
        sitk.WriteImage(img, str(path), useCompression=True)


def list_inputs(inp: str) -> list[Path]:
    """The CT inputs of ``input=``: a file, a DICOM folder, or a folder of volumes / slice images."""
    if not inp:
        raise ConfigError("input= is empty: give a CT volume, a DICOM folder or a folder of volumes")
    p = Path(inp).expanduser()
    if not p.exists():
        raise ConfigError(f"{p}: input does not exist")
    if p.is_file():
        return [p]
    images = sorted(f for f in p.iterdir() if f.is_file() and
                    (suffix_of(f) in VOLUME_SUFFIXES or is_slice_image(f)))
    if images:
        return images
    other_files = [f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")]
    subdirs = sorted(d for d in p.iterdir() if d.is_dir())
    return subdirs if subdirs and not other_files else [p]  # folders of series, or one series


def lung_masks_for(inputs: list[Path], lungs: str, lung_method: str) -> dict[Path, Path]:
    """``lungs=`` (a folder or glob pattern) paired with the inputs by file name (suffixes such
    as ``_lung``/``_mask`` ignored); a model trained with provided lung masks needs them."""
    import glob as globmod
    import re

    if not lungs:
        if lung_method == "provided":
            raise ConfigError("the model was trained with lung_method=provided: give lungs=FOLDER "
                              "or a glob pattern of the inputs' lung masks (paired by file name)")
        return {}
    p = Path(lungs).expanduser()
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else \
        sorted(Path(f) for f in globmod.glob(str(p)))
    if not files:
        raise ConfigError(f"lungs={lungs}: no lung mask files there")
    strip = re.compile(r"([_-](lung|lungs|mask|seg|label))+$", re.IGNORECASE)
    by_stem = {strip.sub("", stem_of(f)): f for f in files}
    found = {i: by_stem.get(strip.sub("", stem_of(i)) if i.is_file() else i.name) for i in inputs}
    missing = [i.name for i, f in found.items() if f is None]
    if missing and lung_method == "provided":
        log.warning("no lung mask in %s for %s: those inputs will fail", lungs,
                    ", ".join(missing[:5]) + (" …" if len(missing) > 5 else ""))
    return {i: f for i, f in found.items() if f is not None}


def predict_entry(cfg: PredictConfig, tracker=None) -> dict:
    """The ``predict`` entry point: masks + reports for every input; failed inputs recorded."""
    from covidseg.tracking import download_model

    tracker = tracker or NullTracker()
    model_dir, source_run = download_model(cfg.model)
    tracker.link_source("model", source_run)
    predictor = Predictor.from_dir(model_dir, cfg.device, cfg.batch_size)
    inputs = list_inputs(cfg.input)
    lungs = lung_masks_for(inputs, cfg.lungs, predictor.preprocess.lung_method)
    out = Path(cfg.output).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    reports, failed = [], []
    from tqdm import tqdm

    # reading and preprocessing the next inputs (threads: SimpleITK and numpy release the GIL)
    # overlaps the network and the writing of the current one; results stay in input order
    from concurrent.futures import ThreadPoolExecutor

    ahead = max(0, cfg.prefetch)  # 0: one input after the other
    with ThreadPoolExecutor(max_workers=max(1, ahead)) as pool:
        pending = [pool.submit(predictor.prepare, p, lungs.get(p)) for p in inputs[:ahead]]
        for i, path in enumerate(tqdm(inputs, desc="predict", unit="volume")):
            if i + ahead < len(inputs) and ahead:
                nxt = inputs[i + ahead]
                pending.append(pool.submit(predictor.prepare, nxt, lungs.get(nxt)))
            try:
                prepared = pending.pop(0).result() if ahead else \
                    predictor.prepare(path, lungs.get(path))
                reports.append(predictor.predict_prepared(prepared, out, cfg.threshold,
                                                          cfg.restrict_to_lungs, cfg.probabilities))
            except CaseError as exc:
                failed.append({"input": path.name, "kind": exc.kind, "error": str(exc)})
                log.warning("%s", exc)
    with open(out / "predictions.csv", "w", newline="") as fh:
        keys = list(reports[0]) if reports else ["case_id"]
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(reports)
    tracker.log_artifacts(out, "predictions")
    if failed:
        tracker.log_table(failed, "predictions/failed.csv")
    tracker.log_metrics({"n_predicted": len(reports), "n_failed": len(failed)})
    if not reports:
        raise ConfigError(f"no input could be predicted ({failed[0]['error'] if failed else 'none'})")
    return {"output": str(out), "n_predicted": len(reports), "n_failed": len(failed),
            "severity": ",".join(str(r["severity"]) for r in reports[:5])}


def evaluate_entry(cfg: EvaluateConfig, tracker=None) -> dict:
    """The ``evaluate`` entry point: per-volume metrics of a model on a labelled set."""
    from covidseg.data.store import open_dataset
    from covidseg.tracking import download_model
    from covidseg.train.evaluation import evaluate_cases, log_evaluation

    tracker = tracker or NullTracker()
    model_dir, source_run = download_model(cfg.model)
    tracker.link_source("model", source_run)
    ds = open_dataset(cfg.data, tracker, context="evaluation")
    model, config = load_model(model_dir)
    trained_with = config.get("preprocess", {})
    differs = sorted(k for k in ("intensity", "lung_method", "image_size", "window_min",
                                 "window_max", "hist_eq", "slice_fit", "labels")
                     if k in trained_with and trained_with[k] != ds.descriptor["config"].get(k))
    if differs:
        log.warning("the dataset was preprocessed differently from the model's training data (%s)",
                    ", ".join(differs))
        tracker.set_tags({"covidseg.preprocessing_differs": ",".join(differs)})
    ids = ds.splits["test"] if cfg.split == "test" else ds.ids(labelled=True)
    if not ids:
        raise ConfigError(f"data={cfg.data!r} has no {cfg.split} cases with masks")
    device = resolve_device(cfg.device)
    threshold = threshold_value(cfg.threshold, "model")
    threshold = float(config.get("threshold") or 0.5) if threshold is None else threshold
    tracker.log_metrics({"threshold": threshold})
    ev = evaluate_cases(place_model(model, device), ds, ids, device, cfg.batch_size,
                        threshold=threshold, keep=3, split=cfg.split)
    metrics = log_evaluation(tracker, ev, cfg.split)
    return {k: round(v, 4) for k, v in metrics.items()
            if k.endswith(("volume_dice", "nsd", "nsd_area", "dice_thravg"))}
