"""Read pixels (+ header fields) of DICOM files and series, NIfTI volumes and 2-D images.

Every reader returns an :class:`ImageData` whose ``pixels`` are float32 ``(S, H, W)``, in
the modality's units (DICOM rescale applied) and with MONOCHROME1 already inverted, so that
"bright" means the same thing whatever the source.
"""
from __future__ import annotations

import math
import os
import warnings
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from mridomain.errors import EmptyInputError, ImageReadError
from mridomain.io.fields import (VOLUME_KEYWORDS, _first_item, header_fields_from_dataset, is_mosaic,
                                 mosaic_fields, to_python, transfer_syntax, transfer_syntax_uid)
from mridomain.io.headers import _is_image_header, _open_dicom, open_dicom
from mridomain.io.pixel_checks import _one_line, pixel_data_problem, pixel_fields
from mridomain.io.walk import iter_candidate_files
from mridomain.io.kinds import kind_problem, volume_labels

__all__ = [
    "DicomVolume",
    "ImageData",
    "read_dicom_volume",
    "scan_dicom_files",
    "scan_dicom_folder",
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
        """The pixel array's shape."""
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
        slopes[:] = _float(ds, "RescaleSlope", 1.0)
        intercepts[:] = _float(ds, "RescaleIntercept", 0.0)
        found = True
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    shared_item = _first_item(shared, "PixelValueTransformationSequence") if shared is not None else None
    if shared_item is not None:
        slopes[:] = _float(shared_item, "RescaleSlope", 1.0)
        intercepts[:] = _float(shared_item, "RescaleIntercept", 0.0)
        found = True
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) == n_frames:
        for i, groups in enumerate(per_frame):
            item = _first_item(groups, "PixelValueTransformationSequence")
            if item is not None:
                slopes[i] = _float(item, "RescaleSlope", 1.0)
                intercepts[i] = _float(item, "RescaleIntercept", 0.0)
                found = True
    return (slopes, intercepts) if found else None


def _float(ds: Dataset, keyword: str, default: float) -> float:
    """A DS value as float; the default when absent, empty, malformed or not finite."""
    try:
        value = float(ds.get(keyword, default) or default)
    except (TypeError, ValueError, OverflowError):
        return default
    return value if np.isfinite(value) else default


def dataset_pixels(ds: Dataset, path: str | Path = "<dataset>") -> np.ndarray:
    """Float32 ``(S, H, W)`` pixels of an open dataset: decoded (pylibjpeg handles JPEG,
    JPEG-LS, JPEG 2000; pydicom RLE), rescaled with RescaleSlope/Intercept (per frame for
    enhanced MR) or the Modality LUT, MONOCHROME1 inverted, colour converted to luminance, and a
    Siemens mosaic unpacked into its slices (count from the CSA header).
    """
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageReadError(path, "no pixel data")
    if "Rows" not in ds or "Columns" not in ds:
        raise ImageReadError(path, "corrupt DICOM header: pixel data without Rows/Columns")
    transfer = transfer_syntax(ds)
    ts = transfer_syntax_uid(transfer) if transfer else None
    if "PixelData" in ds:
        try:
            raw = ds["PixelData"]
        except Exception as exc:  # noqa: BLE001 - pydicom converts it on access: a wrong VR raises
            raise ImageReadError(path, f"cannot decode pixel data: {_one_line(exc)}") from None
        length = 0xFFFFFFFF if raw.is_undefined_length else len(raw.value)
        # The one pixel data check (io.headers): 4:2:2 subsampling, frame counts, group 0028 values
        # (the fragments of encapsulated data pydicom checks itself as it decodes them).
        problem = pixel_data_problem(length, len(raw.value), pixel_fields(ds), transfer)
        if problem is not None:
            raise ImageReadError(path, problem)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # excess padding and similar: pydicom copes
            arr = ds.pixel_array
    except MemoryError:
        raise ImageReadError(path, "cannot decode pixel data: more than the memory holds") from None
    except Exception as exc:  # noqa: BLE001 - decoders of damaged data raise anything (StopIteration too)
        ts_name = ts.name if ts is not None else "unknown transfer syntax"
        raise ImageReadError(path, f"cannot decode pixel data ({ts_name}): {_one_line(exc) or type(exc).__name__}") from None

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

    if samples == 1 and "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        try:
            out = np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
        except Exception as exc:  # noqa: BLE001 - a damaged LUT may raise anything
            raise ImageReadError(path, f"cannot apply the modality LUT: {_one_line(exc)}") from None
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
    if is_mosaic({"ImageType": _image_type(ds)}):
        out = _unpack_mosaic(out, mosaic_fields(ds).get("NumberOfImagesInMosaic"), path)
    return out


