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
import re
import struct
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.valuerep import DSfloat, IS, PersonName
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from mridomain.errors import ImageReadError

__all__ = [
    "HEADER_KEYWORDS",
    "IMAGE_KINDS",
    "PIXEL_KEYWORDS",
    "VOLUME_KEYWORDS",
    "check_keep_kinds",
    "decode_value",
    "encapsulated_fragments",
    "image_kind",
    "is_mosaic",
    "kind_problem",
    "mosaic_fields",
    "pixel_data_problem",
    "pixel_fragments",
    "volume_labels",
    "FUNCTIONAL_GROUP_FIELDS",
    "read_header_fields",
    "header_fields_from_dataset",
    "open_dicom",
    "is_dicom_file",
    "iter_candidate_files",
    "iter_file_paths",
    "to_python",
]

#: The group 0028 elements pydicom needs to decode pixel data (with Rows, Columns, NumberOfFrames).
PIXEL_KEYWORDS: tuple[str, ...] = ("SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration",
                                   "BitsAllocated", "BitsStored", "PixelRepresentation")
#: What :func:`image_kind` reads to tell phase, derived, localizer and secondary-capture images apart.
KIND_KEYWORDS: tuple[str, ...] = ("ImageType", "ComplexImageComponent")
#: What tells the volumes of a multi-volume series apart (several images at one slice position),
#: in the order :func:`volume_labels` tries them (PS3.3 C.7.6.1, C.8.3.1, C.8.13.2).
VOLUME_KEYWORDS: tuple[str, ...] = ("TemporalPositionIdentifier", "DiffusionBValue", "EchoNumbers",
                                    "AcquisitionNumber")

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
    *PIXEL_KEYWORDS,
    *KIND_KEYWORDS,
    *VOLUME_KEYWORDS,
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
_ITEM, _SEQUENCE_DELIMITER = 0xFFFEE000, 0xFFFEE0DD


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
    (unusual VRs, text that is not latin-1 when ``latin1`` is False). A number that is malformed
    or not finite (an InstanceNumber of "1e999") is missing (None): one bad value must not cost
    the rest of the header."""
    if value is None:
        return True, None
    if vr in _ASCII_VRS or (vr in _CHARSET_VRS and latin1):
        text = value.decode("latin-1").rstrip("\x00 ").strip("\x00")
        if vr in ("LT", "ST", "UT"):
            return True, text.strip()
        parts = [p.strip() for p in text.split("\\")]
        if vr == "DS":
            items: list[Any] = [_number(p, float) for p in parts]
        elif vr == "IS":
            items = [_number(p, _integer_string) for p in parts]
        else:
            items = parts
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


def _number(text: str, parse: Any) -> Any:
    """One DS / IS item, or None when it is empty, malformed or not finite."""
    if not text:
        return None
    try:
        number = parse(text)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


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
    try:
        elem = ds.get_item(tag)
    except Exception:  # noqa: BLE001 - pydicom converts some elements here and raises for bad bytes
        return True, field_value(keyword, None)
    done = False
    value: Any = None
    if isinstance(elem, RawDataElement) and not elem.is_buffered:
        vr = elem.VR
        if vr is None or elem.is_implicit_VR and vr in (None, "UN"):
            vr = dictionary_VR(elem.tag)
        done, value = decode_value(vr, elem.value, elem.is_little_endian, latin1)
    if not done:
        # pydicom converts on access and raises for values it cannot parse (an IS of "1e999",
        # an unknown VR): the value is missing, as decode_value makes it on the fast path.
        value = _safe_value(ds, tag)
        if isinstance(value, float) and not math.isfinite(value):
            value = None
    return True, field_value(keyword, value)


def _safe_value(ds: Dataset, key: int | str, default: Any = None) -> Any:
    """The plain python value of an element, or ``default`` when it is absent or pydicom cannot
    convert it (a damaged optional element is a missing value, never a failed file)."""
    try:
        return to_python(ds[key].value) if key in ds else default
    except Exception:  # noqa: BLE001 - pydicom's converters raise many types for bad bytes
        return default


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == []


def _first_item(ds: Dataset, keyword: str) -> Dataset | None:
    try:
        seq = ds.get(keyword)
        if seq is None or isinstance(seq, (str, bytes)) or len(seq) == 0:
            return None
        item = seq[0]
    except Exception:  # noqa: BLE001 - a damaged sequence holds nothing usable
        return None
    return item if isinstance(item, Dataset) else None


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
            items = [_first_item(groups, elem.keyword) for elem in groups if elem.VR == "SQ" and elem.keyword]
        for item in items:
            if item is not None and keyword in item:
                value = _safe_value(item, keyword)
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
        charset_value = _safe_value(ds, 0x00080005, "")
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
        direction = out.get("InPlanePhaseEncodingDirection") or _safe_value(ds, "InPlanePhaseEncodingDirection")
        matrix = _enhanced_acquisition_matrix(ds, direction)
        if matrix is not None:
            out["AcquisitionMatrix"] = matrix
    if out["ContrastBolusAgent"] is None and "ContrastBolusAgentSequence" in ds:
        # Enhanced objects code the agent (PS3.3 C.7.6.4b); keep its meaning as the free text.
        item = _first_item(ds, "ContrastBolusAgentSequence")
        if item is not None:
            out["ContrastBolusAgent"] = _safe_value(item, "CodeMeaning", "") or ""
    if "NumberOfFrames" in out and out["NumberOfFrames"] in ("", None):
        del out["NumberOfFrames"]
    if is_mosaic(out):
        for keyword, value in mosaic_fields(ds).items():
            if _is_empty(out.get(keyword)):
                out[keyword] = value
    return out


def _enhanced_acquisition_matrix(ds: Dataset, direction: Any) -> list[int] | None:
    """Legacy AcquisitionMatrix [freq rows, freq cols, phase rows, phase cols] rebuilt from
    (0018,9058) MRAcquisitionFrequencyEncodingSteps and (0018,9231)
    MRAcquisitionPhaseEncodingStepsInPlane of an enhanced MR object.

    Phase encoded along the columns (InPlanePhaseEncodingDirection COL) fills the diagonal
    ``[f, 0, 0, p]``, as real Siemens legacy files do (pydicom's MR-SIEMENS test file: COL,
    ``[256, 0, 0, 134]``); ROW fills the anti-diagonal ``[0, f, p, 0]``.
    """
    freq = _safe_value(ds, "MRAcquisitionFrequencyEncodingSteps")
    phase = _safe_value(ds, "MRAcquisitionPhaseEncodingStepsInPlane")
    if freq is None or phase is None:
        for seq_kw in _ENHANCED_SEQUENCES:
            groups = _first_item(ds, seq_kw)
            item = _first_item(groups, "MRFOVGeometrySequence") if groups is not None else None
            if item is not None:
                freq = _safe_value(item, "MRAcquisitionFrequencyEncodingSteps", freq)
                phase = _safe_value(item, "MRAcquisitionPhaseEncodingStepsInPlane", phase)
    if not isinstance(freq, (int, float)) or not isinstance(phase, (int, float)) or not freq or not phase:
        return None
    if str(direction or "COL").upper().startswith("ROW"):
        return [0, int(freq), int(phase), 0]
    return [int(freq), 0, 0, int(phase)]


# ----------------------------------------------------------------------------- image kinds
#: Images that are not anatomical magnitude images; predictions and caches leave them out unless
#: asked to keep them (``keep_kinds``): a model of acquisition parameters was never shown them.
IMAGE_KINDS: tuple[str, ...] = ("phase", "derived", "localizer", "secondary capture")

_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"           # PS3.4 B.5: SC and multi-frame SC (.7.x)
_DERIVED_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.30": "Parametric Map Storage",
                        "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage"}
# ImageType values (PS3.3 C.8.16.1 and vendor usage) of parametric maps, projections and
# subtractions; "DERIVED" alone is not enough (reformats and filtered magnitude images are
# DERIVED and still anatomy, e.g. pydicom's MR_small and MR-SIEMENS files).
_MAP_TOKENS = frozenset({"ADC", "EADC", "FA", "MAP", "T1 MAP", "T2 MAP", "T2* MAP", "R1", "R2", "R2*",
                         "B0", "B1", "FIELD_MAP", "CBF", "CBV", "MTT", "TTP", "RCBF", "RCBV",
                         "PERFUSION", "PROJECTION IMAGE", "MIP", "MINIP", "SUB", "SUBTRACTION",
                         "COLLAPSE", "FUSED"})
_LOCALIZER_WORDS = re.compile(r"\b(localizers?|localisers?|scouts?|survey|3[- ]?pl(ane)?\s*loc|loc|aahscout\w*)\b",
                              re.IGNORECASE)


def image_kind(fields: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, evidence) of an image that is not an anatomical magnitude image, else None.

    Kinds (:data:`IMAGE_KINDS`): ``"secondary capture"`` (SOP class 1.2.840.10008.5.1.4.1.1.7[.x]);
    ``"localizer"`` (ImageType LOCALIZER, or a SeriesDescription naming a localizer, scout or
    survey); ``"phase"`` (ImageType P / PHASE / Philips P_*, or ComplexImageComponent PHASE);
    ``"derived"`` (parametric maps, projections and subtractions: ImageType values such as ADC,
    FA, T1 MAP, MIP, SUB, or a Parametric Map / Segmentation SOP class).
    """
    sop = str(fields.get("SOPClassUID") or "")
    if sop == _SECONDARY_CAPTURE or sop.startswith(_SECONDARY_CAPTURE + "."):
        return "secondary capture", f"SOP class {sop}"
    tokens = [str(t).strip().upper() for t in (fields.get("ImageType") or []) if t is not None]
    shown = "\\".join(tokens)
    if "LOCALIZER" in tokens:
        return "localizer", f"ImageType {shown}"
    description = str(fields.get("SeriesDescription") or "")
    if _LOCALIZER_WORDS.search(description.replace("_", " ")):
        return "localizer", f"SeriesDescription {description!r}"
    if str(fields.get("ComplexImageComponent") or "").upper() == "PHASE":
        return "phase", "ComplexImageComponent PHASE"
    if any(t in ("P", "PHASE", "PHASE MAP") or t.startswith("P_") for t in tokens[2:]):
        return "phase", f"ImageType {shown}"
    if sop in _DERIVED_SOP_CLASSES:
        return "derived", _DERIVED_SOP_CLASSES[sop]
    if any(t in _MAP_TOKENS or t.endswith(" MAP") for t in tokens[2:]):
        return "derived", f"ImageType {shown}"
    return None


