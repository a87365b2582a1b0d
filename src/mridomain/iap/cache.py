"""The iap package's view of the slice cache (docs/architecture.md "The slice cache").

Reading is :class:`mridomain.data.SliceCache`; preprocessing of new images for prediction is
``mridomain.data.preprocess_slices``, the very function ``prepare_cache`` uses, so a checkpoint
reproduces exactly its training preprocessing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mridomain.data.cache import SliceCache
from mridomain.data.cache import _iap_entry
from mridomain.data.cache import preprocess_slices as data_preprocess_slices


def open_cache(cache: str | Path | SliceCache) -> SliceCache:
    """A :class:`SliceCache` from a folder path; an open cache passes through."""
    if hasattr(cache, "images") and hasattr(cache, "table"):
        return cache  # type: ignore[return-value]
    return SliceCache(cache)


def cache_iaps(cache: SliceCache) -> list[dict[str, Any]]:
    """The cache's IAP schema as plain dicts {name, kind, unit} (meta.json's ``iaps``)."""
    return [_iap_entry(i) for i in cache.iaps]


def split_indices(cache: SliceCache, name: str) -> np.ndarray:
    """Row indices of a split ("train" | "val" | "test" | "all")."""
    return np.asarray(cache.split(name), dtype=np.int64)


def preprocess_slices(pixels: np.ndarray, preprocess: dict[str, Any]) -> np.ndarray:
    """Raw slices (S, H, W) -> cache-like slices exactly as a run's ``preprocess.json`` says."""
    return data_preprocess_slices(pixels, preprocess.get("size") or 224,
                                  preprocess.get("normalization") or "max255", preprocess.get("kspace_view"))
