"""Multi-sequence subjects in the BraTS folder layout, normalized, split and sampled for synthesis.

A subject is a folder ``<root>/<id>/`` holding one NIfTI volume per sequence, named
``<id>_<sequence>.nii.gz`` (BraTS: ``_t1``, ``_t1ce``, ``_t2``, ``_flair``; ``-t1n`` style dashes are
accepted too); ``<id>_seg`` and the simulator's ``<id>_truth`` are read when present. Volumes are
read with :func:`mridomain.io.read_nifti` (so ``(S, H, W)`` stacks of axial slices for BraTS and the
brain simulator), clipped to their 0.5 / 99.5 percentiles inside the head and scaled to [0, 1]
(the paper: "normalized to [0, 1] after min-max clipping"), or, with the ``median`` normalization,
scaled so that the head's median sits where the training subjects' medians sit on the paper's scale
(:func:`median_levels`; a lesion cannot set it). A 4-D sequence (DCE phases, DWI b-values)
has a leading time axis: every volume is ``(T, S, H, W)``, ``T = 1`` for a 3-D sequence.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from mridomain.progress import progress_bar
from mridomain.files import write_npy_atomic

from mridomain.errors import (EmptyInputError, ImageReadError, InvalidArgumentError, MridomainError,
                              SchemaMismatchError)

__all__ = ["Subject", "SynthData", "find_subject_files", "load_subject", "subject_from_files", "load_dataset",
           "normalize_volume", "split_subjects", "silence_mask", "fit_slices", "slice_stack",
           "NORMALIZATION", "NORMALIZATION_KINDS", "median_normalize", "median_levels", "fit_normalization",
           "check_normalization", "BRAIN_FRACTION", "LAYOUT_FILE", "layout_description"]

#: the paper's intensity normalization of every volume (recorded in each run's schema)
NORMALIZATION = {"kind": "percentile", "low": 0.5, "high": 99.5}
#: ``percentile``: the paper's, each volume clipped to its own head percentiles. ``median``: each
#: volume scaled by its head's median to a level per sequence fitted on the training subjects
#: (:func:`median_levels`), so that no lesion sets the scale of a whole volume (docs/synth.md)
NORMALIZATION_KINDS = ("percentile", "median")
#: a slice is used for training when at least this fraction of it is inside the head
BRAIN_FRACTION = 0.05


def normalize_volume(volume: np.ndarray, low: float = NORMALIZATION["low"],
                     high: float = NORMALIZATION["high"]) -> tuple[np.ndarray, tuple[float, float]]:
    """Clip to the ``low`` / ``high`` percentiles of the non-zero voxels and scale to [0, 1].

    Returns the normalized float32 volume and the ``(lo, hi)`` intensities that map to 0 and 1.
    """
    from mridomain.data.intensity import PercentileScaling

    # percentiles of the head only, and the lower end at or below 0 so the (skull-stripped) background stays 0
    scaling = PercentileScaling(low=low, high=high, foreground=True, keep_zero=True)
    bounds = scaling.bounds(volume)
    if bounds is None:
        return np.zeros_like(np.asarray(volume, dtype=np.float32)), (0.0, 1.0)
    lo, hi = bounds
    if hi <= lo:
        hi = lo + 1.0
    return scaling.apply(volume, (lo, hi)), (lo, hi)


def median_normalize(volume: np.ndarray, level: float) -> tuple[np.ndarray, tuple[float, float]]:
    """Scale so that the median of the non-zero voxels maps to ``level``, clip to [0, 1].

    A two-landmark form of Nyul and Udupa's histogram standardization (zero and the median, the
    standard scale learned on training data by :func:`median_levels`). The paper's percentile
    normalization lets the brightest half percent of the head set the scale of the whole volume, and in
    T1Gd and FLAIR that is the enhancing rim or the edema, whose size and strength no other sequence
    shows; the median belongs to the normal brain. Returns the float32 volume and the ``(0, hi)``
    intensities that map to 0 and 1.
    """
    if not 0.0 < float(level) <= 1.0:
        raise InvalidArgumentError(f"median normalization: the level must be in (0, 1], got {level}")
    x = np.asarray(volume, dtype=np.float32)
    head = x[x != 0]
    median = float(np.median(head)) if head.size else 0.0
    if not median > 0:
        return np.zeros_like(x), (0.0, 1.0)
    hi = median / float(level)
    return np.clip(x / hi, 0.0, 1.0).astype(np.float32), (0.0, hi)


def _median_to_high(path: Path, high: float) -> float | None:
    """The head's median over its ``high`` percentile in the volume at ``path``: where the median lands
    on the paper's scale (None for an empty head). A head whose median is not positive (intensities
    already centred, such as z-scores) is an :class:`ImageReadError`: it has no scale to divide by."""
    x = np.asarray(_read_stack(path)[0], dtype=np.float32)
    head = x[(x != 0) & np.isfinite(x)]
    if not head.size:
        return None
    median, top = np.percentile(head, [50.0, high])
    if not median > 0:
        raise ImageReadError(path, f"the head's median intensity is {median:.3g}: the median normalization "
                                   "needs non-negative intensities (use --normalization percentile)")
    return float(median / top)


def median_levels(subjects: Iterable[dict[str, Path]], sequences: Sequence[str],
                  high: float = NORMALIZATION["high"]) -> dict[str, float]:
    """Each sequence's standard level for :func:`median_normalize`: the median over ``subjects`` (each
    a ``{sequence: file}`` dict, the training subjects) of the head's median divided by its ``high``
    percentile. A typical training volume so keeps the paper's scale; a volume whose lesion is larger
    or brighter than typical no longer darkens its whole brain. A sequence no subject has is an
    :class:`EmptyInputError`."""
    ratios: dict[str, list[float]] = {s: [] for s in sequences}
    for files in subjects:
        for seq in sequences:
            path = files.get(seq)
            if path is None:
                continue
            ratio = _median_to_high(Path(path), high)
            if ratio is not None:
                ratios[seq].append(ratio)
    empty = [s for s, r in ratios.items() if not r]
    if empty:
        raise EmptyInputError("median normalization", f"no training subject has {empty} to fit a level on")
    return {s: round(float(np.median(r)), 6) for s, r in ratios.items()}


def fit_normalization(kind: str, subjects: Iterable["Subject"], sequences: Sequence[str]) -> dict:
    """The normalization of ``kind`` as stored in a run's schema, fitted on ``subjects`` (the training
    subjects; only ``median`` fits anything)."""
    if _checked_kind(kind) == "percentile":
        return dict(NORMALIZATION)
    levels = median_levels([s.files for s in subjects], sequences)
    return {"kind": "median", "high": NORMALIZATION["high"], "levels": levels}


def _checked_kind(kind: str | None) -> str:
    if kind not in NORMALIZATION_KINDS:
        raise InvalidArgumentError(f"normalization {kind!r}: choose one of {', '.join(NORMALIZATION_KINDS)}")
    return kind


def check_normalization(normalization: dict | None) -> dict:
    """``normalization`` (None: the paper's) after checking its kind; an unknown kind is an
    :class:`InvalidArgumentError`."""
    if normalization is None:
        return dict(NORMALIZATION)
    if _checked_kind(normalization.get("kind")) == "median" and not isinstance(normalization.get("levels"), dict):
        raise InvalidArgumentError("median normalization without its per-sequence levels")
    return normalization


def _normalize(pixels: np.ndarray, seq: str, normalization: dict | None, path: Path
               ) -> tuple[np.ndarray, tuple[float, float]]:
    normalization = check_normalization(normalization)
    if normalization["kind"] == "percentile":
        return normalize_volume(pixels, normalization.get("low", NORMALIZATION["low"]),
                                normalization.get("high", NORMALIZATION["high"]))
    level = normalization["levels"].get(seq)
    if level is None:
        raise SchemaMismatchError(f"{path}: the median normalization has no level for {seq!r} "
                                  f"(it was fitted on {sorted(normalization['levels'])})")
    return median_normalize(pixels, level)


@dataclass
class Subject:
    """One subject's normalized volumes. ``volumes[seq]`` is ``(T, S, H, W)`` in [0, 1]."""

    subject_id: str
    volumes: dict[str, np.ndarray]
    affine: np.ndarray | None = None
    folder: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    scale: dict[str, tuple[float, float]] = field(default_factory=dict)
    truth: np.ndarray | None = None     # (S, H, W) dominant-tissue labels (simulator only)
    seg: np.ndarray | None = None       # (S, H, W) BraTS labels

    @property
    def available(self) -> tuple[str, ...]:
        """The sequences this subject has (the keys of ``volumes``)."""
        return tuple(self.volumes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(S, H, W) shared by every sequence of the subject."""
        return tuple(next(iter(self.volumes.values())).shape[1:])  # type: ignore[return-value]

    def head_mask(self) -> np.ndarray:
        """Voxels inside the head: non-zero in any sequence, (S, H, W)."""
        return np.any(np.stack([v.max(axis=0) > 0 for v in self.volumes.values()]), axis=0)

    def head_slices(self, min_fraction: float = BRAIN_FRACTION) -> np.ndarray:
        """Slices with at least ``min_fraction`` of their pixels inside the head."""
        return np.flatnonzero(self.head_mask().mean(axis=(1, 2)) >= min_fraction)

    def take_slices(self, slices: Sequence[int]) -> "Subject":
        """The same subject restricted to ``slices`` (volumes, truth and segmentation)."""
        idx = np.asarray(slices, dtype=np.int64)
        return Subject(self.subject_id, {s: v[:, idx] for s, v in self.volumes.items()}, self.affine, self.folder,
                       self.files, self.scale, None if self.truth is None else self.truth[idx],
                       None if self.seg is None else self.seg[idx])


def _sequence_file(folder: Path, sequence: str) -> Path | None:
    stems = [f"{folder.name}_{sequence}", f"{folder.name}-{sequence}"]
    for stem in stems:
        for suffix in (".nii.gz", ".nii"):
            p = folder / f"{stem}{suffix}"
            if p.is_file():
                return p
    matches = sorted(p for p in folder.iterdir() if p.is_file() and any(
        p.name.lower().endswith(f"{sep}{sequence}{suf}") for sep in "_-" for suf in (".nii.gz", ".nii")))
    return matches[0] if matches else None


def find_subject_files(folder: str | Path, sequences: Sequence[str]) -> dict[str, Path | None]:
    """``{sequence: file or None}`` for one subject folder (BraTS naming)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EmptyInputError(folder, "subject folder does not exist")
    return {s: _sequence_file(folder, s) for s in sequences}


def _read_stack(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(S, H, W)`` of a 3-D file or ``(T, S, H, W)`` of a 4-D one (time / b-value last in the file,
    ``pixels[t, s, h, w] = data[w, h, s, t]``, as :func:`mridomain.io.read_nifti` orders 3-D files)."""
    import nibabel as nib

    from mridomain.io import read_nifti

    try:
        header_shape = nib.load(str(path)).shape
    except (nib.filebasedimages.ImageFileError, OSError, ValueError, EOFError):
        header_shape = ()   # read_nifti below names the problem in one line
    if len(header_shape) == 4 and header_shape[3] > 1:
        img = nib.load(str(path))
        try:
            data = np.asarray(img.get_fdata(dtype=np.float32))
        except (OSError, ValueError, EOFError) as exc:
            raise ImageReadError(path, f"not a readable 4-D NIfTI file ({exc})") from None
        return (np.ascontiguousarray(np.transpose(data, (3, 2, 1, 0)), dtype=np.float32),
                np.asarray(img.affine, dtype=np.float64))
    img = read_nifti(path)
    return img.pixels, np.asarray(img.meta["affine"], dtype=np.float64)


#: a layout's description: ``{"sequences": [...], "config": {...}}`` (written by the breast simulator,
#: :mod:`mridomain.sim.breast.exams`); ``mridomain synth train`` takes its sequences and config
#: defaults from it when none are given
LAYOUT_FILE = "dataset.json"


def layout_description(root: str | Path) -> tuple[tuple[str, ...], dict] | None:
    """``(sequences, config overrides)`` of a layout's ``dataset.json``, or None when it has none."""
    import json

    path = Path(root) / LAYOUT_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
        return tuple(str(s).lower() for s in info["sequences"]), dict(info.get("config") or {})
    except (ValueError, KeyError, TypeError) as err:
        raise ImageReadError(path, f"not a valid layout description ({err})") from None


def subject_from_files(files: dict[str, Path], subject_id: str, folder: Path | None = None,
                       normalization: dict | None = None) -> Subject:
    """Read and normalize the given sequence files of one subject; they must share one grid (a
    different shape is an :class:`ImageReadError` naming the file). ``folder``'s ``_truth`` and
    ``_seg`` maps are read when present. ``normalization``: a run's (its schema's), None the paper's."""
    volumes, scale, affine, ref = {}, {}, None, None
    for seq, path in files.items():
        pixels, aff = _read_stack(Path(path))
        finite = np.isfinite(pixels)
        if not finite.all():
            # one NaN spreads through normalization into every loss and every synthesized voxel:
            # the subject is refused (skipped and named when a dataset loads) before any training
            bad = int(finite.size - np.count_nonzero(finite))
            raise ImageReadError(path, f"{bad} of {finite.size} voxels ({100 * bad / finite.size:.2g}%) are NaN "
                                       "or infinite")
        grid = pixels.shape[-3:]
        if ref is None:
            ref, affine = (seq, grid), aff
        elif grid != ref[1]:
            raise ImageReadError(path, f"shape {grid} differs from {ref[0]}'s {ref[1]} "
                                       "(sequences of a subject must be co-registered on one grid)")
        # a 4-D sequence shares one normalization over its time points (enhancement stays a rise)
        vol, scale[seq] = _normalize(pixels, seq, normalization, Path(path))
        volumes[seq] = vol if vol.ndim == 4 else vol[np.newaxis]
    if not volumes:
        raise ImageReadError(folder or Path(subject_id), "no sequence file given")
    extras = {}
    for name in ("truth", "seg"):
        p = _sequence_file(folder, name) if folder is not None else None
        if p is not None:
            arr, _ = _read_stack(p)
            if arr.shape != ref[1]:
                raise ImageReadError(p, f"shape {arr.shape} differs from {ref[0]}'s {ref[1]}")
            extras[name] = np.rint(arr).astype(np.uint8)
    return Subject(subject_id, volumes, affine, folder, {s: Path(p) for s, p in files.items()}, scale,
                   extras.get("truth"), extras.get("seg"))


def load_subject(folder: str | Path, sequences: Sequence[str], allow_missing: bool = False,
                 normalization: dict | None = None) -> Subject:
    """Read and normalize one subject folder (``normalization``: a run's, None the paper's).

    A missing sequence file is an :class:`ImageReadError` naming the file expected, unless
    ``allow_missing`` (an incomplete protocol: the sequence is then simply unavailable).
    """
    folder = Path(folder)
    files = find_subject_files(folder, sequences)
    missing = [s for s, p in files.items() if p is None]
    if missing and not allow_missing:
        raise ImageReadError(folder / f"{folder.name}_{missing[0]}.nii.gz",
                             f"missing sequence file ({', '.join(missing)} not found in {folder.name})")
    present = {s: p for s, p in files.items() if p is not None}
    if not present:
        raise ImageReadError(folder, f"no sequence file of {list(sequences)} found")
    return subject_from_files(present, folder.name, folder, normalization)


def _subject_folders(root: Path, sequences: Sequence[str]) -> list[Path]:
    if not root.is_dir():
        raise EmptyInputError(root, "data folder does not exist")
    if any(_sequence_file(root, s) for s in sequences):
        return [root]  # the folder is itself one subject
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [p for p in folders if any(_sequence_file(p, s) for s in sequences)]


@dataclass
class SynthData:
    """Subjects of one sequence set, plus what could not be read (``skipped``: (path, reason))."""

    sequences: tuple[str, ...]
    subjects: list[Subject]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    root: Path | None = None
    normalization: dict = field(default_factory=lambda: dict(NORMALIZATION))

    def __len__(self) -> int:
        return len(self.subjects)

    @property
    def timepoints(self) -> dict[str, int]:
        """Time points of each sequence (1 for 3-D sequences), the same in every subject."""
        out: dict[str, int] = {}
        for sub in self.subjects:
            for seq, vol in sub.volumes.items():
                if out.setdefault(seq, vol.shape[0]) != vol.shape[0]:
                    raise SchemaMismatchError(f"{sub.subject_id}: {seq} has {vol.shape[0]} time points, "
                                              f"other subjects {out[seq]}")
        return {s: out.get(s, 1) for s in self.sequences}

    def subset(self, ids: Iterable[str]) -> "SynthData":
        """The subjects with these ids, same sequences and root, with an empty skipped list."""
        keep = set(ids)
        return SynthData(self.sequences, [s for s in self.subjects if s.subject_id in keep], [], self.root,
                         self.normalization)

    def by_id(self, subject_id: str) -> Subject:
        """The subject ``subject_id``; one not in the data is an :class:`InvalidArgumentError`."""
        for s in self.subjects:
            if s.subject_id == subject_id:
                return s
        raise InvalidArgumentError(f"no subject {subject_id!r} in {self.root}")

    def summary(self) -> str:
        """Lines for the terminal: subjects read, how many have each sequence, and each skipped item with why."""
        n_avail = {s: sum(s in sub.volumes for sub in self.subjects) for s in self.sequences}
        lines = [f"{len(self.subjects)} subjects from {self.root}; available: "
                 + ", ".join(f"{s} {n}" for s, n in n_avail.items())]
        lines += [f"  skipped {p}: {why}" for p, why in self.skipped]
        return "\n".join(lines)


def _cache_subject(sub: Subject, cache: Path) -> Subject:
    """Write the subject's freshly read volumes as float16 ``.npy`` under ``cache`` and swap them for
    memory maps of those files."""
    cache.mkdir(parents=True, exist_ok=True)
    for seq, vol in list(sub.volumes.items()):
        path = cache / f"{sub.subject_id}_{seq}.npy"
        write_npy_atomic(path, vol.astype(np.float16))
        sub.volumes[seq] = np.load(path, mmap_mode="r")
    return sub


def _cached_subject(folder: Path, sequences: Sequence[str], allow_missing: bool, cache: Path,
                    normalization: dict) -> Subject | None:
    """A subject whose normalized volumes are all in ``cache`` already, without re-reading NIfTI."""
    import json

    meta = cache / f"{folder.name}.json"
    if not meta.exists():
        return None
    try:
        info = json.loads(meta.read_text())
    except ValueError:
        return None
    if info.get("sequences") != list(sequences) or info.get("allow_missing") != allow_missing:
        return None
    if info.get("normalization", NORMALIZATION) != normalization:
        return None   # cached under another normalization (a cache from before the field: the paper's)
    if info.get("stamps") != _stamps(find_subject_files(folder, sequences)):
        return None   # a source file changed, appeared or vanished since it was cached
    vols = {s: np.load(cache / f"{folder.name}_{s}.npy", mmap_mode="r") for s in info["available"]}
    extras = {k: np.load(cache / f"{folder.name}_{k}.npy") for k in ("truth", "seg")
              if (cache / f"{folder.name}_{k}.npy").exists()}
    return Subject(folder.name, vols, np.asarray(info["affine"]), folder,
                   {s: Path(p) for s, p in info["files"].items()},
                   {s: tuple(v) for s, v in info["scale"].items()}, extras.get("truth"), extras.get("seg"))


def _stamps(files: dict[str, Path | None]) -> dict[str, list | None]:
    return {s: None if p is None else [p.stat().st_size, p.stat().st_mtime_ns] for s, p in files.items()}


def _write_cache_meta(sub: Subject, sequences: Sequence[str], allow_missing: bool, cache: Path,
                      normalization: dict) -> None:
    import json

    for k in ("truth", "seg"):
        if getattr(sub, k) is not None:
            np.save(cache / f"{sub.subject_id}_{k}.npy", getattr(sub, k))
    (cache / f"{sub.subject_id}.json").write_text(json.dumps({
        "sequences": list(sequences), "allow_missing": allow_missing, "available": list(sub.available),
        "affine": np.asarray(sub.affine).tolist(), "files": {s: str(p) for s, p in sub.files.items()},
        "scale": sub.scale, "normalization": normalization,
        "stamps": _stamps(find_subject_files(sub.folder, sequences))}))


def _normalization_key(normalization: dict) -> str:
    """A folder name for one normalization's cache: its kind and a hash of its settings."""
    import hashlib
    import json

    digest = hashlib.sha1(json.dumps(normalization, sort_keys=True).encode()).hexdigest()[:10]
    return f"{normalization['kind']}-{digest}"


def load_dataset(root: str | Path, sequences: Sequence[str], allow_missing: bool = False,
                 progress: bool = True, cache: str | Path | None = None,
                 normalization: dict | None = None) -> SynthData:
    """Every subject folder under ``root`` (or ``root`` itself when it is one subject).

    A subject that cannot be read (a missing sequence file unless ``allow_missing``, a corrupt file,
    mismatched shapes) is skipped and reported in ``skipped``; the others load. No readable subject
    at all is an :class:`EmptyInputError`. With ``cache`` (a folder) the normalized volumes are kept
    there as float16 ``.npy`` files and memory-mapped, so a dataset larger than memory trains (the
    operating system pages slices in); later loads reuse the cache without reading the NIfTI again.
    ``normalization``: a run's (its schema's; :func:`fit_normalization`), None the paper's.
    """
    normalization = check_normalization(normalization)
    root = Path(root)
    sequences = tuple(s.lower() for s in sequences)
    folders = _subject_folders(root, sequences)
    subjects, skipped = [], []
    cache_dir = Path(cache) if cache is not None else None
    if cache_dir is not None and normalization["kind"] != "percentile":
        # beside the paper's, not over it: training reads the data with both (train), and each keeps its cache
        cache_dir = cache_dir / _normalization_key(normalization)
    for folder in progress_bar(folders, desc="load subjects", unit="subject", enabled=progress):
        try:
            sub = (_cached_subject(folder, sequences, allow_missing, cache_dir, normalization) if cache_dir
                   else None)
            if sub is None:
                sub = load_subject(folder, sequences, allow_missing=allow_missing, normalization=normalization)
                if cache_dir is not None:
                    sub = _cache_subject(sub, cache_dir)
                    _write_cache_meta(sub, sequences, allow_missing, cache_dir, normalization)
            subjects.append(sub)
        except MridomainError as err:
            skipped.append((str(getattr(err, "path", folder)), getattr(err, "reason", str(err))))
    if not subjects:
        detail = f" ({len(skipped)} skipped, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise EmptyInputError(root, f"no subject with sequence files {list(sequences)}{detail}")
    return SynthData(sequences, subjects, skipped, root, normalization)


def split_subjects(ids: Sequence[str], fractions: Sequence[float] = (0.7, 0.1, 0.2),
                   seed: int = 0) -> dict[str, list[str]]:
    """Deterministic subject split (``mridomain.data.split_patients``), as lists per split."""
    from mridomain.data.splits import split_patients

    assignment = split_patients(ids, fractions, seed)
    return {name: sorted(i for i, s in assignment.items() if s == name) for name in ("train", "val", "test")}


def silence_mask(n_subjects: int, n_sequences: int, silence: tuple[int, int], seed: int,
                 available: np.ndarray | None = None) -> np.ndarray:
    """``(N, S)`` availability after silencing ``silence[0]..silence[1]`` sequences per subject.

    The paper's incomplete-protocol setting: each subject loses a uniformly drawn number of its
    sequences, once (a fixed incomplete subset, not a per-step augmentation). A subject always keeps
    at least one of the sequences it had.
    """
    rng = np.random.default_rng([seed, 11])
    avail = np.ones((n_subjects, n_sequences), bool) if available is None else np.asarray(available, bool).copy()
    lo, hi = silence
    for n in range(n_subjects):
        have = np.flatnonzero(avail[n])
        k = int(rng.integers(lo, hi + 1))
        k = min(k, len(have) - 1)
        if k > 0:
            avail[n, rng.choice(have, size=k, replace=False)] = False
    return avail


def fit_slices(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop or zero-pad the last two axes of ``x`` to ``size``."""
    out = x
    for axis, want in zip((-2, -1), size):
        have = out.shape[axis]
        if have > want:
            start = (have - want) // 2
            out = np.take(out, np.arange(start, start + want), axis=axis)
        elif have < want:
            pad = [(0, 0)] * out.ndim
            before = (want - have) // 2
            pad[axis] = (before, want - have - before)
            out = np.pad(out, pad)
    return out


def slice_stack(volume: np.ndarray, z: int, channels: int) -> np.ndarray:
    """``(T, channels, H, W)`` around slice ``z`` of a ``(T, S, H, W)`` volume: one slice (2-D) or
    the three adjacent slices (2.5-D), repeating the edge slice at the ends of the volume."""
    half = channels // 2
    idx = np.clip(np.arange(z - half, z + half + 1), 0, volume.shape[1] - 1)
    return volume[:, idx]
