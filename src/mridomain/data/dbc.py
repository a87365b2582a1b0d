"""Duke Breast Cancer MRI (DBC, TCIA) adapter.

Reads the files DBC ships next to its images:

* ``Clinical_and_Other_Features.xlsx`` (or its CSV export): three header rows (row 1 group names,
  row 2 column names, row 3 the category-code map such as ``"GE MEDICAL SYSTEMS=0, MPTronic
  software=1, SIEMENS=2"``), data from row 4, first column ``Patient ID``. Categorical cells hold
  the codes; :class:`DBCCategories` turns codes into values and back.
* the TCIA "classic" folder layout ``Breast_MRI_NNN/<study>/<series>/1-NNN.dcm`` and TCIA's file
  path mapping table;
* ``Annotation_Boxes`` (tumor bounding box per patient) to label slices as the paper does (Sec.
  5.2): positive inside the box's slice range, negative at least 5 slices away, unlabeled between.

IAP values coming from the spreadsheet are normalized by the same functions as header values
(``mridomain.data.schema``), so the two sources can be compared or swapped.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mridomain.data.schema import is_missing
from mridomain.errors import EmptyInputError, SchemaMismatchError

CATEGORY_RESOURCE = "dbc_clinical_feature_categories.csv"
PATIENT_PATTERN = re.compile(r"^Breast_MRI_\d+$", re.IGNORECASE)
#: Paper Sec. 5.2: negatives are slices at least this far from the tumor box.
NEGATIVE_MARGIN = 5

#: DBC column (canonical form, see :func:`canon`) -> IAP name of the schema.
DBC_IAP_COLUMNS: dict[str, str] = {
    "manufacturer": "manufacturer",
    "manufacturer model name": "scanner_model",
    "scan options": "scan_options",
    "field strength (tesla)": "field_strength",
    "patient position during mri": "patient_position",
    "contrast agent": "contrast_agent",
    "acquisition matrix": "acquisition_matrix",
    "slice thickness": "slice_thickness",
    "flip angle": "flip_angle",
    "fov computed (field of view) in cm": "fov",
    "tr (repetition time)": "tr",
    "te (echo time)": "te",
}


def canon(name: Any) -> str:
    """Column name in a comparable form: BOM dropped, whitespace collapsed, stripped, lower case
    (DBC's names carry trailing spaces and newlines, e.g. ``"Flip Angle \\n"``)."""
    if name is None or (isinstance(name, float) and np.isnan(name)):
        return ""
    return re.sub(r"\s+", " ", str(name).replace("\ufeff", "")).strip().lower()


def _is_missing(value: Any) -> bool:
    """Missing (:func:`mridomain.data.schema.is_missing`) or one of the sheet's "no data" codes."""
    if is_missing(value):
        return True
    return isinstance(value, str) and value.strip().upper() in {"", "NA", "NC", "N/A", "NAN", "NP"}


# ----------------------------------------------------------------------------------------------
# category map


def parse_category_map(text: Any) -> dict[int, str]:
    """Parse one cell of DBC's category row into {code: value}.

    Handles the ``"value=code, value=code"`` form of the acquisition columns (values may hold
    backslashes and spaces: ``"FAST_GEMS\\SAT_GEMS\\PFP\\FS=3"``, ``" ContrastBolusAgent Tag Absent
    = 5 "``) and the ``"{0 = no, 1 = yes}"`` form of clinical columns. Cells that are not a map
    (free-text notes) give ``{}``.
    """
    if _is_missing(text):
        return {}
    s = str(text).strip()
    out: dict[int, str] = {}
    if s.startswith("{"):
        body = s.strip("{} \n")
        for m in re.finditer(r"(-?\d+)\s*=\s*(.*?)(?=[,;\s]+-?\d+\s*=|$)", body, re.S):
            out[int(m.group(1))] = re.sub(r"\s+", " ", m.group(2)).strip(" ,;}")
        return out
    for part in s.split(","):
        if "=" not in part:
            if part.strip():
                return {}  # not a pure value=code list
            continue
        label, code = part.rsplit("=", 1)
        code = code.strip()
        if not re.fullmatch(r"-?\d+", code):
            return {}
        out[int(code)] = label.strip()
    return out


@dataclass
class DBCCategories:
    """Category maps of DBC's feature sheet: ``{canonical column: {code: value}}``."""

    maps: dict[str, dict[int, str]] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, names: Sequence[Any], cells: Sequence[Any]) -> "DBCCategories":
        """The category map from the rows of DBC's category sheet."""
        maps = {}
        for name, cell in zip(names, cells):
            m = parse_category_map(cell)
            if m and canon(name) and canon(name) not in maps:
                maps[canon(name)] = m
        return cls(maps)

    def columns(self) -> list[str]:
        """The feature columns that have category codes."""
        return list(self.maps)

    def decode(self, column: str, code: Any) -> str | None:
        """Value of a category code (``None`` for a missing cell); KeyError if the code is unknown."""
        if _is_missing(code):
            return None
        m = self.maps[canon(column)]
        return m[int(float(code))]

    def encode(self, column: str, value: str) -> int:
        """Code of a value (compared case- and whitespace-insensitively); KeyError if unknown."""
        m = self.maps[canon(column)]
        want = canon(value)
        for code, label in m.items():
            if canon(label) == want:
                return code
        raise KeyError(f"{column}: no category {value!r} (known: {', '.join(m.values())})")


