"""Slice cache: sampled, resized, intensity-normalized 2-D slices in a memory-mapped array.

Layout (docs/architecture.md)::

    images.npy      float16 (N, H, W), written incrementally with ``open_memmap`` (may exceed RAM)
    slices.parquet  one row per slice, row i <-> images[i]
    meta.json       version, size, normalization, iaps, seed, fractions, source_index, ...
    skipped.csv     slices that could not be read, and series without pixel data (slice_index
                    empty), only when any
"""
from __future__ import annotations

import json
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mridomain.parallel import parallel_map
from mridomain.files import atomic_write
from mridomain.data.splits import SPLIT_NAMES, check_fractions, split_patients
from mridomain.errors import EmptyInputError, InvalidArgumentError, MridomainError, SchemaMismatchError

CACHE_VERSION = 1
NORMALIZATIONS = ("max255", "percentile", "zscore")
SAMPLINGS = ("random", "even")


# ----------------------------------------------------------------------------------------------
# pure image functions (shared with prediction: keep them free of state and side effects)


def normalization_spec(method: str | dict[str, Any] = "max255", **kw: Any) -> dict[str, Any]:
    """Full parameter dict of a normalization, as stored in ``meta.json["normalization"]``."""
    if isinstance(method, dict):
        kw = {**{k: v for k, v in method.items() if k != "method"}, **kw}
        method = method.get("method", "max255")
    if method not in NORMALIZATIONS:
        raise InvalidArgumentError(f"normalization {method!r}: choose one of {', '.join(NORMALIZATIONS)}")
    if method == "percentile":
        return {"method": "percentile", "low": float(kw.get("low", 1.0)),
                "high": float(kw.get("high", 99.5))}
    if method == "zscore":
        return {"method": "zscore", "eps": float(kw.get("eps", 1e-6))}
    return {"method": "max255"}


def normalize_intensity(img: np.ndarray, method: str | dict[str, Any] = "max255", **kw: Any) -> np.ndarray:
    """Normalize one image's intensities (a pure function: same input, same output).

    Methods:
        ``"max255"``: the paper's scaling (Sec. 4.2) of the image maximum to 255, then /255, so the
            result is ``img / max(img)`` in [0, 1] for non-negative magnitude images (all zeros when
            the maximum is <= 0).
        ``"percentile"``: clip to the [``low``, ``high``] percentiles (default 1, 99.5), map to [0, 1].
        ``"zscore"``: ``(img - mean) / std`` over the image (``std`` floored at ``eps``).

    ``method`` may also be the dict stored in a cache's ``meta.json``. Returns float32.
    """
    spec = normalization_spec(method, **kw)
    x = np.asarray(img, dtype=np.float32)
    if spec["method"] == "max255":
        m = float(np.max(x)) if x.size else 0.0
        if not np.isfinite(m) or m <= 0:
            return np.zeros_like(x)
        return (x * np.float32(255.0 / m)) / np.float32(255.0)
    if spec["method"] == "percentile":
        from mridomain.data.intensity import PercentileScaling

        return PercentileScaling(low=spec["low"], high=spec["high"])(x)
    mean = float(np.mean(x, dtype=np.float64)) if x.size else 0.0
    std = float(np.std(x, dtype=np.float64)) if x.size else 0.0
    return ((x - np.float32(mean)) / np.float32(max(std, spec["eps"]))).astype(np.float32)


