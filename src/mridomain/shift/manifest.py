"""The study manifest: one row per sample, and the builders that make one.

Columns (parquet or CSV):

============== ======== ===================================================================
column         required meaning
============== ======== ===================================================================
image          yes      DICOM series folder, DICOM / PNG file, NIfTI volume or ``.npy`` array
                        (relative paths are relative to the manifest's folder)
label          yes      0 / 1 (also ``true`` / ``false``)
domain         yes      the scanner domain (e.g. manufacturer)
patient_id     yes      splits are by patient (``patient`` is accepted as the name)
dataset        no       several datasets may share one manifest (default ``dataset``)
modality       no       MRI / CT / X-ray: groups Delta in Figure 3; X-ray picks DenseNet-121
split          no       train / val / test: a fixed split used for every seed instead of random ones
series_uid     no       picks one series in a folder that holds several
slice          no       0-based slice of a volume: a 2-D sample taken from it
crop_z/y/x     no       0-based crop centre (voxel indices in :func:`mridomain.io.read_image` order)
crop_d/h/w     no       crop size in voxels (e.g. 5, 47, 47); without a centre the volume's centre
============== ======== ===================================================================

:func:`read_manifest` validates a table and raises a one-line :class:`ManifestError` naming the
file, the row and the problem (a missing image, a label that is not 0/1, an empty domain).
Builders: :func:`manifest_from_index` (an ``mridomain index`` table + a labels table + a domain
rule), :func:`manifest_from_dbc` (the DBC layout: tumor stage from the features sheet, a crop on
the tumor box) and :func:`manifest_from_simulation` (an archive written by ``mridomain simulate``).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from mridomain.errors import EmptyInputError, InvalidArgumentError, SchemaMismatchError

__all__ = ["ManifestError", "ManifestBuild", "REQUIRED_COLUMNS", "CROP_CENTER", "CROP_SIZE", "read_manifest",
           "validate_manifest", "write_manifest", "manifest_digest", "manifest_from_index", "manifest_from_dbc",
           "manifest_from_simulation", "presence_manifest_from_simulation", "STAGE_COLUMN", "choose_domains"]

REQUIRED_COLUMNS = ("image", "label", "domain", "patient_id")
CROP_CENTER = ("crop_z", "crop_y", "crop_x")
CROP_SIZE = ("crop_d", "crop_h", "crop_w")
SPLITS = ("train", "val", "test")
#: DBC features sheet: the clinical T stage (the paper's MRI-Breast label is T > 2)
STAGE_COLUMN = "Staging(Tumor Size)# [T]"
#: the paper's MRI-Breast crop (§3.2): 47 x 47 in-plane, 5 slices
PAPER_CROP = (5, 47, 47)


class ManifestError(SchemaMismatchError):
    """A manifest that cannot be used as it is (one line: the file, the row, the problem)."""


@dataclass
class ManifestBuild:
    """What a builder made: the manifest and, per reason, what it left out."""

    table: pd.DataFrame
    dropped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["reason", "n", "examples"]))

    def summary(self) -> str:
        """A few lines: samples and patients per dataset and domain with their labels, and what was
        dropped for which reason."""
        t = self.table
        lines = [f"{len(t)} samples of {t['patient_id'].nunique() if len(t) else 0} patients"]
        if len(t):
            for (ds, dom), g in t.groupby(["dataset", "domain"], sort=True):
                lines.append(f"  {ds} / {dom}: {len(g)} samples, {g['patient_id'].nunique()} patients, "
                             f"{int(g['label'].sum())} positive")
        for r in self.dropped.itertuples(index=False):
            lines.append(f"  dropped {r.n}: {r.reason}" + (f" (e.g. {r.examples})" if r.examples else ""))
        return "\n".join(lines)


def _dropped(reasons: dict[str, list[str]]) -> pd.DataFrame:
    rows = [{"reason": k, "n": len(v), "examples": ", ".join(map(str, v[:3]))} for k, v in reasons.items() if v]
    return pd.DataFrame(rows, columns=["reason", "n", "examples"])


# ----------------------------------------------------------------------------------------------
# reading and validating


def _as_label(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    s = str(value).strip().lower()
    if s in ("1", "1.0", "true", "yes"):
        return 1.0
    if s in ("0", "0.0", "false", "no"):
        return 0.0
    return None


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() in ("", "nan", "None")


def _row_error(where: str, i: int, msg: str) -> ManifestError:
    """The one-line error of data row ``i`` (0-based; shown 1-based, as the file numbers them)."""
    return ManifestError(f"{where}: row {i + 1}: {msg}")


def _clean_labels_and_names(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """Labels as 0/1, domain and patient as stripped text (none empty), dataset and modality filled."""
    labels = [_as_label(v) for v in df["label"]]
    for i, (raw, lab) in enumerate(zip(df["label"], labels)):
        if lab is None:
            raise _row_error(where, i, f"label {raw!r} is not 0 or 1")
    df["label"] = np.asarray(labels, dtype=np.int64)
    for col in ("domain", "patient_id"):
        for i, v in enumerate(df[col]):
            if _blank(v):
                raise _row_error(where, i, f"empty {col}")
        df[col] = df[col].astype(str).str.strip()
    df["dataset"] = (df["dataset"].astype(str).str.strip() if "dataset" in df.columns else "dataset")
    if "modality" in df.columns:
        df["modality"] = [("" if _blank(v) else str(v).strip()) for v in df["modality"]]
    return df


def _clean_split(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """The ``split`` column lower-cased and checked (every row or none); dropped when all empty."""
    if "split" not in df.columns:
        return df
    splits = [("" if _blank(v) else str(v).strip().lower()) for v in df["split"]]
    for i, s in enumerate(splits):
        if s not in ("", *SPLITS):
            raise _row_error(where, i, f"split {df['split'][i]!r} is not train, val or test")
    if any(splits) and not all(splits):
        raise _row_error(where, splits.index(""), "empty split (give every row a split, or none)")
    df["split"] = splits
    return df if any(splits) else df.drop(columns="split")


def _clean_crops(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """Crop centre and size (all three columns of each, a size with every centre) and ``slice`` as
    numbers: sizes positive whole numbers, slices 0-based indices."""
    centre = [c for c in CROP_CENTER if c in df.columns]
    if centre and len(centre) != 3:
        raise ManifestError(f"{where}: crop centre needs all of {', '.join(CROP_CENTER)} (has {', '.join(centre)})")
    size = [c for c in CROP_SIZE if c in df.columns]
    if size and len(size) != 3:
        raise ManifestError(f"{where}: crop size needs all of {', '.join(CROP_SIZE)} (has {', '.join(size)})")
    if centre and not size:
        raise ManifestError(f"{where}: a crop centre needs a crop size ({', '.join(CROP_SIZE)})")
    for col in [*centre, *size, *(["slice"] if "slice" in df.columns else [])]:
        values = pd.to_numeric(df[col], errors="coerce")
        for i, (raw, v) in enumerate(zip(df[col], values)):
            if not np.isfinite(v):
                raise _row_error(where, i, f"{col} {raw!r} is not a number")
            if col in CROP_SIZE and (v < 1 or v != int(v)):
                raise _row_error(where, i, f"{col} {raw!r} is not a positive whole number")
            if col == "slice" and (v < 0 or v != int(v)):
                raise _row_error(where, i, f"slice {raw!r} is not a 0-based slice index")
        df[col] = values.astype(np.int64 if col in (*CROP_SIZE, "slice") else np.float64)
    return df


def _resolve_images(df: pd.DataFrame, where: str, root: str | Path | None, check_files: bool) -> pd.DataFrame:
    """Image paths made absolute against ``root`` (default: the current folder); with
    ``check_files``, the first missing one is an error that counts all that are missing."""
    base = Path(root) if root is not None else Path.cwd()
    paths = []
    for i, v in enumerate(df["image"]):
        if _blank(v):
            raise _row_error(where, i, "empty image")
        p = Path(str(v).strip()).expanduser()
        paths.append(str(p if p.is_absolute() else (base / p)))
    df["image"] = paths
    if check_files:
        absent = [i for i, p in enumerate(paths) if not Path(p).exists()]
        if absent:
            i = absent[0]
            more = f" ({len(absent)} of {len(paths)} images are missing)" if len(absent) > 1 else ""
            raise _row_error(where, i, f"image {paths[i]} does not exist{more}")
    return df


def validate_manifest(table: pd.DataFrame, where: str | Path = "<manifest>", root: str | Path | None = None,
                      check_files: bool = True) -> pd.DataFrame:
    """A clean copy of ``table`` (types fixed, paths absolute) or a one-line :class:`ManifestError`.

    Rows are numbered as in the file (1 = the first data row). ``root`` resolves relative image
    paths (default: the current folder).

    >>> import pandas as pd
    >>> rows = [{"image": f"{p}.npy", "label": lab, "domain": dom, "patient_id": p}
    ...         for p, lab, dom in (("a", 0, "GE"), ("b", "true", "GE"), ("c", 1, "SIEMENS"), ("d", 0, "SIEMENS"))]
    >>> validate_manifest(pd.DataFrame(rows), check_files=False)[["sample_id", "label", "dataset"]].values.tolist()
    [[0, 0, 'dataset'], [1, 1, 'dataset'], [2, 1, 'dataset'], [3, 0, 'dataset']]
    >>> validate_manifest(pd.DataFrame(rows).assign(label=[0, 2, 1, 0]), where="m.csv", check_files=False)
    Traceback (most recent call last):
    ...
    mridomain.shift.manifest.ManifestError: m.csv: row 2: label 2 is not 0 or 1
    """
    where = str(where)
    df = table.copy()
    if "patient_id" not in df.columns and "patient" in df.columns:
        df = df.rename(columns={"patient": "patient_id"})
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"{where}: missing column(s) {', '.join(missing)} "
                            f"(a manifest needs {', '.join(REQUIRED_COLUMNS)})")
    if len(df) == 0:
        raise ManifestError(f"{where}: no rows")
    df = df.reset_index(drop=True)
    df = _clean_labels_and_names(df, where)
    df = _clean_split(df, where)
    df = _clean_crops(df, where)
    df = _resolve_images(df, where, root, check_files)
    _check_patients_and_classes(df, where)
    if "sample_id" not in df.columns:
        df.insert(0, "sample_id", np.arange(len(df)))
    return df


def _check_patients_and_classes(df: pd.DataFrame, where: str) -> None:
    """A patient in two domains would leak from one domain's training set into the other's test
    set; a dataset with one label class has no AUC. Both are refused up front (a domain with one
    class is refused before training by ``protocol.check_splits``)."""
    domains = df.groupby(["dataset", "patient_id"], sort=False)["domain"].unique()
    mixed = domains[domains.map(len) > 1]
    if len(mixed):
        (dataset, patient), doms = next(iter(mixed.items()))
        rows = np.flatnonzero((df["dataset"] == dataset) & (df["patient_id"] == patient))
        row = int(next(r for r in rows if df["domain"].iat[r] != df["domain"].iat[rows[0]]))   # the second domain
        raise ManifestError(f"{where}: row {row + 1}: patient {patient!r} is in domains {', '.join(map(str, doms))} "
                            f"({len(mixed)} patients are in more than one domain); a patient's images would "
                            "train one domain's model and test the other's: give each patient one domain")
    for dataset, group in df.groupby("dataset", sort=False):
        classes = sorted(set(group["label"].tolist()))
        if len(classes) < 2:
            raise ManifestError(f"{where}: dataset {dataset!r}: every label is {classes[0]} ({len(group)} rows); "
                                "the study needs both classes (0 and 1)")


def read_manifest(path: str | Path, check_files: bool = True) -> pd.DataFrame:
    """Read and validate a manifest (``.parquet`` or ``.csv``); relative paths are resolved against
    its folder. One-line :class:`ManifestError` on a missing column, a bad label, a missing image."""
    path = Path(path)
    if not path.exists():
        raise EmptyInputError(path, "manifest not found")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            table = pd.read_parquet(path)
        else:
            table = pd.read_csv(path, dtype={"patient_id": str, "patient": str, "domain": str, "split": str,
                                             "dataset": str, "series_uid": str})
    except Exception as err:  # noqa: BLE001 - csv / parquet readers raise many types
        raise ManifestError(f"{path}: not a readable table ({type(err).__name__}: {err})") from None
    return validate_manifest(table, where=path, root=path.parent, check_files=check_files)


def write_manifest(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a manifest as parquet (``.parquet``) or CSV (anything else)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".parquet", ".pq"):
        table.to_parquet(path, index=False)
    else:
        table.to_csv(path, index=False)
    return path


def manifest_digest(table: pd.DataFrame) -> str:
    """A fingerprint of what a study depends on in a manifest (rows, order, every column)."""
    text = table.to_csv(index=False).encode("utf-8")
    return hashlib.sha256(text).hexdigest()[:16]


def choose_domains(table: pd.DataFrame, domains: Sequence[str] | None, where: str = "manifest"
                   ) -> tuple[pd.DataFrame, dict[str, tuple[str, str]], pd.DataFrame]:
    """Keep two domains per dataset: (table, {dataset: (domain 1, domain 2)}, dropped report).

    ``domains`` given: those two, in that order, for every dataset; a named domain a dataset does
    not have is a one-line :class:`ManifestError`, rows of other domains are dropped and reported.
    Not given: a dataset must hold exactly two domains (ordered by name).
    """
    if domains is not None:
        domains = tuple(str(d).strip() for d in domains)
        if len(domains) != 2 or domains[0] == domains[1]:
            raise InvalidArgumentError(f"domains {domains!r}: name two different domains")
    chosen: dict[str, tuple[str, str]] = {}
    drop: dict[str, list[str]] = {}
    keep = np.zeros(len(table), dtype=bool)
    for ds, g in table.groupby("dataset", sort=True):
        present = sorted(g["domain"].unique())
        if domains is None:
            if len(present) != 2:
                raise ManifestError(f"{where}: dataset {ds!r} has {len(present)} domain(s) ({', '.join(present)}); "
                                    "the study compares two: name them (domains=...)")
            pair = (present[0], present[1])
        else:
            unknown = [d for d in domains if d not in present]
            if unknown:
                raise ManifestError(f"{where}: dataset {ds!r} has no domain {unknown[0]!r} "
                                    f"(its domains: {', '.join(present)})")
            pair = domains
        chosen[str(ds)] = pair
        mask = (table["dataset"] == ds) & table["domain"].isin(pair)
        keep |= mask.to_numpy()
        for d in present:
            if d not in pair:
                drop.setdefault(f"domain {d!r} is not one of the two compared", []).extend(
                    g.loc[g["domain"] == d, "image"].tolist())
    return table[keep].reset_index(drop=True), chosen, _dropped(drop)


# ----------------------------------------------------------------------------------------------
# builders


def manifest_from_index(index: pd.DataFrame | str | Path, labels: pd.DataFrame | str | Path,
                        domain_column: str = "manufacturer", domains: Sequence[str] | None = None,
                        label_column: str = "label", dataset: str = "dataset",
                        modality: str | None = None) -> ManifestBuild:
    """A manifest from an ``mridomain index`` table, a labels table and a domain rule.

    ``labels`` has ``label_column`` and ``series_uid`` (one label per series) or ``patient_id``
    (every series of the patient), plus any optional manifest column (``slice``, ``crop_*``,
    ``split``). The domain of a series is its value in ``domain_column`` (any index column:
    manufacturer, scanner_model, field_strength, ...); only ``domains`` (default: the two most
    frequent values) are kept, every other value is dropped and reported, as are series without a
    label or without a domain value.
    """
    from mridomain.data.index import load_index

    idx = load_index(index) if not isinstance(index, pd.DataFrame) else index
    lab = _read_any(labels) if not isinstance(labels, pd.DataFrame) else labels.copy()
    if domain_column not in idx.columns:
        raise InvalidArgumentError(f"domain column {domain_column!r} is not in the index "
                                   f"(has: {', '.join(c for c in idx.columns if not c.startswith('raw_'))})")
    if label_column not in lab.columns:
        raise InvalidArgumentError(f"labels table has no column {label_column!r} (has: {', '.join(map(str, lab.columns))})")
    key = "series_uid" if "series_uid" in lab.columns else "patient_id" if "patient_id" in lab.columns else None
    if key is None:
        raise InvalidArgumentError("labels table needs a series_uid or a patient_id column")
    lab = lab.rename(columns={label_column: "label"})
    lab[key] = lab[key].astype(str).str.strip()
    extra = [c for c in lab.columns if c in ("slice", "split", *CROP_CENTER, *CROP_SIZE)]
    rows, reasons = [], {}
    merged = idx.assign(**{key: idx[key].astype(str)}).merge(lab[[key, "label", *extra]], on=key, how="left")
    seen: set[str] = set()
    for r in merged.itertuples(index=False):
        r = r._asdict()
        sid = r["series_uid"]
        if r.get("has_pixels") is False or (r.get("has_pixels") is not None and not bool(r.get("has_pixels"))):
            reasons.setdefault("header only (no pixel data)", []).append(sid)
            continue
        if sid in seen:       # the index has one row per volume of a multi-volume series: the first is used
            reasons.setdefault("a later volume of a multi-volume series", []).append(sid)
            continue
        seen.add(sid)
        dom = r.get(domain_column)
        if _blank(dom):
            reasons.setdefault(f"no {domain_column} value", []).append(sid)
            continue
        if _blank(r["label"]):
            reasons.setdefault("no label", []).append(sid)
            continue
        files = list(r.get("files") or [])
        if not files:
            reasons.setdefault("no files", []).append(sid)
            continue
        folder = str(Path(files[0]).parent)
        row = {"image": folder, "series_uid": sid, "label": r["label"], "domain": str(dom),
               "patient_id": str(r["patient_id"]), "dataset": dataset}
        if modality:
            row["modality"] = modality
        row.update({c: r[c] for c in extra})
        rows.append(row)
    table = pd.DataFrame(rows)
    if len(table) == 0:
        raise EmptyInputError(Path(str(index)) if not isinstance(index, pd.DataFrame) else Path("<index>"),
                              "no series with both a label and a domain value")
    if domains is None:
        counts = table["domain"].value_counts()
        if len(counts) < 2:
            raise ManifestError(f"index: only one {domain_column} value ({counts.index[0]}): nothing to compare")
        domains = tuple(counts.index[:2])
    table, _, dropped = choose_domains(table, domains, where="index")
    table = validate_manifest(table, where="index manifest", check_files=False)
    return ManifestBuild(table, pd.concat([_dropped(reasons), dropped], ignore_index=True))


def _read_any(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise EmptyInputError(path, "file not found")
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if path.suffix.lower() in (".xlsx", ".xls"):
        return pd.read_excel(path)
    return pd.read_csv(path, dtype={"patient_id": str, "series_uid": str})


def _stage_labels(features: str | Path, threshold: int) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """patient_id, t_stage, label (T > threshold), domain (normalized manufacturer) from DBC's sheet."""
    from mridomain.data.dbc import canon, dbc_iap_table, read_dbc_features

    table, cats = read_dbc_features(features)
    by_canon = {canon(c): c for c in table.columns}
    col = by_canon.get(canon(STAGE_COLUMN))
    if col is None:
        raise ManifestError(f"{features}: no {STAGE_COLUMN!r} column (the MRI-Breast task's label)")
    iaps = dbc_iap_table((table, cats))
    if "manufacturer" not in iaps.columns:
        raise ManifestError(f"{features}: no Manufacturer column (the domain)")
    stage = pd.to_numeric(table[col], errors="coerce")
    reasons: dict[str, list[str]] = {}
    rows = []
    for pid, t, dom in zip(table["patient_id"], stage, iaps["manufacturer"]):
        if not np.isfinite(t) or t < 0:   # DBC writes unknown stages as blank, NA or -1
            reasons.setdefault(f"no {STAGE_COLUMN} stage", []).append(pid)
            continue
        if _blank(dom):
            reasons.setdefault("no manufacturer", []).append(pid)
            continue
        rows.append({"patient_id": str(pid), "t_stage": int(t), "label": int(t > threshold), "domain": str(dom)})
    return pd.DataFrame(rows, columns=["patient_id", "t_stage", "label", "domain"]), reasons


