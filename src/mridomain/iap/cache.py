"""Access to the slice cache (docs/architecture.md "The slice cache") and the matching preprocessing.

Reading goes through :class:`mridomain.data.SliceCache` when the data package provides it; a thin
reader of the same on-disk format (images.npy + slices.parquet + meta.json) stands in otherwise.
Preprocessing of new images for prediction calls ``mridomain.data.normalize_intensity`` and the data
package's resize when present, so a checkpoint reproduces exactly its training preprocessing.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from mridomain.errors import EmptyInputError, SchemaMismatchError


class CacheReader:
    """Minimal reader of the documented cache layout (same attributes as ``SliceCache``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        for name in ("images.npy", "slices.parquet", "meta.json"):
            if not (self.path / name).exists():
                raise EmptyInputError(self.path, f"not a slice cache ({name} missing)")
        self.meta: dict[str, Any] = json.loads((self.path / "meta.json").read_text())
        self.images = np.load(self.path / "images.npy", mmap_mode="r")
        self.table = pd.read_parquet(self.path / "slices.parquet")
        self.iaps = self.meta.get("iaps", [])
        if len(self.table) != len(self.images):
            raise SchemaMismatchError(f"{self.path}: slices.parquet has {len(self.table)} rows but "
                                      f"images.npy {len(self.images)} slices")

    def __len__(self) -> int:
        return len(self.table)

    def split(self, name: str) -> np.ndarray:
        if name == "all":
            return np.arange(len(self.table))
        return np.flatnonzero(self.table["split"].to_numpy() == name)


def open_cache(cache: Any) -> Any:
    """A cache object (``SliceCache`` or :class:`CacheReader`) from a path or an open cache."""
    if hasattr(cache, "images") and hasattr(cache, "table"):
        return cache
    try:
        from mridomain.data.cache import SliceCache  # type: ignore[attr-defined]
    except ImportError:  # the data package not installed yet: read the same format ourselves
        return CacheReader(cache)
    return SliceCache(cache)


def cache_iaps(cache: Any) -> list[dict[str, Any]]:
    """The cache's IAP schema as plain dicts {name, kind, unit} (meta.json's ``iaps``)."""
    iaps = cache.meta.get("iaps") or []
    out = []
    for spec in iaps:
        if isinstance(spec, dict):
            out.append({"name": spec["name"], "kind": spec.get("kind", "categorical"), "unit": spec.get("unit")})
        else:  # an IAPSpec-like object
            out.append({"name": spec.name, "kind": spec.kind, "unit": getattr(spec, "unit", None)})
    return out


def split_indices(cache: Any, name: str) -> np.ndarray:
    """Row indices of a split ("train" | "val" | "test" | "all")."""
    if name == "all":
        return np.arange(len(cache.table))
    return np.asarray(cache.split(name), dtype=np.int64)


def write_slice_cache(out: str | Path, images: np.ndarray, table: pd.DataFrame,
                      iaps: Sequence[dict[str, Any]], normalization: dict[str, Any] | None = None,
                      seed: int = 0) -> Path:
    """Write a cache folder in the documented format (used by tests and the benchmark).

    ``images`` (N, H, W) are stored as float16; ``table`` needs a ``split`` column and one column per
    IAP; ``slice_id`` and series columns are filled in when absent.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = np.asarray(images)
    table = table.reset_index(drop=True).copy()
    n = len(images)
    if "slice_id" not in table:
        table.insert(0, "slice_id", np.arange(n))
    for col, default in (("patient_id", "P0"), ("study_uid", "S0"), ("series_uid", "SER0"), ("file", ""),
                         ("slice_index", 0), ("n_slices_in_series", 1), ("tumor", np.nan)):
        if col not in table:
            table[col] = default
    mm = np.lib.format.open_memmap(out / "images.npy", mode="w+", dtype=np.float16, shape=images.shape)
    mm[:] = images.astype(np.float16)
    mm.flush()
    del mm
    table.to_parquet(out / "slices.parquet", index=False)
    meta = {"version": 1, "size": [int(images.shape[1]), int(images.shape[2])],
            "normalization": normalization or {"method": "max255"},
            "iaps": [dict(s) for s in iaps], "seed": seed, "fractions": [0.7, 0.15, 0.15],
            "source_index": ""}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return out


# ---- preprocessing of new images (predict) ------------------------------------------------------

def _local_normalize(img: np.ndarray, method: str, **kw: Any) -> np.ndarray:
    # TODO(data helper): only used while mridomain.data.cache.normalize_intensity is absent; same
    # semantics (max255: img / max, the paper's [0, 255] scaling divided by 255).
    img = np.asarray(img, dtype=np.float32)
    if method == "max255":
        m = float(img.max()) if img.size else 0.0
        return img / m if m > 0 and np.isfinite(m) else np.zeros_like(img)
    if method == "percentile":
        lo, hi = np.percentile(img, [kw.get("low", 1.0), kw.get("high", 99.5)])
        return ((np.clip(img, lo, hi) - lo) / (hi - lo)).astype(np.float32) if hi > lo else np.zeros_like(img)
    if method == "zscore":
        sd = max(float(img.std()), float(kw.get("eps", 1e-6)))
        return ((img - float(img.mean())) / sd).astype(np.float32)
    raise SchemaMismatchError(f"normalization {method!r}: unknown (max255 | percentile | zscore)")


def _local_resize(img: np.ndarray, size: Sequence[int]) -> np.ndarray:
    from PIL import Image

    h, w = int(size[0]), int(size[1])
    if img.shape == (h, w):
        return img.astype(np.float32)
    return np.asarray(Image.fromarray(np.ascontiguousarray(img, dtype=np.float32), mode="F").resize(
        (w, h), Image.Resampling.BILINEAR), dtype=np.float32)


def _data_functions():
    try:
        from mridomain.data.cache import normalize_intensity, resize  # type: ignore[attr-defined]
        return normalize_intensity, resize
    except ImportError:
        return None, None


def preprocess_slices(pixels: np.ndarray, preprocess: dict[str, Any]) -> np.ndarray:
    """Raw slices (S, H, W) -> cache-like slices exactly as ``preprocess.json`` says.

    Same order as ``prepare_cache``: resize to the cache size, then normalize the intensities.
    """
    normalize_intensity, resize = _data_functions()
    norm = dict(preprocess.get("normalization") or {"method": "max255"})
    size = [int(v) for v in (preprocess.get("size") or [224, 224])]
    out = np.empty((len(pixels), size[0], size[1]), dtype=np.float32)
    for i, sl in enumerate(np.asarray(pixels, dtype=np.float32)):
        if normalize_intensity is not None:
            out[i] = normalize_intensity(resize(sl, (size[0], size[1])), norm)
        else:
            method = norm.pop("method", "max255") if "method" in norm else "max255"
            norm["method"] = method
            kw = {k: v for k, v in norm.items() if k != "method"}
            out[i] = _local_normalize(_local_resize(sl, size), method, **kw)
    return out
