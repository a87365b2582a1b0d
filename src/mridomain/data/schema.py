"""The image acquisition parameters (IAPs): where each comes from and how raw header values
become labels.

The 12 default IAPs are those of the IAP-prediction paper (Table 1), with values written the
way the Duke Breast Cancer MRI (DBC) spreadsheet writes them (its category map ships in
``mridomain/data/resources/dbc_clinical_feature_categories.csv``): vendor names upper-case,
scan options joined by backslashes, acquisition matrix ``"448 X 448"``, numbers in their
shortest decimal form (``"1.494"``, ``"1.1"``, ``"10"``), FOV in whole mm (``"340"``).

Every ``normalize`` function takes the flat header dict of :func:`mridomain.io.read_header_fields`
(or a row of the index, whose list values may come back from parquet as numpy arrays) and
returns the label, or ``None`` when the header does not determine it. Unparseable values give
``None`` rather than an exception: one odd file must not stop an archive index.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from mridomain.config import Settings
from mridomain.errors import SchemaMismatchError

__all__ = [
    "IAPSpec",
    "DEFAULT_IAPS",
    "IAP_NAMES",
    "NOMINAL_FIELD_STRENGTHS",
    "normalize_iaps",
    "is_missing",
    "load_iap_config",
    "make_iaps",
    "required_keywords",
    "field_strength_bins",
    "format_number",
    "normalize_manufacturer",
    "normalize_scan_options",
    "normalize_field_strength",
    "normalize_patient_position",
    "normalize_contrast_agent",
    "normalize_acquisition_matrix",
    "normalize_slice_thickness",
    "normalize_flip_angle",
    "normalize_fov",
    "normalize_tr",
    "normalize_te",
    "CONTRAST_NOT_STATED",
    "CONTRAST_ABSENT",
]

Kind = Literal["categorical", "continuous"]

#: DBC's two "no agent name" categories (category map: "Name of agent not stated (but
#: ContrastBolusAgent tag was present)" and "ContrastBolusAgent Tag Absent").
CONTRAST_NOT_STATED = "not stated"
CONTRAST_ABSENT = "absent"


@dataclass(frozen=True)
class IAPSpec:
    """One image acquisition parameter.

    ``normalize`` maps the flat header dict to the label (str for categorical IAPs, float in
    ``unit`` for continuous ones) or ``None`` when the header does not determine it.
    """

    name: str
    kind: Kind
    keywords: tuple[str, ...]
    unit: str | None
    normalize: Callable[[Mapping[str, Any]], Any] = field(compare=False, repr=False)
    description: str = field(default="", compare=False)

    def __call__(self, fields: Mapping[str, Any]) -> Any:
        return self.normalize(fields)


# ----------------------------------------------------------------------------- value helpers
def is_missing(value: Any) -> bool:
    """True for the spellings of "no value": None, a float NaN (any numpy float width), pd.NA, NaT.

    Lists (multi-valued tags such as ScanOptions) and strings are values, even when empty: an
    empty ContrastBolusAgent means "not stated", not "absent". The one test of missingness used by
    the data, iap and analysis packages.
    """
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return bool(value != value)  # NaN is the only value unequal to itself
    if isinstance(value, (str, int, list, tuple)):
        return False
    return value is pd.NA or value is pd.NaT



def _as_list(value: Any) -> list[Any] | None:
    """Header multi-values arrive as list, tuple, numpy array (parquet) or one backslash string."""
    if is_missing(value):
        return None
    if isinstance(value, str):
        value = value.strip()
        return [] if value == "" else [v.strip() for v in value.split("\\")]
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _as_float(value: Any) -> float | None:
    if is_missing(value):
        return None
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist") and not isinstance(value, (int, float)):
        items = _as_list(value)
        if not items:
            return None
        value = items[0]
    try:
        out = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _as_str(value: Any) -> str | None:
    if is_missing(value):
        return None
    return str(value).strip()


def format_number(value: float, ndigits: int = 4) -> str:
    """Shortest decimal form, as DBC writes numbers: 1.4939999580383 -> "1.494",
    1.500000 -> "1.5", 3.0 -> "3", 0.8000 -> "0.8", 2.8936 -> "2.8936".

    Rounds to ``ndigits`` decimals first (DICOM DS values carry float32 noise such as
    1.4939999580383 for a 1.494 T magnet), never uses exponent notation.
    """
    text = f"{round(float(value), ndigits):.{ndigits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


# ----------------------------------------------------------------------------- normalizers
# Ordered: first matching pattern wins. Patterns match the upper-cased, stripped string.
_VENDOR_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"^GE\b|GENERAL ELECTRIC|GEMS\b", "GE"),
    (r"SIEMENS", "SIEMENS"),
    (r"PHILIPS", "PHILIPS"),
    (r"TOSHIBA", "TOSHIBA"),
    (r"CANON", "CANON"),
    (r"HITACHI", "HITACHI"),
    (r"FUJIFILM", "FUJIFILM"),
    (r"ESAOTE", "ESAOTE"),
    (r"UNITED IMAGING|^UIH\b", "UIH"),
)


def normalize_manufacturer(fields: Mapping[str, Any]) -> str | None:
    """Free-text Manufacturer -> short vendor name.

    "GE MEDICAL SYSTEMS" / "GE Healthcare" -> "GE", "SIEMENS" / "Siemens Healthineers" ->
    "SIEMENS", "Philips Medical Systems" / "Philips Healthcare" / "Philips" -> "PHILIPS",
    "TOSHIBA_MEC" -> "TOSHIBA", "Canon Medical Systems" -> "CANON"; an unknown vendor is kept,
    upper-cased with runs of whitespace collapsed (e.g. DBC's "MPTronic software").

    >>> [normalize_manufacturer({"Manufacturer": m}) for m in ("GE MEDICAL SYSTEMS", "TOSHIBA_MEC", "MPTronic  software")]
    ['GE', 'TOSHIBA', 'MPTRONIC SOFTWARE']
    """
    raw = _as_str(fields.get("Manufacturer"))
    if not raw:
        return None
    text = " ".join(raw.upper().split())
    for pattern, vendor in _VENDOR_PATTERNS:
        if re.search(pattern, text):
            return vendor
    return text


def normalize_scanner_model(fields: Mapping[str, Any]) -> str | None:
    """ManufacturerModelName, stripped (case kept: DBC has both "SIGNA HDx" and "Signa HDxt")."""
    raw = _as_str(fields.get("ManufacturerModelName"))
    return raw or None


#: Label for a ScanOptions tag that is present but empty (no option used).
SCAN_OPTIONS_NONE = "NONE"


def normalize_scan_options(fields: Mapping[str, Any]) -> str | None:
    """ScanOptions values joined by backslash in header order, as DBC writes them
    ("FAST_GEMS\\SAT_GEMS\\PFP\\FS"); a present-but-empty tag gives "NONE", an absent one None."""
    values = _as_list(fields.get("ScanOptions"))
    if values is None:
        return None
    values = [str(v).strip() for v in values if str(v).strip()]
    return "\\".join(values) if values else SCAN_OPTIONS_NONE


#: Nominal clinical field strengths (T) that :func:`field_strength_bins` snaps to.
NOMINAL_FIELD_STRENGTHS: tuple[float, ...] = (0.2, 0.35, 0.5, 1.0, 1.5, 3.0, 7.0)


def field_strength_bins(tesla: float, tolerance: float = 0.06) -> float:
    """Snap a field strength to the nearest nominal value within ``tolerance`` (relative).

    Vendors record the exact B0 of the magnet: Siemens "1.5 T" systems write 1.494, some
    "3 T" ones 2.8936 (both in DBC). 1.494 -> 1.5 (0.4 % off), 2.8936 -> 3.0 (3.5 % off).
    Values farther than ``tolerance`` from every nominal strength are returned unchanged.

    >>> field_strength_bins(1.494), field_strength_bins(2.8936), field_strength_bins(2.0)
    (1.5, 3.0, 2.0)
    """
    nearest = min(NOMINAL_FIELD_STRENGTHS, key=lambda b: abs(b - tesla))
    return nearest if abs(nearest - tesla) <= tolerance * nearest else tesla


def normalize_field_strength(fields: Mapping[str, Any], bins: Callable[[float], float] | None = None) -> str | None:
    """MagneticFieldStrength (T) as read, compact decimal ("1.494", "1.5", "3"); with
    ``bins`` (e.g. :func:`field_strength_bins`) the value is mapped first (1.494 -> "1.5").
    Some old files store it in gauss (e.g. 15000): values above 100 are converted to tesla."""
    value = _as_float(fields.get("MagneticFieldStrength"))
    if value is None or value <= 0:
        return None
    if value > 100:  # gauss (1 T = 10,000 G), seen in old GE / Philips headers
        value = value / 10000.0
    if bins is not None:
        value = bins(value)
    return format_number(value)


def normalize_patient_position(fields: Mapping[str, Any]) -> str | None:
    """PatientPosition as read (FFP, HFP, HFS, FFS, ...), upper-cased and stripped."""
    raw = _as_str(fields.get("PatientPosition"))
    return raw.upper() if raw else None


def normalize_contrast_agent(fields: Mapping[str, Any]) -> str:
    """ContrastBolusAgent upper-cased and stripped ("GADAVIST"); DBC's two extra categories:
    "not stated" when the tag is present but empty, "absent" when the tag is missing.

    The header dict marks an absent tag with ``None`` (or no key) and an empty one with "".
    """
    if "ContrastBolusAgent" not in fields:
        return CONTRAST_ABSENT
    raw = fields.get("ContrastBolusAgent")
    if is_missing(raw):
        return CONTRAST_ABSENT
    text = " ".join(str(raw).upper().split())
    return text if text else CONTRAST_NOT_STATED


def normalize_acquisition_matrix(fields: Mapping[str, Any]) -> str | None:
    """AcquisitionMatrix -> DBC's "F X P" form: frequency steps first, then phase steps.

    DICOM PS3.3 C.8.3.1 (0018,1310): "frequency rows \\ frequency columns \\ phase rows \\
    phase columns"; for a 2-D in-plane acquisition one of each pair is zero. The frequency
    count is the non-zero value of the first pair, the phase count that of the second pair, so
    [256, 0, 0, 134] and [0, 256, 134, 0] both give "256 X 134", matching DBC's ordering
    where the (usually reduced) phase count comes second ("512 X 358", "384 X 360").
    """
    values = _as_list(fields.get("AcquisitionMatrix"))
    if not values or len(values) != 4:
        return None
    try:
        nums = [int(round(float(v))) for v in values]
    except (TypeError, ValueError):
        return None
    freq = nums[0] or nums[1]
    phase = nums[2] or nums[3]
    if freq <= 0 or phase <= 0:
        return None
    return f"{freq} X {phase}"


def normalize_slice_thickness(fields: Mapping[str, Any]) -> str | None:
    """SliceThickness in mm, compact ("1.1", "2", "0.8")."""
    value = _as_float(fields.get("SliceThickness"))
    return format_number(value, 3) if value is not None and value > 0 else None


def normalize_flip_angle(fields: Mapping[str, Any]) -> str | None:
    """FlipAngle in degrees, compact ("10", "12")."""
    value = _as_float(fields.get("FlipAngle"))
    return format_number(value, 2) if value is not None and value > 0 else None


def normalize_fov(fields: Mapping[str, Any]) -> str | None:
    """Field of view in whole mm: ReconstructionDiameter when present, else the image width
    PixelSpacing[1] x Columns (PixelSpacing is row spacing \\ column spacing, PS3.3 10.7.1.3,
    so [1] is the horizontal pixel size). Rounded half-up to an integer string ("340").
    """
    diameter = _as_float(fields.get("ReconstructionDiameter"))
    if diameter is not None and diameter > 0:
        return str(int(math.floor(diameter + 0.5)))
    spacing = _as_list(fields.get("PixelSpacing"))
    columns = _as_float(fields.get("Columns"))
    if not spacing or len(spacing) < 2 or columns is None:
        return None
    col_spacing = _as_float(spacing[1])
    if col_spacing is None or col_spacing <= 0 or columns <= 0:
        return None
    return str(int(math.floor(col_spacing * columns + 0.5)))


def normalize_tr(fields: Mapping[str, Any]) -> float | None:
    """RepetitionTime in ms (float)."""
    value = _as_float(fields.get("RepetitionTime"))
    return value if value is not None and value > 0 else None


def normalize_te(fields: Mapping[str, Any]) -> float | None:
    """EchoTime in ms (float); enhanced MR's EffectiveEchoTime is mapped to EchoTime by the reader."""
    value = _as_float(fields.get("EchoTime"))
    return value if value is not None and value > 0 else None


# ----------------------------------------------------------------------------- the schema
def make_iaps(field_strength_binning: bool | Callable[[float], float] = False) -> tuple[IAPSpec, ...]:
    """The 12 IAPs of the paper in Table 1 order.

    ``field_strength_binning``: False keeps field strength as read ("1.494"); True snaps it
    with :func:`field_strength_bins` ("1.5"); a callable ``float -> float`` is used as is.
    """
    if field_strength_binning is True:
        bins: Callable[[float], float] | None = field_strength_bins
    elif callable(field_strength_binning):
        bins = field_strength_binning
    else:
        bins = None

    def _fs(fields: Mapping[str, Any]) -> str | None:
        return normalize_field_strength(fields, bins)

    return (
        IAPSpec("manufacturer", "categorical", ("Manufacturer",), None, normalize_manufacturer,
                "scanner vendor"),
        IAPSpec("scanner_model", "categorical", ("ManufacturerModelName",), None, normalize_scanner_model,
                "scanner model name"),
        IAPSpec("scan_options", "categorical", ("ScanOptions",), None, normalize_scan_options,
                "scan options joined by backslash"),
        IAPSpec("field_strength", "categorical", ("MagneticFieldStrength",), "T", _fs,
                "main magnetic field strength"),
        IAPSpec("patient_position", "categorical", ("PatientPosition",), None, normalize_patient_position,
                "patient position (FFP, HFP, ...)"),
        IAPSpec("contrast_agent", "categorical", ("ContrastBolusAgent",), None, normalize_contrast_agent,
                "contrast agent, 'not stated' or 'absent'"),
        IAPSpec("acquisition_matrix", "categorical", ("AcquisitionMatrix",), None,
                normalize_acquisition_matrix, "frequency X phase encoding steps"),
        IAPSpec("slice_thickness", "categorical", ("SliceThickness",), "mm", normalize_slice_thickness,
                "slice thickness"),
        IAPSpec("flip_angle", "categorical", ("FlipAngle",), "deg", normalize_flip_angle, "flip angle"),
        IAPSpec("fov", "categorical", ("ReconstructionDiameter", "PixelSpacing", "Columns"), "mm",
                normalize_fov, "field of view"),
        IAPSpec("tr", "continuous", ("RepetitionTime",), "ms", normalize_tr, "repetition time"),
        IAPSpec("te", "continuous", ("EchoTime",), "ms", normalize_te, "echo time"),
    )


#: The 12 IAPs of the paper, in Table 1 order, field strength kept as read.
DEFAULT_IAPS: tuple[IAPSpec, ...] = make_iaps()
IAP_NAMES: tuple[str, ...] = tuple(spec.name for spec in DEFAULT_IAPS)


def normalize_iaps(fields: Mapping[str, Any], iaps: Sequence[IAPSpec] = DEFAULT_IAPS) -> dict[str, Any]:
    """``{iap name: normalized value}`` for one header dict; ``None`` where undetermined."""
    out: dict[str, Any] = {}
    for spec in iaps:
        try:
            out[spec.name] = spec.normalize(fields)
        except (TypeError, ValueError, AttributeError, IndexError, KeyError):
            out[spec.name] = None
    return out


def required_keywords(iaps: Iterable[IAPSpec] = DEFAULT_IAPS) -> tuple[str, ...]:
    """Union of the DICOM keywords the IAPs read, in first-use order (for ``extra=``)."""
    seen: dict[str, None] = {}
    for spec in iaps:
        for kw in spec.keywords:
            seen.setdefault(kw, None)
    return tuple(seen)


# ----------------------------------------------------------------------------- user config
def _extra_normalizer(keyword: str, kind: Kind) -> Callable[[Mapping[str, Any]], Any]:
    if kind == "continuous":
        def _continuous(fields: Mapping[str, Any]) -> float | None:
            return _as_float(fields.get(keyword))

        return _continuous

    def _categorical(fields: Mapping[str, Any]) -> str | None:
        value = fields.get(keyword)
        if is_missing(value):
            return None
        if isinstance(value, float):
            return format_number(value)
        if not isinstance(value, str) and (isinstance(value, (list, tuple)) or hasattr(value, "tolist")):
            items = _as_list(value) or []
            text = "\\".join(format_number(v) if isinstance(v, float) else str(v).strip() for v in items)
        else:
            text = str(value).strip()
        return text or None

    return _categorical


class ExtraIAPConfig(Settings):
    """One header field of the user's own, learned like an IAP."""

    name: str = Field(min_length=1)
    keyword: str
    kind: Literal["categorical", "continuous"] = "categorical"
    unit: Optional[str] = None

    @field_validator("keyword")
    @classmethod
    def _is_dicom_keyword(cls, keyword: str) -> str:
        from pydicom.datadict import tag_for_keyword

        if tag_for_keyword(keyword) is None:
            raise ValueError(f"{keyword!r} is not a DICOM keyword")
        return keyword


class IAPSelectionConfig(Settings):
    """The YAML file of ``mridomain index --iap-config`` (every key optional)."""

    iaps: Optional[list[str]] = None       # subset of the 12, in this order (default: all)
    field_strength_bins: bool = False      # 1.494 -> "1.5", 2.8936 -> "3"
    extra: list[ExtraIAPConfig] = []

    @field_validator("iaps")
    @classmethod
    def _known_names(cls, names: list[str] | None) -> list[str] | None:
        unknown = [n for n in names or [] if n not in IAP_NAMES]
        if unknown:
            raise ValueError(f"unknown IAP name(s) {unknown}; known: {', '.join(IAP_NAMES)}")
        return names


def load_iap_config(path: str | Path) -> tuple[IAPSpec, ...]:
    """IAP schema from a YAML file (:class:`IAPSelectionConfig`). All keys are optional::

        iaps: [manufacturer, field_strength, tr, te]    # subset, in this order (default: all 12)
        field_strength_bins: true                       # 1.494 -> "1.5", 2.8936 -> "3"
        extra:                                          # header fields of your own
          - {name: sequence, keyword: SeriesDescription, kind: categorical}
          - {name: bandwidth, keyword: PixelBandwidth, kind: continuous, unit: Hz}

    Raises :class:`SchemaMismatchError` (one line, naming the file and the field) for unknown
    keys, IAP names or DICOM keywords, bad kinds, duplicate names or a malformed file.
    """
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise SchemaMismatchError(f"{path}: IAP config file not found") from None
    except yaml.YAMLError as exc:
        raise SchemaMismatchError(f"{path}: not valid YAML ({' '.join(str(exc).split())[:200]})") from None
    config = IAPSelectionConfig.from_dict(raw, where=str(path))
    base = {spec.name: spec for spec in make_iaps(config.field_strength_bins)}
    specs: list[IAPSpec] = [base[n] for n in (config.iaps if config.iaps is not None else IAP_NAMES)]
    for item in config.extra:
        specs.append(IAPSpec(item.name, item.kind, (item.keyword,), item.unit,
                             _extra_normalizer(item.keyword, item.kind), f"header field {item.keyword}"))
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise SchemaMismatchError(f"{path}: IAP name {spec.name!r} appears twice")
        seen.add(spec.name)
    if not specs:
        raise SchemaMismatchError(f"{path}: the config selects no IAP")
    return tuple(specs)
