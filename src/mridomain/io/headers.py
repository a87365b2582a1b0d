"""Header-only DICOM reading: the flat ``{keyword: python value}`` dict the IAP schema reads.

The indexer calls :func:`read_header_fields` on every file of an archive (possibly millions),
so the hot path opens each file once, sniffs the 128-byte preamble + ``DICM`` itself (cheap
rejection of non-DICOM files without a pydicom exception), parses only the tags asked for
(``specific_tags``) and stops before the pixel data. It still checks that the pixel data
element the header announces fits in the file, so a truncated download is reported as such
instead of surfacing later as a pixel decoding error.
"""
from __future__ import annotations

import os
import functools
import math
import struct
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.valuerep import DSfloat, IS, PersonName
from pydicom.uid import UID

from mridomain.errors import ImageReadError

__all__ = [
    "HEADER_KEYWORDS",
    "FUNCTIONAL_GROUP_FIELDS",
    "read_header_fields",
    "header_fields_from_dataset",
    "open_dicom",
    "is_dicom_file",
    "iter_candidate_files",
    "iter_file_paths",
    "to_python",
]

#: Keywords every header dict carries (when present in the file), see docs/architecture.md.
HEADER_KEYWORDS: tuple[str, ...] = (
    "Manufacturer",
    "ManufacturerModelName",
    "ScanOptions",
    "MagneticFieldStrength",
    "PatientPosition",
    "ContrastBolusAgent",
    "AcquisitionMatrix",
    "SliceThickness",
    "FlipAngle",
    "ReconstructionDiameter",
    "PixelSpacing",
    "Rows",
    "Columns",
    "RepetitionTime",
    "EchoTime",
    "SeriesDescription",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "Modality",
    "SOPClassUID",
    "NumberOfFrames",
)

# Keywords that are always lists in the output, whatever their VM in a given file, so that
# downstream code never has to special-case "one value" vs "several values".
_LIST_KEYWORDS = frozenset(
    {"ScanOptions", "AcquisitionMatrix", "PixelSpacing", "ImagePositionPatient",
     "ImageOrientationPatient", "ImageType"}
)

#: Enhanced (multi-frame) MR: where each top-level keyword lives in the functional groups
#: (DICOM PS3.3 C.7.6.16 and C.8.13.5). ``(functional group sequence, keyword inside it,
#: output keyword)``. Used only when the top-level tag is absent or empty.
FUNCTIONAL_GROUP_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("PixelMeasuresSequence", "PixelSpacing", "PixelSpacing"),
    ("PixelMeasuresSequence", "SliceThickness", "SliceThickness"),
    ("PixelMeasuresSequence", "SpacingBetweenSlices", "SpacingBetweenSlices"),
    ("MRTimingAndRelatedParametersSequence", "RepetitionTime", "RepetitionTime"),
    ("MRTimingAndRelatedParametersSequence", "FlipAngle", "FlipAngle"),
    ("MRTimingAndRelatedParametersSequence", "EchoTrainLength", "EchoTrainLength"),
    ("MREchoSequence", "EffectiveEchoTime", "EchoTime"),
    ("PlanePositionSequence", "ImagePositionPatient", "ImagePositionPatient"),
    ("PlaneOrientationSequence", "ImageOrientationPatient", "ImageOrientationPatient"),
    ("PixelValueTransformationSequence", "RescaleSlope", "RescaleSlope"),
    ("PixelValueTransformationSequence", "RescaleIntercept", "RescaleIntercept"),
    ("MRFOVGeometrySequence", "InPlanePhaseEncodingDirection", "InPlanePhaseEncodingDirection"),
)

