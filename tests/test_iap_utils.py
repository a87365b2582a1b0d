"""Shared tiny synthetic data for the IAP tests (no tests in here).

The images make the labels learnable on purpose: manufacturer sets the brightness, patient position
puts a bright band on the left or the right, TR follows the manufacturer.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mridomain.data import write_slice_cache

IAPS = [{"name": "manufacturer", "kind": "categorical", "unit": None},
        {"name": "patient_position", "kind": "categorical", "unit": None},
        {"name": "field_strength", "kind": "categorical", "unit": "T"},
        {"name": "tr", "kind": "continuous", "unit": "ms"}]


def synthetic_images(manufacturer: np.ndarray, position: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    n = len(manufacturer)
    x = rng.normal(0.25, 0.04, (n, size, size)).astype(np.float32)
    x[manufacturer == "GE"] += 0.35
    band = size // 3
    for i in range(n):
        if position[i] == "FFP":
            x[i, :, :band] += 0.3
        else:
            x[i, :, -band:] += 0.3
    return np.clip(x, 0, None)


def make_table_and_images(n: int = 160, size: int = 32, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    series = np.arange(n) // 4                       # 4 slices per series, labels constant per series
    n_series = series.max() + 1
    man_s = rng.choice(["GE", "SIEMENS"], n_series)
    pos_s = rng.choice(["FFP", "HFP"], n_series)
    fs_s = rng.choice(["1.5", "3", "1.494"], n_series)
    split_s = rng.choice(["train", "val", "test"], n_series, p=[0.6, 0.2, 0.2])
    man, pos = man_s[series], pos_s[series]
    table = pd.DataFrame({
        "patient_id": [f"P{s:03d}" for s in series], "series_uid": [f"S{s:03d}" for s in series],
        "split": split_s[series], "manufacturer": man, "patient_position": pos,
        "field_strength": fs_s[series],
        "tr": np.where(man == "GE", 5.96, 4.42) + rng.normal(0, 0.01, n),
    })
    table.loc[2, "patient_position"] = None          # missing labels must be masked, not dropped
    table.loc[3, "tr"] = np.nan
    return table, synthetic_images(man, pos, size, rng)


def make_cache(folder: Path, n: int = 160, size: int = 32, seed: int = 0, iaps=None) -> Path:
    table, images = make_table_and_images(n, size, seed)
    iaps = IAPS if iaps is None else iaps
    return write_slice_cache(folder, images, table, iaps, normalization={"method": "max255"})