def _image_type(ds: Dataset) -> list[Any]:
    try:
        return list(to_python(ds.get("ImageType")) or [])
    except Exception:  # noqa: BLE001 - an unreadable ImageType says nothing
        return []


def _unpack_mosaic(pixels: np.ndarray, count: int | None, path: str | Path) -> np.ndarray:
    """The ``count`` tiles of a Siemens mosaic, row by row on a ceil(sqrt(count)) square grid
    (the layout nibabel.nicom and dcm2niix read), as slices ``(count, h, w)``."""
    if count is None:
        raise ImageReadError(path, "Siemens mosaic without a readable slice count "
                                   "(NumberOfImagesInMosaic in the CSA image header)")
    if pixels.shape[0] != 1:
        raise ImageReadError(path, f"Siemens mosaic with {pixels.shape[0]} frames (one expected)")
    grid = math.ceil(math.sqrt(count))
    rows, cols = pixels.shape[1:]
    if rows % grid or cols % grid:
        raise ImageReadError(path, f"Siemens mosaic of {rows}x{cols} pixels cannot hold {count} tiles "
                                   f"on a {grid}x{grid} grid")
    h, w = rows // grid, cols // grid
    tiles = pixels[0].reshape(grid, h, grid, w).transpose(0, 2, 1, 3).reshape(grid * grid, h, w)
    return np.ascontiguousarray(tiles[:count])


def _frame_positions(ds: Dataset, n_frames: int) -> list[list[float]] | None:
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None or len(per_frame) != n_frames:
        return None
    positions = []
    for groups in per_frame:
        item = _first_item(groups, "PlanePositionSequence")
        if item is None or "ImagePositionPatient" not in item:
            return None
        try:
            positions.append([float(v) for v in item.ImagePositionPatient])
        except (TypeError, ValueError, OverflowError):
            return None
    return positions


#: Per-frame values that tell the volumes inside one enhanced multi-frame file apart
#: (functional group, keyword): PS3.3 C.7.6.16.2.2 (frame content), C.8.13.5.9 (diffusion), C.8.13.5.2 (echo).
_FRAME_VOLUME_KEYS = (("FrameContentSequence", "TemporalPositionIndex"),
                      ("MRDiffusionSequence", "DiffusionBValue"),
                      ("MREchoSequence", "EffectiveEchoTime"))


def _frame_volume_values(ds: Dataset, n_frames: int) -> list[dict[str, Any]] | None:
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None or len(per_frame) != n_frames:
        return None
    values = []
    for groups in per_frame:
        row: dict[str, Any] = {}
        for group, keyword in _FRAME_VOLUME_KEYS:
            item = _first_item(groups, group)
            if item is not None and keyword in item:
                try:
                    row[keyword] = to_python(item[keyword].value)
                except (TypeError, ValueError, OverflowError):
                    pass
        values.append(row)
    return values


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


_READ_EXTRA = ("SpacingBetweenSlices", "PhotometricInterpretation")