def _box_centres(boxes: str | Path) -> pd.DataFrame:
    """patient_id -> 0-based (z, y, x) centre of the (first) annotation box."""
    from mridomain.data.dbc import read_annotation_boxes

    b = read_annotation_boxes(boxes).drop_duplicates("patient_id")
    return pd.DataFrame({"patient_id": b["patient_id"],
                         "crop_z": (b["start_slice"] + b["end_slice"]).astype(float) / 2 - 1,
                         "crop_y": (b["start_row"] + b["end_row"]).astype(float) / 2 - 1,
                         "crop_x": (b["start_column"] + b["end_column"]).astype(float) / 2 - 1})


def _stage_manifest(series: pd.DataFrame, features: str | Path, boxes: str | Path, threshold: int,
                    crop: Sequence[int], domains: Sequence[str] | None, dataset: str,
                    reasons: dict[str, list[str]]) -> ManifestBuild:
    """Join series folders (patient_id, image) with stage labels and box centres."""
    labels, why = _stage_labels(features, threshold)
    for k, v in why.items():
        reasons.setdefault(k, []).extend(v)
    centres = _box_centres(boxes)
    table = labels.merge(series, on="patient_id", how="left").merge(centres, on="patient_id", how="left")
    no_series = table["image"].isna()
    reasons.setdefault("no matching series", []).extend(table.loc[no_series, "patient_id"])
    table = table[~no_series]
    no_box = table["crop_z"].isna()
    reasons.setdefault("no annotation box", []).extend(table.loc[no_box, "patient_id"])
    table = table[~no_box].copy()
    d, h, w = (int(c) for c in crop)
    table["crop_d"], table["crop_h"], table["crop_w"] = d, h, w
    table["dataset"], table["modality"] = dataset, "MRI"
    if len(table) == 0:
        raise EmptyInputError(Path(str(features)), "no patient with a stage, a box and a matching series")
    table, _, dropped = choose_domains(table.reset_index(drop=True), domains or ("GE", "SIEMENS"), where=str(features))
    table = validate_manifest(table, where=f"{dataset} manifest", check_files=False)
    return ManifestBuild(table, pd.concat([_dropped(reasons), dropped], ignore_index=True))


