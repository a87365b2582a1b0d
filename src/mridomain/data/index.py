"""Archive indexer: one row of acquisition parameters per DICOM series, from headers only.

The walk streams directory entries with :func:`os.scandir` (no per-file ``stat``); headers are
read with :func:`mridomain.parallel.parallel_map`. Plain little-endian files go through
:mod:`mridomain.data._fastheader`, which walks element headers with :mod:`struct` and decodes only
the wanted tags, through io's one value decoder (``bench/index_bench.py``: 2-3x faster than the
pydicom path inside ``build_index`` with a cold and with a warm page cache); everything else
(enhanced MR, big endian, deflate, preamble-less, odd files) goes through
``mridomain.io.read_header_fields``. Pixel data is never read, but its announced length is checked
against the file size by io's one truncation check, so a truncated download is reported at index
time. Every unusable file is recorded with its one-line
reason instead of stopping the run.
"""
from __future__ import annotations

import json
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mridomain.data.schema import DEFAULT_IAPS, IAPSpec, normalize_iaps
from mridomain.errors import EmptyInputError, MridomainError, SchemaMismatchError
from mridomain.files import write_skip_report
from mridomain.io.fields import HEADER_KEYWORDS, VOLUME_KEYWORDS
from mridomain.io.walk import iter_file_paths
from mridomain.parallel import default_workers, parallel_map

INDEX_VERSION = 1
#: series_uid of an image that has no SeriesInstanceUID: this prefix, then its path.
NO_SERIES_UID = "no-series-uid:"

#: Header fields every index reads: the ``read_header_fields`` contract of docs/architecture.md.
BASE_KEYWORDS: tuple[str, ...] = HEADER_KEYWORDS
# Fields that legitimately differ from slice to slice: never part of the per-series value.
_PER_SLICE = frozenset({"SOPInstanceUID", "InstanceNumber", "ImagePositionPatient", "SliceLocation",
                        "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"})


@dataclass
class IndexResult:
    """What :func:`build_index` found.

    ``table`` has one row per series, sorted by (patient_id, series_uid); ``skipped`` lists every
    file that was not used with its one-line reason; ``warnings`` lists series whose slices
    disagreed on an IAP (the most common value was kept).
    """

    table: pd.DataFrame
    skipped: pd.DataFrame
    warnings: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=["series_uid", "patient_id", "iap", "chosen", "values"]))
    archive: Path | None = None
    n_files: int = 0
    iaps: tuple[IAPSpec, ...] = DEFAULT_IAPS

    @property
    def n_series(self) -> int:
        """Series (volumes) indexed."""
        return len(self.table)

    @property
    def n_patients(self) -> int:
        """Distinct patients indexed."""
        return int(self.table["patient_id"].nunique()) if len(self.table) else 0


# ----------------------------------------------------------------------------------------------
# walking


def iter_files(root: str | Path) -> Iterator[str]:
    """Yield every regular file below ``root`` (any depth), streaming, as strings.

    :func:`mridomain.io.iter_file_paths`: ``os.scandir`` entries carry the file type, so millions
    of files cost no ``stat`` each; hidden entries (``.name``) are ignored; directory symlinks are
    not followed (loops); each folder's entries come in name order.
    """
    return iter_file_paths(root)


# ----------------------------------------------------------------------------------------------
# per-file worker

_EXTRA: tuple[str, ...] = ()  # keywords beyond the io contract, for the pydicom path
_KEY_INTERN: dict[tuple, tuple] = {}
_WANTED: dict[int, tuple[str, str]] | None = None  # fast reader: tag -> (keyword, VR)


_CONFIGURED: tuple | None = None


def configure_reader(keywords: Sequence[str], extra: Sequence[str], fast: bool = True) -> None:
    """Which tags the per-file reader reads, and by which path (set once per process)."""
    global _EXTRA, _WANTED, _CONFIGURED
    if _CONFIGURED == (tuple(keywords), tuple(extra), fast):
        return
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    wanted_keywords = tuple(dict.fromkeys((*keywords, *extra)))
    _EXTRA = tuple(k for k in wanted_keywords if k not in HEADER_KEYWORDS)
    tags = {k: tag_for_keyword(k) for k in wanted_keywords}
    # The fast reader needs every keyword's tag and VR; an unknown (e.g. private) keyword or a
    # sequence sends every file through pydicom instead.
    _WANTED = None
    if fast and None not in tags.values() and all(dictionary_VR(t) != "SQ" for t in tags.values()):
        _WANTED = {t: (k, dictionary_VR(t)) for k, t in tags.items()}
    _CONFIGURED = (tuple(keywords), tuple(extra), fast)