def resize(img: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize a 2-D image to ``size`` x ``size`` (or (H, W)) with antialiasing, float32 out.

    Pillow's resampling scales the filter support with the reduction factor, so downsampling
    (e.g. 512 -> 224) averages over the source pixels instead of picking some (no aliasing).
    A triangle (bilinear) kernel is used: no negative lobes, so no ringing on sharp edges.
    """
    from PIL import Image

    h, w = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    x = np.asarray(img, dtype=np.float32)
    if x.ndim != 2:
        raise InvalidArgumentError(f"resize: expected a 2-D image, got shape {x.shape}")
    if x.shape == (h, w):
        return x.copy()
    out = Image.fromarray(np.ascontiguousarray(x), mode="F").resize(
        (w, h), resample=Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.float32)


def preprocess_slices(pixels: np.ndarray, size: int | Sequence[int],
                      normalization: str | dict[str, Any] = "max255",
                      kspace_view: dict[str, Any] | None = None) -> np.ndarray:
    """Raw slices (S, H, W) or one 2-D slice -> float32 (S, h, w) as a cache stores them.

    :func:`resize` to ``size``, then :func:`normalize_intensity`: the order ``prepare_cache`` uses,
    so prediction on new images (``size``, ``normalization`` and ``kspace_view`` from a cache's
    ``meta.json`` or a run's ``preprocess.json``) sees exactly the preprocessing a model was
    trained with. With ``kspace_view`` (a :func:`mridomain.data.kspace.kspace_view_spec`) each
    slice's k-space profiles are computed on its native pixels, before the resize, and appended
    below the image: (S, h + R, w), R = 2 rows per source of the view.
    """
    x = np.asarray(pixels, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise InvalidArgumentError(f"preprocess_slices: expected (S, H, W) slices, got shape {x.shape}")
    h, w = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    spec = normalization_spec(normalization)
    from mridomain.data.kspace import kspace_profiles, kspace_view_spec, view_rows

    view = kspace_view_spec(kspace_view, w, h)
    out = np.empty((len(x), h + view_rows(view), w), dtype=np.float32)
    for i, sl in enumerate(x):
        out[i, :h] = normalize_intensity(resize(sl, (h, w)), spec)
        if view:
            out[i, h:] = kspace_profiles(sl, view)
    return out


# ----------------------------------------------------------------------------------------------
# sampling


def sample_slice_indices(n_slices: int, k: int | None, seed: int, key: str = "",
                         sampling: str = "random") -> np.ndarray:
    """Which slices of a series to cache (sorted 0-based positions).

    ``random`` (default, as the paper samples its slices at random): ``k`` distinct slices drawn
    without replacement by a generator seeded with (seed, CRC32 of ``key``), so a series gets the
    same slices whatever the order or content of the rest of the index. ``even``: ``k`` slices
    evenly spread over the volume (centres of ``k`` equal bins). ``k=None`` or ``k >= n``: all.
    """
    if sampling not in SAMPLINGS:
        raise InvalidArgumentError(f"sampling {sampling!r}: choose random or even")
    if n_slices <= 0:
        return np.zeros(0, dtype=np.int64)
    if k is None or k >= n_slices:
        return np.arange(n_slices, dtype=np.int64)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if sampling == "even":
        return np.floor((np.arange(k) + 0.5) * n_slices / k).astype(np.int64)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode())])
    return np.sort(rng.choice(n_slices, size=k, replace=False)).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# worker


def _load_series_slices(task: tuple) -> tuple[int, list[tuple[int, str, int, np.ndarray | None, str | None]]]:
    """Read, resize, normalize the planned slices of one series. Never raises."""
    pos, plan, size, norm, view = task
    from mridomain.io import read_image

    results = []
    volumes: dict[str, Any] = {}  # multi-frame file: read once for all its frames
    for slice_index, path, frame in plan:
        try:
            if path not in volumes:
                volumes = {path: read_image(path).pixels}  # keep one at a time (memory)
            pixels = volumes[path]
            if frame >= pixels.shape[0]:
                raise MridomainError(f"{path}: has {pixels.shape[0]} frames, frame {frame} asked for")
            img = preprocess_slices(pixels[frame], size, norm, view)[0]
            if not np.all(np.isfinite(img)):
                raise MridomainError(f"{path}: non-finite pixel values")
            results.append((slice_index, path, frame, img.astype(np.float16), None))
        except MridomainError as err:
            volumes = {}
            results.append((slice_index, path, frame, None, getattr(err, "reason", None) or str(err)))
        except Exception as err:  # noqa: BLE001 - a broken file may raise anything: skip, report
            volumes = {}
            msg = (str(err).splitlines() or [""])[0]
            results.append((slice_index, path, frame, None, f"{type(err).__name__}: {msg}"[:300]))
    return pos, results


def _plan_series(files: list[str], n_slices: int, chosen: np.ndarray) -> list[tuple[int, str, int]]:
    """(slice_index, file, frame) for the chosen positions of a series."""
    if len(files) == 1 and n_slices > 1:  # one enhanced multi-frame file
        return [(int(i), files[0], int(i)) for i in chosen]
    return [(int(i), files[int(i)], 0) for i in chosen]


# ----------------------------------------------------------------------------------------------
# cache


class SliceCache:
    """A prepared slice cache folder (see module docstring).

    Attributes:
        images: read-only ``np.memmap`` float16 (N, H, W).
        table: one row per image (``slices.parquet``).
        meta: ``meta.json`` as a dict.
        iaps: list of ``{"name", "kind", "unit"}`` dicts, in label order.
        skipped: slices that could not be read when the cache was made (path, slice_index, reason).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.exists():
            raise EmptyInputError(self.path, "not a slice cache (no meta.json)")
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise SchemaMismatchError(f"{meta_path}: not valid JSON ({err})") from None
        version = self.meta.get("version") if isinstance(self.meta, dict) else None
        if version != CACHE_VERSION:
            raise SchemaMismatchError(f"{meta_path}: cache version {version} "
                                      f"(this mridomain reads version {CACHE_VERSION})")
        try:
            self.images: np.ndarray = np.load(self.path / "images.npy", mmap_mode="r")
            self.table: pd.DataFrame = pd.read_parquet(self.path / "slices.parquet")
        except (OSError, ValueError) as err:  # missing, truncated or foreign files
            raise SchemaMismatchError(f"{self.path}: unreadable cache file ({str(err).splitlines()[0]})") from None
        if len(self.table) != self.images.shape[0]:
            raise SchemaMismatchError(f"{self.path}: slices.parquet has {len(self.table)} rows but "
                                      f"images.npy holds {self.images.shape[0]} images")
        skipped = self.path / "skipped.csv"
        self.skipped = (pd.read_csv(skipped) if skipped.exists()
                        else pd.DataFrame(columns=["path", "slice_index", "reason"]))

    @property
    def iaps(self) -> list[dict[str, Any]]:
        """The cache's IAP specs (name, kind, unit), in order."""
        return list(self.meta.get("iaps", []))

    @property
    def iap_names(self) -> list[str]:
        """The cache's IAP names, in order."""
        return [i["name"] for i in self.iaps]

    @property
    def normalization(self) -> dict[str, Any]:
        """The intensity normalization the cache was written with."""
        return dict(self.meta["normalization"])

    @property
    def kspace_view(self) -> dict[str, Any] | None:
        """The k-space view stored below each image (:mod:`mridomain.data.kspace`), or None."""
        return self.meta.get("kspace_view") or None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def split(self, name: str) -> np.ndarray:
        """Row indices (into ``images`` and ``table``) of ``"train"``, ``"val"``, ``"test"`` or ``"all"``."""
        if name == "all":
            return np.arange(len(self), dtype=np.int64)
        if name not in SPLIT_NAMES:
            raise InvalidArgumentError(f"split {name!r}: choose train, val, test or all")
        return np.flatnonzero(self.table["split"].to_numpy() == name).astype(np.int64)

    def summary(self) -> str:
        """Counts per split, patients per split, value counts per IAP, skipped slices."""
        t = self.table
        h, w = self.meta.get("size") or self.images.shape[1:]
        lines = [f"slice cache {self.path}: {len(self)} slices of {h}x{w}"
                 f"{' + k-space view' if self.kspace_view else ''}, {t['series_uid'].nunique()} series, "
                 f"{t['patient_id'].nunique()} patients, normalization {self.meta['normalization']}"]
        for s in SPLIT_NAMES:
            sub = t[t["split"] == s]
            lines.append(f"  {s:5s}: {len(sub):6d} slices, {sub['patient_id'].nunique():4d} patients")
        for info in self.iaps:
            name = info["name"]
            if name not in t.columns:
                continue
            if info.get("kind") == "continuous":
                v = pd.to_numeric(t[name], errors="coerce").dropna()
                text = (f"min {v.min():.4g}, median {v.median():.4g}, max {v.max():.4g}"
                        if len(v) else "all missing")
            else:
                counts = t[name].fillna("<missing>").astype(str).value_counts()
                text = ", ".join(f"{k}: {n}" for k, n in counts.head(10).items())
                if len(counts) > 10:
                    text += f", ... ({len(counts) - 10} more)"
            lines.append(f"  {name}: {text}")
        if "tumor" in t.columns and t["tumor"].notna().any():
            lines.append(f"  tumor: {int((t['tumor'] == 1).sum())} positive, "
                         f"{int((t['tumor'] == 0).sum())} negative, {int(t['tumor'].isna().sum())} unlabeled")
        if len(self.skipped):
            whole = (self.skipped["slice_index"].isna() if "slice_index" in self.skipped.columns
                     else pd.Series(False, index=self.skipped.index))
            parts = [f"{int((~whole).sum())} unreadable slices"]
            if whole.any():
                parts.append(f"{int(whole.sum())} series without pixel data (header only)")
            lines.append(f"  skipped {' and '.join(parts)} (see {self.path / 'skipped.csv'})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"SliceCache({str(self.path)!r}, n={len(self)})"


# ----------------------------------------------------------------------------------------------
# writing (prepare_cache and write_slice_cache share the table/meta half, so the format has one definition)

#: Identification columns of ``slices.parquet`` and their value when a caller has none.
TABLE_DEFAULTS: dict[str, Any] = {
    "patient_id": "P0", "study_uid": "S0", "series_uid": "SER0", "volume": 0, "file": "", "frame": 0,
    "slice_index": 0, "n_slices_in_series": 1, "series_description": "", "tumor": np.nan,
}


def _iap_entry(spec: Any) -> dict[str, Any]:
    """``{"name", "kind", "unit"}`` of an IAP given as a dict or an :class:`IAPSpec`."""
    if isinstance(spec, dict):
        return {"name": str(spec["name"]), "kind": spec.get("kind", "categorical"), "unit": spec.get("unit")}
    return {"name": spec.name, "kind": spec.kind, "unit": getattr(spec, "unit", None)}


def _write_table_and_meta(out: Path, table: pd.DataFrame, *, size: Sequence[int],
                          normalization: str | dict[str, Any], iaps: Sequence[Any], seed: int,
                          fractions: Sequence[float], source_index: str, **extra: Any) -> None:
    """Write ``slices.parquet`` and ``meta.json`` (``extra`` keys are added to the meta)."""
    table.to_parquet(out / "slices.parquet", index=False)
    meta = {"version": CACHE_VERSION, "size": [int(size[0]), int(size[1])],
            "normalization": normalization_spec(normalization), "iaps": [_iap_entry(i) for i in iaps],
            "seed": int(seed), "fractions": list(fractions), "source_index": source_index, **extra}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))


def write_slice_cache(out: str | Path, images: np.ndarray, table: pd.DataFrame, iaps: Sequence[Any],
                      normalization: str | dict[str, Any] = "max255", seed: int = 0,
                      fractions: Sequence[float] = (0.7, 0.15, 0.15), source_index: str = "",
                      kspace_view: dict[str, Any] | None = None) -> Path:
    """Write slices that are already preprocessed, with their table, as a cache folder.

    For slices made elsewhere (tests, benchmarks, other pipelines); :func:`prepare_cache` is the
    way from DICOM. ``images`` (N, H, W) are stored as float16 as given: they must already be
    normalized as ``normalization`` says, since that is what ``meta.json`` will tell predictors.
    ``table`` has one row per image, a ``split`` column ("train" | "val" | "test") and one column
    per IAP; ``slice_id`` and the identification columns of :data:`TABLE_DEFAULTS` are filled in
    where absent. ``kspace_view``: the spec of a k-space view the images carry below them
    (:func:`mridomain.data.kspace.kspace_view_spec`; ``images`` are then (N, H + R, W), R its rows).
    Returns the folder (open it with :class:`SliceCache`).
    """
    out = Path(out)
    images = np.asarray(images)
    if images.ndim != 3:
        raise InvalidArgumentError(f"write_slice_cache: images must be (N, H, W), got shape {images.shape}")
    if len(table) != len(images):
        raise InvalidArgumentError(f"write_slice_cache: {len(table)} table rows for {len(images)} images")
    if "split" not in table.columns:
        raise InvalidArgumentError("write_slice_cache: the table needs a 'split' column (train | val | test)")
    bad = set(table["split"].astype(str)) - set(SPLIT_NAMES)
    if bad:
        raise InvalidArgumentError(f"write_slice_cache: split values {sorted(bad)} (choose train, val, test)")
    table = table.reset_index(drop=True).copy()
    if "slice_id" not in table.columns:
        table.insert(0, "slice_id", np.arange(len(table)))
    for col, default in TABLE_DEFAULTS.items():
        if col not in table.columns:
            table[col] = default
    out.mkdir(parents=True, exist_ok=True)
    from numpy.lib.format import open_memmap

    mm = open_memmap(out / "images.npy", mode="w+", dtype=np.float16, shape=images.shape)
    mm[:] = images.astype(np.float16)
    mm.flush()
    del mm
    from mridomain.data.kspace import split_view, view_rows

    split_view(images[:1], kspace_view)          # the layout must match the spec
    size = (images.shape[1] - view_rows(kspace_view), images.shape[2])
    _write_table_and_meta(out, table, size=size, normalization=normalization, iaps=iaps,
                          seed=seed, fractions=check_fractions(fractions), source_index=source_index,
                          **({"kspace_view": kspace_view} if kspace_view else {}))
    return out


def _iap_info(index_df: pd.DataFrame, source: str | Path | None) -> list[dict[str, Any]]:
    """IAP names/kinds/units: from the index parquet metadata, else the default schema."""
    if source is not None:
        from mridomain.data.index import index_metadata

        meta = index_metadata(source)  # {} for an index written without it: default schema below
        if meta.get("iaps"):
            return [i for i in meta["iaps"] if i["name"] in index_df.columns]
    from mridomain.data.schema import DEFAULT_IAPS

    return [_iap_entry(s) for s in DEFAULT_IAPS if s.name in index_df.columns]


def _finish_npy(path: Path, n_written: int, n_alloc: int, shape: tuple[int, int]) -> None:
    """Shrink an .npy written with room for ``n_alloc`` images to the ``n_written`` kept.

    The header is padded to a multiple of 64 bytes, so a smaller first dimension nearly always fits
    the same header length: rewrite it in place and truncate the file (no copy of the data).
    """
    if n_written == n_alloc:
        return
    from numpy.lib import format as npf

    import io

    with open(path, "rb") as fh:
        version = npf.read_magic(fh)
        reader = npf.read_array_header_1_0 if version == (1, 0) else npf.read_array_header_2_0
        reader(fh)  # only to learn where the data starts
        old_header_len = fh.tell()
    header = {"descr": npf.dtype_to_descr(np.dtype(np.float16)), "fortran_order": False,
              "shape": (n_written, *shape)}
    buf = io.BytesIO()
    (npf.write_array_header_1_0 if version == (1, 0) else npf.write_array_header_2_0)(buf, header)
    new_header = buf.getvalue()
    item = int(np.prod(shape)) * 2
    if len(new_header) == old_header_len:
        with open(path, "r+b") as fh:
            fh.write(new_header)
        os.truncate(path, old_header_len + n_written * item)
        return
    src = np.load(path, mmap_mode="r")

    def copy_rows(tmp: Path) -> None:
        dst = npf.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n_written, *shape))
        for start in range(0, n_written, 1024):
            dst[start:start + 1024] = src[start:start + 1024]
        dst.flush()
        del dst

    atomic_write(path, copy_rows)