_ENHANCED_SEQUENCES = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")
# Tags read beyond HEADER_KEYWORDS because the enhanced-MR fill-in below needs them.
_SUPPORT_KEYWORDS = (
    "SpecificCharacterSet",
    "SpacingBetweenSlices",
    "InPlanePhaseEncodingDirection",
    "MRAcquisitionFrequencyEncodingSteps",
    "MRAcquisitionPhaseEncodingStepsInPlane",
    "ContrastBolusAgentSequence",
    "RescaleSlope",
    "RescaleIntercept",
    *_ENHANCED_SEQUENCES,
)

_PIXEL_TAG_LE = b"\xe0\x7f\x10\x00"
_PIXEL_TAG_BE = b"\x7f\xe0\x00\x10"
_UNDEFINED_LENGTH = 0xFFFFFFFF


# ----------------------------------------------------------------------------- values
def to_python(value: Any) -> Any:
    """Convert a pydicom element value into plain python (str, int, float, list, None).

    DS -> float, IS -> int, UID / PersonName -> str, MultiValue -> list, bytes -> None
    (binary values have no place in an IAP table).
    """
    if value is None:
        return None
    if isinstance(value, (MultiValue, list, tuple)):
        return [to_python(v) for v in value]
    if isinstance(value, (DSfloat, float)):
        return float(value)
    if isinstance(value, (IS, int)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (UID, PersonName)):
        return str(value)
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (bytes, bytearray)):
        return None
    if hasattr(value, "original_string") or hasattr(value, "isoformat"):
        return str(value)
    return value


@functools.lru_cache(maxsize=4096)
def _tag(keyword: str) -> int | None:
    return tag_for_keyword(keyword)


# Text VRs whose bytes are plain ASCII by definition (PS3.5 6.2), so they can be decoded
# without looking at SpecificCharacterSet.
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI"})
# Text VRs that may use the SpecificCharacterSet; decoded fast only for latin-1 compatible sets.
_CHARSET_VRS = frozenset({"LO", "SH", "PN", "LT", "ST", "UC", "UT"})
_LATIN1_CHARSETS = frozenset({"", "ISO_IR 6", "ISO_IR 100", "ISO 2022 IR 6", "ISO 2022 IR 100"})
_BINARY_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}


def decode_value(vr: str, value: bytes | None, little_endian: bool = True, latin1: bool = True
                 ) -> tuple[bool, Any]:
    """Decode one element's raw bytes into plain python without pydicom's conversion machinery
    (hooks, charsets: ~25 us per value, too much for millions of files). The one value decoder of
    the package: the pydicom path (raw elements of a dataset) and the index's struct-based header
    walker both use it. Returns (done, value); done=False asks the caller to let pydicom decode
    (unusual VRs, text that is not latin-1 when ``latin1`` is False, malformed numbers)."""
    if value is None:
        return True, None
    if vr in _ASCII_VRS or (vr in _CHARSET_VRS and latin1):
        text = value.decode("latin-1").rstrip("\x00 ").strip("\x00")
        if vr in ("LT", "ST", "UT"):
            return True, text.strip()
        parts = [p.strip() for p in text.split("\\")]
        try:
            if vr == "DS":
                items: list[Any] = [float(p) if p else None for p in parts]
            elif vr == "IS":
                items = [_integer_string(p) if p else None for p in parts]
            else:
                items = parts
        except (ValueError, OverflowError):
            return False, None
        if len(items) == 1:
            return True, items[0] if items[0] != "" else ""
        return True, items
    fmt = _BINARY_FORMATS.get(vr)
    if fmt is not None:
        size = struct.calcsize(fmt)
        count = len(value) // size
        items = list(struct.unpack(f"{'<' if little_endian else '>'}{count}{fmt}", value[: count * size]))
        if count == 0:
            return True, None
        return True, items[0] if count == 1 else items
    return False, None


def _integer_string(text: str) -> int:
    """An IS value ("12", "1e2" written by some scanners) as int; infinities and NaN are refused
    (``ValueError`` / ``OverflowError``), not turned into a crash later."""
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"IS value {text!r} is not finite")
    return int(number)