#: TCIA folder name of DBC's first post-contrast series (classic and descriptive layouts)
DBC_SERIES_PATTERN = r"1st|ph2\b|post.?1\b"


def manifest_from_dbc(root: str | Path, features: str | Path | None = None, boxes: str | Path | None = None,
                      series_pattern: str = DBC_SERIES_PATTERN, threshold: int = 2,
                      crop: Sequence[int] = PAPER_CROP, domains: Sequence[str] | None = ("GE", "SIEMENS"),
                      dataset: str = "MRI-Breast") -> ManifestBuild:
    """The paper's MRI-Breast task on a DBC download: label ``Staging(Tumor Size)# [T] > threshold``
    from the features sheet, a ``crop`` (5 x 47 x 47) centred on the tumor box, GE vs Siemens.

    ``root`` is the TCIA classic layout (``Breast_MRI_NNN/<study>/<series>/``); the series cropped
    is the first whose folder name matches ``series_pattern`` (case-insensitive; default the first
    post-contrast phase, where DBC's boxes were drawn). ``features`` / ``boxes`` default to
    ``Clinical_and_Other_Features.xlsx|csv`` and ``Annotation_Boxes.xlsx|csv`` in ``root`` or its
    parent. Patients without a stage, a box or a matching series are dropped and reported.
    """
    from mridomain.data.dbc import read_tcia_classic

    root = Path(root)
    features = Path(features) if features else _find(root, "Clinical_and_Other_Features")
    boxes = Path(boxes) if boxes else _find(root, "Annotation_Boxes")
    try:
        pattern = re.compile(series_pattern, re.IGNORECASE)
    except re.error as err:
        raise InvalidArgumentError(f"series pattern {series_pattern!r}: {err}") from None
    layout = read_tcia_classic(root)
    layout = layout[[bool(pattern.search(s)) for s in layout["series"]]]
    series = layout.sort_values(["patient_id", "series"]).drop_duplicates("patient_id")
    series = series.rename(columns={"folder": "image"})[["patient_id", "image"]]
    return _stage_manifest(series, features, boxes, threshold, crop, domains, dataset, {})


