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
import os
from dataclasses import fields, replace
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
    tta_value,
)
from covidseg.data.dicom_seg import write_dicom_seg
from covidseg.data.geometry import to_canonical_grid
from covidseg.data.intensity import looks_like_display
from covidseg.data.layouts import CaseRecord
from covidseg.data.readers import (
    VOLUME_SUFFIXES,
    is_slice_image,
    read_image,
    stem_of,
    suffix_of,
)
from covidseg.data.settings import PreprocessSettings
from covidseg.device import place_model, resolve_device
from covidseg.errors import CaseError, ConfigError
from covidseg.inference import output_classes, predict_volume
from covidseg.models.checkpoint import load_model
from covidseg.stages.preprocess import preprocess_settings
from covidseg.tracking import NullTracker, Tag
from covidseg.train.viewer import slice_viewer_html

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


def trained_intensity_modes(model_config: dict) -> list[str]:
    """The intensity schemes a model's training cases got; a model from before
    ``intensity=display`` (none recorded) saw HU volumes and everything else z-scored per image."""
    return list(model_config.get("intensity_modes") or ("hu", "image"))


def preprocess_config_of(model_config: dict) -> PreprocessConfig:
    """The PreprocessConfig a model was trained with (stored as strings in ``model.json``)."""
    stored = model_config.get("preprocess") or {}
    kwargs = {f.name: parse_value(f, stored[f.name]) for f in fields(PreprocessConfig)
              if f.name in stored}
    return PreprocessConfig(**kwargs)