def field_value(keyword: str, value: Any) -> Any:
    """The value as a header field holds it: multi-valued keywords are always lists."""
    if keyword in _LIST_KEYWORDS:
        if value is None or value == "":
            return []
        if not isinstance(value, list):
            return [value]
    return value


def _element_value(ds: Dataset, keyword: str, latin1: bool = True) -> tuple[bool, Any]:
    """(present, python value) of a top-level keyword; absent tags give (False, None)."""
    tag = _tag(keyword)
    if tag is None or tag not in ds:
        return False, None
    elem = ds.get_item(tag)
    done = False
    value: Any = None
    if isinstance(elem, RawDataElement) and not elem.is_buffered:
        vr = elem.VR
        if vr is None or elem.is_implicit_VR and vr in (None, "UN"):
            vr = dictionary_VR(elem.tag)
        done, value = decode_value(vr, elem.value, elem.is_little_endian, latin1)
    if not done:
        value = to_python(ds[tag].value)
    return True, field_value(keyword, value)


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == []


def _first_item(ds: Dataset, keyword: str) -> Dataset | None:
    seq = ds.get(keyword)
    if seq is None or len(seq) == 0:
        return None
    return seq[0]


def _functional_group_value(ds: Dataset, keyword: str, group: str | None = None) -> Any:
    """Value of ``keyword`` inside functional group ``group`` (any group when None): first frame,
    else shared.

    A macro is either shared or per-frame (PS3.3 C.7.6.16), so the first frame stands for the
    series-level value; per-frame variation (positions, rescale) is handled by the pixel reader.
    """
    for seq_kw in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        groups = _first_item(ds, seq_kw)
        if groups is None:
            continue
        if group is not None:
            items = [_first_item(groups, group)]
        else:
            items = [elem.value[0] for elem in groups if elem.VR == "SQ" and len(elem.value)]
        for item in items:
            if item is not None and keyword in item:
                value = to_python(item[keyword].value)
                if not _is_empty(value):
                    return value
    return None


def header_fields_from_dataset(ds: Dataset, extra: Iterable[str] = ()) -> dict[str, Any]:
    """Flat header dict of an open pydicom ``Dataset`` (enhanced-MR aware).

    Keys are DICOM keywords (:data:`HEADER_KEYWORDS` plus ``extra``); values are plain python.
    Tags missing from the file are absent from the dict, except ``ContrastBolusAgent`` which is
    always present: ``None`` when the tag is absent, ``""`` when present but empty (DBC keeps
    these two apart). For enhanced MR, values missing at top level are filled from the shared
    or first per-frame functional group (TR, flip angle, effective TE, pixel spacing, slice
    thickness, position, orientation, rescale), and ``AcquisitionMatrix`` is rebuilt from the
    MR FOV/Geometry macro's frequency / phase step counts.
    """
    out: dict[str, Any] = {}
    charset = ds.get_item(0x00080005)  # SpecificCharacterSet
    latin1 = True
    if charset is not None:
        charset_value = to_python(ds[0x00080005].value)
        names = charset_value if isinstance(charset_value, list) else [charset_value]
        latin1 = all((n or "").strip().upper() in _LATIN1_CHARSETS for n in names)
    for kw in (*HEADER_KEYWORDS, *extra):
        present, value = _element_value(ds, kw, latin1)
        if present:
            out[kw] = value
    if "ContrastBolusAgent" not in out:
        out["ContrastBolusAgent"] = None

    if any(seq in ds for seq in _ENHANCED_SEQUENCES):
        for group, inner, target in FUNCTIONAL_GROUP_FIELDS:
            if _is_empty(out.get(target)):
                value = _functional_group_value(ds, inner, group)
                if value is not None:
                    if target in _LIST_KEYWORDS and not isinstance(value, list):
                        value = [value]
                    out[target] = value
        for extra_kw in extra:  # extra keywords may live in a functional group too
            if _is_empty(out.get(extra_kw)):
                value = _functional_group_value(ds, extra_kw)
                if value is not None:
                    out[extra_kw] = value
    if _is_empty(out.get("AcquisitionMatrix")) and (
        "MRAcquisitionFrequencyEncodingSteps" in ds or any(seq in ds for seq in _ENHANCED_SEQUENCES)
    ):
        direction = out.get("InPlanePhaseEncodingDirection") or ds.get("InPlanePhaseEncodingDirection")
        matrix = _enhanced_acquisition_matrix(ds, direction)
        if matrix is not None:
            out["AcquisitionMatrix"] = matrix
    if out["ContrastBolusAgent"] is None and "ContrastBolusAgentSequence" in ds:
        # Enhanced objects code the agent (PS3.3 C.7.6.4b); keep its meaning as the free text.
        item = _first_item(ds, "ContrastBolusAgentSequence")
        if item is not None:
            out["ContrastBolusAgent"] = to_python(item.get("CodeMeaning", "")) or ""
    if "NumberOfFrames" in out and out["NumberOfFrames"] in ("", None):
        del out["NumberOfFrames"]
    return out