def load_category_map(path: str | Path | None = None) -> DBCCategories:
    """The category map shipped with mridomain (the real row 3 of DBC's sheet), or a CSV laid out
    the same way (row 1 column names, row 2 maps)."""
    if path is None:
        ref = resources.files("mridomain.data.resources").joinpath(CATEGORY_RESOURCE)
        with resources.as_file(ref) as p:
            raw = pd.read_csv(p, header=None, dtype=object, keep_default_na=False, encoding="utf-8-sig")
    else:
        raw = pd.read_csv(path, header=None, dtype=object, keep_default_na=False, encoding="utf-8-sig")
    return DBCCategories.from_rows(list(raw.iloc[0]), list(raw.iloc[1]))


# ----------------------------------------------------------------------------------------------
# features sheet


def _read_table(path: Path, header: int | None = None) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix in {".xlsx", ".xlsm", ".xls"}:
        return pd.read_excel(path, header=header, dtype=object)
    return pd.read_csv(path, header=header, dtype=object, keep_default_na=False,
                       encoding="utf-8-sig")


def read_dbc_features(path: str | Path) -> tuple[pd.DataFrame, DBCCategories]:
    """Read ``Clinical_and_Other_Features`` (.xlsx or .csv export) as (table, category maps).

    The table has a ``patient_id`` column and the sheet's column names (cleaned of stray
    whitespace; duplicates get ``.1``, ``.2``; unnamed columns are named after their group), and
    holds the raw cells (codes for categorical columns). The category maps come from the sheet's
    own code row, completed by the map shipped with mridomain for columns the sheet lacks.
    """
    path = Path(path)
    if not path.exists():
        raise EmptyInputError(path, "file not found")
    try:
        raw = _read_table(path)
    except Exception as err:  # noqa: BLE001 - excel/csv parsers raise many types
        raise SchemaMismatchError(f"{path}: cannot read as a table ({type(err).__name__}: {err})") from err
    name_row = None
    for i in range(min(6, len(raw))):
        if canon(raw.iat[i, 0]) == "patient id":
            name_row = i
            break
    if name_row is None:
        raise SchemaMismatchError(f"{path}: no 'Patient ID' header in the first column of rows 1-6")
    names_raw = list(raw.iloc[name_row])
    groups = list(raw.iloc[name_row - 1]) if name_row > 0 else [None] * len(names_raw)
    data_start = name_row + 1
    sheet_maps = DBCCategories()
    if len(raw) > name_row + 1:
        cand = DBCCategories.from_rows(names_raw, list(raw.iloc[name_row + 1]))
        first = raw.iat[name_row + 1, 0]
        if cand.maps and _is_missing(first):  # the code row has no patient id
            sheet_maps, data_start = cand, name_row + 2
    shipped = load_category_map()
    cats = DBCCategories({**shipped.maps, **sheet_maps.maps})

    names: list[str] = []
    seen: dict[str, int] = {}
    last_group = ""
    for i, (n, g) in enumerate(zip(names_raw, groups)):
        if not _is_missing(g):
            last_group = re.sub(r"\s+", " ", str(g)).strip()
        name = re.sub(r"\s+", " ", str(n)).strip() if not _is_missing(n) else (last_group or f"column_{i}")
        if name in seen:
            seen[name] += 1
            name = f"{name}.{seen[name]}"
        else:
            seen[name] = 0
        names.append(name)
    table = raw.iloc[data_start:].copy()
    table.columns = names
    table = table.rename(columns={names[0]: "patient_id"})
    table = table[~table["patient_id"].map(_is_missing)].reset_index(drop=True)
    table["patient_id"] = table["patient_id"].astype(str).str.strip()
    return table, cats


