"""DICOM header fields: the keywords the IAP schema reads, and their decoding into plain Python values
(strings, floats, ints, lists), enhanced multi-frame MR included (functional groups).
"""
from __future__ import annotations

import functools
import math
import struct
import warnings
from collections.abc import Iterable
from typing import Any

from pydicom.dataset import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.multival import MultiValue
from pydicom.valuerep import DSfloat, IS, PersonName
from pydicom.uid import UID


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