def _enhanced_acquisition_matrix(ds: Dataset, direction: Any) -> list[int] | None:
    """Legacy AcquisitionMatrix [freq rows, freq cols, phase rows, phase cols] rebuilt from
    (0018,9058) MRAcquisitionFrequencyEncodingSteps and (0018,9231)
    MRAcquisitionPhaseEncodingStepsInPlane of an enhanced MR object.

    Phase encoded along the columns (InPlanePhaseEncodingDirection COL) fills the diagonal
    ``[f, 0, 0, p]``, as real Siemens legacy files do (pydicom's MR-SIEMENS test file: COL,
    ``[256, 0, 0, 134]``); ROW fills the anti-diagonal ``[0, f, p, 0]``.
    """
    freq = ds.get("MRAcquisitionFrequencyEncodingSteps")
    phase = ds.get("MRAcquisitionPhaseEncodingStepsInPlane")
    if freq is None or phase is None:
        for seq_kw in _ENHANCED_SEQUENCES:
            groups = _first_item(ds, seq_kw)
            item = _first_item(groups, "MRFOVGeometrySequence") if groups is not None else None
            if item is not None:
                freq = item.get("MRAcquisitionFrequencyEncodingSteps", freq)
                phase = item.get("MRAcquisitionPhaseEncodingStepsInPlane", phase)
    if not freq or not phase:
        return None
    if str(direction or "COL").upper().startswith("ROW"):
        return [0, int(freq), int(phase), 0]
    return [int(freq), 0, 0, int(phase)]


# ----------------------------------------------------------------------------- files
def _sniff(fp: BinaryIO, path: str | Path, size: int) -> bool:
    """True if the file has the DICM preamble; False if it may be a preamble-less DICOM.

    Raises ImageReadError for files that cannot be DICOM at all.
    """
    if size == 0:
        raise ImageReadError(path, "empty file")
    head = fp.read(132)
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    # Old ACR-NEMA style / raw datasets start directly with an element of group 0002 or 0008
    # (little or big endian); anything else is not DICOM.
    if len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08"):
        return False
    if size < 132:
        raise ImageReadError(path, f"not a DICOM file (only {size} bytes, no DICM preamble)")
    raise ImageReadError(path, "not a DICOM file (no DICM preamble and no readable header)")


def _check_pixel_length(fp: BinaryIO, path: str | Path, size: int) -> bool:
    """After a stop_before_pixels read: verify the pixel data element fits in the file.

    Returns True when a pixel data element was found. Raises for truncated pixel data.
    """
    start = fp.tell()
    head = fp.read(12)
    if len(head) < 8:
        return False
    if head[:4] == _PIXEL_TAG_LE:
        endian = "<"
    elif head[:4] == _PIXEL_TAG_BE:
        endian = ">"
    else:
        # Float / double float pixel data or something unexpected: nothing to check.
        return head[:2] in (b"\xe0\x7f", b"\x7f\xe0")
    if head[4:6] in (b"OB", b"OW", b"UN") and len(head) == 12:
        (length,) = struct.unpack(endian + "I", head[8:12])
        header_len = 12
    else:
        (length,) = struct.unpack(endian + "I", head[4:8])
        header_len = 8
    problem = pixel_data_problem(length, size - start - header_len)
    if problem is not None:
        raise ImageReadError(path, problem)
    return True