class Predictor:
    """A loaded model plus the preprocessing it was trained with."""

    viewers = 0  # the next inputs that get an HTML slice viewer next to their mask

    def __init__(self, model: torch.nn.Module, config: dict, device: torch.device,
                 batch_size: int = 16, tta: bool = False):
        self.model, self.config, self.device = place_model(model, device).eval(), config, device
        self.preprocess = preprocess_settings(preprocess_config_of(config))
        self.batch_size, self.tta = batch_size, tta
        self._weights, self._warned, self._warned_intensity = None, False, False
        if self.preprocess.lung_method in ("auto", "lungmask"):
            from covidseg.data.lungs import find_lungmask_weights

            self._weights = find_lungmask_weights(self.preprocess.lung_weights or None,
                                                  self.preprocess.lung_model)

    @classmethod
    def from_dir(cls, directory, device: str = "auto", batch_size: int = 16,
                 tta: str = "model") -> Predictor:
        """The model in ``directory``; ``tta``: true, false, or model (what it stored)."""
        model, config = load_model(Path(directory))
        return cls(model, config, resolve_device(device), batch_size, tta_value(tta, config))

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
        return predict_volume(self.model, slices, self.device, self.batch_size, tta=self.tta)

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
        from covidseg.data.steps import preprocess_case

        path = Path(path)
        case_id = path.name if path.is_dir() else stem_of(path)
        original = read_image(path)
        prep = preprocess_case(CaseRecord(case_id=case_id, image=str(path),
                                          lung=str(lung) if lung else None),
                               self.preprocess_for(original), self._weights,
                               force_cpu=self.device.type != "cuda", original=original)
        return path, case_id, original, prep

    def preprocess_for(self, original) -> PreprocessSettings:
        """The preprocessing of one input: the model's.  A model trained with ``intensity=auto``
        before the ``display`` scheme existed (no ``intensity_modes`` in ``model.json``) saw
        8-bit images z-scored per image, so its 8-bit inputs still are."""
        settings = self.preprocess
        if (settings.intensity == "auto" and "intensity_modes" not in self.config
                and looks_like_display(sitk.GetArrayViewFromImage(original))):
            return replace(settings, intensity="image")
        return settings

    def predict_prepared(self, prepared: tuple, output, threshold=None,
                         restrict_to_lungs: bool = True, probabilities: bool = False) -> dict:
        """The network and the writing half of :meth:`predict_file`."""
        return self.finish(prepared, self.network(prepared), output, threshold, restrict_to_lungs,
                           probabilities)

    def network(self, prepared: tuple, before_batch=None) -> np.ndarray:
        """The network on a prepared input: its lesion probabilities on the preprocessed grid
        (for a multi-class network the per-class probabilities, (C, z, y, x))."""
        return predict_volume(self.model, prepared[3].image, self.device, self.batch_size,
                              classes=output_classes(self.model) > 1, before_batch=before_batch,
                              tta=self.tta)

    def finish(self, prepared: tuple, probs: np.ndarray, output, threshold=None,
               restrict_to_lungs: bool = True, probabilities: bool = False) -> dict:
        """The network's output back on the input's grid: masks, maps and the report written
        (no torch here: ``predict`` runs it in a thread while the network works on the next
        input)."""
        threshold = self.decision_threshold(threshold)
        path, case_id, original, prep = prepared
        trained = self.config.get("lung_methods") or []
        if trained and prep.meta["lung_method"] not in trained and not self._warned:
            self._warned = True
            log.warning("lung extraction here is %s, the model was trained on %s lungs (lungmask "
                        "weights present on one machine only?): predictions may differ",
                        prep.meta["lung_method"], "/".join(trained))
        modes = trained_intensity_modes(self.config)
        if prep.meta["intensity"] not in modes and not self._warned_intensity:
            self._warned_intensity = True
            log.warning("%s: intensities here are %s, the model was trained on %s images: "
                        "predictions may differ", path, prep.meta["intensity"], "/".join(modes))
        multiclass = probs.ndim == 4
        prob = 1.0 - probs[0] if multiclass else probs
        prob_o = self._to_original(prob, prep.meta, original)
        # the lung mask as extracted on the input's own grid (lungmask, classical or the given
        # file), not the 1 mm copy the network saw sent back through a second resampling
        lung_o = self._orient_back(prep.lung_original, prep.meta, original) \
            if prep.lung_original is not None else None
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
        seg = write_dicom_seg(path, mask if labels is None else labels,
                              out / f"{case_id}_infection.seg.dcm", multiclass) \
            if path.is_dir() else None  # a DICOM series: its lesions as a DICOM SEG too
        if probabilities:
            files["probability"] = self._write_probability(prob_o, original, out, case_id, as_png)
        if lung_o is not None:
            files["lung"] = out / f"{case_id}_lung.nii.gz"
            self._write(lung_o, original, files["lung"])
        self._write_viewer(out, case_id, prep, prob > threshold, restrict_to_lungs)
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
            "threshold": threshold,
            "restrict_to_lungs": bool(restrict_to_lungs and lung_o is not None),
            "size": list(original.GetSize()), "spacing_mm": [float(s) for s in sp],
            "infection_mask": files["infection"].name,
            "probability_map": files["probability"].name if "probability" in files else None,
            "lung_mask": files["lung"].name if "lung" in files else None,
            "dicom_seg": seg.name if seg else None,
        }
        (out / f"{case_id}_report.json").write_text(json.dumps(report, indent=1))
        return report

    def _write_viewer(self, out: Path, case_id: str, prep, mask: np.ndarray,
                      restrict_to_lungs: bool) -> None:
        """``CASE_viewer.html`` for the next :attr:`viewers` inputs: the CT and the prediction as
        the network saw them (preprocessed grid; restricted to its lung mask as the written mask
        is), :func:`covidseg.train.viewer.slice_viewer_html` without truth."""
        if self.viewers <= 0:
            return
        self.viewers -= 1  # finish() runs in one thread at a time, in input order
        if restrict_to_lungs and prep.lung is not None and prep.lung.shape == mask.shape:
            mask = mask & (prep.lung > 0)
        page = slice_viewer_html(prep.image, mask, title=case_id, caption="prediction on the "
                                 "network's (preprocessed) grid; the mask file is on the input's")
        (out / f"{case_id}_viewer.html").write_text(page, encoding="utf-8")

    @staticmethod
    def _to_original(volume: np.ndarray, meta: dict, original: sitk.Image) -> np.ndarray:
        """A float map on the preprocessed grid → the input file's own grid and orientation."""
        return Predictor._orient_back(to_canonical_grid(volume, meta), meta, original)

    @staticmethod
    def _orient_back(canonical: np.ndarray, meta: dict, original: sitk.Image) -> np.ndarray:
        """A map on the input's grid in canonical (LPS) order → the file's orientation (a bool
        mask stays a bool mask)."""
        g = meta["canonical_geometry"]
        if tuple(g["direction"]) == tuple(original.GetDirection()):
            return canonical  # the file is LPS already: the same voxels
        binary = canonical.dtype == bool
        # LPS back to the file's orientation: a permutation / flip of the axes, no interpolation
        img = sitk.GetImageFromArray(canonical.astype(np.uint8) if binary else canonical)
        img.SetSpacing(g["spacing"])
        img.SetOrigin(g["origin"])
        img.SetDirection(g["direction"])
        code = sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(
            original.GetDirection())
        back = sitk.DICOMOrient(img, code)
        if back.GetSize() != original.GetSize() or not np.allclose(
                back.GetDirection(), original.GetDirection(), atol=1e-6):  # oblique: resample
            back = sitk.Resample(sitk.Cast(img, sitk.sitkFloat32), original, sitk.Transform(),
                                 sitk.sitkLinear, 0.0, sitk.sitkFloat32)
            return sitk.GetArrayFromImage(back) > 0.5 if binary else sitk.GetArrayFromImage(back)
        return sitk.GetArrayFromImage(back).astype(bool) if binary else sitk.GetArrayFromImage(back)

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
    """The CT inputs of ``input=``: a file, a DICOM folder, or a folder of volumes / slice
    images."""
    if not inp:
        raise ConfigError("input= is empty: give a CT volume, a DICOM folder or a folder of "
                          "volumes")
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
    if not other_files and not subdirs:
        raise ConfigError(f"{p}: empty folder: no CT volume, slice image or DICOM series in it")
    return subdirs if subdirs and not other_files else [p]  # folders of series, or one series


