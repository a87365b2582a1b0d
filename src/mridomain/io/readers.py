"""Read pixels (+ header fields) of DICOM files and series, NIfTI volumes and 2-D images.

Every reader returns an :class:`ImageData` whose ``pixels`` are float32 ``(S, H, W)``, in
the modality's units (DICOM rescale applied) and with MONOCHROME1 already inverted, so that
"bright" means the same thing whatever the source.
"""
from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from mridomain.errors import EmptyInputError, ImageReadError
from mridomain.io.headers import (
    _first_item,
    _one_line,
    header_fields_from_dataset,
    iter_candidate_files,
    open_dicom,
    to_python,
)

__all__ = [
    "ImageData",
    "read_image",
    "read_dicom",
    "read_dicom_series",
    "read_nifti",
    "read_bitmap",
    "dataset_pixels",
    "slice_sort_key",
    "NIFTI_SUFFIXES",
    "BITMAP_SUFFIXES",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
BITMAP_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass
class ImageData:
    """Pixels and metadata of one image or volume.

    ``pixels`` float32 ``(S, H, W)`` (a 2-D image has S == 1); ``meta`` the header fields of
    :func:`mridomain.io.read_header_fields` (of the first slice for a series) plus
    ``"source_format"`` (``dicom``, ``nifti``, ``png``, ``jpeg``, ``tiff``, ``bmp``);
    ``spacing`` ``(slice, row, col)`` in mm where known (slice spacing from positions, else
    SpacingBetweenSlices / SliceThickness, NaN if none is given; ``None`` when PixelSpacing is
    unknown, e.g. PNG); ``files`` one path per slice for a
    DICOM series, else ``[source]``.
    """

    pixels: np.ndarray
    meta: dict[str, Any]
    source: Path
    spacing: tuple[float, float, float] | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.pixels.shape)  # type: ignore[return-value]


# ----------------------------------------------------------------------------- dispatch
def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def read_image(path: str | Path, series_uid: str | None = None) -> ImageData:
    """Read any supported image: a DICOM file (with or without ``.dcm``), a DICOM series
    folder, a NIfTI volume (``.nii`` / ``.nii.gz``) or a PNG / JPEG / TIFF / BMP picture.

    Dispatch: a folder is a DICOM series; ``.nii`` / ``.nii.gz`` is NIfTI; a picture suffix
    (:data:`BITMAP_SUFFIXES`) goes to Pillow; any other file is read as DICOM (``DICM`` preamble
    or a raw preamble-less dataset). ``series_uid`` picks one series from a folder holding several.
    """
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path, series_uid=series_uid)
    if not path.exists():
        raise ImageReadError(path, "file not found")
    suffix = _suffix(path)
    if suffix in NIFTI_SUFFIXES:
        return read_nifti(path)
    if suffix in BITMAP_SUFFIXES:
        return read_bitmap(path)
    return read_dicom(path)