def pixel_data_problem(length: int, available: int) -> str | None:
    """Why a PixelData element of ``length`` bytes (0xFFFFFFFF: encapsulated, undefined length)
    cannot be read when ``available`` bytes follow its header, or None. The one truncation check
    of the package: the pydicom path and the index's header walker both ask it."""
    if length == _UNDEFINED_LENGTH:
        return "truncated file: empty encapsulated pixel data" if available <= 0 else None
    if length > available:
        return f"truncated file: pixel data needs {length} bytes, only {max(available, 0)} present"
    if length == 0:
        return "no pixel data (PixelData element is empty)"
    return None


def _specific_tags(extra: Iterable[str]) -> list[int]:
    tags = []
    for kw in (*HEADER_KEYWORDS, *_SUPPORT_KEYWORDS, *extra):
        tag = tag_for_keyword(kw)
        if tag is not None:
            tags.append(tag)
    return tags


_DEFAULT_TAGS = _specific_tags(())


def open_dicom(
    path: str | Path,
    *,
    stop_before_pixels: bool = False,
    specific_tags: Sequence[int] | None = None,
    check_pixels: bool = True,
    defer_size: int | str | None = None,
) -> Dataset:
    """Read a DICOM file with precise one-line errors.

    Accepts files without the ``.dcm`` suffix and preamble-less (raw) datasets. Raises
    :class:`ImageReadError` with reasons ``"empty file"``, ``"not a DICOM file (...)"``,
    ``"truncated file: ..."``, ``"corrupt DICOM header: ..."``. ``defer_size`` leaves values
    larger than that on disk until accessed (pydicom re-opens the file then).
    """
    try:
        size = os.path.getsize(path)
        fp = open(path, "rb")
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a folder, not a file") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot open: {exc.strerror or exc}") from None
    with fp:
        has_preamble = _sniff(fp, path, size)
        fp.seek(0)
        try:
            # pydicom reports a file that ends inside a sequence or encapsulated pixel data
            # only as a warning; record warnings (also keeps millions of reads quiet).
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ds = pydicom.dcmread(
                    fp,
                    force=not has_preamble,
                    stop_before_pixels=stop_before_pixels,
                    specific_tags=list(specific_tags) if specific_tags is not None else None,
                    defer_size=defer_size,
                )
        except InvalidDicomError as exc:
            raise ImageReadError(path, f"not a DICOM file ({_one_line(exc)})") from None
        except EOFError as exc:
            raise ImageReadError(path, f"truncated file: {_one_line(exc) or 'unexpected end of file'}") from None
        except (ValueError, KeyError, TypeError, OverflowError, struct.error, NotImplementedError, AttributeError) as exc:
            raise ImageReadError(path, f"corrupt DICOM header: {_one_line(exc)}") from None
        except OSError as exc:
            raise ImageReadError(path, f"cannot read: {_one_line(exc)}") from None
        for warning in caught:
            text = str(warning.message)
            if "End of file reached" in text or "unexpected end" in text.lower():
                raise ImageReadError(
                    path, f"truncated file: ends at byte {size} inside a sequence or the encapsulated pixel data"
                )
        if not _looks_like_dataset(ds):
            if not has_preamble:
                raise ImageReadError(path, "not a DICOM file (no DICM preamble and no readable header)")
            group_length = getattr(ds, "file_meta", Dataset()).get("FileMetaInformationGroupLength")
            try:
                meta_end = 132 + 12 + int(group_length) if group_length is not None else None
            except (TypeError, ValueError):  # the group length value itself was cut off
                meta_end = size + 1
            if size < 144 or (meta_end is not None and meta_end > size):
                raise ImageReadError(path, f"truncated file: ends at byte {size} inside the file meta information")
            raise ImageReadError(path, "corrupt DICOM header: no recognisable data elements after the DICM preamble")
        if check_pixels:
            if stop_before_pixels:
                found_pixels = _check_pixel_length(fp, path, size)
            else:
                found_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
            if not found_pixels and fp.tell() >= size and _is_image_header(ds):
                # An image header that runs into the end of the file without pixel data:
                # pydicom returns the partial dataset silently, so say what happened.
                raise ImageReadError(path, f"truncated file: ends at byte {size} before the pixel data")
    return ds