def _fields_for(iap: str, value: Any) -> dict[str, Any] | None:
    """Spreadsheet value -> header fields the schema's normalizer reads (None: cannot express)."""
    s = str(value).strip()
    num = None
    try:
        num = float(s)
    except ValueError:
        pass
    if iap == "manufacturer":
        return {"Manufacturer": s}
    if iap == "scanner_model":
        return {"ManufacturerModelName": s}
    if iap == "scan_options":
        return {"ScanOptions": [p for p in s.split("\\") if p]}
    if iap == "patient_position":
        return {"PatientPosition": s}
    if iap == "contrast_agent":
        c = canon(s)
        if "absent" in c:  # "ContrastBolusAgent Tag Absent" (code 5)
            return {}
        if "not stated" in c:  # "Name of agent not stated (but ContrastBolusAgent tag was present)"
            return {"ContrastBolusAgent": ""}
        return {"ContrastBolusAgent": s}  # MMAGNEVIST kept as its own class, as in the paper
    if num is None:
        return None
    if iap == "field_strength":
        return {"MagneticFieldStrength": num}
    if iap == "slice_thickness":
        return {"SliceThickness": num}
    if iap == "flip_angle":
        return {"FlipAngle": num}
    if iap == "fov":
        # The "in cm" column stores cm x 10 (250..480, i.e. mm); a plain cm value (< 100) is scaled.
        return {"ReconstructionDiameter": num * 10 if num < 100 else num}
    if iap == "tr":
        return {"RepetitionTime": num}
    if iap == "te":
        return {"EchoTime": num}
    return None


def normalize_dbc_value(iap: str, value: Any) -> Any:
    """A decoded DBC spreadsheet value -> the normalized IAP label of the schema (None if missing)."""
    if _is_missing(value):
        return None
    if iap == "acquisition_matrix":
        # DBC already writes the schema's form ("448 X 448"); only tidy case and spacing.
        return re.sub(r"\s*[xX]\s*", " X ", str(value).strip())
    fields = _fields_for(iap, value)
    if fields is None:
        return None
    from mridomain.data.schema import DEFAULT_IAPS

    spec = next((s for s in DEFAULT_IAPS if s.name == iap), None)
    if spec is None:
        return None
    return spec.normalize(fields)


def dbc_iap_table(features: str | Path | tuple[pd.DataFrame, DBCCategories],
                  coded: bool | None = None) -> pd.DataFrame:
    """Per-patient IAP labels from DBC's feature sheet, normalized like header values.

    Columns: ``patient_id`` then the schema's IAP names present in the sheet. ``coded``: whether
    the categorical cells hold category codes (default: yes when the sheet has its code row).
    Unknown codes and empty cells give None (NaN for TR/TE).
    """
    table, cats = read_dbc_features(features) if not isinstance(features, tuple) else features
    if coded is None:
        coded = bool(cats.maps) and _has_code_row(features)
    out = pd.DataFrame({"patient_id": table["patient_id"]})
    by_canon = {canon(c): c for c in table.columns}
    for dbc_name, iap in DBC_IAP_COLUMNS.items():
        col = by_canon.get(dbc_name)
        if col is None:
            continue
        values = []
        for cell in table[col]:
            if _is_missing(cell):
                values.append(None)
                continue
            label: Any = cell
            if coded and dbc_name in cats.maps:
                try:
                    label = cats.decode(dbc_name, cell)
                except (KeyError, ValueError):
                    label = None  # a code outside the map: unknown, not guessed
            values.append(normalize_dbc_value(iap, label) if label is not None else None)
        out[iap] = values
        if iap in ("tr", "te"):
            out[iap] = pd.to_numeric(out[iap], errors="coerce").astype(float)
    return out