# ----------------------------------------------------------------------------- DICOM pixels
def _frame_rescale(ds: Dataset, n_frames: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-frame (slope, intercept) from top level or the Pixel Value Transformation
    functional group (per-frame first, then shared); None when no rescale is defined."""
    slopes = np.ones(n_frames, dtype=np.float64)
    intercepts = np.zeros(n_frames, dtype=np.float64)
    found = False
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        slopes[:] = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercepts[:] = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        found = True
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    shared_item = _first_item(shared, "PixelValueTransformationSequence") if shared is not None else None
    if shared_item is not None:
        slopes[:] = float(shared_item.get("RescaleSlope", 1.0) or 1.0)
        intercepts[:] = float(shared_item.get("RescaleIntercept", 0.0) or 0.0)
        found = True
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) == n_frames:
        for i, groups in enumerate(per_frame):
            item = _first_item(groups, "PixelValueTransformationSequence")
            if item is not None:
                slopes[i] = float(item.get("RescaleSlope", 1.0) or 1.0)
                intercepts[i] = float(item.get("RescaleIntercept", 0.0) or 0.0)
                found = True
    return (slopes, intercepts) if found else None


def _expected_pixel_bytes(ds: Dataset) -> int:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    bits = int(ds.get("BitsAllocated", 16))
    n = int(ds.Rows) * int(ds.Columns) * frames * int(ds.get("SamplesPerPixel", 1))
    return (n * bits + 7) // 8


def dataset_pixels(ds: Dataset, path: str | Path = "<dataset>") -> np.ndarray:
    """Float32 ``(S, H, W)`` pixels of an open dataset: decoded (pylibjpeg handles JPEG,
    JPEG-LS, JPEG 2000; pydicom RLE), rescaled with RescaleSlope/Intercept (per frame for
    enhanced MR) or the Modality LUT, MONOCHROME1 inverted, colour converted to luminance.
    """
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageReadError(path, "no pixel data")
    if "Rows" not in ds or "Columns" not in ds:
        raise ImageReadError(path, "corrupt DICOM header: pixel data without Rows/Columns")
    ts = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID", None)
    if "PixelData" in ds and ts is not None:
        if not ts.is_compressed:
            have = len(ds.PixelData)
            need = _expected_pixel_bytes(ds)
            if have < need:
                raise ImageReadError(path, f"truncated file: pixel data has {have} bytes, expected {need}")
    try:
        arr = ds.pixel_array
    except (ValueError, RuntimeError, NotImplementedError, TypeError, AttributeError, KeyError, zlib.error) as exc:
        ts_name = ts.name if ts is not None else "unknown transfer syntax"
        raise ImageReadError(path, f"cannot decode pixel data ({ts_name}): {_one_line(exc)}") from None

    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(ds.get("SamplesPerPixel", 1))
    if samples > 1:
        # pydicom returns RGB (YBR converted) as (..., H, W, 3); ITU-R BT.601 luma like Pillow's "L".
        rgb = arr.astype(np.float32)
        arr = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    elif arr.ndim != 3:
        raise ImageReadError(path, f"unexpected pixel array shape {arr.shape}")
    if arr.shape[0] != n_frames and n_frames > 1:
        raise ImageReadError(path, f"pixel data holds {arr.shape[0]} frames, header says {n_frames}")

    if samples == 1 and "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        out = np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    else:
        out = arr.astype(np.float32, copy=True)
        rescale = _frame_rescale(ds, out.shape[0]) if samples == 1 else None
        if rescale is not None:
            slopes, intercepts = rescale
            out = (out * slopes[:, None, None] + intercepts[:, None, None]).astype(np.float32)
    if photometric == "MONOCHROME1":
        # MONOCHROME1: the minimum value is white. Mirror inside the stored range so that
        # bright means high signal, as for MONOCHROME2; the value range is kept.
        out = (out.max() + out.min()) - out
    return out


def _frame_positions(ds: Dataset, n_frames: int) -> list[list[float]] | None:
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None or len(per_frame) != n_frames:
        return None
    positions = []
    for groups in per_frame:
        item = _first_item(groups, "PlanePositionSequence")
        if item is None or "ImagePositionPatient" not in item:
            return None
        positions.append([float(v) for v in item.ImagePositionPatient])
    return positions


def _spacing_from_fields(fields: dict[str, Any], slice_spacing: float | None = None) -> tuple[float, float, float] | None:
    spacing = fields.get("PixelSpacing")
    if not spacing or len(spacing) < 2:
        return None
    if slice_spacing is None:
        slice_spacing = fields.get("SpacingBetweenSlices") or fields.get("SliceThickness")
    try:
        return (float(slice_spacing) if slice_spacing else float("nan"), float(spacing[0]), float(spacing[1]))
    except (TypeError, ValueError):
        return None


def read_dicom(path: str | Path) -> ImageData:
    """One DICOM file (single- or multi-frame, any transfer syntax pylibjpeg can decode)."""
    path = Path(path)
    ds = open_dicom(path)
    pixels = dataset_pixels(ds, path)
    fields = header_fields_from_dataset(ds, extra=("SpacingBetweenSlices", "PhotometricInterpretation"))
    fields["source_format"] = "dicom"
    slice_spacing = None
    positions = _frame_positions(ds, pixels.shape[0])
    if positions is not None:
        fields["FramePositions"] = positions
        orientation = fields.get("ImageOrientationPatient")
        if orientation and len(orientation) == 6 and len(positions) > 1:
            proj = np.array([slice_sort_key(p, orientation) for p in positions])
            steps = np.abs(np.diff(proj))
            steps = steps[steps > 1e-6]
            if steps.size:
                slice_spacing = float(np.median(steps))
    return ImageData(pixels, fields, path, _spacing_from_fields(fields, slice_spacing), [path])


# ----------------------------------------------------------------------------- DICOM series
def slice_sort_key(position: Any, orientation: Any) -> float:
    """Distance of a slice along the stack normal: ImagePositionPatient projected on
    row x column of ImageOrientationPatient (PS3.3 C.7.6.2.1.1)."""
    row = np.asarray(orientation[:3], dtype=np.float64)
    col = np.asarray(orientation[3:6], dtype=np.float64)
    normal = np.cross(row, col)
    return float(np.dot(np.asarray(position, dtype=np.float64), normal))


def read_dicom_series(
    folder: str | Path,
    series_uid: str | None = None,
    progress: bool = False,
) -> ImageData:
    """All slices of one DICOM series in a folder (searched recursively), in spatial order.

    Slices are sorted by the projection of ImagePositionPatient on the slice normal when every
    slice has position and orientation, else by InstanceNumber, else by file name. Files that
    are not DICOM are ignored (listed in ``meta["skipped"]``). A folder holding several series
    raises unless ``series_uid`` names one.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(folder, "not a folder")
    files = list(iter_candidate_files(folder))
    if not files:
        raise EmptyInputError(folder, "empty folder: no files")

    iterator = files
    if progress:
        from mridomain.progress import progress_bar

        iterator = progress_bar(files, desc=f"reading {folder.name}", unit="file")
    groups: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    skipped: list[tuple[str, str]] = []
    for f in iterator:
        try:
            # defer_size keeps pixel bytes on disk until decoded, so unwanted series cost little.
            ds = open_dicom(f, defer_size="64 KB")
        except ImageReadError as exc:
            skipped.append((str(f), exc.reason))
            continue
        if "PixelData" not in ds:
            skipped.append((str(f), "no pixel data"))
            continue
        groups[str(ds.get("SeriesInstanceUID", "") or "")].append((f, ds))
    if not groups:
        first = f"; first: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise EmptyInputError(folder, f"no DICOM images found ({len(skipped)} files skipped{first})")
    if series_uid is not None:
        if series_uid not in groups:
            raise ImageReadError(folder, f"series {series_uid} not found; folder holds {len(groups)} series")
        members = groups[series_uid]
    elif len(groups) > 1:
        listing = ", ".join(f"{uid or '<no UID>'} ({len(v)} files)" for uid, v in sorted(groups.items()))
        raise ImageReadError(
            folder, f"folder holds {len(groups)} series ({listing}); pass series_uid= to choose one"
        )
    else:
        members = next(iter(groups.values()))

    members = _sort_slices(members)
    stacks = []
    for f, ds in members:
        stacks.append(dataset_pixels(ds, f))
    shapes = {s.shape[1:] for s in stacks}
    if len(shapes) > 1:
        raise ImageReadError(folder, f"slices of the series have different sizes {sorted(shapes)}")
    pixels = np.concatenate(stacks, axis=0)
    slice_files = [f for (f, ds), s in zip(members, stacks) for _ in range(s.shape[0])]

    fields = header_fields_from_dataset(members[0][1], extra=("SpacingBetweenSlices", "PhotometricInterpretation"))
    fields["source_format"] = "dicom"
    fields["n_slices"] = int(pixels.shape[0])
    if skipped:
        fields["skipped"] = skipped
    slice_spacing = None
    keys = [_position_key(ds) for _, ds in members]
    if len(members) > 1 and all(k is not None for k in keys):
        steps = np.abs(np.diff(np.array(keys, dtype=np.float64)))
        steps = steps[steps > 1e-6]
        if steps.size:
            slice_spacing = float(np.median(steps))
    return ImageData(pixels, fields, folder, _spacing_from_fields(fields, slice_spacing), slice_files)


def _position_key(ds: Dataset) -> float | None:
    position = ds.get("ImagePositionPatient")
    orientation = ds.get("ImageOrientationPatient")
    if position is None or orientation is None or len(position) != 3 or len(orientation) != 6:
        return None
    return slice_sort_key(to_python(position), to_python(orientation))


def _sort_slices(members: list[tuple[Path, Dataset]]) -> list[tuple[Path, Dataset]]:
    keys = [_position_key(ds) for _, ds in members]
    if all(k is not None for k in keys) and len(set(keys)) == len(keys):
        order = sorted(range(len(members)), key=lambda i: (keys[i], str(members[i][0])))
        return [members[i] for i in order]

    def instance(item: tuple[Path, Dataset]) -> tuple[int, int, str]:
        number = item[1].get("InstanceNumber")
        try:
            return (0, int(number), str(item[0]))
        except (TypeError, ValueError):
            return (1, 0, str(item[0]))

    return sorted(members, key=instance)


# ----------------------------------------------------------------------------- NIfTI
def _check_nonempty_file(path: Path) -> None:
    """One-line ImageReadError for a missing, unreadable or empty file (not a raw OSError)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot open: {exc.strerror or exc}") from None
    if size == 0:
        raise ImageReadError(path, "empty file")


def read_nifti(path: str | Path) -> ImageData:
    """NIfTI-1/2 volume via nibabel, as ``(S, H, W)`` with S along the last voxel axis.

    ``pixels[s, h, w] = data[w, h, s]``: the first voxel axis (i) runs along image columns
    and the second (j) along rows, like DICOM-derived NIfTI files; no reorientation to a
    canonical frame is done (the affine is kept in ``meta["affine"]``). Scaling
    (scl_slope/scl_inter) is applied. Spacing ``(dk, dj, di)`` comes from the header zooms.
    """
    import nibabel as nib

    path = Path(path)
    _check_nonempty_file(path)
    try:
        img = nib.load(str(path))
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except (nib.filebasedimages.ImageFileError, EOFError, zlib.error) as exc:
        raise ImageReadError(path, f"not a readable NIfTI file ({_one_line(exc)})") from None
    except (OSError, ValueError) as exc:
        reason = _one_line(exc)
        if "truncat" in reason.lower() or "end of file" in reason.lower() or "expected" in reason.lower():
            raise ImageReadError(path, f"truncated file: {reason}") from None
        raise ImageReadError(path, f"not a readable NIfTI file ({reason})") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, np.newaxis]
    if data.ndim != 3:
        raise ImageReadError(path, f"{data.ndim}-D NIfTI with shape {data.shape}: only 2-D or 3-D volumes are supported")
    pixels = np.ascontiguousarray(np.transpose(data, (2, 1, 0)), dtype=np.float32)
    zooms = [float(z) for z in img.header.get_zooms()[:3]] + [1.0, 1.0, 1.0]
    spacing = (zooms[2], zooms[1], zooms[0])
    meta: dict[str, Any] = {
        "source_format": "nifti",
        "affine": np.asarray(img.affine).tolist(),
        "Rows": int(pixels.shape[1]),
        "Columns": int(pixels.shape[2]),
        "PixelSpacing": [spacing[1], spacing[2]],
    }
    return ImageData(pixels, meta, path, spacing, [path])


# ----------------------------------------------------------------------------- PNG / JPEG / TIFF
def read_bitmap(path: str | Path) -> ImageData:
    """PNG / JPEG / TIFF / BMP via Pillow; colour is converted to luminance (ITU-R BT.601,
    Pillow's "L" weights) in float, 16-bit grey keeps its full range; multi-page TIFF pages
    become slices."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    _check_nonempty_file(path)
    try:
        with Image.open(path) as img:
            fmt = (img.format or _suffix(path).lstrip(".")).lower()
            frames = []
            for index in range(getattr(img, "n_frames", 1)):
                img.seek(index)
                frames.append(_bitmap_to_grey(img))
    except UnidentifiedImageError:
        raise ImageReadError(path, f"not a readable {_suffix(path).lstrip('.').upper()} image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = _one_line(exc)
        if "truncated" in reason.lower():
            raise ImageReadError(path, f"truncated file: {reason}") from None
        raise ImageReadError(path, f"corrupt image: {reason}") from None
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise ImageReadError(path, f"pages of different sizes {sorted(shapes)}")
    pixels = np.stack(frames).astype(np.float32, copy=False)
    fmt = {"jpg": "jpeg", "tif": "tiff"}.get(fmt, fmt)
    meta = {"source_format": fmt, "Rows": int(pixels.shape[1]), "Columns": int(pixels.shape[2])}
    return ImageData(pixels, meta, path, None, [path])


def _bitmap_to_grey(img: Any) -> np.ndarray:
    mode = img.mode
    if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "P", "PA", "LA", "HSV", "LAB"):
        rgb = np.asarray(img.convert("RGB"), dtype=np.float32)
        return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    if mode == "1":
        return np.asarray(img, dtype=np.float32)
    # L, I, I;16*, F: grey values kept as stored (no 8-bit truncation of 16-bit images).
    return np.asarray(img).astype(np.float32)