def kind_problem(fields: dict[str, Any], keep_kinds: Iterable[str] = ()) -> str | None:
    """The skip reason of an image whose :func:`image_kind` is not in ``keep_kinds``, else None."""
    found = image_kind(fields)
    if found is None or found[0] in set(keep_kinds):
        return None
    kind, evidence = found
    return f"{kind} image ({evidence}): not an anatomical image; keep_kinds=('{kind}',) keeps it"


def check_keep_kinds(keep_kinds: Iterable[str]) -> tuple[str, ...]:
    """``keep_kinds`` validated against :data:`IMAGE_KINDS` (InvalidArgumentError otherwise)."""
    from mridomain.errors import InvalidArgumentError

    kinds = tuple(keep_kinds)
    unknown = [k for k in kinds if k not in IMAGE_KINDS]
    if unknown:
        raise InvalidArgumentError(f"keep_kinds {unknown}: choose among {', '.join(IMAGE_KINDS)}")
    return kinds


# ----------------------------------------------------------------------------- mosaics and volumes
def is_mosaic(fields: dict[str, Any]) -> bool:
    """A Siemens mosaic: many slices tiled in one frame (ImageType value MOSAIC)."""
    return any(str(t).strip().upper() == "MOSAIC" for t in (fields.get("ImageType") or []) if t is not None)


