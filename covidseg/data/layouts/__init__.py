"""Layout adapters: build a case manifest from a public dataset's own folder layout.

A manifest row (:class:`CaseRecord`) is: case id, image path, optional infection (or lesion)
mask, optional lung mask, source dataset, labelled or not, official split if any.

Adapters (``dataset=``):

* ``covid19-ct-seg`` — COVID-19-CT-Seg (Zenodo 3757476): ``COVID-19-CT-Seg_20cases/*.nii.gz``,
  ``Infection_Mask/<same name>``, ``Lung_Mask/<same name>``.
* ``mosmed`` — MosMedData: ``studies/CT-0..CT-4/study_NNNN.nii.gz``,
  ``masks/study_NNNN_mask.nii.gz``
  (the 50 masked CT-1 studies are labelled, the rest unlabelled; the CT grade is kept).
* ``msd-lung`` — Medical Segmentation Decathlon Task06_Lung: ``dataset.json`` with
  ``imagesTr``/``labelsTr`` (tumour masks) and ``imagesTs`` (official test split, unlabelled).
* ``nsclc`` — NSCLC pleural-effusion / lung masks: ``images/LUNG1-NNN.nii.gz``,
  ``masks/LUNG1-NNN_effusion*.nii.gz`` and ``masks/LUNG1-NNN_lung*.nii.gz``.
Each row also says what its mask marks (``task``): ``infection`` for the COVID sets, ``tumour``
(MSD), ``effusion`` (NSCLC), ``nodule`` (the demo's non-COVID cohort).  Splits are made over the
labelled ``infection`` cases; the others are auxiliary data for supervised pretraining.

* ``nnunet`` — an nnU-Net v2 raw dataset (``DatasetNNN_Name/``): ``dataset.json`` (one channel,
  ``labels``, ``file_ending``, ``numTraining``), ``imagesTr/<case>_0000<file_ending>`` with
  ``labelsTr/<case><file_ending>``, ``imagesTs/`` (with ``labelsTs/``: the official test split;
  a test image without a label is unlabelled), and ``splits_final.json`` (its validation folds
  become covidseg's folds).  The label names say which values are the lesion and which the lungs
  (:func:`nnunet_labels`); the label map is read through :attr:`CaseRecord.label_values`.
* ``glob`` — patterns ``images=``, ``masks=``, ``test_images=``, ``test_masks=``, ``unlabelled=``
  (relative to ``data`` or absolute); images and masks are paired by file stem (mask suffixes
  such as ``_mask``, ``_seg``, ``_label`` ignored).  Works for 2D slice sets (PNG/JPG/TIF).
* ``demo`` — the synthetic phantom cohort written by :mod:`covidseg.data.phantom`.
"""

from covidseg.data.layouts.adapters import ADAPTERS, build_manifest, detect_layout
from covidseg.data.layouts.manifest import (
    IMAGE_SUFFIXES,
    MANIFEST_FIELDS,
    CaseRecord,
    read_manifest,
    write_manifest,
)
from covidseg.data.layouts.nnunet_raw import NNUNET_CHANNEL, nnunet, nnunet_labels
from covidseg.data.layouts.patterns import FOLDER_PATTERNS, folder_patterns, glob_layout
from covidseg.data.layouts.sources import combine_sources, read_sources

__all__ = ["ADAPTERS", "FOLDER_PATTERNS", "IMAGE_SUFFIXES", "MANIFEST_FIELDS", "NNUNET_CHANNEL",
           "CaseRecord", "build_manifest", "combine_sources", "detect_layout", "folder_patterns",
           "glob_layout", "nnunet", "nnunet_labels", "read_manifest", "read_sources",
           "write_manifest"]