def check_inputs(cfg: PredictConfig) -> None:
    """``predict``'s check before its run exists: ``input=`` names something to predict."""
    list_inputs(cfg.input)


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


class CpuShare:
    """The CPU's cores shared between the network and the pipeline's other stages.

    While ``k`` preparing / writing tasks run, the network (called between its forward passes)
    gets ``cores − k`` torch threads, at least one; when they are idle, all ``cores``.  On a
    2-core CPU a 2-thread network beside a busy preparing thread is oversubscribed, and its
    OpenMP threads wait for each other at every layer, so one descheduled thread stalls both —
    measured in ``benchmarks/volume_inference.py`` (``--threads``).  ``threads`` > 0 fixes the
    count instead.  SimpleITK's filters in those stages get one thread per stage's share of the
    cores (one on 2 cores) for the same reason.  Neither the probabilities nor SimpleITK's results
    depend on the thread counts (the files are compared with the sequential run's in the tests).
    """

    def __init__(self, threads: int = 0, stages: int = 2):
        import threading

        self.cores = torch.get_num_threads()
        self.fixed = threads
        self.busy = 0
        self._lock = threading.Lock()
        self._now = None
        self._itk = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, self.cores // (stages + 1)))

    def run(self, fn, *args):
        """``fn(*args)`` counted as a busy stage task."""
        with self._lock:
            self.busy += 1
        try:
            return fn(*args)
        finally:
            with self._lock:
                self.busy -= 1

    def before_batch(self) -> None:
        n = self.fixed or max(1, self.cores - self.busy)
        if n != self._now:
            torch.set_num_threads(n)
            self._now = n

    def restore(self) -> None:
        if self._now is not None and self._now != self.cores:
            torch.set_num_threads(self.cores)
        self._now = None
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(self._itk)


