"""Read a manifest's samples once into one array per dataset, shared by every run of a study.

Each sample becomes a float32 array in stored intensity units (no normalization here: the model
z-scores each image, and the noise experiment adds its noise before that, in these units):

- a 3-D crop (``crop_d/h/w``) around the crop centre, padded with the volume's minimum (air)
  where it leaves the volume;
- a 2-D image: the file's only slice, or ``slice`` of a volume, resized to ``image_size``;
- a whole volume when neither applies (all volumes must then have one shape).

A study folder keeps them as ``data/<dataset>/images.npy`` + ``samples.parquet`` (row i <->
images[i]); unreadable samples are skipped and listed in ``data/<dataset>/skipped.csv``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from mridomain.errors import EmptyInputError, MridomainError, SchemaMismatchError
from mridomain.files import write_npy_atomic
from mridomain.shift.manifest import CROP_CENTER, CROP_SIZE, ManifestError

__all__ = ["StudyData", "crop_volume", "read_sample", "load_samples", "dataset_folder"]


def dataset_folder(out: str | Path, dataset: str) -> Path:
    """``out/data/<dataset name made safe for a path>``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset).strip("_") or "dataset"
    return Path(out) / "data" / slug


def crop_volume(volume: np.ndarray, centre: Sequence[float], size: Sequence[int], fill: float | None = None) -> np.ndarray:
    """The ``size`` (d, h, w) box of ``volume`` (S, H, W) centred on ``centre`` (z, y, x), 0-based.

    An even size puts the extra voxel after the centre; parts outside the volume are ``fill``
    (default the volume's minimum: air in MRI and CT alike).
    """
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise SchemaMismatchError(f"crop: expected a (S, H, W) volume, got shape {vol.shape}")
    fill = float(np.min(vol)) if fill is None else float(fill)
    out = np.full(tuple(int(s) for s in size), fill, dtype=np.float32)
    src, dst = [], []
    for c, n, dim in zip(centre, size, vol.shape):
        start = int(np.floor(float(c) - (int(n) - 1) / 2 + 0.5))
        lo, hi = max(start, 0), min(start + int(n), dim)
        if hi <= lo:
            raise SchemaMismatchError(f"crop centre {tuple(centre)} of size {tuple(size)} lies outside the "
                                      f"volume of shape {vol.shape}")
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[tuple(dst)] = vol[tuple(src)]
    return out


def read_sample(row: dict[str, Any], image_size: int | None = None) -> np.ndarray:
    """One manifest row -> its float32 sample (see the module docstring)."""
    from mridomain.data import resize
    from mridomain.io import read_image

    path = Path(row["image"])
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise SchemaMismatchError(f"{path}: not a readable .npy array ({err})") from None
        arr = np.asarray(arr, dtype=np.float32)
        vol = arr[None] if arr.ndim == 2 else arr
    else:
        series = row.get("series_uid")
        vol = read_image(path, series_uid=None if series is None or pd.isna(series) else str(series)).pixels
    if vol.ndim != 3:
        raise SchemaMismatchError(f"{path}: expected a 2-D image or a 3-D volume, got shape {vol.shape}")
    if all(k in row and not pd.isna(row[k]) for k in CROP_SIZE):
        size = [int(row[k]) for k in CROP_SIZE]
        if all(k in row and not pd.isna(row[k]) for k in CROP_CENTER):
            centre = [float(row[k]) for k in CROP_CENTER]
        else:
            centre = [(n - 1) / 2 for n in vol.shape]
        try:
            return crop_volume(vol, centre, size)
        except SchemaMismatchError as err:
            raise SchemaMismatchError(f"{path}: {err}") from None
    if "slice" in row and not pd.isna(row["slice"]):
        k = int(row["slice"])
        if not 0 <= k < vol.shape[0]:
            raise SchemaMismatchError(f"{path}: slice {k} is outside its {vol.shape[0]} slices")
        vol = vol[k:k + 1]
    if vol.shape[0] == 1:
        img = vol[0]
        return resize(img, image_size) if image_size else np.asarray(img, np.float32)
    return np.asarray(vol, np.float32)