def _find(root: Path, stem: str) -> Path:
    for folder in (root, root.parent):
        for suffix in (".xlsx", ".csv"):
            p = folder / f"{stem}{suffix}"
            if p.exists():
                return p
    raise EmptyInputError(root, f"no {stem}.xlsx or .csv here or in the parent folder (pass it explicitly)")


def _simulated_series(archive: Path, phase: int | None) -> tuple[pd.DataFrame, int]:
    """The rows of an ``mridomain simulate`` archive's ``manifest.parquet`` of one DCE ``phase``
    (default: the first post-contrast phase when simulated, else the pre-contrast one)."""
    path = archive / "manifest.parquet"
    if not path.exists():
        raise EmptyInputError(archive, "no manifest.parquet (not an archive written by mridomain simulate)")
    sim = pd.read_parquet(path)
    if phase is None:
        phase = 1 if (sim["phase"] >= 1).any() else 0
    chosen = sim[sim["phase"] == phase]
    if len(chosen) == 0:
        raise InvalidArgumentError(f"{archive}: no series of phase {phase} (phases: {sorted(sim['phase'].unique())})")
    return chosen, int(phase)


def manifest_from_simulation(archive: str | Path, phase: int | None = None, threshold: int = 2,
                             crop: Sequence[int] = PAPER_CROP, domains: Sequence[str] | None = ("GE", "SIEMENS"),
                             dataset: str = "MRI-Breast (simulated)") -> ManifestBuild:
    """The MRI-Breast stage task on an archive from ``mridomain simulate`` (its ``manifest.parquet``
    names each series' folder and DCE phase). ``phase``: the series cropped (default the first
    post-contrast phase when simulated, else the pre-contrast one)."""
    archive = Path(archive)
    chosen, phase = _simulated_series(archive, phase)
    series = pd.DataFrame({"patient_id": chosen["patient_id"].astype(str),
                           "image": [str(archive / f) for f in chosen["folder"]], "phase": int(phase)})
    return _stage_manifest(series, archive / "Clinical_and_Other_Features.csv", archive / "Annotation_Boxes.csv",
                           threshold, crop, domains, dataset, {})