def read_dicom(path: str | Path) -> ImageData:
    """One DICOM file (single- or multi-frame, any transfer syntax pylibjpeg can decode; a
    Siemens mosaic comes back as its slices). A multi-frame file whose frames repeat slice
    positions records the volume of each frame in ``meta["FrameVolumes"]`` (what tells them
    apart in ``meta["FrameVolumesBy"]``)."""
    path = Path(path)
    ds = open_dicom(path)
    with warnings.catch_warnings():
        # pydicom converts values on access and warns about every odd one; what makes a file
        # unreadable is raised as a one-line reason instead
        warnings.simplefilter("ignore")
        pixels = dataset_pixels(ds, path)
        fields = header_fields_from_dataset(ds, extra=_READ_EXTRA)
    fields["source_format"] = "dicom"
    slice_spacing = None
    positions = _frame_positions(ds, pixels.shape[0])
    if positions is not None:
        fields["FramePositions"] = positions
        orientation = fields.get("ImageOrientationPatient")
        if orientation and len(orientation) == 6 and len(positions) > 1:
            labels, by = _frame_volumes(ds, fields)
            if labels is not None:
                fields["FrameVolumes"], fields["FrameVolumesBy"] = labels, by
            proj = [slice_sort_key(p, orientation) for p, v in zip(positions, labels or [0] * len(positions))
                    if v == 0]
            steps = np.abs(np.diff(np.sort(np.array(proj))))
            steps = steps[steps > 1e-6]
            if steps.size:
                slice_spacing = float(np.median(steps))
    if is_mosaic(fields):
        fields["n_slices"] = int(pixels.shape[0])
    return ImageData(pixels, fields, path, _spacing_from_fields(fields, slice_spacing), [path])


# ----------------------------------------------------------------------------- DICOM series
def slice_sort_key(position: Any, orientation: Any) -> float:
    """Distance of a slice along the stack normal: ImagePositionPatient projected on
    row x column of ImageOrientationPatient (PS3.3 C.7.6.2.1.1)."""
    row = np.asarray(orientation[:3], dtype=np.float64)
    col = np.asarray(orientation[3:6], dtype=np.float64)
    normal = np.cross(row, col)
    return float(np.dot(np.asarray(position, dtype=np.float64), normal))


@dataclass
class _Member:
    """One DICOM image file found in a folder: its header fields, read without pixels."""

    path: Path
    fields: dict[str, Any]
    frame_volumes: list[int] | None = None     # volume of each frame (multi-frame files)
    frame_volumes_by: str = ""
    copies: list[Path] = field(default_factory=list)   # other files of the same SOPInstanceUID

    @property
    def position(self) -> float | None:
        if is_mosaic(self.fields):
            return 0.0  # every mosaic is a whole volume: its files repeat one position
        position, orientation = self.fields.get("ImagePositionPatient"), self.fields.get("ImageOrientationPatient")
        try:
            if not position or not orientation or len(position) != 3 or len(orientation) != 6:
                return None
            return slice_sort_key(position, orientation)
        except (TypeError, ValueError):
            return None


@dataclass
class DicomVolume:
    """One volume of one series found in a folder (:func:`scan_dicom_folder`), read with
    :func:`read_dicom_volume`. ``volume`` counts from 0; ``volume_key`` says what sets it apart
    (``"EchoNumbers=2"``; ``""`` for a series of one volume)."""

    series_uid: str
    volume: int
    n_volumes: int
    volume_key: str
    files: list[Path]                       # in slice order
    fields: dict[str, Any]                  # header fields of the first file
    positions: list[float | None] = field(default_factory=list)   # mm along the normal, per file
    frames: list[int] | None = None         # the frames of a multi-frame file (None: all)
    copies: dict[Path, list[Path]] = field(default_factory=dict)   # file -> other files of its SOPInstanceUID


def scan_dicom_folder(folder: str | Path, progress: bool = False,
                      skipped: list[tuple[str, str]] | None = None,
                      keep_kinds: Iterable[str] | None = None) -> list[DicomVolume]:
    """Every DICOM image below ``folder`` (any depth), grouped into series and each series into
    its volumes (:func:`mridomain.io.volume_labels`: images that repeat a slice position by
    temporal position, b-value, echo or acquisition; one volume per Siemens mosaic; the volumes
    inside an enhanced multi-frame file by their frame content), files in slice order.

    Headers only (no pixels are decoded; pixel data checked as the index checks them). Files that
    are not readable DICOM images go to ``skipped`` as ``(path, reason)``; with ``keep_kinds``
    (not None) so do images of a kind not kept (``io.image_kind``: phase, derived, localizer,
    secondary capture). Volumes come sorted by (PatientID, SeriesInstanceUID, volume).
    """
    folder = Path(folder)
    return scan_dicom_files(list(iter_candidate_files(folder)), progress=progress, skipped=skipped,
                            keep_kinds=keep_kinds, desc=f"reading headers in {folder.name}")