def mosaic_fields(ds: Dataset) -> dict[str, Any]:
    """What the Siemens CSA image header (read by nibabel.nicom) adds to a mosaic's fields:
    ``NumberOfImagesInMosaic`` and, for diffusion, ``DiffusionBValue`` (Siemens keeps the b-value
    there instead of in (0018,9087)). Empty when the dataset has no readable CSA header."""
    if 0x00290010 not in ds:
        return {}
    out: dict[str, Any] = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nibabel.nicom warns that it is experimental on import
            from nibabel.nicom import csareader

            csa = csareader.get_csa_header(ds, "image")
            if not csa:
                return {}
            count = csareader.get_n_mosaic(csa)
            b_value = csareader.get_b_value(csa)
    except Exception:  # noqa: BLE001 - a damaged private header may raise anything: nothing known
        return {}
    try:
        if count is not None and int(count) > 0:
            out["NumberOfImagesInMosaic"] = int(count)
        if b_value is not None and math.isfinite(float(b_value)):
            out["DiffusionBValue"] = float(b_value)
    except (TypeError, ValueError, OverflowError):
        pass
    return out


def volume_labels(positions: Sequence[float | None], values: Sequence[dict[str, Any]],
                  keywords: Sequence[str] = VOLUME_KEYWORDS) -> tuple[list[int], str]:
    """Volume number (0, 1, ...) of each image of one series, and what tells the volumes apart.

    A series is one volume unless several of its images share a slice position (``positions``:
    mm along the slice normal). Then the first of ``keywords`` (default :data:`VOLUME_KEYWORDS`:
    temporal position, b-value, echo, acquisition) whose values differ and leave no repeated
    position inside any volume splits it, volumes numbered in the order of that value. When
    none does but every position holds the same number of images, the k-th image at each
    position (by InstanceNumber in ``values``) goes to volume k (``"InstanceNumber order"``).
    Otherwise the series stays one volume. Returns ``([0] * n, "")`` for one volume.
    """
    n = len(positions)
    single: tuple[list[int], str] = ([0] * n, "")
    if n < 2 or any(p is None for p in positions):
        return single
    spot = [round(float(p), 3) for p in positions]  # type: ignore[arg-type]
    if len(set(spot)) == n:
        return single
    for keyword in keywords:
        tags = [_sortable(v.get(keyword)) for v in values]
        distinct = sorted(set(tags))
        if len(distinct) < 2:
            continue
        members: dict[Any, list[float]] = {}
        for tag, where in zip(tags, spot):
            members.setdefault(tag, []).append(where)
        if all(len(set(m)) == len(m) for m in members.values()):
            rank = {tag: k for k, tag in enumerate(distinct)}
            return [rank[t] for t in tags], keyword
    counts: dict[float, list[int]] = {}
    for i, where in enumerate(spot):
        counts.setdefault(where, []).append(i)
    if len({len(v) for v in counts.values()}) == 1:
        labels = [0] * n
        for members_at in counts.values():
            members_at.sort(key=lambda i: (_sortable(values[i].get("InstanceNumber")), i))
            for k, i in enumerate(members_at):
                labels[i] = k
        return labels, "InstanceNumber order"
    return single