def prepare_cache(index: str | Path | pd.DataFrame, out: str | Path, slices_per_series: int | None = 16,
                  size: int = 224, normalization: str | dict[str, Any] = "max255", seed: int = 0,
                  fractions: Sequence[float] = (0.7, 0.15, 0.15), annotations: str | Path | None = None,
                  workers: int | None = None, progress: bool = True, sampling: str = "random",
                  iaps: Sequence[dict[str, Any]] | None = None,
                  kspace_view: bool | dict[str, Any] | None = None) -> SliceCache:
    """Build a slice cache from an index (parquet path or DataFrame from :func:`build_index`).

    Per series, ``slices_per_series`` slices (None: all) are chosen by
    :func:`sample_slice_indices` (``sampling="random"``: seeded, without replacement), read with
    ``mridomain.io.read_image``, resized to ``size`` x ``size`` (:func:`resize`, antialiased) and
    normalized by :func:`normalize_intensity`. With ``kspace_view`` each slice's k-space profiles
    (:mod:`mridomain.data.kspace`), computed on its native pixels, are stored below it (``images.npy``
    then holds (N, size + R, size), R = 2 rows per source) and described in ``meta.json["kspace_view"]``. Patients are split by :func:`split_patients`.
    Series are processed in a process pool; unreadable slices are skipped and listed in
    ``skipped.csv``. Row order is deterministic: series in index order, slices in series order.

    ``slice_index`` in ``slices.parquet`` is the 0-based position of the slice in its series
    (files sorted along the slice normal). The ``tumor`` column, filled when ``annotations`` (a
    DBC ``Annotation_Boxes`` csv/xlsx) is given, compares DBC's 1-based Start/End Slice with
    ``slice_index + 1``: 1 inside the box, 0 at least 5 slices away, NaN in between or unlabeled.
    """
    from numpy.lib.format import open_memmap

    from mridomain.files import check_output_folder, write_skip_report

    out = check_output_folder(out, "cache")
    if int(seed) < 0:
        raise InvalidArgumentError(f"seed {seed}: must be 0 or more")
    source: str | None
    if isinstance(index, pd.DataFrame):
        df, source = index.copy(), None
    else:
        from mridomain.data.index import load_index

        df, source = load_index(index), str(Path(index).resolve())
    missing = {"patient_id", "study_uid", "series_uid", "n_slices", "files"} - set(df.columns)
    if missing:
        raise SchemaMismatchError(f"{source or 'index DataFrame'}: missing columns {sorted(missing)}")
    if len(df) == 0:
        raise EmptyInputError(source or "index", "index has no series")
    fractions = check_fractions(fractions)
    norm = normalization_spec(normalization)
    size = int(size)
    if size < 1:
        raise InvalidArgumentError(f"size {size}: must be a positive number of pixels")
    from mridomain.data.kspace import kspace_view_spec, view_rows

    view = kspace_view_spec(kspace_view, size, size)
    shape = (size + view_rows(view), size)
    if slices_per_series is not None and slices_per_series < 1:
        slices_per_series = None
    iap_info = [_iap_entry(i) for i in iaps] if iaps is not None else _iap_info(df, source)

    boxes = None
    if annotations is not None:
        from mridomain.data.dbc import read_annotation_boxes

        boxes = read_annotation_boxes(annotations)

    df["patient_id"] = df["patient_id"].astype(str)
    splits = split_patients(df["patient_id"], fractions, seed)

    tasks, series_rows = [], []
    skipped: list[tuple[str, Any, str]] = []
    for pos, row in enumerate(df.itertuples(index=False)):
        files = [str(f) for f in row.files]
        n = int(row.n_slices) if len(files) == 1 else len(files)
        series_rows.append((row, n))
        if not bool(getattr(row, "has_pixels", True)):
            # A header dump: the index keeps its acquisition parameters, a cache needs pixels.
            skipped.append((files[0] if files else str(row.series_uid), None,
                            f"series {row.series_uid}: no pixel data in its {len(files)} file(s) (header only)"))
            continue
        volume = int(getattr(row, "volume", 0) or 0)
        key = str(row.series_uid) if volume == 0 else f"{row.series_uid}#{volume}"
        chosen = sample_slice_indices(n, slices_per_series, seed, key, sampling)
        plan = _plan_series(files, n, chosen)
        if plan:
            tasks.append((pos, plan, size, norm, view))
    n_alloc = sum(len(t[1]) for t in tasks)
    if n_alloc == 0:
        reason = "no slices to cache"
        if skipped:
            reason += f": {len(skipped)} of {len(df)} series have no pixel data (header only)"
        raise EmptyInputError(source or "index", reason)

    out.mkdir(parents=True, exist_ok=True)
    images_path = out / "images.npy"
    images = open_memmap(images_path, mode="w+", dtype=np.float16, shape=(n_alloc, *shape))
    records: list[dict[str, Any]] = []
    iap_names = [i["name"] for i in iap_info]
    n = 0
    for pos, results in parallel_map(_load_series_slices, tasks, total=len(tasks), workers=workers,
                                     batch_size=1, ordered=True, progress=progress, desc="caching series",
                                     unit=" series"):
        row, n_in_series = series_rows[pos]
        rowd = row._asdict()
        for slice_index, path, frame, img, reason in results:
            if img is None:
                skipped.append((path, slice_index, reason or "unreadable"))
                continue
            images[n] = img
            rec = {"slice_id": n, "patient_id": str(rowd["patient_id"]),
                   "study_uid": str(rowd["study_uid"]), "series_uid": str(rowd["series_uid"]),
                   "volume": int(rowd.get("volume", 0) or 0),
                   "file": path, "frame": frame, "slice_index": slice_index,
                   "n_slices_in_series": n_in_series, "split": splits[str(rowd["patient_id"])],
                   "series_description": str(rowd.get("series_description") or "")}
            for name in iap_names:
                rec[name] = rowd.get(name)
            rec["tumor"] = np.nan
            records.append(rec)
            n += 1
    images.flush()
    del images
    if n == 0:
        unread = next(s for s in skipped if s[1] is not None)
        raise EmptyInputError(source or "index", f"none of the {n_alloc} planned slices could be read "
                                                 f"(e.g. {unread[0]}: {unread[2]})")
    _finish_npy(images_path, n, n_alloc, shape)

    table = pd.DataFrame.from_records(records)
    for info in iap_info:
        if info.get("kind") == "continuous" and info["name"] in table.columns:
            table[info["name"]] = pd.to_numeric(table[info["name"]], errors="coerce").astype(float)
    if boxes is not None:
        from mridomain.data.dbc import tumor_labels

        table["tumor"] = tumor_labels(table["patient_id"], table["slice_index"].to_numpy() + 1, boxes)
    table["tumor"] = table["tumor"].astype(float)

    write_skip_report(skipped, out / "skipped.csv", columns=("path", "slice_index", "reason"))
    _write_table_and_meta(
        out, table, size=(size, size), normalization=norm, iaps=iap_info, seed=seed, fractions=fractions,
        source_index=source or "<DataFrame>", slices_per_series=slices_per_series, sampling=sampling,
        dtype="float16", n_slices=n, kspace_view=view, n_skipped=sum(1 for s in skipped if s[1] is not None),
        n_series_without_pixels=sum(1 for s in skipped if s[1] is None),
        tumor_convention="DBC Start/End Slice (1-based) vs slice_index + 1; 1 inside, 0 >= 5 "
                         "slices away, NaN otherwise" if boxes is not None else None)
    return SliceCache(out)
