"""Image readers (SimpleITK): NIfTI, MetaImage, DICOM series folders and 2D slice images.

Every reader returns a SimpleITK image with its geometry; nothing else of a file's header is
kept (privacy: no DICOM header value except geometry is ever copied, logged or written).
Failures raise a one-line :class:`~covidseg.base.errors.CaseError` that names the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from covidseg.base.errors import MissingInput, MissingSpacing, NaNValues, UnreadableFile

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd")
SLICE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
PIXEL_SPACING_TAG = "0028|0030"


def suffix_of(path: Path) -> str:
    name = path.name.lower()
    for s in (".nii.gz",) + VOLUME_SUFFIXES + SLICE_SUFFIXES:
        if name.endswith(s):
            return s
    return path.suffix.lower()


def stem_of(path: Path) -> str:
    """File name without its (possibly double) image extension: ``a/b/case_1.nii.gz`` →
    ``case_1``."""
    path = Path(path)
    s = suffix_of(path)
    return path.name[: -len(s)] if s and path.name.lower().endswith(s) else path.name


def is_slice_image(path: Path) -> bool:
    return suffix_of(Path(path)) in SLICE_SUFFIXES


def _itk_message(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # SimpleITK puts the useful part after the last "ITK ERROR:" / "Description:" marker
    for ln in lines:
        if "Description:" in ln:
            return ln.split("Description:", 1)[1].strip()
    return lines[-1] if lines else type(exc).__name__


def _nifti_header(header: bytes, path: Path):
    """(byte order, dims, datatype, bitpix, data offset, header size) of a NIfTI-1/2 header."""
    import struct

    if len(header) < 348:
        raise UnreadableFile(path, f"file is too short for a NIfTI header ({len(header)} bytes)")
    for endian in "<>":
        size = struct.unpack(endian + "i", header[:4])[0]
        if size == 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            dtype, bitpix = struct.unpack(endian + "2h", header[70:74])
            offset = int(struct.unpack(endian + "f", header[108:112])[0])
            return endian, dims, dtype, bitpix, offset, 352
        if size == 540:
            dims = struct.unpack(endian + "8q", header[16:80])
            dtype, bitpix = struct.unpack(endian + "2h", header[12:16])
            offset = int(struct.unpack(endian + "q", header[168:176])[0])
            return endian, dims, dtype, bitpix, offset, 544
    raise UnreadableFile(path, "not a NIfTI file (bad header size field)")


def _nifti_payload_check(path: Path) -> None:
    """Check what SimpleITK hides: it zero-fills a truncated NIfTI and reads NaN voxels as 0.

    Streams the file once (gzip's own end-of-stream check catches a cut .nii.gz), compares the
    bytes present with the size the header announces, and counts NaN/inf in float payloads.
    """
    import gzip

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    n_bad = 0
    try:
        with opener(path, "rb") as fh:
            header = fh.read(544)
            endian, dims, dtype, bitpix, offset, hsize = _nifti_header(header, path)
            float_dtype = {16: "f4", 64: "f8"}.get(dtype)
            start = max(offset, hsize)
            total = len(header)
            carry = header[start:] if len(header) > start else b""
            while True:
                chunk = fh.read(1 << 22)
                total += len(chunk)
                if float_dtype:
                    buf = carry + chunk
                    usable = len(buf) - len(buf) % (bitpix // 8)
                    vals = np.frombuffer(buf[:usable], dtype=endian + float_dtype)
                    n_bad += int(vals.size - np.isfinite(vals).sum())
                    carry = buf[usable:]
                if not chunk:
                    break
    except (OSError, EOFError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else "unexpected end"
        raise UnreadableFile(path, f"file is truncated or corrupt ({type(exc).__name__}: "
                                   f"{detail})") from exc
    n = int(np.prod([max(1, d) for d in dims[1:1 + max(0, min(int(dims[0]), 7))]], dtype=np.int64))
    expected = start + n * max(1, bitpix) // 8
    if total < expected:
        raise UnreadableFile(path, f"file is truncated: {total} bytes where the header needs "
                                   f"{expected}")
    if n_bad:
        raise NaNValues(path, f"{n_bad} voxels are NaN or infinite")


def dicom_series_files(folder: Path) -> list[str]:
    """The files of the largest DICOM series in ``folder``, in slice order (GDCM's sort along the
    slice normal): file ``i`` is slice ``i`` of :func:`read_dicom_series`'s image."""
    reader = sitk.ImageSeriesReader()
    try:
        series = reader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as exc:  # pragma: no cover - GDCM failure on an unreadable folder
        raise UnreadableFile(folder, f"not a readable DICOM folder ({_itk_message(exc)})") from exc
    if not series:
        raise UnreadableFile(folder, "folder holds no DICOM series")
    return list(max((reader.GetGDCMSeriesFileNames(str(folder), s) for s in series), key=len))


def read_dicom_series(folder: Path) -> sitk.Image:
    """Read the largest DICOM series in ``folder`` (its geometry only is used downstream)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(dicom_series_files(folder))
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise UnreadableFile(folder, f"cannot read DICOM series ({_itk_message(exc)})") from exc
    if not reader.HasMetaDataKey(0, PIXEL_SPACING_TAG):
        raise MissingSpacing(folder, "DICOM series has no Pixel Spacing (0028,0030)")
    return image


def read_slice_image(path: Path) -> sitk.Image:
    """A 2D slice (PNG/JPG/TIF/…): RGB is converted to luminance; returned as a one-slice volume.

    Such files carry no physical spacing: the image gets spacing 1 (pixel units), and the
    preprocessing resizes it to ``image_size`` instead of resampling to millimetres.
    """
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise UnreadableFile(path, f"cannot read image ({_itk_message(exc)})") from exc
    if image.GetNumberOfComponentsPerPixel() > 1:
        arr = sitk.GetArrayFromImage(image).astype(np.float32)
        if arr.shape[-1] >= 3:
            arr = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
        else:
            arr = arr[..., 0]
        image = sitk.GetImageFromArray(arr)
    if image.GetDimension() == 2:
        image = sitk.JoinSeries([image])
    image.SetSpacing((1.0, 1.0, 1.0))
    image.SetOrigin((0.0, 0.0, 0.0))
    image.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))
    return image


def read_image(path) -> sitk.Image:
    """Read a volume, a DICOM series folder or a 2D slice image as a 3D SimpleITK image."""
    if path is None or str(path).strip() == "":
        raise MissingInput("<empty path>", "no file given (empty path)")
    path = Path(path)
    if not path.exists():
        raise MissingInput(path, "file does not exist")
    if path.is_dir():
        return read_dicom_series(path)
    if path.stat().st_size == 0:
        raise UnreadableFile(path, "file is empty (0 bytes)")
    if is_slice_image(path):
        return read_slice_image(path)
    if suffix_of(path) in (".nii", ".nii.gz"):
        _nifti_payload_check(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise UnreadableFile(path, f"cannot read image ({_itk_message(exc)})") from exc
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise UnreadableFile(path, f"has {image.GetNumberOfComponentsPerPixel()} components per "
                                   "voxel; expected a scalar CT volume")
    if image.GetDimension() == 2:
        image = sitk.JoinSeries([image])
    elif image.GetDimension() == 4:
        size = list(image.GetSize())
        if size[3] != 1:
            raise UnreadableFile(path, f"is 4D with {size[3]} time points; expected a 3D volume")
        image = image[:, :, :, 0]
    spacing = image.GetSpacing()
    if any((not np.isfinite(s)) or s <= 0 for s in spacing):
        raise MissingSpacing(path, f"has no valid voxel spacing ({spacing})")
    return image


def to_canonical(image: sitk.Image) -> sitk.Image:
    """Reorient to LPS so that every array is (z, y, x) with anterior up and patient-right left."""
    try:
        orient = sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(
            image.GetDirection())
    except RuntimeError:  # pragma: no cover - degenerate direction
        return image
    return image if orient == "LPS" else sitk.DICOMOrient(image, "LPS")


def geometry_of(image: sitk.Image) -> dict:
    """The only header values covidseg keeps: size, spacing, origin, direction."""
    return {
        "size": list(image.GetSize()),
        "spacing": [float(s) for s in image.GetSpacing()],
        "origin": [float(o) for o in image.GetOrigin()],
        "direction": [float(d) for d in image.GetDirection()],
    }
