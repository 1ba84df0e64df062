"""DICOM Segmentation (SEG) out: a predicted lesion mask as a SEG object next to its source series.

A DICOM series input gets, besides the NIfTI mask, one BINARY SEG instance (``highdicom``) that
3D Slicer, OHIF and PACS viewers open on top of the CT: one frame per source slice that holds
lesion (empty frames omitted), each frame referencing its source slice by SOP Instance UID and
placed by that slice's own position, in the source's Frame of Reference.  Segments: the binary
model's ``infection`` (SCT 52988006 "Lesion"), or the multi-class model's ``ground-glass
opacity`` (DCM 112120 "Ground glass opacity") and ``consolidation`` (DCM 112001 "Opacity": the
code dictionaries highdicom uses have no consolidation concept, so the segment label says which
opacity), all of category SCT 49755003 "Morphologically abnormal structure" in the lung (SCT
39607008).

Privacy: highdicom copies the Patient, General Study, Clinical Trial and acquisition equipment
attributes of its first source image into the SEG.  So it never sees the source headers: each
slice is read with pydicom (no pixels) and only what a SEG needs to sit on the source passes into
a fresh dataset — geometry (rows, columns, pixel spacing, position, orientation, slice thickness)
and the UIDs that reference the source (SOP Class/Instance, Series, Study, Frame of Reference)
plus its modality.  The Patient and Study attributes the SEG must carry (Type 2: PatientName,
PatientID, PatientBirthDate, PatientSex, StudyDate, StudyTime, StudyID, AccessionNumber,
ReferringPhysicianName) are present and empty.  Viewers still attach the SEG to its study by the
Study Instance UID.

A SEG that cannot be made (a series without Frame of Reference UID, a multi-frame file, a write
failure) is one warning line; the NIfTI mask already written stays.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from covidseg.base.errors import first_line
from covidseg.data.readers import dicom_series_files

log = logging.getLogger("covidseg.dicom_seg")

# what passes from a source slice into the dataset highdicom sees: geometry and references
REFERENCE_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
                      "FrameOfReferenceUID", "Modality", "Rows", "Columns", "PixelSpacing",
                      "ImagePositionPatient", "ImageOrientationPatient", "SliceThickness")
REQUIRED_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
                     "FrameOfReferenceUID", "Rows", "Columns", "PixelSpacing",
                     "ImagePositionPatient", "ImageOrientationPatient")
# Type 2 attributes of the Patient and General Study modules: present, and empty
EMPTY_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                  "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName")


class SegUnavailable(Exception):
    """Why a series gets no SEG (one line; the caller logs it and goes on)."""


def source_reference(header):
    """A pydicom dataset with only what a SEG needs of one source slice (geometry and UIDs)."""
    from pydicom.dataset import Dataset

    missing = [k for k in REQUIRED_KEYWORDS if k not in header]
    if missing:
        raise SegUnavailable(f"the source series has no {', '.join(missing)}")
    if int(header.get("NumberOfFrames", 1) or 1) > 1:
        raise SegUnavailable("multi-frame source images are not supported")
    ds = Dataset()
    for keyword in REFERENCE_KEYWORDS:
        if keyword in header:
            setattr(ds, keyword, header[keyword].value)
    for keyword in EMPTY_KEYWORDS:
        setattr(ds, keyword, "")
    return ds


def segment_descriptions(multiclass: bool) -> list:
    """The segments: ``infection`` (binary model), or ground-glass opacity and consolidation
    (labels 1 and 2 of a multi-class model's mask)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    import covidseg

    algorithm = hd.AlgorithmIdentificationSequence(
        name="covidseg", family=codes.cid7162.ArtificialIntelligence,
        version=covidseg.__version__)
    kinds = ([("ground-glass opacity", codes.DCM.GroundGlassOpacity),
              ("consolidation", codes.DCM.Opacity)] if multiclass
             else [("infection", codes.SCT.Lesion)])
    return [hd.seg.SegmentDescription(
        segment_number=i, segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=code, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm, anatomic_regions=[codes.SCT.Lung])
        for i, (label, code) in enumerate(kinds, start=1)]


def build_dicom_seg(series: Path, labels: np.ndarray, multiclass: bool):
    """The SEG of ``labels`` — (z, y, x) on the grid :func:`read_dicom_series` read from
    ``series``, 0 background, 1.. segment numbers — over the series' slices."""
    import highdicom as hd
    import pydicom

    import covidseg

    files = dicom_series_files(Path(series))
    if len(files) != labels.shape[0]:
        raise SegUnavailable(f"{len(files)} DICOM files for {labels.shape[0]} mask slices "
                             "(multi-frame or mixed series)")
    sources = [source_reference(pydicom.dcmread(f, stop_before_pixels=True)) for f in files]
    if (sources[0].Rows, sources[0].Columns) != labels.shape[1:]:
        raise SegUnavailable(f"source slices are {sources[0].Rows} x {sources[0].Columns}, the "
                             f"mask's {labels.shape[1]} x {labels.shape[2]}")
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=labels.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(multiclass),
        series_instance_uid=hd.UID(), series_number=900, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="covidseg", manufacturer_model_name="covidseg",
        software_versions=covidseg.__version__, device_serial_number="none",
        series_description="covidseg lesion segmentation", content_label="LESIONS",
        content_description="COVID-19 lesions predicted by covidseg")


def write_dicom_seg(series: Path, labels: np.ndarray, path: Path,
                    multiclass: bool = False) -> Path | None:
    """Write the SEG of ``labels`` (see :func:`build_dicom_seg`) to ``path``; None and one warning
    line when it cannot be made (nothing else written is touched; no partial file is left)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    try:
        build_dicom_seg(series, labels, multiclass).save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
    except Exception as exc:  # noqa: BLE001 - whatever fails, the NIfTI mask stays the result
        tmp.unlink(missing_ok=True)
        reason = str(exc) if isinstance(exc, SegUnavailable) else \
            f"{type(exc).__name__}: {first_line(exc)}"
        log.warning("%s: no DICOM SEG written (%s)", Path(series).name, reason)
        return None
    return path