def scan_dicom_files(files: Iterable[str | Path], progress: bool = False,
                     skipped: list[tuple[str, str]] | None = None,
                     keep_kinds: Iterable[str] | None = None, desc: str = "reading headers") -> list[DicomVolume]:
    """:func:`scan_dicom_folder` of a list of files."""
    files = [Path(f) for f in files]
    skipped = skipped if skipped is not None else []
    iterator: Iterable[Path] = files
    if progress:
        from mridomain.progress import progress_bar

        iterator = progress_bar(files, desc=desc, unit="file")
    groups: dict[tuple[str, str], list[_Member]] = defaultdict(list)
    for f in iterator:
        try:
            member = _scan_file(f, keep_kinds)
        except ImageReadError as exc:
            skipped.append((str(f), exc.reason))
            continue
        except Exception as exc:  # noqa: BLE001 - one damaged file must never stop the batch
            skipped.append((str(f), f"unreadable header: {type(exc).__name__}: {_one_line(exc)}"))
            continue
        uid = str(member.fields.get("SeriesInstanceUID") or "")
        # a file without a series UID is a series of its own (nothing says what it belongs with)
        groups[(uid, "" if uid else str(f))].append(member)
    volumes = []
    for (uid, _), members in groups.items():
        volumes.extend(_series_volumes(uid, _unique_instances(members)))
    volumes.sort(key=lambda v: (str(v.fields.get("PatientID") or ""), v.series_uid, v.volume))
    return volumes