@dataclass(frozen=True)
class _RecordReader:
    """The per-file work of :func:`build_index` as one picklable callable: configures the reader
    in whichever process runs it (a pool worker or, with one worker, the caller's own)."""

    keywords: tuple[str, ...]
    extra: tuple[str, ...]
    fast: bool = True
    keep_kinds: tuple[str, ...] = ()

    def __call__(self, path: str) -> tuple[str, tuple | None, str | None]:
        configure_reader(self.keywords, self.extra, self.fast)
        return _read_record(path, self.keep_kinds)


def _slice_position(fields: dict[str, Any]) -> float | None:
    """Position along the slice normal (mm), the order slices have in space."""
    ipp, iop = fields.get("ImagePositionPatient"), fields.get("ImageOrientationPatient")
    try:
        if ipp is None or iop is None or len(ipp) != 3 or len(iop) != 6:
            return None
        r0, r1, r2, c0, c1, c2 = (float(v) for v in iop)
        # normal = row x column direction cosines (plain floats: numpy costs ~50 us per call here)
        n0, n1, n2 = r1 * c2 - r2 * c1, r2 * c0 - r0 * c2, r0 * c1 - r1 * c0
        return n0 * float(ipp[0]) + n1 * float(ipp[1]) + n2 * float(ipp[2])
    except (TypeError, ValueError):
        return None


def _read_record(path: str, keep_kinds: Sequence[str] = ()) -> tuple[str, tuple | None, str | None]:
    """Worker task: (path, record, None) or (path, None, reason).

    The record is what grouping needs, computed here so the single main process only does dict
    lookups: (series_uid, sop_uid, instance, position, frames, has_pixels, key) where ``key`` is a
    hashable, sorted tuple of the series-level fields (identical for most slices of a series).
    Phase, derived, localizer and secondary-capture images are refused here (with their reason)
    unless their kind is in ``keep_kinds``.
    """
    from mridomain.io.fields import is_mosaic
    from mridomain.io.kinds import kind_problem

    path, fields, reason = _read_one(path)
    if fields is None:
        return path, None, reason
    problem = kind_problem(fields, keep_kinds)
    if problem is not None:
        return path, None, problem
    has_pixels = bool(fields.pop("has_pixels", True))
    series_uid = str(fields.get("SeriesInstanceUID") or "")
    if not series_uid:
        # An image without the (type 1) SeriesInstanceUID is still an image: its own series.
        series_uid = fields["SeriesInstanceUID"] = f"{NO_SERIES_UID}{path}"
    key = tuple((k, _hashable(v)) for k, v in sorted(fields.items())
                if k not in _PER_SLICE and not k.startswith("_"))
    # One object per distinct key: pickle's memo then sends it once per chunk of results (slices
    # of a series share it), which keeps inter-process traffic from dominating.
    key = _KEY_INTERN.setdefault(key, key)
    if len(_KEY_INTERN) > 100_000:
        _KEY_INTERN.clear()
    frames = _as_int(fields.get("NumberOfImagesInMosaic")) or _as_int(fields.get("NumberOfFrames")) or 1
    # Every mosaic of a series is one whole volume, all at the position of its first tile.
    position = 0.0 if is_mosaic(fields) else fields.get("_position")
    return path, (series_uid, str(fields.get("SOPInstanceUID") or ""), _as_int(fields.get("InstanceNumber")),
                  position, max(frames, 1), has_pixels, key), None