def _has_code_row(features: Any) -> bool:
    if isinstance(features, tuple):
        return True
    raw = _read_table(Path(features))
    for i in range(min(6, len(raw) - 1)):
        if canon(raw.iat[i, 0]) == "patient id":
            return _is_missing(raw.iat[i + 1, 0]) and bool(
                DBCCategories.from_rows(list(raw.iloc[i]), list(raw.iloc[i + 1])).maps)
    return False


def dbc_labels_for_index(index: pd.DataFrame | str | Path, features_path: str | Path,
                         coded: bool | None = None) -> pd.DataFrame:
    """Replace an index's header-derived IAP columns with the DBC spreadsheet's per-patient values.

    The header values are kept as ``header_<iap>`` columns for comparison; ``iap_source`` says
    ``"dbc"`` or ``"missing"`` (patient not in the sheet: IAPs set to None/NaN, never silently
    mixed with header values). Patients are matched on ``patient_id`` (exact, then ignoring case
    and surrounding spaces). The sheet has one row per patient, so every series of a patient gets
    the same labels (DBC's values describe its pre-contrast fat-saturated acquisition).
    """
    if not isinstance(index, pd.DataFrame):
        from mridomain.data.index import load_index

        index = load_index(index)
    labels = dbc_iap_table(features_path, coded=coded)
    exact = {pid: i for i, pid in enumerate(labels["patient_id"])}
    loose = {canon(pid): i for i, pid in enumerate(labels["patient_id"])}
    out = index.copy()
    rows = [exact.get(str(p), loose.get(canon(p))) for p in out["patient_id"]]
    out["iap_source"] = ["dbc" if r is not None else "missing" for r in rows]
    for iap in labels.columns[1:]:
        if iap in out.columns:
            out[f"header_{iap}"] = out[iap]
        vals = [labels.at[r, iap] if r is not None else None for r in rows]
        out[iap] = pd.to_numeric(pd.Series(vals), errors="coerce").astype(float).values \
            if iap in ("tr", "te") else vals
    return out


# ----------------------------------------------------------------------------------------------
# TCIA layout, path mapping, annotation boxes


def _file_number(name: str) -> tuple[int, str]:
    m = re.search(r"-(\d+)\.dcm$", name, re.IGNORECASE) or re.search(r"(\d+)(?=\.[^.]*$|$)", name)
    return (int(m.group(1)) if m else 1 << 30, name)


def read_tcia_classic(root: str | Path, patient_pattern: re.Pattern[str] = PATIENT_PATTERN) -> pd.DataFrame:
    """Series of a TCIA classic download ``<patient>/<study>/<series>/1-NNN.dcm`` (no header reads).

    Returns one row per series folder: ``patient_id, study, series, folder, n_files, files``
    (files ordered by the number NNN TCIA gives them). Patient folders are found at any depth by
    ``patient_pattern`` (default ``Breast_MRI_NNN``).
    """
    from mridomain.data.index import iter_files

    root = Path(root)
    if not root.is_dir():
        raise EmptyInputError(root, "not a folder")
    groups: dict[tuple[str, str, str], list[str]] = {}
    for f in iter_files(root):
        parts = Path(f).relative_to(root).parts
        for i, p in enumerate(parts):
            if patient_pattern.match(p) and len(parts) >= i + 4:
                key = (p, parts[i + 1], str(Path(*parts[i + 2:-1])))
                groups.setdefault(key, []).append(f)
                break
    if not groups:
        raise EmptyInputError(root, "no <patient>/<study>/<series>/<file> folders found")
    rows = []
    for (pid, study, series), files in sorted(groups.items()):
        files = sorted(files, key=lambda f: _file_number(Path(f).name))
        rows.append({"patient_id": pid, "study": study, "series": series,
                     "folder": str(Path(files[0]).parent), "n_files": len(files), "files": files})
    return pd.DataFrame(rows)