def presence_manifest_from_simulation(archive: str | Path, phase: int | None = None, max_t_stage: int = 2,
                                      crop: Sequence[int] = (1, 47, 47),
                                      domains: Sequence[str] | None = ("GE", "SIEMENS"),
                                      dataset: str = "MRI-Breast lesion presence (simulated)") -> ManifestBuild:
    """Lesion presence on an archive from ``mridomain simulate --slab tumor``: the shape of the
    paper's slice-level tasks (MRI-Prostate, CT-HNSCC, CT-Kidney: does this slice show the
    lesion?), on a patch so that a small lesion is not a few pixels of a whole breast slice.

    Per patient with a lesion of T stage <= ``max_t_stage`` (default T1/T2: at most 50 mm, no
    chest-wall or skin extension) two samples of one slice, the middle slice of its annotation
    box, of the series of ``phase`` (default: the first post-contrast phase when simulated, else
    the fat-saturated pre-contrast one): a ``crop`` patch centred on the lesion (label 1,
    ``crop_site`` lesion) and the patch at the mirror position in the other breast (label 0,
    ``crop_site`` contralateral: columns ``w - 1 - x``, the images being centred on the patient's
    midline). Both come from the same image, so the patient's scanner, coil and noise are the same
    in both; a split by patient keeps them together.
    """
    archive = Path(archive)
    chosen, phase = _simulated_series(archive, phase)
    reasons: dict[str, list[str]] = {}
    centres = _box_centres(archive / "Annotation_Boxes.csv")
    table = chosen.merge(centres, on="patient_id", how="left")
    no_box = table["crop_z"].isna()
    reasons["no lesion (no annotation box)"] = list(table.loc[no_box, "patient_id"])
    table = table[~no_box]
    big = table["t_stage"] > max_t_stage
    reasons[f"T stage above {max_t_stage}"] = list(table.loc[big, "patient_id"])
    table = table[~big]
    if len(table) == 0:
        raise EmptyInputError(archive, f"no patient with a lesion of T stage <= {max_t_stage}")
    base = pd.DataFrame({"patient_id": table["patient_id"].astype(str).to_numpy(),
                         "image": [str(archive / f) for f in table["folder"]], "domain": table["manufacturer"].to_numpy(),
                         "phase": int(phase), "n_slices": table["n_slices"].astype(int).to_numpy(),
                         "crop_z": table["crop_z"].to_numpy(), "crop_y": table["crop_y"].to_numpy(),
                         "t_stage": table["t_stage"].to_numpy(), "tumor_diameter_mm": table["tumor_diameter_mm"].to_numpy()})
    lesion = base.assign(crop_x=table["crop_x"].to_numpy(), label=1, crop_site="lesion")
    mirror = base.assign(crop_x=table["recon_matrix"].to_numpy() - 1 - table["crop_x"].to_numpy(), label=0,
                         crop_site="contralateral")
    out = pd.concat([lesion, mirror]).sort_values(["patient_id", "crop_site"], kind="stable").reset_index(drop=True)
    d, h, w = (int(c) for c in crop)
    out["crop_d"], out["crop_h"], out["crop_w"] = d, h, w
    out["dataset"], out["modality"] = dataset, "MRI"
    out, _, dropped = choose_domains(out, domains or ("GE", "SIEMENS"), where=str(archive / "manifest.parquet"))
    out = validate_manifest(out, where=f"{dataset} manifest", check_files=False)
    return ManifestBuild(out, pd.concat([_dropped(reasons), dropped], ignore_index=True))