def _read_one(path: str) -> tuple[str, dict[str, Any] | None, str | None]:
    """Header of one file -> (path, fields, None) or (path, None, reason). Never raises."""
    from mridomain.io.fields import is_mosaic

    if _WANTED is not None:
        from mridomain.data._fastheader import Fallback, read_fields_fast

        try:
            fields, reason = read_fields_fast(path, _WANTED)
        except Fallback:
            pass
        except OSError as err:
            return path, None, f"cannot open ({err.strerror or err})"
        else:
            if fields is None:
                return path, None, reason
            if not is_mosaic(fields):  # a mosaic's slice count is in its private CSA header: pydicom
                return _check_fields(path, fields)
    return _read_one_pydicom(path)


def _check_fields(path: str, fields: dict[str, Any]) -> tuple[str, dict[str, Any] | None, str | None]:
    """Shared checks of the fast reader's fields (pixel bookkeeping included)."""
    from mridomain.io.pixel_checks import pixel_data_problem

    length, room = fields.pop("_pixel_length"), fields.pop("_pixel_room")
    transfer, fragments = fields.pop("_transfer_syntax"), fields.pop("_fragments")
    if not fields.get("Rows") or not fields.get("Columns"):
        sop = fields.get("SOPClassUID") or "unknown SOP class"
        return path, None, f"not an image (no Rows/Columns; SOP class {sop})"
    fields["has_pixels"] = length is not None
    if length is not None:
        problem = pixel_data_problem(length, room, fields, transfer, fragments)
        if problem is not None:
            return path, None, problem
    for kw in _EXTRA:
        fields.setdefault(kw, None)
    fields["_position"] = _slice_position(fields)
    return path, fields, None


def _read_one_pydicom(path: str) -> tuple[str, dict[str, Any] | None, str | None]:
    """The general reader (preamble-less, big endian, deflate, enhanced MR, odd files):
    ``mridomain.io.read_header_fields``, which raises one-line ImageReadErrors for bad files."""
    from mridomain.io import read_header_fields

    try:
        # pydicom warns about every odd value of a real archive; the reason a file is refused is
        # recorded instead, and the filter is local to this read (never the caller's process)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fields = read_header_fields(path, extra=_EXTRA, require_pixels=False)
    except MridomainError as err:
        return path, None, getattr(err, "reason", None) or str(err)
    except Exception as err:  # noqa: BLE001 - a corrupt file may raise anything; record and go on
        msg = " ".join(str(err).split())
        return path, None, f"corrupt DICOM header ({type(err).__name__}: {msg})"[:300]
    fields["_position"] = _slice_position(fields)
    return path, fields, None


# ----------------------------------------------------------------------------------------------
# grouping


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, float) and np.isnan(value):
        return "nan"
    return value


def _unhash(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_unhash(v) for v in value]
    return value


def _weighted_mode(pairs: list[tuple[Any, int]]) -> tuple[Any, dict[Any, int]]:
    """Most common value of (value, count) pairs; ties go to the value met first (slice order)."""
    counts: dict[Any, int] = {}
    for v, n in pairs:
        counts[v] = counts.get(v, 0) + n
    best = max(counts.values())
    return next(v for v, n in counts.items() if n == best), counts


def _fmt(value: Any) -> str:
    return "None" if value is None else str(_unhash(value))


@dataclass
class _FileRec:
    path: str
    position: float | None
    instance: int | None
    frames: int
    sop: str
    key: tuple
    has_pixels: bool = True


def _decodes_among_copies(rec: _FileRec, copies: dict[str, list[_FileRec]]) -> bool:
    """Whether ``rec``'s pixels decode; True without decoding when it has no copy to choose from."""
    if not rec.sop or len(copies.get(rec.sop, ())) < 2 or not rec.has_pixels:
        return True
    from mridomain.io import read_dicom

    try:
        read_dicom(rec.path)
    except Exception:  # noqa: BLE001 - any failure to decode means: prefer another copy
        return False
    return True