def _is_image_header(ds: Dataset) -> bool:
    if "Rows" in ds or "Columns" in ds:
        return True
    sop = ds.get("SOPClassUID") or getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID")
    try:
        return bool(sop) and "Image Storage" in UID(str(sop)).name
    except Exception:  # an unparseable UID says nothing either way
        return False


def _looks_like_dataset(ds: Dataset) -> bool:
    """A force-read of a non-DICOM file yields junk tags; a real dataset has known keywords."""
    return any(k in ds for k in ("SOPClassUID", "SOPInstanceUID", "Modality", "StudyInstanceUID", "Rows"))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def read_header_fields(path: str | Path, extra: Iterable[str] = ()) -> dict[str, Any]:
    """Header-only read of one DICOM file into the flat ``{keyword: value}`` dict.

    Parses only :data:`HEADER_KEYWORDS` (+ ``extra`` keywords and the enhanced-MR functional
    groups) and stops before the pixel data, so it costs a fraction of a full ``dcmread``.
    Raises :class:`ImageReadError` for empty, non-DICOM, truncated and corrupt files, and for
    files without pixel data (``"no pixel data (...)"``): the index holds images only.
    """
    extra = tuple(extra)
    tags = _DEFAULT_TAGS if not extra else _specific_tags(extra)
    ds = open_dicom(path, stop_before_pixels=True, specific_tags=tags)
    fields = header_fields_from_dataset(ds, extra)
    if "Rows" not in fields or "Columns" not in fields:
        sop = fields.get("SOPClassUID")
        name = UID(sop).name if sop else "unknown SOP class"
        raise ImageReadError(path, f"no pixel data (not an image: {name})")
    return fields


def is_dicom_file(path: str | Path) -> bool:
    """Cheap test: does the file carry the 128-byte preamble + ``DICM`` marker?"""
    try:
        with open(path, "rb") as fp:
            head = fp.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def iter_candidate_files(root: str | Path) -> Iterator[Path]:
    """Every regular file under ``root`` (or ``root`` itself if it is a file), depth first.

    Uses ``os.scandir`` (one ``stat``-free system call per folder on most file systems),
    skips hidden files and folders (names starting with ``.``), does not follow symlinked
    folders (no cycles), and sorts each folder's entries so the order is reproducible.
    """
    return map(Path, iter_file_paths(root))


def iter_file_paths(root: str | Path) -> Iterator[str]:
    """:func:`iter_candidate_files` as plain strings (no ``Path`` per file: archive walks are long)."""
    root = os.fspath(root)
    if os.path.isfile(root):
        yield root
        return
    # A stack of iterators over sorted folder listings gives depth-first, name-ordered output
    # (the same order as sorting the full relative paths folder by folder).
    stack: list[Iterator[os.DirEntry]] = [iter(_sorted_entries(root))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                stack.append(iter(_sorted_entries(entry.path)))
            elif entry.is_file():
                yield entry.path
        except OSError:
            continue


def _sorted_entries(folder: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError:  # unreadable or vanished folder: nothing to list, the walk goes on
        return []