def _read_task(task: tuple[int, dict[str, Any], int | None]) -> tuple[int, np.ndarray | None, str | None]:
    i, row, size = task
    try:
        return i, read_sample(row, size), None
    except (MridomainError, OSError, ValueError) as err:
        return i, None, str(err)


@dataclass
class StudyData:
    """The samples of one dataset: ``images[i]`` belongs to ``table.iloc[i]``."""

    dataset: str
    table: pd.DataFrame
    images: np.ndarray

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample (e.g. (3, 47, 47) for a crop, (64, 64) for a 2-D image)."""
        return tuple(self.images.shape[1:])

    @property
    def domains(self) -> list[str]:
        """The domains present in the samples, sorted."""
        return sorted(self.table["domain"].unique())

    @property
    def modality(self) -> str | None:
        """The manifest's modality (MRI / CT / X-ray), or None when it gives none."""
        if "modality" in self.table.columns:
            vals = [v for v in self.table["modality"].unique() if v]
            return str(vals[0]) if vals else None
        return None

    def save(self, folder: str | Path) -> Path:
        """Write ``images.npy`` (float32, all-or-nothing) and ``samples.parquet`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_npy_atomic(folder / "images.npy", np.ascontiguousarray(self.images, dtype=np.float32))
        self.table.to_parquet(folder / "samples.parquet", index=False)
        return folder

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = True) -> "StudyData":
        """What :meth:`save` wrote (images memory-mapped unless ``mmap=False``); a one-line
        :class:`SchemaMismatchError` when the files are damaged, missing or disagree."""
        folder = Path(folder)
        try:
            table = pd.read_parquet(folder / "samples.parquet")
            images = np.load(folder / "images.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            reason = str(err) or f"{type(err).__name__}: empty or cut-short file"
            raise SchemaMismatchError(f"{folder}: study data is damaged or missing ({reason}); delete the "
                                      "folder to read the manifest again") from None
        if len(images) != len(table):
            raise SchemaMismatchError(f"{folder}: images.npy has {len(images)} samples, samples.parquet {len(table)}")
        return cls(str(table["dataset"].iloc[0]) if len(table) else folder.name, table, images)


def load_samples(table: pd.DataFrame, image_size: int | None = None, workers: int | None = None,
                 progress: bool = True) -> tuple[list[StudyData], pd.DataFrame]:
    """Read every row of a validated manifest: (one :class:`StudyData` per dataset, skipped rows).

    Unreadable samples are skipped and returned as (dataset, image, reason). Samples of one
    dataset must share a shape (a crop size, an ``image_size``); the first that does not is a
    one-line :class:`ManifestError` naming it.
    """
    from mridomain.parallel import parallel_map

    rows = table.to_dict("records")
    tasks = [(i, r, image_size) for i, r in enumerate(rows)]
    arrays: dict[int, np.ndarray] = {}
    skipped = []
    for i, arr, why in parallel_map(_read_task, tasks, workers=workers, total=len(tasks), progress=progress,
                                    desc="read samples", unit="img"):
        if arr is None:
            skipped.append({"dataset": rows[i]["dataset"], "image": rows[i]["image"], "reason": why})
        else:
            arrays[i] = arr
    out = []
    for ds, g in table.groupby("dataset", sort=True):
        idx = [i for i in g.index if i in arrays]
        if not idx:
            raise EmptyInputError(Path(str(ds)), "no sample of this dataset could be read")
        shape = arrays[idx[0]].shape
        for i in idx:
            if arrays[i].shape != shape:
                hint = " (set image_size)" if len(shape) == 2 else " (give a crop size)"
                raise ManifestError(f"{rows[i]['image']}: sample shape {arrays[i].shape} differs from "
                                    f"{shape} of {rows[idx[0]]['image']}{hint}")
        images = np.stack([arrays[i] for i in idx]).astype(np.float32)
        out.append(StudyData(str(ds), table.loc[idx].reset_index(drop=True), images))
    return out, pd.DataFrame(skipped, columns=["dataset", "image", "reason"])