def _usable_files(recs: list[_FileRec], skipped: list[tuple[str, str]]) -> list[_FileRec]:
    """The files of one series that count: one per SOPInstanceUID (a copy with pixels before a
    header-only one, then the first path), and only those with pixels when any has them. The
    others go to ``skipped`` with their reason."""
    # Files whose pixel data cannot be decoded never get here (read time refuses them), so among
    # copies of one instance the one kept has complete pixel bookkeeping.
    # Headers cannot show damage inside a compressed stream, so among copies of one instance the
    # pixels are decoded (only here, where copies exist) and the first copy that decodes is kept.
    copies: dict[str, list[_FileRec]] = {}
    for r in recs:
        if r.sop:
            copies.setdefault(r.sop, []).append(r)
    seen: dict[str, str] = {}
    unique = []
    for r in sorted(recs, key=lambda r: (not r.has_pixels, not _decodes_among_copies(r, copies), r.path)):
        if r.sop and r.sop in seen:
            skipped.append((r.path, f"duplicate SOPInstanceUID of {seen[r.sop]}"))
            continue
        if r.sop:
            seen[r.sop] = r.path
        unique.append(r)
    if any(r.has_pixels for r in unique) and not all(r.has_pixels for r in unique):
        for r in unique:
            if not r.has_pixels:
                skipped.append((r.path, "no pixel data (a header without its pixels, in a series "
                                        "whose other files have them)"))
        unique = [r for r in unique if r.has_pixels]
    return unique


def _sort_files(recs: list[_FileRec]) -> list[_FileRec]:
    """Spatial order along the slice normal when every slice has a position, else InstanceNumber."""
    big = float("inf")
    if all(r.position is not None for r in recs):
        return sorted(recs, key=lambda r: (r.position, r.instance if r.instance is not None else big,
                                           r.path))
    return sorted(recs, key=lambda r: (r.instance if r.instance is not None else big, r.path))


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def build_index(archive: str | Path, out: str | Path | None = None, workers: int | None = None,
                progress: bool = True, iaps: Sequence[IAPSpec] = DEFAULT_IAPS,
                extra: Sequence[str] = (), fast_reader: bool = True,
                keep_kinds: Sequence[str] = ()) -> IndexResult:
    """Read the headers of every file below ``archive`` into one row of IAPs per series volume.

    Args:
        archive: folder tree (any depth) or a single file.
        out: parquet file to write (the ``files`` column is a list column); when anything was
            skipped a ``<stem>.skipped.csv`` report is written beside it, and a
            ``<stem>.warnings.csv`` when slices of a series disagreed on an IAP.
        workers: processes (default: all cores).
        progress: show tqdm progress bars.
        iaps: IAP specs to compute (``mridomain.data.schema``).
        extra: additional DICOM keywords to keep as ``raw_<Keyword>`` columns.
        fast_reader: read ordinary little-endian files with the struct-based header walker
            (``bench/index_bench.py``: faster on cold and warm disks); False reads every file
            with pydicom.
        keep_kinds: image kinds to index although they are not anatomical images
            (``mridomain.io.IMAGE_KINDS``: phase, derived, localizer, secondary capture); by
            default they are skipped with their reason.

    A series whose images repeat slice positions (DWI b-values, DCE time points, echoes,
    repeated acquisitions, Siemens mosaics) gives one row per volume (``io.volume_labels``). Image
    headers without pixel data (header dumps) are rows with ``has_pixels`` False, which
    ``prepare_cache`` skips; a copy of an instance (same SOPInstanceUID) is dropped in favour of
    one with pixels.

    Returns:
        :class:`IndexResult`; rows sorted by (patient_id, series_uid, volume), files in slice order.

    Raises:
        EmptyInputError: the archive does not exist, holds no files, or no readable DICOM image.
    """
    from mridomain.files import check_output_file
    from mridomain.io.kinds import check_keep_kinds

    archive = Path(archive)
    if not archive.exists():
        raise EmptyInputError(archive, "no such file or folder")
    if out is not None:
        check_output_file(out, "index")
    keep_kinds = check_keep_kinds(keep_kinds)
    iaps = tuple(iaps)
    used_keywords = _used_keywords(iaps, extra)
    read_keywords = tuple(dict.fromkeys(BASE_KEYWORDS + used_keywords))

    files = _scan_files(archive, progress)
    skipped: list[tuple[str, str]] = []
    reader = _RecordReader(read_keywords, tuple(extra), fast_reader, keep_kinds)
    series, key_fields = _read_series(files, reader, default_workers(workers), progress, skipped)
    if not series:
        first = sorted(skipped)[0] if skipped else ("", "nothing readable")
        raise EmptyInputError(archive, f"none of the {len(files)} files is a readable DICOM image "
                                       f"(e.g. {Path(first[0]).name}: {first[1]})")

    rows, warn_rows = [], []
    summary_keywords = tuple(dict.fromkeys(("PatientID", "StudyInstanceUID", "SeriesDescription",
                                            "Modality") + used_keywords))
    normalized_cache: dict[tuple, dict[str, Any]] = {}
    for uid, recs in series.items():
        _series_rows(uid, _usable_files(recs, skipped), key_fields, normalized_cache, iaps, used_keywords,
                     summary_keywords, rows, warn_rows)
    result = IndexResult(table=_index_table(rows, iaps), skipped=pd.DataFrame(sorted(skipped), columns=["path", "reason"]),
                         warnings=_warnings_table(warn_rows), archive=archive.resolve(), n_files=len(files),
                         iaps=iaps)
    if out is not None:
        write_index(result, out)
    return result


