"""``preprocess``'s parameters: the data folder, its layout, the preprocessing steps and the
demo phantoms."""

from __future__ import annotations

from dataclasses import dataclass

from covidseg.config.params import CommonConfig, param
from covidseg.data.vocabulary import (
    Intensity,
    Labels,
    Layout,
    LungmaskModel,
    LungMethod,
    SliceFit,
    StoreDtype,
    Task,
)


@dataclass
class PreprocessConfig(CommonConfig):
    dataset: str = param("auto", "layout adapter of the data folder",
                         ("auto", *Layout.values()))
    images: str = param("", "glob pattern of labelled images (dataset=glob), relative to data or "
                            "absolute (then data may stay demo/empty)")
    masks: str = param("", "glob pattern of their infection masks (dataset=glob)")
    test_images: str = param("", "glob pattern of the official test split's images (dataset=glob)")
    test_masks: str = param("", "glob pattern of the official test split's masks (dataset=glob)")
    unlabelled: str = param("", "glob pattern of unlabelled images (dataset=glob)")
    lungs: str = param("", "glob pattern of provided lung masks (dataset=glob), paired by name")
    task: str = param("", "what the masks mark: infection (COVID: trained and evaluated on) or "
                          "tumour, effusion, nodule, other (auxiliary: supervised pretraining); "
                          "empty = the adapter's (glob: infection)",
                      ("", *Task.values()))
    sources: str = param("", "a YAML/JSON file listing several sources to combine into one "
                             "dataset (each: data, dataset, task, role, name, glob patterns); "
                             "replaces data/dataset/images/…")
    intensity: str = param("auto", "intensity scheme, decided per case with auto: hu (Hounsfield "
                                   "units: lung window, z-score over the lungs), display (8-bit "
                                   "exports: every image mapped alike, 0…255 to -2…2), image "
                                   "(anything else: z-score per image)",
                           Intensity.values())
    lung_method: str = param("auto", "lung extraction: auto = lungmask if its weights are local, "
                                     "else classical; provided = the dataset's lung masks",
                             LungMethod.values())
    lung_weights: str = param("", "local lungmask weight file (never downloaded)")
    lung_model: str = param("R231CovidWeb", "lungmask model whose cached weights auto looks for",
                            LungmaskModel.values())
    image_size: int = param(0, "in-plane size: volumes are cropped/padded around the lungs on the "
                               "1 mm grid, 2D slices resized; 0 keeps the 1 mm grid as is")
    slice_fit: str = param("resize", "2D slices (image files and one-slice volumes): resize = "
                                     "longer side scaled to image_size, then padded square; pad = "
                                     "padded, scaled down only when larger (never cut)",
                           SliceFit.values())
    min_size: int = param(32, "refuse (as a failed case) images smaller than this in-plane "
                              "(pixels)")
    max_field_of_view_mm: float = param(1000.0, "refuse volumes whose in-plane field of view "
                                                "(size x spacing) is wider than this: CT bores "
                                                "are at most ~850 mm, a wrong spacing is not")
    max_voxels: float = param(1e9, "refuse volumes whose 1 mm grid would hold more voxels than "
                                   "this (1e9: 4 GB as float32; 0: no cap)")
    labels: str = param("binary", "infection masks: binary (0/1 or 0/255), or multiclass (0 "
                                  "background, 1 ground-glass, 2 consolidation: trained as 3 "
                                  "classes, scored per class and for their union)",
                        Labels.values())
    window_min: float = param(-1250.0, "lung window lower bound (HU)")
    window_max: float = param(250.0, "lung window upper bound (HU)")
    hist_eq: bool = param(False, "histogram equalisation inside the lungs before the z-score")
    store_dtype: str = param("float32", "dtype of stored images", StoreDtype.values())
    test_cases: int = param(20, "size of the held-out test set (official split used if any)")
    folds: int = param(5, "number of cross-validation folds over the remaining labelled cases")
    strict: bool = param(False, "stop at the first bad case instead of recording it and going on")
    export_nnunet: str = param("", "also write the cohort as an nnU-Net v2 raw dataset into this "
                                   "folder, named DatasetNNN_Name: input images and reference "
                                   "masks on their original grid, the folds as "
                                   "splits_final.json, test and unlabelled cases in imagesTs")
    log_dataset_mb: float = param(500.0, "upload the preprocessed arrays as run artifacts when "
                                         "smaller than this (MB); the descriptor is always logged")
    demo_labelled: int = param(30, "demo: labelled COVID phantoms")
    demo_unlabelled: int = param(20, "demo: unlabelled COVID phantoms (other centres)")
    demo_noncovid: int = param(10, "demo: non-COVID (nodule) phantoms")
    demo_size: int = param(128, "demo: in-plane size in pixels")
    demo_depth: int = param(48, "demo: scanned length in mm")
    demo_difficulty: float = param(0.5, "demo: 0 (easy) .. 1 (faint ground-glass, more noise)")
    demo_display_fraction: float = param(0.0, "demo: share of labelled cases stored as 0-255 "
                                              "display values instead of HU")