def read_path_mapping(path: str | Path, root: str | Path | None = None) -> pd.DataFrame:
    """TCIA's file path mapping table (csv/xlsx) with normalized column names.

    Any column whose name contains ``classic`` becomes ``classic_path``; ``original`` ->
    ``original_path``; ``descriptive`` -> ``descriptive_path``. ``patient_id`` is taken from a
    patient column or the ``Breast_MRI_NNN`` part of the classic path. With ``root``, ``path``
    holds the classic path joined to it and ``exists`` whether that file is there.
    """
    path = Path(path)
    if not path.exists():
        raise EmptyInputError(path, "file not found")
    df = _read_table(path, header=0)
    rename = {}
    for col in df.columns:
        c = canon(col)
        for word, new in (("classic", "classic_path"), ("original", "original_path"),
                          ("descriptive", "descriptive_path")):
            if word in c and new not in rename.values():
                rename[col] = new
        if c in ("patient id", "patient_id", "patientid", "subject id"):
            rename[col] = "patient_id"
    df = df.rename(columns=rename)
    if "classic_path" not in df.columns:
        raise SchemaMismatchError(f"{path}: no column with 'classic' in its name (TCIA classic paths)")
    df = df[~df["classic_path"].map(_is_missing)].reset_index(drop=True)
    df["classic_path"] = df["classic_path"].astype(str).str.strip().str.replace("\\", "/", regex=False)
    if "patient_id" not in df.columns:
        df["patient_id"] = [next((p for p in Path(cp).parts if PATIENT_PATTERN.match(p)), None)
                            for cp in df["classic_path"]]
    if root is not None:
        root = Path(root)
        paths = [root / cp.lstrip("/") for cp in df["classic_path"]]
        df["path"] = [str(p) for p in paths]
        df["exists"] = [p.exists() for p in paths]
    return df


_BOX_COLUMNS = {"patient id": "patient_id", "start row": "start_row", "end row": "end_row",
                "start column": "start_column", "end column": "end_column",
                "start slice": "start_slice", "end slice": "end_slice"}


def read_annotation_boxes(path: str | Path) -> pd.DataFrame:
    """DBC ``Annotation_Boxes`` (csv/xlsx) -> patient_id, start/end row, column, slice (ints).

    DBC's slice numbers are 1-based and inclusive.
    """
    path = Path(path)
    if not path.exists():
        raise EmptyInputError(path, "file not found")
    df = _read_table(path, header=0)
    if len(df) == 0:
        # A user who passes annotations expects tumor labels: a header alone is a wrong file.
        raise EmptyInputError(path, "no annotation boxes: the file holds only a header")
    # Some exports carry a second header row of units/notes: drop rows without a patient id.
    df = df.rename(columns={c: _BOX_COLUMNS.get(canon(c), c) for c in df.columns})
    missing = [v for v in _BOX_COLUMNS.values() if v not in df.columns]
    if missing:
        raise SchemaMismatchError(f"{path}: annotation boxes lack columns {missing}")
    df = df[list(_BOX_COLUMNS.values())]
    df = df[~df["patient_id"].map(_is_missing)].copy()
    for col in list(_BOX_COLUMNS.values())[1:]:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df = df.dropna(subset=["start_slice", "end_slice"]).reset_index(drop=True)
    for col in list(_BOX_COLUMNS.values())[1:]:
        df[col] = df[col].astype("Int64")
    df["patient_id"] = df["patient_id"].astype(str).str.strip()
    if len(df) == 0:
        raise EmptyInputError(path, "no annotation box with a slice range")
    return df


def tumor_label(slice_number: int, boxes: Iterable[tuple[int, int]], margin: int = NEGATIVE_MARGIN) -> float:
    """1.0 if ``slice_number`` (1-based) lies in any [start, end] slice range, 0.0 if it is at
    least ``margin`` slices from every range, else NaN (too close to call, paper Sec. 5.2)."""
    boxes = list(boxes)
    if not boxes:
        return float("nan")
    if any(s <= slice_number <= e for s, e in boxes):
        return 1.0
    if all(slice_number <= s - margin or slice_number >= e + margin for s, e in boxes):
        return 0.0
    return float("nan")


def tumor_labels(patient_ids: Iterable[Any], slice_numbers: Iterable[int], boxes: pd.DataFrame,
                 margin: int = NEGATIVE_MARGIN) -> np.ndarray:
    """Vector form of :func:`tumor_label`; patients without a box get NaN."""
    by_patient: dict[str, list[tuple[int, int]]] = {}
    for pid, s, e in zip(boxes["patient_id"], boxes["start_slice"], boxes["end_slice"]):
        by_patient.setdefault(canon(pid), []).append((int(s), int(e)))
    return np.array([tumor_label(int(n), by_patient.get(canon(p), ()), margin)
                     for p, n in zip(patient_ids, slice_numbers)], dtype=float)
