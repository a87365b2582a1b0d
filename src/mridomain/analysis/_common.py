"""Shared helpers of the analysis package: reading sources, IAP kinds, ordinal codes, predictors."""
from __future__ import annotations

import inspect
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from mridomain.data.cache import SliceCache, preprocess_slices
from mridomain.data.schema import DEFAULT_IAPS, is_missing
from mridomain.errors import EmptyInputError, ImageReadError, SchemaMismatchError

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


def load_predictor(iap_run: Any) -> Any:
    """An IAP predictor: a run folder is loaded with ``IAPPredictor.load``; objects pass through."""
    if hasattr(iap_run, "predict"):
        return iap_run
    from mridomain.iap import IAPPredictor  # type: ignore

    return IAPPredictor.load(Path(iap_run))


def call_predictor(predictor: Any, method: str, images: np.ndarray) -> Any:
    """``predictor.<method>(images)`` for images that are already preprocessed like the training
    cache (``preprocessed=True`` where the predictor takes it, so nothing is normalized twice)."""
    fn = getattr(predictor, method)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    if "preprocessed" in params:
        return fn(images, preprocessed=True)
    return fn(images)


def predictor_classes(predictor: Any) -> dict[str, list[str]]:
    """IAP -> class vocabulary of a predictor (``classes`` property or method), {} if unknown."""
    c = getattr(predictor, "classes", None)
    try:
        c = c() if callable(c) else c
    except Exception:  # noqa: BLE001 - a predictor without vocabularies: callers fall back
        return {}
    return {str(k): [str(v) for v in vals] for k, vals in (c or {}).items()}


def categorical_probabilities(predictor: Any, images: np.ndarray
                              ) -> dict[str, tuple[np.ndarray, list[str] | None]]:
    """{categorical iap: (probabilities (N, C), vocabulary or None)} from ``predict_proba``.

    Reads the shapes an IAP predictor may return: a dict of arrays (optionally as a pair with a
    vocabulary dict), a dict of (array, vocab) pairs, or a dict of {"proba"|"probs", "vocab"|
    "classes"}. A head's own vocabulary wins, then the returned one, then ``predictor.classes``.
    Continuous heads (1-D outputs) are left out.
    """
    from mridomain.errors import SchemaMismatchError

    res = call_predictor(predictor, "predict_proba", images)
    vocab_all = None
    if isinstance(res, tuple) and len(res) == 2:
        res, vocab_all = res
    if not isinstance(res, Mapping):
        raise SchemaMismatchError(f"predict_proba returned {type(res).__name__}, expected a dict per IAP")
    classes = predictor_classes(predictor)
    out: dict[str, tuple[np.ndarray, list[str] | None]] = {}
    for iap, entry in res.items():
        vocab = None
        if isinstance(entry, tuple):
            entry, vocab = entry
        elif isinstance(entry, Mapping):
            vocab = entry.get("vocab") or entry.get("classes")
            entry = entry["proba"] if "proba" in entry else entry.get("probs")
        arr = np.asarray(entry, float)
        if arr.ndim != 2:
            continue
        if vocab is None and vocab_all is not None:
            vocab = vocab_all.get(iap) if isinstance(vocab_all, Mapping) else vocab_all
        if vocab is None:
            vocab = classes.get(str(iap))
        out[str(iap)] = (arr, None if vocab is None else [str(v) for v in vocab])
    return out


def predictor_logits(predictor: Any, images: np.ndarray) -> dict[str, np.ndarray] | None:
    """Raw logits per categorical head from ``predict_logits`` (``IAPPredictor`` has it); None for
    a predictor without one (energy scores are then reported as unavailable)."""
    if not hasattr(predictor, "predict_logits"):
        return None
    return {k: np.asarray(v, float) for k, v in call_predictor(predictor, "predict_logits", images).items()}


def prediction_column(pred: pd.DataFrame, iap: str) -> str | None:
    """Column of ``pred`` holding the predicted value of ``iap`` ("tr" or "tr_ms" style)."""
    if iap in pred.columns:
        return iap
    for c in pred.columns:
        if c.startswith(iap + "_") and not c.startswith(iap + "_prob") and "_top" not in c \
                and pd.api.types.is_numeric_dtype(pred[c]):
            return c
    return None


def predictor_input_size(predictor: Any, default: int = 224) -> tuple[int, int]:
    """(H, W) the predictor expects, from its config when it says so."""
    for attr in ("config", "cfg"):
        cfg = getattr(predictor, attr, None)
        if cfg is None:
            continue
        size = cfg.get("size") if isinstance(cfg, dict) else getattr(cfg, "size", None)
        if size is None:
            size = cfg.get("image_size") if isinstance(cfg, dict) else getattr(cfg, "image_size", None)
        if size is not None:
            return (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    return (default, default)


def images_from_paths(paths: Sequence[str | Path], predictor: Any = None, progress: bool = True
                      ) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Read image files / series folders into (N,H,W) float32 preprocessed like the predictor.

    Uses the predictor's own ``preprocess`` when it has one (a run's ``preprocess.json`` dict or a
    callable), so pixels match what it was trained on; else ``mridomain.data.preprocess_slices``
    with the predictor's input size and max255. Unreadable items are skipped and reported.

    Returns:
        images, rows (source, slice), skipped (path, reason).
    """
    from tqdm import tqdm

    from mridomain.io import read_image  # type: ignore

    size = predictor_input_size(predictor)
    out, rows, skipped = [], [], []
    for p in tqdm(list(paths), desc="reading images", disable=not progress):
        try:
            data = read_image(p)
            pix = np.asarray(data.pixels, dtype=np.float32)
            if pix.ndim == 2:
                pix = pix[None]
            prep = getattr(predictor, "preprocess", None) if predictor is not None else None
            if isinstance(prep, dict):  # mridomain IAPPredictor: its run's preprocess.json
                arr = preprocess_slices(pix, prep.get("size") or size, prep.get("normalization") or "max255")
            elif callable(prep):
                arr = np.asarray(prep(pix), dtype=np.float32)
            else:
                arr = preprocess_slices(pix, size, "max255")
        except ImageReadError as err:
            skipped.append({"path": str(p), "reason": err.reason})
            continue
        except Exception as err:  # noqa: BLE001 - batch job: record and go on
            skipped.append({"path": str(p), "reason": f"{type(err).__name__}: {err}".splitlines()[0]})
            continue
        for i in range(arr.shape[0]):
            out.append(arr[i])
            rows.append({"source": str(p), "slice": i})
    if not out:
        raise EmptyInputError(Path(str(paths[0])) if len(paths) else Path("."), "no readable images among the paths given")
    return np.stack(out), pd.DataFrame(rows), pd.DataFrame(skipped, columns=["path", "reason"])


def split_names(table: pd.DataFrame, split_column: str = "split") -> list[str]:
    """Split names in train, val, test order, then any others; ["all"] without a split column."""
    if split_column not in table.columns:
        return ["all"]
    present = [str(s) for s in pd.unique(table[split_column].dropna())]
    order = ["train", "val", "test"]
    return [s for s in order if s in present] + sorted(s for s in present if s not in order)


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion k/n (small test sets: say how sure we are)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (centre - half, centre + half)