def _scan_file(f: Path, keep_kinds: Iterable[str] | None) -> _Member:
    """The header of one file as a series member; ImageReadError with the reason it is skipped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a real archive's odd values: reasons are recorded instead
        ds, has_pixels = _open_dicom(f, stop_before_pixels=True)
        fields = header_fields_from_dataset(ds, extra=_READ_EXTRA)
        if not has_pixels:
            raise ImageReadError(f, "no pixel data (an image header without its pixels)"
                                 if _is_image_header(ds) else "no pixel data (not an image)")
        if keep_kinds is not None:
            problem = kind_problem(fields, keep_kinds)
            if problem is not None:
                raise ImageReadError(f, problem)
        return _Member(f, fields, *_frame_volumes(ds, fields))


def _unique_instances(members: list[_Member]) -> list[_Member]:
    """One member per SOPInstanceUID (the first path); the other copies ride along in ``copies``,
    so that reading can fall back to a copy that decodes when the first one does not."""
    kept: dict[str, _Member] = {}
    out = []
    for m in sorted(members, key=lambda m: str(m.path)):
        sop = str(m.fields.get("SOPInstanceUID") or "")
        if sop and sop in kept:
            kept[sop].copies.append(m.path)
            continue
        if sop:
            kept[sop] = m
        out.append(m)
    return out


def _frame_volumes(ds: Dataset, fields: dict[str, Any]) -> tuple[list[int] | None, str]:
    """(volume of each frame, what tells them apart) of a multi-frame file whose frames repeat a
    slice position; (None, "") otherwise."""
    try:
        n_frames = int(fields.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return None, ""
    orientation = fields.get("ImageOrientationPatient")
    positions = _frame_positions(ds, n_frames) if n_frames > 1 else None
    if positions is None or not orientation or len(orientation) != 6:
        return None, ""
    projected = [slice_sort_key(p, orientation) for p in positions]
    values = _frame_volume_values(ds, n_frames) or [{} for _ in positions]
    labels, by = volume_labels(projected, values, keywords=[k for _, k in _FRAME_VOLUME_KEYS])
    return (labels, by) if by else (None, "")


def _series_volumes(uid: str, members: list[_Member]) -> list[DicomVolume]:
    if len(members) == 1 and members[0].frame_volumes is not None:
        only = members[0]
        labels = only.frame_volumes
        n_volumes = max(labels) + 1
        return [DicomVolume(uid, v, n_volumes, f"{only.frame_volumes_by} {v + 1}", [only.path], only.fields,
                            [only.position], [i for i, label in enumerate(labels) if label == v],
                            {only.path: only.copies} if only.copies and v == 0 else {})
                for v in range(n_volumes)]
    labels, by = volume_labels([m.position for m in members], [m.fields for m in members])
    n_volumes = max(labels) + 1
    out = []
    for volume in range(n_volumes):
        chosen = _sort_members([m for m, v in zip(members, labels) if v == volume])
        if by in VOLUME_KEYWORDS:
            key = f"{by}={chosen[0].fields.get(by)}"
        else:
            key = f"{by} {volume + 1}" if by else ""
        out.append(DicomVolume(uid, volume, n_volumes, key, [m.path for m in chosen], chosen[0].fields,
                               [m.position for m in chosen], copies={m.path: m.copies for m in chosen if m.copies}))
    return out


def _sort_members(members: list[_Member]) -> list[_Member]:
    """Along the slice normal when every file has a distinct position, else by InstanceNumber,
    else by file name."""
    keys = [m.position for m in members]
    if all(k is not None for k in keys) and len(set(keys)) == len(keys):
        order = sorted(range(len(members)), key=lambda i: (keys[i], str(members[i].path)))
        return [members[i] for i in order]

    def instance(member: _Member) -> tuple[int, int, str]:
        number = member.fields.get("InstanceNumber")
        if isinstance(number, int):
            return (0, number, str(member.path))
        return (1, 0, str(member.path))

    return sorted(members, key=instance)


def read_dicom_volume(volume: DicomVolume, source: str | Path | None = None,
                      skipped: list[tuple[str, str]] | None = None) -> ImageData:
    """The pixels of a :class:`DicomVolume` as one ImageData: slices in order, ``meta`` the first
    file's header fields plus ``n_slices``, ``volume``, ``n_volumes`` and ``volume_key``.
    ``source`` defaults to the folder holding its files (the file itself for a one-file volume).

    With ``skipped`` (a list), one bad slice drops that slice, not the volume: a file that does not
    decode, or whose slices are not the size most of the volume's slices have, goes to ``skipped``
    as ``(file, reason)``; of files sharing a SOPInstanceUID the first that decodes is read and the
    others are listed as its duplicates. Without it, any bad slice raises."""
    stacks, slice_files, meta, last_image = [], [], None, None
    for f in volume.files:
        image, used = None, None
        failures: list[tuple[Path, str]] = []
        for candidate in [f, *volume.copies.get(f, [])]:
            if image is not None:
                if skipped is not None:
                    skipped.append((str(candidate), f"duplicate SOPInstanceUID of {used} (kept)"))
                continue
            try:
                image, used = read_dicom(candidate), candidate
            except Exception as err:  # noqa: BLE001 - a damaged file may raise anything
                if skipped is None:
                    raise
                failures.append((candidate, err.reason if isinstance(err, ImageReadError)
                                 else f"{type(err).__name__}: {_one_line(err)}"))
        for bad, reason in failures:
            note = f"; its duplicate {used} was read instead" if used is not None else ""
            skipped.append((str(bad), reason + note))
        if image is None:
            continue
        pixels = image.pixels if volume.frames is None else image.pixels[volume.frames]
        stacks.append((f, used, pixels))
        meta = meta if meta is not None else image.meta
        last_image = image
    shapes = [p.shape[1:] for _, _, p in stacks]
    if len(set(shapes)) > 1:
        if skipped is None:
            raise ImageReadError(_common_folder(volume.files), f"slices of series {volume.series_uid} have "
                                                               f"different sizes {sorted(set(shapes))}")
        counts = {shape: shapes.count(shape) for shape in shapes}
        common = max(counts, key=lambda shape: counts[shape])      # ties: the first slice's size
        for _, used, p in stacks:
            if p.shape[1:] != common:
                skipped.append((str(used), f"slice of size {p.shape[1]}x{p.shape[2]}; the other "
                                           f"{counts[common]} slices of series {volume.series_uid} are "
                                           f"{common[0]}x{common[1]}"))
        stacks = [entry for entry in stacks if entry[2].shape[1:] == common]
    if not stacks:
        raise ImageReadError(_common_folder(volume.files), f"no slice of series {volume.series_uid} could be read")
    for _, used, p in stacks:
        slice_files.extend([used] * p.shape[0])
    positions = dict(zip(volume.files, volume.positions))
    kept_positions = [positions.get(f) for f, _, _ in stacks]
    stacks = [p for _, _, p in stacks]
    pixels = np.concatenate(stacks, axis=0)
    fields = dict(meta or {})
    fields.update(n_slices=int(pixels.shape[0]), volume=volume.volume, n_volumes=volume.n_volumes,
                  volume_key=volume.volume_key)
    slice_spacing = None
    if len(volume.files) > 1 and len(kept_positions) == len(stacks) and all(p is not None for p in kept_positions):
        steps = np.abs(np.diff(np.array(kept_positions, dtype=np.float64)))
        steps = steps[steps > 1e-6]
        if steps.size:
            slice_spacing = float(np.median(steps))
    elif volume.frames is not None:
        slice_spacing = None if last_image.spacing is None else last_image.spacing[0]
    if source is None:
        source = volume.files[0] if len(volume.files) == 1 else _common_folder(volume.files)
    return ImageData(pixels, fields, Path(source), _spacing_from_fields(fields, slice_spacing), slice_files)


def _common_folder(files: list[Path]) -> Path:
    return Path(os.path.commonpath([str(f.parent) for f in files]))


def read_dicom_series(
    folder: str | Path,
    series_uid: str | None = None,
    progress: bool = False,
    volume: int | None = None,
) -> ImageData:
    """All slices of one DICOM series in a folder (searched recursively), in spatial order.

    Slices are sorted by the projection of ImagePositionPatient on the slice normal when every
    slice has position and orientation, else by InstanceNumber, else by file name. A series of
    several volumes (:func:`scan_dicom_folder`) gives them one after the other (``meta["n_volumes"]``,
    ``meta["volume_keys"]``), or only the one numbered ``volume``. Files that are not DICOM images
    are ignored (listed in ``meta["skipped"]``). A folder holding several series raises unless
    ``series_uid`` names one (``mridomain.data.inputs`` reads every series of a folder).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(folder, "not a folder")
    if next(iter(iter_candidate_files(folder)), None) is None:
        raise EmptyInputError(folder, "empty folder: no files")
    skipped: list[tuple[str, str]] = []
    volumes = scan_dicom_folder(folder, progress=progress, skipped=skipped)
    if not volumes:
        first = f"; first: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise EmptyInputError(folder, f"no DICOM images found ({len(skipped)} files skipped{first})")
    files_per_series: dict[str, set[Path]] = defaultdict(set)
    for v in volumes:
        files_per_series[v.series_uid].update(v.files)
    if series_uid is not None:
        if series_uid not in files_per_series:
            raise ImageReadError(folder, f"series {series_uid} not found; folder holds {len(files_per_series)} series")
    elif len(files_per_series) > 1:
        listing = ", ".join(f"{uid or '<no UID>'} ({len(v)} files)" for uid, v in sorted(files_per_series.items()))
        raise ImageReadError(
            folder, f"folder holds {len(files_per_series)} series ({listing}); pass series_uid= to choose one"
        )
    else:
        series_uid = volumes[0].series_uid
    chosen = [v for v in volumes if v.series_uid == series_uid]
    if volume is not None:
        chosen = [v for v in chosen if v.volume == volume]
        if not chosen:
            raise ImageReadError(folder, f"series {series_uid} has no volume {volume}")
    images = [read_dicom_volume(v, source=folder, skipped=skipped) for v in chosen]
    image = images[0]
    if len(images) > 1:
        pixels = np.concatenate([i.pixels for i in images], axis=0)
        meta = dict(image.meta)
        for key in ("volume", "volume_key"):
            meta.pop(key, None)
        meta.update(n_slices=int(pixels.shape[0]), volume_keys=[i.meta["volume_key"] for i in images])
        image = ImageData(pixels, meta, folder, image.spacing, [f for i in images for f in i.files])
    if skipped:
        image.meta["skipped"] = skipped
    return image


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