def prepare_workers(prefetch: int) -> int:
    """Inputs prepared at once: up to ``prefetch``, and at most half the CPUs (the network and
    the writing thread want the others; on a 2-core CPU one input is prepared at a time)."""
    return max(1, min(prefetch, (os.cpu_count() or 2) // 2))


FAILED_COLUMNS = ["input", "kind", "error"]  # failed.csv next to the masks: an input a row


def predict_inputs(predictor: Predictor, inputs: list[Path], output, threshold=None,
                   restrict_to_lungs: bool = True, probabilities: bool = False,
                   lungs: dict | None = None, prefetch: int = 2, progress: bool = True,
                   network_threads: int = 0) -> tuple[list[dict], list[dict]]:
    """Predict every input; (reports, failures), both in input order.

    ``prefetch`` ≥ 1 runs three stages at once: threads read and preprocess the next
    ``prefetch`` inputs (:func:`prepare_workers` at a time; lung extraction included — NumPy,
    SciPy and SimpleITK release the GIL), the calling thread runs the network, and one more
    thread maps the previous input's output back to its grid and writes it.  Each stage does
    exactly what the sequential order (``prefetch=0``) does, so the files written are the
    same.  On the CPU the network's thread count follows the other stages (:class:`CpuShare`;
    ``network_threads`` > 0 fixes it)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    lungs = lungs or {}
    results: list = [None] * len(inputs)  # a report, or the CaseError of that input
    finish = (output, threshold, restrict_to_lungs, probabilities)

    def one(path: Path):
        prepared = predictor.prepare(path, lungs.get(path))
        return predictor.finish(prepared, predictor.network(prepared), *finish)

    bar = tqdm(inputs, desc="predict", unit="volume", disable=not progress)
    if prefetch <= 0:
        for i, path in enumerate(bar):
            try:
                results[i] = one(path)
            except CaseError as exc:
                results[i] = exc
    else:
        workers = prepare_workers(prefetch)
        cpu = CpuShare(network_threads, workers + 1) if predictor.device.type == "cpu" else None
        share = cpu.run if cpu else (lambda fn, *args: fn(*args))
        with ThreadPoolExecutor(workers, "covidseg-prepare") as prep_pool, \
                ThreadPoolExecutor(1, "covidseg-write") as write_pool:
            pending = deque(prep_pool.submit(share, predictor.prepare, p, lungs.get(p))
                            for p in inputs[:prefetch])
            writing: deque = deque()

            def collect(keep: int) -> None:
                while len(writing) > keep:
                    j, fut = writing.popleft()
                    try:
                        results[j] = fut.result()
                    except CaseError as exc:
                        results[j] = exc

            try:
                for i, _ in enumerate(bar):
                    if i + prefetch < len(inputs):
                        nxt = inputs[i + prefetch]
                        pending.append(prep_pool.submit(share, predictor.prepare, nxt,
                                                        lungs.get(nxt)))
                    try:
                        prepared = pending.popleft().result()
                    except CaseError as exc:
                        results[i] = exc
                        continue
                    probs = predictor.network(prepared, cpu.before_batch if cpu else None)
                    collect(0)  # at most one input is being written while the network runs
                    writing.append((i, write_pool.submit(share, predictor.finish, prepared,
                                                         probs, *finish)))
                collect(0)
            finally:
                for fut in pending:
                    fut.cancel()
                if cpu:
                    cpu.restore()
    reports, failed = [], []
    for path, res in zip(inputs, results):
        if isinstance(res, CaseError):
            failed.append(dict(zip(FAILED_COLUMNS, (path.name, res.kind, str(res)))))
            log.warning("%s", res)
        else:
            reports.append(res)
    return reports, failed


def predict_entry(cfg: PredictConfig, tracker=None) -> dict:
    """The ``predict`` entry point: masks + reports for every input; failed inputs recorded."""
    from covidseg.tracking import download_model

    tracker = tracker or NullTracker()
    model_dir, source_run = download_model(cfg.model)
    tracker.link_source("model", source_run)
    predictor = Predictor.from_dir(model_dir, cfg.device, cfg.batch_size, cfg.tta)
    predictor.viewers = cfg.viewers
    tracker.log_params({"tta_used": str(predictor.tta).lower()})
    inputs = list_inputs(cfg.input)
    lungs = lung_masks_for(inputs, cfg.lungs, predictor.preprocess.lung_method)
    out = Path(cfg.output).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    reports, failed = predict_inputs(predictor, inputs, out, cfg.threshold, cfg.restrict_to_lungs,
                                     cfg.probabilities, lungs, cfg.prefetch)
    for name, rows, columns in (("predictions.csv", reports, ["case_id"]),
                                ("failed.csv", failed, FAILED_COLUMNS)):
        with open(out / name, "w", newline="") as fh:  # a header alone when there is no row
            w = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else columns)
            w.writeheader()
            w.writerows(rows)
    tracker.log_artifacts(out, "predictions")
    tracker.log_metrics({"n_predicted": len(reports), "n_failed": len(failed)})
    if not reports:
        first = failed[0]["error"] if failed else "none"
        raise ConfigError(f"no input could be predicted ({first})")
    return {"output": str(out), "n_predicted": len(reports), "n_failed": len(failed),
            "severity": ",".join(str(r["severity"]) for r in reports[:5])}


def evaluate_entry(cfg: EvaluateConfig, tracker=None) -> dict:
    """The ``evaluate`` entry point: per-volume metrics of a model on a labelled set."""
    from covidseg.stages.datasets import open_dataset
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
    modes = sorted({m.get("intensity", "") for m in ds.cases.values()})
    if set(modes) - set(trained_intensity_modes(config)):
        differs.append("intensity_modes")
    if differs:
        log.warning("the dataset was preprocessed differently from the model's training data (%s)",
                    ", ".join(differs))
        tracker.set_tags({Tag.PREPROCESSING_DIFFERS: ",".join(differs)})
    ids = ds.splits["test"] if cfg.split == "test" else ds.ids(labelled=True)
    if not ids:
        raise ConfigError(f"data={cfg.data!r} has no {cfg.split} cases with masks")
    device = resolve_device(cfg.device)
    threshold = threshold_value(cfg.threshold, "model")
    threshold = float(config.get("threshold") or 0.5) if threshold is None else threshold
    tracker.log_metrics({"threshold": threshold})
    tta = tta_value(cfg.tta, config)
    tracker.log_params({"tta_used": str(tta).lower()})
    ev = evaluate_cases(place_model(model, device), ds, ids, device, cfg.batch_size,
                        threshold=threshold, keep=3, split=cfg.split, tta=tta,
                        viewers=cfg.viewers)
    metrics = log_evaluation(tracker, ev, cfg.split)
    return {k: round(v, 4) for k, v in metrics.items()
            if k.endswith(("volume_dice", "nsd", "nsd_area", "dice_thravg"))}