def _scan_files(archive: Path, progress: bool) -> list[str]:
    """Every file below ``archive``, sorted; a one-line error when there is none."""
    from mridomain.progress import progress_bar

    files = list(progress_bar(iter_files(archive), desc="scanning", unit=" files", enabled=progress,
                              dynamic_ncols=True))
    if not files:
        raise EmptyInputError(archive, "no files found")
    return sorted(files)


def _read_series(files: list[str], reader: "_RecordReader", workers: int, progress: bool,
                 skipped: list[tuple[str, str]]) -> tuple[dict[str, list["_FileRec"]], dict[tuple, dict[str, Any]]]:
    """Read every file's header in parallel: the file records of each series, and each distinct
    header key's fields (``key -> {keyword: hashable value}``). Unreadable files go to ``skipped``."""
    series: dict[str, list[_FileRec]] = defaultdict(list)
    key_fields: dict[tuple, dict[str, Any]] = {}
    for path, rec, reason in parallel_map(reader, files, total=len(files), workers=workers,
                                          progress=progress, desc="reading headers", unit=" files"):
        if rec is None:
            skipped.append((path, reason or "unreadable"))
            continue
        uid, sop, instance, position, frames, has_pixels, key = rec
        if key not in key_fields:
            key_fields[key] = dict(key)
        series[uid].append(_FileRec(path=path, position=position, instance=instance, frames=frames,
                                    sop=sop, key=key, has_pixels=has_pixels))
    return series, key_fields


def _series_rows(uid: str, recs: list["_FileRec"], key_fields: dict[tuple, dict[str, Any]],
                 normalized_cache: dict[tuple, dict[str, Any]], iaps: tuple[IAPSpec, ...],
                 used_keywords: tuple[str, ...], summary_keywords: tuple[str, ...],
                 rows: list[dict[str, Any]], warn_rows: list[dict[str, Any]]) -> None:
    """One index row per volume of a series (appended to ``rows``); an IAP on which the volume's
    slices disagree adds a row to ``warn_rows``."""
    from mridomain.io.kinds import volume_labels

    labels, volume_by = volume_labels([r.position for r in recs],
                                      [{**key_fields[r.key], "InstanceNumber": r.instance} for r in recs])
    n_volumes = max(labels) + 1
    for volume in range(n_volumes):
        members = _sort_files([r for r, v in zip(recs, labels) if v == volume])
        # Distinct header keys in slice order with their slice counts: modes are weighted
        # tallies over a handful of keys instead of per-file work.
        key_counts: dict[tuple, int] = {}
        for r in members:
            key_counts[r.key] = key_counts.get(r.key, 0) + 1
        for key in key_counts:
            if key not in normalized_cache:
                normalized_cache[key] = normalize_iaps({k: _unhash(v) for k, v in key}, iaps)
        raw_modes = {kw: _unhash(_weighted_mode([(key_fields[k].get(kw), n)
                                                 for k, n in key_counts.items()])[0])
                     for kw in summary_keywords}
        by_value = _unhash(key_fields[members[0].key].get(volume_by)) if volume_by in VOLUME_KEYWORDS else None
        row: dict[str, Any] = {
            "patient_id": str(raw_modes["PatientID"] or ""),
            "study_uid": str(raw_modes["StudyInstanceUID"] or ""),
            "series_uid": uid,
            "series_description": str(raw_modes["SeriesDescription"] or ""),
            "modality": str(raw_modes["Modality"] or ""),
            "n_slices": int(sum(r.frames for r in members)),
            "files": [r.path for r in members],
            "has_pixels": all(r.has_pixels for r in members),
            "volume": volume,
            "n_volumes": n_volumes,
            "volume_key": (f"{volume_by}={_fmt(by_value)}" if volume_by in VOLUME_KEYWORDS
                           else f"{volume_by} {volume + 1}" if volume_by else ""),
        }
        for kw in used_keywords:
            row[f"raw_{kw}"] = raw_modes[kw]
        for spec in iaps:
            chosen, counts = _weighted_mode([(_hashable(normalized_cache[k].get(spec.name)), n)
                                             for k, n in key_counts.items()])
            if len(counts) > 1:
                warn_rows.append({
                    "series_uid": uid, "patient_id": row["patient_id"], "iap": spec.name,
                    "chosen": _fmt(chosen),
                    "values": "; ".join(f"{_fmt(v)} x{n}" for v, n in
                                        sorted(counts.items(), key=lambda kv: (-kv[1], _fmt(kv[0]))))})
            row[spec.name] = _unhash(chosen)
        rows.append(row)


