"""Shared helpers of the analysis package: reading sources, IAP kinds, ordinal codes, intervals."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from mridomain.data.cache import SliceCache
from mridomain.data.schema import DEFAULT_IAPS, is_missing
from mridomain.errors import EmptyInputError, SchemaMismatchError

# Values that mark "no information": the paper's DBC codes put them last (contrast agent 4 = not
# stated, 5 = tag absent), so ordinal codes keep them at the end too.
_TRAILING_VALUES = ("not stated", "absent", "other", "unknown")
MISSING = "(missing)"


def iap_kinds(meta: dict | None = None) -> dict[str, str]:
    """IAP name -> "categorical" | "continuous", from cache meta, else the package schema."""
    if meta and isinstance(meta.get("iaps"), list):
        try:
            return {d["name"]: d.get("kind", "categorical") for d in meta["iaps"]}
        except (TypeError, KeyError):
            pass
    return {s.name: s.kind for s in DEFAULT_IAPS}


def natural_key(value: Any) -> tuple:
    """Sort key: numbers by value ("9" < "10", "320 X 320" < "448 X 251"), text case-insensitively,
    "not stated" / "absent" / "other" last (as in DBC's category codes), missing very last."""
    if is_missing(value) or value == MISSING:
        return (2,)
    s = str(value)
    if s.strip().lower() in _TRAILING_VALUES:
        return (1, _TRAILING_VALUES.index(s.strip().lower()))
    parts = re.split(r"(\d+(?:\.\d+)?)", s.lower())
    key = []
    for p in parts:
        if not p:
            continue
        try:
            key.append((0, float(p), ""))
        except ValueError:
            key.append((1, 0.0, p))
    return (0, tuple(key))


def sorted_categories(values: Sequence[Any]) -> list[Any]:
    """Distinct non-missing values in natural order."""
    uniq = {v for v in values if not is_missing(v)}
    return sorted(uniq, key=natural_key)


def as_category_strings(series: pd.Series) -> pd.Series:
    """Categorical IAP values as strings with MISSING for None/NaN (lists joined by backslash)."""
    def conv(v: Any) -> str:
        if isinstance(v, (list, tuple, np.ndarray)):
            return "\\".join(str(x) for x in v)
        if is_missing(v):
            return MISSING
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v)

    return series.map(conv).astype(object)


def ordinal_codes(series: pd.Series, categories: Sequence[Any] | None = None) -> pd.Series:
    """Category codes 0..K-1 in natural order (the paper correlates DBC's category indices), NaN
    for missing values."""
    s = as_category_strings(series)
    cats = list(categories) if categories is not None else sorted_categories(s[s != MISSING])
    lookup = {c: i for i, c in enumerate(cats)}
    return s.map(lambda v: lookup.get(v, np.nan)).astype(float)


def load_source(source: Any) -> tuple[pd.DataFrame, dict, Path | None]:
    """(table, meta, cache_folder_or_None) for an index parquet, a cache folder or a DataFrame."""
    if isinstance(source, pd.DataFrame):
        return source.copy(), {}, None
    if hasattr(source, "table") and hasattr(source, "images"):  # a SliceCache object
        return source.table.copy(), dict(getattr(source, "meta", {}) or {}), Path(getattr(source, "path", "."))
    path = Path(source)
    if path.is_dir():
        cache = SliceCache(path)
        return cache.table.copy(), dict(cache.meta), path
    if not path.exists():
        raise EmptyInputError(path, "file or folder does not exist")
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path), {}, None
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path), {}, None
    raise SchemaMismatchError(f"{path}: expected an index .parquet, a .csv or a slice cache folder")


def open_cache(source: Any) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """(table, images memmap (N,H,W), meta) of a slice cache folder or SliceCache object."""
    if hasattr(source, "table") and hasattr(source, "images"):
        return source.table, source.images, dict(getattr(source, "meta", {}) or {})
    cache = SliceCache(Path(source))
    return cache.table, cache.images, dict(cache.meta)


def split_names(table: pd.DataFrame, split_column: str = "split") -> list[str]:
    """Split names in train, val, test order, then any others; ["all"] without a split column."""
    if split_column not in table.columns:
        return ["all"]
    present = [str(s) for s in pd.unique(table[split_column].dropna())]
    order = ["train", "val", "test"]
    return [s for s in order if s in present] + sorted(s for s in present if s not in order)
