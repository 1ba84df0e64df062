"""A trained model applied to new CT: :class:`Predictor`.

A model is trained on preprocessed cases, so a new volume goes through exactly the preprocessing
the model was trained with (lung extraction included; the settings come with the model, never
re-typed by the user), then the network, then back to the input's original grid and orientation
(:mod:`covidseg.inference.export`), written as NIfTI (a slice image: PNG; a DICOM series: also a
DICOM SEG) with a JSON report (:mod:`covidseg.inference.report`).

One input is three halves that can run at once for different inputs
(:mod:`covidseg.inference.pipelined`): :meth:`Predictor.prepare` (read and preprocess, CPU),
:meth:`Predictor.network` (torch) and :meth:`Predictor.finish` (back to the input's grid and
into files; no torch).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from covidseg.base.device import place_model
from covidseg.data.dicom_seg import write_dicom_seg
from covidseg.data.intensity import looks_like_display
from covidseg.data.layouts import CaseRecord
from covidseg.data.readers import is_slice_image, read_image, stem_of
from covidseg.data.settings import PreprocessSettings
from covidseg.inference.export import (
    lesion_probability,
    on_input_grid,
    write_mask,
    write_probability,
)
from covidseg.inference.report import case_report
from covidseg.inference.viewer import slice_viewer_html
from covidseg.inference.volume import output_classes, predict_volume

log = logging.getLogger("covidseg.predict")


def trained_intensity_modes(model_config: dict) -> list[str]:
    """The intensity schemes a model's training cases got; a model from before
    ``intensity=display`` (none recorded) saw HU volumes and everything else z-scored per image."""
    return list(model_config.get("intensity_modes") or ("hu", "image"))


def stored_threshold(model_config: dict) -> float:
    """The decision threshold stored with a model (0.5 for models that stored none)."""
    return float(model_config.get("threshold") or 0.5)


class Predictor:
    """A loaded model plus the preprocessing it was trained with.

    ``config`` is the model's ``model.json``; ``preprocess`` its preprocessing as settings
    (:class:`covidseg.stages.predict.Predictor` opens a model folder and decodes them from the
    stored ``preprocess`` parameters); ``tta``: test-time mirroring."""

    viewers = 0  # the next inputs that get an HTML slice viewer next to their mask

    def __init__(self, model: torch.nn.Module, config: dict, device: torch.device,
                 preprocess: PreprocessSettings, batch_size: int = 16, tta: bool = False):
        self.model, self.config, self.device = place_model(model, device).eval(), config, device
        self.preprocess = preprocess
        self.batch_size, self.tta = batch_size, tta
        self._weights, self._warned, self._warned_intensity = None, False, False
        if self.preprocess.lung_method in ("auto", "lungmask"):
            from covidseg.data.lungs import find_lungmask_weights

            self._weights = find_lungmask_weights(self.preprocess.lung_weights or None,
                                                  self.preprocess.lung_model)

    @property
    def threshold(self) -> float:
        """The decision threshold stored with the model (0.5 for models that stored none)."""
        return stored_threshold(self.config)

    def decision_threshold(self, requested: float | None = None) -> float:
        """``requested`` (a probability) or, for None, the model's own."""
        return self.threshold if requested is None else float(requested)

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
        self._warn_if_unlike_training(path, prep.meta)
        grid = on_input_grid(probs, prep, original, threshold, restrict_to_lungs)
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        as_png = is_slice_image(path)  # a slice image's outputs are images of its size too
        files = {"infection": out / f"{case_id}_infection.{'png' if as_png else 'nii.gz'}"}
        write_mask(grid.written, original, files["infection"])
        seg = out / f"{case_id}_infection.seg.dcm"  # a DICOM series: its lesions as a DICOM SEG too
        files["dicom_seg"] = write_dicom_seg(path, grid.written, seg, grid.labels is not None) \
            if path.is_dir() else None
        if probabilities:
            files["probability"] = write_probability(grid.probability, original, out, case_id,
                                                     as_png)
        if grid.lung is not None:
            files["lung"] = out / f"{case_id}_lung.nii.gz"
            write_mask(grid.lung, original, files["lung"])
        self._write_viewer(out, case_id, prep, lesion_probability(probs) > threshold,
                           restrict_to_lungs)
        report = case_report(path, case_id, prep.meta, original, grid, files)
        (out / f"{case_id}_report.json").write_text(json.dumps(report, indent=1))
        return report

    def _warn_if_unlike_training(self, path: Path, meta: dict) -> None:
        """Once per predictor each: lung extraction or intensity scheme the model never saw."""
        trained = self.config.get("lung_methods") or []
        if trained and meta["lung_method"] not in trained and not self._warned:
            self._warned = True
            log.warning("lung extraction here is %s, the model was trained on %s lungs (lungmask "
                        "weights present on one machine only?): predictions may differ",
                        meta["lung_method"], "/".join(trained))
        modes = trained_intensity_modes(self.config)
        if meta["intensity"] not in modes and not self._warned_intensity:
            self._warned_intensity = True
            log.warning("%s: intensities here are %s, the model was trained on %s images: "
                        "predictions may differ", path, meta["intensity"], "/".join(modes))

    def _write_viewer(self, out: Path, case_id: str, prep, mask: np.ndarray,
                      restrict_to_lungs: bool) -> None:
        """``CASE_viewer.html`` for the next :attr:`viewers` inputs: the CT and the prediction as
        the network saw them (preprocessed grid; restricted to its lung mask as the written mask
        is), :func:`covidseg.inference.viewer.slice_viewer_html` without truth."""
        if self.viewers <= 0:
            return
        self.viewers -= 1  # finish() runs in one thread at a time, in input order
        if restrict_to_lungs and prep.lung is not None and prep.lung.shape == mask.shape:
            mask = mask & (prep.lung > 0)
        page = slice_viewer_html(prep.image, mask, title=case_id, caption="prediction on the "
                                 "network's (preprocessed) grid; the mask file is on the input's")
        (out / f"{case_id}_viewer.html").write_text(page, encoding="utf-8")