def _index_table(rows: list[dict[str, Any]], iaps: tuple[IAPSpec, ...]) -> pd.DataFrame:
    """The index rows sorted by (patient, series, volume), continuous IAPs as floats."""
    table = pd.DataFrame(rows).sort_values(["patient_id", "series_uid", "volume"], kind="stable")
    table = table.reset_index(drop=True)
    for spec in iaps:
        if spec.kind == "continuous":
            table[spec.name] = pd.to_numeric(table[spec.name], errors="coerce").astype(float)
    return table


def _warnings_table(warn_rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Slices of a series that disagreed on an IAP, sorted by patient, series and IAP."""
    warnings_df = pd.DataFrame(warn_rows, columns=["series_uid", "patient_id", "iap", "chosen", "values"])
    return warnings_df.sort_values(["patient_id", "series_uid", "iap"], kind="stable").reset_index(drop=True)


def _used_keywords(iaps: Iterable[IAPSpec], extra: Sequence[str]) -> tuple[str, ...]:
    kws: list[str] = []
    for spec in iaps:
        kws.extend(spec.keywords)
    kws.extend(extra)
    return tuple(dict.fromkeys(kws))


# ----------------------------------------------------------------------------------------------
# persistence


def report_paths(out: str | Path) -> tuple[Path, Path]:
    """(skipped.csv, warnings.csv) written next to an index parquet."""
    out = Path(out)
    stem = out.name[: -len(".parquet")] if out.name.endswith(".parquet") else out.name
    return out.with_name(stem + ".skipped.csv"), out.with_name(stem + ".warnings.csv")


def _arrow_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Coerce columns pyarrow cannot type (e.g. a tag that is a number in one series, text in
    another) to strings, so one odd header never stops the index from being written."""
    import pyarrow as pa

    df = df.copy()
    for col in df.columns:
        if col == "files":
            continue
        try:
            pa.array(df[col].tolist())
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            df[col] = [None if v is None else str(v) for v in df[col]]
    return df


def write_index(result: IndexResult, out: str | Path) -> Path:
    """Write the index parquet (plus skipped / warnings CSV reports when non-empty)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(_arrow_safe(result.table), preserve_index=False)
    meta = {
        "version": INDEX_VERSION,
        "archive": str(result.archive) if result.archive else None,
        "n_files": result.n_files,
        "n_skipped": len(result.skipped),
        "iaps": [{"name": s.name, "kind": s.kind, "unit": s.unit} for s in result.iaps],
    }
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           b"mridomain.index": json.dumps(meta).encode()})
    pq.write_table(table, out)
    skipped_path, warnings_path = report_paths(out)
    for df, path in ((result.skipped, skipped_path), (result.warnings, warnings_path)):
        write_skip_report(df, path)  # removes a stale report from an earlier run when empty
    return out


def index_metadata(path: str | Path) -> dict[str, Any]:
    """The ``mridomain.index`` metadata stored in an index parquet ({} when absent)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(b"mridomain.index")
    try:
        return json.loads(raw) if raw else {}
    except json.JSONDecodeError as err:
        raise SchemaMismatchError(f"{path}: corrupt mridomain.index metadata ({err.msg})") from None


def load_index(path: str | Path) -> pd.DataFrame:
    """Read an index parquet back: ``files`` as python lists of str, rows as written."""
    path = Path(path)
    if not path.exists():
        raise EmptyInputError(path, "index file not found")
    try:
        df = pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise EmptyInputError(path, f"not a readable parquet index ({type(err).__name__})") from err
    if "files" not in df.columns or "series_uid" not in df.columns:
        raise SchemaMismatchError(f"{path}: not an mridomain index (needs series_uid and files columns)")
    df["files"] = [list(map(str, f)) if f is not None else [] for f in df["files"]]
    for col in df.columns:
        if col.startswith("raw_"):
            df[col] = [v.tolist() if isinstance(v, np.ndarray) else v for v in df[col]]
    return df


# ----------------------------------------------------------------------------------------------
# printing


def print_index_summary(result: IndexResult, out: str | Path | None = None, max_rows: int = 40,
                        console: Any = None) -> None:
    """Print the IAP table of an index with rich: series/patient counts, one line per series
    (value counts per IAP instead when there are more than ``max_rows`` series), skipped files."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        import sys

        # Piped output gets rich's 80-column default, too narrow for 15 columns: widen it.
        console = Console() if sys.stdout.isatty() else Console(width=200)
    t = result.table
    iap_names = [s.name for s in result.iaps if s.name in t.columns]
    console.print(f"[bold]{result.n_series} series[/bold] from [bold]{result.n_patients} patients[/bold] "
                  f"({result.n_files} files read, {len(result.skipped)} skipped)"
                  + (f" -> {out}" if out else ""))
    if len(t) <= max_rows:
        table = Table(show_lines=False, header_style="bold")
        for col in ["patient", "series", "slices", *iap_names]:
            table.add_column(col, overflow="fold")
        for _, r in t.iterrows():
            desc = r["series_description"] or r["series_uid"][-12:]
            if r.get("volume_key"):
                desc = f"{desc} [{r['volume_key']}]"
            table.add_row(str(r["patient_id"]), str(desc), str(r["n_slices"]),
                          *[_show(r[n]) for n in iap_names])
        console.print(table)
    else:
        table = Table(title=f"IAP values over {len(t)} series", header_style="bold")
        table.add_column("IAP")
        table.add_column("values (series count)", overflow="fold")
        for name in iap_names:
            col = t[name]
            if pd.api.types.is_float_dtype(col):
                vals = col.dropna()
                text = (f"n={len(vals)}  min {vals.min():.4g}  median {vals.median():.4g}  "
                        f"max {vals.max():.4g}" if len(vals) else "all missing")
            else:
                counts = col.map(_show).value_counts()
                text = ", ".join(f"{v} ({n})" for v, n in counts.head(12).items())
                if len(counts) > 12:
                    text += f", ... {len(counts) - 12} more"
            table.add_row(name, text)
        console.print(table)
    if "has_pixels" in t.columns and not t["has_pixels"].all():
        console.print(f"[yellow]{int((~t['has_pixels'].astype(bool)).sum())} series have no pixel data "
                      f"(header dumps): indexed, left out by prepare[/yellow]")
    if len(result.warnings):
        console.print(f"[yellow]{len(result.warnings)} IAP disagreements between slices of a series "
                      f"(most common value kept)[/yellow]")
    if len(result.skipped):
        console.print(f"[yellow]skipped {len(result.skipped)} files[/yellow]:")
        for reason, n in result.skipped["reason"].value_counts().head(5).items():
            example = result.skipped.loc[result.skipped["reason"] == reason, "path"].iloc[0]
            console.print(f"  {n} x {reason}  (e.g. {example})")
        if out is not None:
            console.print(f"  full list: {report_paths(out)[0]}")


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if np.isnan(value) else f"{value:.4g}"
    return str(value)