def _sortable(value: Any) -> tuple:
    """A key that orders None last and never compares numbers with text."""
    if value is None or value == "" or value == []:
        return (2, 0, "")
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0, str(value))


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


def _check_pixel_length(fp: BinaryIO, path: str | Path, size: int, ds: Dataset) -> bool:
    """After a stop_before_pixels read: verify the pixel data element fits in the file and can be
    decoded as the header describes it (:func:`pixel_data_problem`).

    Returns True when a pixel data element was found. Raises for pixel data that cannot be read.
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
    transfer = transfer_syntax(ds)
    explicit = transfer is not None and transfer != "1.2.840.10008.1.2"
    if explicit and head[4:6] not in (b"OB", b"OW", b"UN"):
        # explicit VR (PS3.5 8.2): pydicom cannot take pixel data of any other VR as pixels
        raise ImageReadError(path, f"cannot decode pixel data: PixelData with VR {head[4:6].decode('latin-1')!r}")
    fragments = pixel_fragments(fp, start + header_len, size, length, transfer)
    problem = pixel_data_problem(length, size - start - header_len, pixel_fields(ds), transfer, fragments)
    if problem is not None:
        raise ImageReadError(path, problem)
    return True


def pixel_fragments(fp: BinaryIO, start: int, size: int, length: int,
                    transfer_syntax: str | None) -> tuple[int, str | None] | None:
    """:func:`encapsulated_fragments` of a pixel data value starting at byte ``start`` when it is
    encapsulated (undefined length, or a compressed transfer syntax, whose bytes pydicom parses as
    fragments whatever their declared length); None for native data."""
    if length == _UNDEFINED_LENGTH:
        return encapsulated_fragments(fp, start, size)
    if transfer_syntax and _is_encapsulated(transfer_syntax):
        return encapsulated_fragments(fp, start, min(size, start + length), delimited=False)
    return None


def _is_encapsulated(transfer_syntax: str) -> bool:
    uid = transfer_syntax_uid(transfer_syntax)
    return uid.is_transfer_syntax and uid.is_encapsulated


def encapsulated_fragments(fp: BinaryIO, start: int, end: int, delimited: bool = True) -> tuple[int, str | None]:
    """(number of fragments, problem or None) of encapsulated pixel data whose items lie from
    byte ``start`` to ``end`` (PS3.5 A.4: a basic offset table item, one item per fragment, then,
    for an undefined length (``delimited``), a sequence delimiter). Reads item headers only.

    It reads them as pydicom does: items walked by their lengths up to the delimiter; when that
    walk fails, the value ends at the first delimiter tag found by scanning (none: a truncated
    file, which pydicom reports too) and a last item running past that end is a short fragment.
    """
    count, problem = _walk_items(fp, start, end, delimited, tolerant=False)
    if problem is None:
        return count, None
    if delimited:
        stop = _find_delimiter(fp, start, end)
        if stop is None:
            return count, f"truncated file: ends at byte {end} inside the encapsulated pixel data (no delimiter)"
        end = stop
    return _walk_items(fp, start, end, delimited=False, tolerant=True)


def _walk_items(fp: BinaryIO, start: int, end: int, delimited: bool, tolerant: bool) -> tuple[int, str | None]:
    pos, items = start, 0
    fragments = lambda: max(items - 1, 0)  # noqa: E731 - the first item is the basic offset table
    while pos + 4 <= end:
        fp.seek(pos)
        head = fp.read(8)
        group, element = struct.unpack("<HH", head[:4])
        tag = group << 16 | element
        if tag == _SEQUENCE_DELIMITER:
            return fragments(), None
        if tag != _ITEM or len(head) < 8 or pos + 8 > end:
            if tag == _ITEM and tolerant:
                return fragments(), None  # an item header cut by the end: pydicom stops there
            return fragments(), (f"corrupt encapsulated pixel data: element ({group:04X},{element:04X}) "
                                 f"at byte {pos} where a fragment item belongs")
        (length,) = struct.unpack("<I", head[4:])
        if length == _UNDEFINED_LENGTH:
            return fragments(), f"corrupt encapsulated pixel data: an item of undefined length at byte {pos}"
        items += 1
        pos += 8 + length
        if pos > end:
            if tolerant:
                return fragments(), None  # pydicom reads the bytes there are: a short last fragment
            return fragments(), (f"truncated file: a pixel data fragment needs {length} bytes, "
                                 f"only {max(end - (pos - length), 0)} present")
    if not delimited and (tolerant or pos == end):
        return fragments(), None
    return fragments(), f"truncated file: ends at byte {end} inside the encapsulated pixel data"


def _find_delimiter(fp: BinaryIO, start: int, end: int, chunk: int = 1 << 16) -> int | None:
    """Position of the first sequence delimiter tag between ``start`` and ``end`` (a byte scan)."""
    marker = struct.pack("<HH", 0xFFFE, 0xE0DD)
    pos = start
    while pos < end:
        fp.seek(pos)
        block = fp.read(min(chunk, end - pos))
        found = block.find(marker)
        if found >= 0:
            return pos + found
        if len(block) < len(marker):
            return None
        pos += len(block) - len(marker) + 1
    return None


#: Header keyword -> pydicom's name for it among the pixel options (pydicom.pixels.utils.as_pixel_options).
_PIXEL_OPTIONS = {"Rows": "rows", "Columns": "columns", "NumberOfFrames": "number_of_frames",
                  "SamplesPerPixel": "samples_per_pixel", "PlanarConfiguration": "planar_configuration",
                  "PhotometricInterpretation": "photometric_interpretation",
                  "BitsAllocated": "bits_allocated", "BitsStored": "bits_stored",
                  "PixelRepresentation": "pixel_representation"}


#: A pixel description value pydicom cannot convert (:func:`pixel_fields`).
UNREADABLE = "<unreadable>"


def pixel_fields(ds: Dataset) -> dict[str, Any]:
    """The header fields :func:`pixel_data_problem` checks, converted by pydicom as its decoders
    convert them (:data:`UNREADABLE` where that conversion fails)."""
    out = {}
    for keyword in _PIXEL_OPTIONS:
        if keyword in ds:
            out[keyword] = _safe_value(ds, keyword, UNREADABLE)
    return out


class _DeclaredLength:
    """Stands for pixel data of a known length that was not read: pydicom's buffer validation
    asks a buffer only for its length."""

    def __init__(self, length: int):
        self.length = length

    def __len__(self) -> int:
        return self.length


def pixel_data_problem(length: int, available: int, fields: dict[str, Any] | None = None,
                       transfer_syntax: str | None = None,
                       fragments: tuple[int, str | None] | None = None) -> str | None:
    """Why a PixelData element of ``length`` bytes (0xFFFFFFFF: undefined length) cannot be read
    when ``available`` bytes follow its header, or None. The one pixel data check of the package:
    the pydicom path, the index's header walker and the pixel reader all ask it.

    With the header ``fields`` (Rows, Columns, NumberOfFrames and :data:`PIXEL_KEYWORDS`) and the
    transfer syntax, it asks pydicom's own decoder validation whether the group 0028 values can
    describe these pixel data: the elements pydicom requires, their ranges, and for native data
    whether the bytes present hold the image they describe (``Rows x Columns x frames x samples
    x bits``, with YBR_FULL_422's 4:2:2 subsampling), so a NumberOfFrames of 2^31-1 in a 526 KB
    file is refused before anything allocates 16 GiB. ``fragments`` (:func:`pixel_fragments`)
    checks that encapsulated data hold their fragments within the file and at least one fragment
    per frame. Without ``fields`` only the length is checked against the file.
    """
    encapsulated = length == _UNDEFINED_LENGTH or fragments is not None
    if length == 0:
        return "no pixel data (PixelData element is empty)"
    if length == _UNDEFINED_LENGTH and available <= 0:
        return "truncated file: empty encapsulated pixel data"
    if fragments is not None:
        count, problem = fragments
        if problem is not None:
            return problem
        if count == 0:
            return "no pixel data (the encapsulated pixel data hold no fragment)"
    if fields is None:
        if not encapsulated and length > available:
            return f"truncated file: pixel data needs {length} bytes, only {max(available, 0)} present"
        return None
    # pydicom reads what the file holds when a length runs past its end: judge those bytes.
    present = max(available, 0) if length == _UNDEFINED_LENGTH else min(length, max(available, 0))
    return _decode_problem(encapsulated, present, fields, transfer_syntax, fragments[0] if fragments else None)


def _decode_problem(encapsulated: bool, present: int, fields: dict[str, Any], transfer_syntax: str | None,
                    n_fragments: int | None) -> str | None:
    from pydicom.pixels import get_decoder
    from pydicom.pixels.decoders.base import DecodeRunner

    if not transfer_syntax:
        # pydicom decodes only what the file meta says how to (a raw dataset has no file meta)
        return "cannot decode pixel data: no Transfer Syntax UID (file meta missing or damaged)"
    uid = transfer_syntax_uid(transfer_syntax)
    if not uid.is_transfer_syntax:
        return f"cannot decode pixel data: unknown transfer syntax {transfer_syntax}"
    if encapsulated and not uid.is_encapsulated:
        # items where native bytes belong: pydicom would read the item headers as pixels
        return f"cannot decode pixel data: encapsulated pixel data under transfer syntax {uid.name}"
    try:
        if not get_decoder(uid).is_available:
            return f"cannot decode pixel data: no decoder installed for {uid.name}"
    except NotImplementedError:
        return f"cannot decode pixel data: pydicom has no decoder for {uid.name}"
    unreadable = [kw for kw in _PIXEL_OPTIONS if fields.get(kw) is UNREADABLE]
    if unreadable:
        return f"cannot decode pixel data: unreadable {unreadable[0]} value"
    options = {name: fields[kw] for kw, name in _PIXEL_OPTIONS.items() if fields.get(kw) is not None}
    if fields.get("NumberOfFrames") in (None, 0, ""):
        options["number_of_frames"] = 1  # as pydicom assumes
    options["pixel_keyword"] = "PixelData"
    runner = DecodeRunner(uid)
    try:
        runner.set_options(**options)
        runner.set_source(_DeclaredLength(present))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runner.validate()
    except ValueError as err:
        text = _one_line(err)
        if "less than expected" in text:
            frames = runner.number_of_frames
            need = math.ceil(runner.frame_length(unit="bytes") * frames)
            return (f"truncated file: pixel data has {present} bytes, Rows x Columns x {frames} frame(s) "
                    f"as the header describes them need {need}")
        return f"cannot decode pixel data: {text}"
    except (AttributeError, TypeError, KeyError) as err:
        return f"cannot decode pixel data: {_one_line(err)}"
    if n_fragments is not None and runner.number_of_frames > n_fragments:
        return (f"cannot decode pixel data: NumberOfFrames {runner.number_of_frames} but the encapsulated "
                f"pixel data hold only {n_fragments} fragment(s)")
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
    ``"truncated file: ..."``, ``"corrupt DICOM header: ..."``, ``"cannot decode pixel data:
    ..."`` (``check_pixels``: :func:`pixel_data_problem`). ``defer_size`` leaves values larger
    than that on disk until accessed (pydicom re-opens the file then). A header whose file ends
    cleanly after its last element without any pixel data (a header dump whose pixels were
    stripped) is returned as it is; one cut inside an element is a truncated file.
    """
    return _open_dicom(path, stop_before_pixels=stop_before_pixels, specific_tags=specific_tags,
                       check_pixels=check_pixels, defer_size=defer_size)[0]


def _open_dicom(
    path: str | Path,
    *,
    stop_before_pixels: bool = False,
    specific_tags: Sequence[int] | None = None,
    check_pixels: bool = True,
    defer_size: int | str | None = None,
) -> tuple[Dataset, bool]:
    """:func:`open_dicom`, and whether the file holds a pixel data element."""
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
        except (ValueError, KeyError, TypeError, OverflowError, struct.error, NotImplementedError, AttributeError,
                BytesLengthException) as exc:
            raise ImageReadError(path, f"corrupt DICOM header: {_one_line(exc)}") from None
        except RecursionError:
            raise ImageReadError(path, "corrupt DICOM header: sequences nested too deep to read") from None
        except OSError as exc:
            raise ImageReadError(path, f"cannot read: {_one_line(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - whatever else a damaged file makes pydicom raise
            raise ImageReadError(path, f"corrupt DICOM header: {type(exc).__name__}: {_one_line(exc)}") from None
        for warning in caught:
            text = str(warning.message)
            if "End of file reached" in text or "unexpected end" in text.lower():
                raise ImageReadError(
                    path, f"truncated file: ends at byte {size} inside a sequence or the encapsulated pixel data"
                )
        with warnings.catch_warnings():
            # the checks convert values, and pydicom warns about each odd one: reasons say what matters
            warnings.simplefilter("ignore")
            found_pixels = _check_dataset(ds, fp, path, size, has_preamble, stop_before_pixels, check_pixels)
    return ds, found_pixels


def _check_dataset(ds: Dataset, fp: BinaryIO, path: str | Path, size: int, has_preamble: bool,
                   stop_before_pixels: bool, check_pixels: bool) -> bool:
    """The checks of :func:`open_dicom` after pydicom's read; whether the file has pixel data."""
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
    found_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    if check_pixels:
        transfer = transfer_syntax(ds)
        deflated = transfer == DeflatedExplicitVRLittleEndian
        if stop_before_pixels and deflated:
            # Positions in the file are positions in the compressed stream: check the
            # pixel data of the inflated dataset instead (deflated files are rare).
            found_pixels = _check_inflated_pixels(path)
        elif stop_before_pixels:
            found_pixels = _check_pixel_length(fp, path, size, ds)
        at_end = fp.tell() >= size or deflated
        if not found_pixels and at_end and _is_image_header(ds) and not deflated and not _ends_cleanly(path, size):
            # An image header that runs into the end of the file inside an element:
            # pydicom returns the partial dataset silently, so say what happened.
            raise ImageReadError(path, f"truncated file: ends at byte {size} before the pixel data")
    return found_pixels


def _check_inflated_pixels(path: str | Path) -> bool:
    """Pixel data check of a deflated file (whole dataset inflated): True when it has pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            full = pydicom.dcmread(path)
            value = full.get("PixelData")
    except Exception as exc:  # noqa: BLE001 - a damaged deflate stream may raise anything
        raise ImageReadError(path, f"corrupt deflated dataset: {_one_line(exc)}") from None
    if value is None:
        return False
    problem = pixel_data_problem(len(value), len(value), pixel_fields(full), DeflatedExplicitVRLittleEndian)
    if problem is not None:
        raise ImageReadError(path, problem)
    return True


def _ends_cleanly(path: str | Path, size: int) -> bool:
    """Does the dataset's last element end exactly where the file ends? A header dump whose pixel
    data were stripped does; a download cut inside an element does not (pydicom returns the cut
    value without a word, so the lengths decide)."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - unreadable in full: certainly not a clean end
        return False
    if any("end of file" in str(w.message).lower() for w in caught) or not len(ds):
        return False
    last = ds.get_item(max(ds.keys()))
    if isinstance(last, RawDataElement):
        if last.length == _UNDEFINED_LENGTH:
            return True  # a sequence read to its delimiter (pydicom warns when that is missing)
        return last.value_tell + last.length == size
    return True


def transfer_syntax_uid(text: str) -> UID:
    """A transfer syntax UID object without pydicom's validation warning for damaged text (the
    problem is reported as a reason instead)."""
    from pydicom import config

    return UID(text, validation_mode=config.IGNORE)


def transfer_syntax(ds: Dataset) -> str | None:
    """The file meta's TransferSyntaxUID as text; None when absent or unreadable."""
    try:
        value = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
    except Exception:  # noqa: BLE001 - a damaged file meta element (e.g. a wrong VR) says nothing
        return None
    return str(value) if value else None


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


def read_header_fields(path: str | Path, extra: Iterable[str] = (), require_pixels: bool = True
                       ) -> dict[str, Any]:
    """Header-only read of one DICOM file into the flat ``{keyword: value}`` dict.

    Parses only :data:`HEADER_KEYWORDS` (+ ``extra`` keywords and the enhanced-MR functional
    groups) and stops before the pixel data, so it costs a fraction of a full ``dcmread``; the
    pixel data it announces are checked by :func:`pixel_data_problem`. A Siemens mosaic adds
    ``NumberOfImagesInMosaic`` (and its ``DiffusionBValue``) from its CSA header. Raises :class:`ImageReadError` for empty,
    non-DICOM, truncated and corrupt files, pixel data that cannot be decoded, and objects that
    are not images (no Rows / Columns). An image header without pixel data (a header dump) raises
    ``"no pixel data (...)"`` too, unless ``require_pixels=False``: then it is returned, and
    every result carries ``has_pixels`` (bool).
    """
    extra = tuple(extra)
    tags = _DEFAULT_TAGS if not extra else _specific_tags(extra)
    ds, has_pixels = _open_dicom(path, stop_before_pixels=True, specific_tags=tags)
    fields = header_fields_from_dataset(ds, extra)
    if "Rows" not in fields or "Columns" not in fields:
        sop = fields.get("SOPClassUID")
        name = UID(sop).name if sop else "unknown SOP class"
        raise ImageReadError(path, f"no pixel data (not an image: {name})")
    if is_mosaic(fields) and "NumberOfImagesInMosaic" not in fields:
        # The CSA header is private and was not among the tags read: read it now (mosaics only).
        full = open_dicom(path, stop_before_pixels=True, check_pixels=False)
        for keyword, value in mosaic_fields(full).items():
            if _is_empty(fields.get(keyword)):
                fields[keyword] = value
    if require_pixels:
        if not has_pixels:
            raise ImageReadError(path, "no pixel data (an image header without its pixels)")
    else:
        fields["has_pixels"] = has_pixels
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
