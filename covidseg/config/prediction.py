"""The parameters of the stages that apply a trained model: ``predict`` and ``evaluate``."""

from __future__ import annotations

from dataclasses import dataclass

from covidseg.config.params import CommonConfig, param, viewers_param


@dataclass
class PredictConfig(CommonConfig):
    model: str = param("", "finetune/meanteacher run id, runs:/ or models:/ URI")
    input: str = param("", "CT volume file, DICOM series folder, or a folder of volumes")
    output: str = param("predictions", "output folder (masks and reports; also logged)")
    restrict_to_lungs: bool = param(True, "remove predicted lesion outside the lung mask")
    threshold: str = param("model", "probability threshold: model = the one stored with the model "
                                    "(0.5 unless finetune chose one), or a probability")
    probabilities: bool = param(False, "also write the lesion probability maps (NIfTI float32 on "
                                       "the input's grid; 8-bit PNG for slice images)")
    lungs: str = param("", "lung masks of the inputs (a folder or glob pattern, paired by file "
                           "name): needed by a model trained with lung_method=provided")
    prefetch: int = param(2, "inputs read and preprocessed ahead (threads) while the network "
                             "works on the current one (0: one after the other)")
    viewers: int = param(3, "the first inputs each written as a scrollable HTML slice viewer "
                            "next to its mask (CASE_viewer.html: CT and prediction; 0: none)")
    batch_size: int = param(16, "slices per forward pass")
    tta: str = param("model", "test-time mirroring (mean over each slice and its 3 in-plane "
                              "mirror images, 4× the network's work): model = as the model was "
                              "evaluated when trained, true, false", ("model", "true", "false"))


@dataclass
class EvaluateConfig(CommonConfig):
    model: str = param("", "finetune/meanteacher run id, runs:/ or models:/ URI")
    split: str = param("test", "which labelled cases: the held-out test set, or all labelled",
                       ("test", "labelled"))
    viewers: int = viewers_param("cases (the largest lesions) each")
    threshold: str = param("model", "probability threshold: model = the one stored with the model, "
                                    "or a probability")
    batch_size: int = param(16, "slices per forward pass")
    tta: str = param("model", "test-time mirroring (mean over each slice and its 3 in-plane "
                              "mirror images): model = as the model was evaluated when trained, "
                              "true, false", ("model", "true", "false"))
