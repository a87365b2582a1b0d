"""Fuzz: a few hundred damaged files through index, prepare and predict, with pydicom as the oracle.

The corpus (seeded, identical on every run) is made from pydicom's bundled test files (native,
big endian, implicit, deflated, RLE, JPEG, JPEG-LS, JPEG 2000, enhanced multi-frame, colour) and
simulated MR slices (``tests/dicom_factory.write_mr_dicom``), each copy with its own SOP and
series UIDs: intact copies, truncations anywhere and near the end, byte flips anywhere and in the
header, deleted required tags, wrong VRs, wrong and huge element lengths, absurd frame counts, and
files that are not DICOM at all.

The oracle is pydicom itself: a file is decodable when ``dcmread(force=True).pixel_array``
succeeds without pydicom reporting that the data end before their delimiter. Then:

* ``build_index`` keeps every decodable file (it reads headers only, so it may still accept a file
  whose compressed stream is damaged: decoding is what finds that);
* ``prepare_cache`` caches exactly the decodable files and reports every other one it was given;
* ``predict_paths`` predicts exactly the decodable files and skips exactly the others;
* given the corpus as one folder, ``predict`` and ``compare`` account for every file exactly once
  (read, or one skip row of its own: never a row naming a folder);
* nothing raises, and every skip reason is one line.

Image kinds are all kept here (``keep_kinds=IMAGE_KINDS``): what is fuzzed is robustness, and
kind filtering has its own tests.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import struct
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file

from mridomain.data import build_index, prepare_cache
from dicom_factory import GE_HEADERS, write_mr_dicom
from mridomain.files import clean_reason
from mridomain.io import IMAGE_KINDS

SOURCES = ("MR_small.dcm", "MR_small_RLE.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
           "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "CT_small.dcm", "emri_small.dcm",
           "emri_small_RLE.dcm", "emri_small_jpeg_2k_lossless.dcm", "SC_rgb_rle.dcm",
           "SC_ybr_full_422_uncompressed.dcm", "image_dfl.dcm", "JPEGLSNearLossless_08.dcm", "OBXXXX1A_rle.dcm",
           "SC_rgb_small_odd.dcm", "693_J2KI.dcm", "SC_rgb_jpeg_dcmtk.dcm", "JPEG2000.dcm", "rtdose_1frame.dcm")
BYTE_MUTATIONS = ("truncate", "truncate_tail", "flip", "flip_header", "wrong_vr", "wrong_length", "huge_length")
DATASET_MUTATIONS = ("delete_tag", "frames")
REQUIRED = ("Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation", "PhotometricInterpretation",
            "SamplesPerPixel", "PixelData", "SOPClassUID", "SeriesInstanceUID", "NumberOfFrames",
            "PlanarConfiguration", "TransferSyntaxUID")
_LONG_VRS = (b"OB", b"OW", b"UN", b"SQ", b"UT", b"UC", b"UR", b"OF", b"OD", b"OL", b"OV", b"SV", b"UV")
MUTANTS_PER_SOURCE = 12


def _quiet_read(data: bytes, **kw) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data), force=True, **kw)


def _own_uids(src: Path, k: int) -> bytes:
    """The file with SOP and series UIDs of its own: same-length text replaced in place where the
    UIDs are visible, else rewritten by pydicom (the deflated file)."""
    raw = src.read_bytes()
    ds = _quiet_read(raw, stop_before_pixels=True)
    out = raw
    for keyword in ("SOPInstanceUID", "SeriesInstanceUID"):
        uid = str(ds.get(keyword, "") or "").encode()
        if len(uid) < 12 or uid not in out:
            break
        out = out.replace(uid, uid[:-7] + b"." + f"{k:06d}".encode())
    else:
        return out
    full = _quiet_read(raw)
    full.SOPInstanceUID = full.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.10.1.{k}.1"
    full.SeriesInstanceUID = f"1.2.826.0.1.3680043.10.1.{k}.2"
    buf = io.BytesIO()
    full.save_as(buf)
    return buf.getvalue()


def _elements(raw: bytes) -> list[tuple[int | None, int, int, int]]:
    """(VR offset or None, length offset, length size, declared length) of the top-level elements."""
    ds = _quiet_read(raw, defer_size=None)
    implicit = getattr(ds, "file_meta", {}).get("TransferSyntaxUID") == "1.2.840.10008.1.2"
    out = []
    for tag in ds.keys():
        elem = ds.get_item(tag)
        if not isinstance(elem, pydicom.dataelem.RawDataElement) or not elem.value_tell:
            continue
        vt = elem.value_tell
        if implicit:
            out.append((None, vt - 4, 4, elem.length))
        elif raw[vt - 8:vt - 6] in _LONG_VRS:
            out.append((vt - 8, vt - 4, 4, elem.length))
        else:
            out.append((vt - 4, vt - 2, 2, elem.length))
    return out


def _mutate_bytes(raw: bytes, rng: np.random.Generator, kind: str) -> bytes:
    n = len(raw)
    if kind == "truncate":
        return raw[: int(rng.integers(1, n))]
    if kind == "truncate_tail":
        return raw[: n - int(rng.integers(1, min(400, n - 1)))]
    data = bytearray(raw)
    if kind == "flip":
        for _ in range(int(rng.integers(1, 9))):
            data[int(rng.integers(0, n))] ^= int(rng.integers(1, 256))
        return bytes(data)
    if kind == "flip_header":
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(128, min(n, 1500)))] ^= 1 << int(rng.integers(0, 8))
        return bytes(data)
    elements = _elements(raw)
    vr_at, length_at, length_size, length = elements[int(rng.integers(0, len(elements)))]
    if kind == "wrong_vr" and vr_at is not None:
        data[vr_at:vr_at + 2] = (b"UL", b"SS", b"OB", b"XX", b"DS", b"SQ", b"UN")[int(rng.integers(0, 7))]
        return bytes(data)
    if kind == "huge_length":
        value = 0xFFFF if length_size == 2 else int(rng.choice([0x7FFFFFFF, 0xFFFFFFF0, 10 * n]))
    else:  # wrong_length (also for wrong_vr of implicit files, which have no VR to damage)
        value = int(rng.choice([0, 1, 3, length + 2, max(length - 2, 0)])) % (1 << (8 * length_size))
    data[length_at:length_at + length_size] = struct.pack("<H" if length_size == 2 else "<I", value)
    return bytes(data)


def _mutate_dataset(raw: bytes, rng: np.random.Generator, kind: str) -> bytes | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = _quiet_read(raw)
        if kind == "delete_tag":
            keyword = REQUIRED[int(rng.integers(0, len(REQUIRED)))]
            holder = ds.file_meta if keyword == "TransferSyntaxUID" else ds
            if keyword not in holder:
                return None
            delattr(holder, keyword)
        else:
            ds.NumberOfFrames = str(int(rng.choice([2**31 - 1, 10**6, 0, 3, 2])))
        buf = io.BytesIO()
        try:
            ds.save_as(buf)
        except Exception:  # noqa: BLE001 - pydicom refuses to write some damage: flip instead
            return None
    return buf.getvalue()


def _not_dicom(rng: np.random.Generator, k: int) -> bytes:
    return [b"", rng.bytes(int(rng.integers(1, 3000))), b"This is a text file\n" * 40, b"\0" * 128 + b"DICM",
            b"\0" * 128 + b"DICM" + rng.bytes(500), b"\x89PNG\r\n\x1a\n" + rng.bytes(200),
            gzip.compress(rng.bytes(400), mtime=0), b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100" + rng.bytes(64)][k % 8]


def make_corpus(root: Path, seed: int = 0) -> tuple[list[Path], list[Path], dict[str, str]]:
    """(intact files, all files, mutation of each file) written under ``root``."""
    rng = np.random.default_rng(seed)
    sources = [Path(get_testdata_file(name, download=False)) for name in SOURCES]
    for i in range(4):
        sources.append(write_mr_dicom(root / "_sim" / f"sim{i}.dcm", rng.integers(0, 4000, (24 + 8 * i, 32)),
                                      patient_id=f"S{i}", study_uid="1.2.826.0.1.3680043.10.9",
                                      series_uid=f"1.2.826.0.1.3680043.10.9.{i}", instance=1,
                                      position=float(i), headers=GE_HEADERS))
    intact, files, kinds = [], [], {}
    k = 0
    mutations = BYTE_MUTATIONS + DATASET_MUTATIONS
    for src in sources:
        for m in range(2 + MUTANTS_PER_SOURCE):
            k += 1
            kind = "intact" if m < 2 else mutations[(m - 2) % len(mutations)]
            data = _own_uids(src, k)
            if kind in DATASET_MUTATIONS:
                data = _mutate_dataset(data, rng, kind)
                if data is None:
                    kind, data = "flip", _mutate_bytes(_own_uids(src, k), rng, "flip")
            elif kind != "intact":
                data = _mutate_bytes(data, rng, kind)
            path = root / "corpus" / f"{k:04d}_{kind}_{src.stem}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            files.append(path)
            kinds[str(path)] = kind
            if kind == "intact":
                intact.append(path)
    for j in range(16):
        k += 1
        path = root / "corpus" / f"{k:04d}_not_dicom.dcm"
        path.write_bytes(_not_dicom(rng, j))
        files.append(path)
        kinds[str(path)] = "not_dicom"
    return intact, files, kinds


def pydicom_decodes(path: Path) -> bool:
    """The oracle: pydicom decodes the pixels and does not report the data cut short."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            _ = pydicom.dcmread(path, force=True).pixel_array
        except Exception:  # noqa: BLE001 - whatever pydicom cannot decode
            return False
    return not any("End of file reached before delimiter" in str(w.message) for w in caught)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    intact, files, kinds = make_corpus(root)
    decodable = {str(f) for f in files if pydicom_decodes(f)}
    return {"root": root / "corpus", "intact": intact, "files": files, "kinds": kinds, "decodable": decodable}


def _one_line_reasons(reasons) -> None:
    for reason in reasons:
        assert isinstance(reason, str) and reason and "\n" not in reason and "Traceback" not in reason, reason


def test_corpus_is_seeded_and_covers_every_mutation(corpus, tmp_path):
    files, kinds = corpus["files"], corpus["kinds"]
    assert len(files) >= 300 and len(corpus["intact"]) == 2 * (len(SOURCES) + 4)
    assert set(kinds.values()) == {"intact", "not_dicom", *BYTE_MUTATIONS, *DATASET_MUTATIONS}
    assert all(pydicom_decodes(f) for f in corpus["intact"])
    again = make_corpus(tmp_path)[1]
    digest = [hashlib.sha1(f.read_bytes()).hexdigest() for f in files]
    assert [hashlib.sha1(f.read_bytes()).hexdigest() for f in again] == digest
    n_decodable = len(corpus["decodable"])
    assert 0.2 * len(files) < n_decodable < 0.8 * len(files)   # the damage is real, and not total


@pytest.fixture(scope="module")
def indexed(corpus):
    return build_index(corpus["root"], workers=1, progress=False, keep_kinds=IMAGE_KINDS)


def test_index_keeps_every_file_pydicom_decodes(corpus, indexed):
    table, decodable = indexed.table, corpus["decodable"]
    kept = {f for files, has in zip(table["files"], table["has_pixels"]) if has for f in files}
    header_only = {f for files, has in zip(table["files"], table["has_pixels"]) if not has for f in files}
    assert {str(f) for f in corpus["intact"]} <= kept
    assert decodable <= kept                              # no decodable file refused
    assert not header_only & decodable
    skipped = set(indexed.skipped["path"])
    assert skipped | kept | header_only == {str(f) for f in corpus["files"]} and not skipped & kept
    _one_line_reasons(indexed.skipped["reason"])
    # what headers cannot show: damage inside compressed streams (decoding finds it; prepare skips it)
    assert len(kept - decodable) <= 0.05 * len(kept)
    print(f"\nfuzz: {len(corpus['files'])} files, {len(decodable)} decodable by pydicom; index kept "
          f"{len(kept)} ({len(kept - decodable)} with damaged compressed data), {len(header_only)} as "
          f"header-only rows, skipped {len(skipped)}")


def test_prepare_caches_exactly_the_decodable_files(corpus, indexed, tmp_path):
    cache = prepare_cache(indexed.table, tmp_path / "cache", slices_per_series=None, size=16, workers=1,
                          progress=False)
    cached = set(cache.table["file"])
    assert cached == corpus["decodable"]
    given = {f for files, has in zip(indexed.table["files"], indexed.table["has_pixels"]) if has for f in files}
    assert set(cache.skipped["path"]) >= given - cached
    _one_line_reasons(cache.skipped["reason"])
    assert np.isfinite(cache.images[:].astype(np.float32)).all()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """(a one-epoch IAP run, its training cache): what predict and compare need, trained once."""
    from mridomain.iap import train

    from test_iap_utils import make_cache

    root = tmp_path_factory.mktemp("run")
    cache = make_cache(root / "cache", n=48, size=16)
    train(cache, root / "run", preset="cpu", epochs=1, seed=0, progress=False, input_size=16, width=4, batch_size=16)
    return root / "run", cache


@pytest.mark.slow
def test_predict_reads_exactly_the_decodable_files(corpus, small_run, tmp_path):
    from mridomain.iap import predict_paths

    run = small_run[0]
    result = predict_paths(run, corpus["files"], out=tmp_path / "p.csv", progress=False, keep_kinds=IMAGE_KINDS)
    read = set(result.series["source"])
    skipped = [path for path, _ in result.skipped]
    assert read == corpus["decodable"]
    assert sorted(skipped) == sorted(str(f) for f in corpus["files"] if str(f) not in corpus["decodable"])
    _one_line_reasons(reason for _, reason in result.skipped)
    report = pd.read_csv(tmp_path / "p_skipped.csv", dtype=str, keep_default_na=False)
    assert report["path"].tolist() == skipped            # the report reads back, row for row
    assert report["reason"].tolist() == [clean_reason(reason) for _, reason in result.skipped]
    print(f"\nfuzz: predict read {len(read)} files, skipped {len(skipped)}")


def _accounted_once(given: set[str], read: set[str], skipped: list[str]) -> None:
    """Every input file is read or skipped, none both, none skipped twice, nothing else named."""
    assert len(skipped) == len(set(skipped)), "a file is named twice in the skip report"
    assert not read & set(skipped)
    assert read | set(skipped) == given, (sorted(given - read - set(skipped))[:5], sorted((read | set(skipped)) - given)[:5])


@pytest.mark.slow
def test_folder_predict_and_compare_account_for_every_file(corpus, small_run, tmp_path):
    from mridomain.iap import compare
    from mridomain.iap import predict_paths

    run, cache = small_run
    given = {str(f) for f in corpus["files"]}
    result = predict_paths(run, [corpus["root"]], out=tmp_path / "p.csv", progress=False, keep_kinds=IMAGE_KINDS)
    read = set(result.table.loc[result.table["level"] == "slice", "file"])
    skipped = [path for path, _ in result.skipped]
    _accounted_once(given, read, skipped)
    assert read == corpus["decodable"]          # the oracle agrees with the folder path too
    _one_line_reasons(reason for _, reason in result.skipped)
    report = pd.read_csv(tmp_path / "p_skipped.csv", dtype=str, keep_default_na=False)
    assert sorted(report["path"]) == sorted(skipped)
    res = compare(cache, [corpus["root"]], run, out=tmp_path / "cmp", progress=False)
    read = set(res.verdicts["file"])
    _accounted_once(given, read, list(res.skipped["path"]))
    _one_line_reasons(res.skipped["reason"])
    print(f"\nfuzz (folder): {len(given)} files; predict read {len(set(result.table['file']) & given)}, skipped "
          f"{len(skipped)}; compare read {len(read)}, skipped {len(res.skipped)}")


def _series(folder: Path, n: int = 5, series: int = 0, size=(32, 32)) -> list[Path]:
    rng = np.random.default_rng(series)
    return [write_mr_dicom(folder / f"s{series}_{i}.dcm", rng.integers(0, 4000, size), patient_id="P1",
                           study_uid="1.2.826.0.1.3680043.10.7", series_uid=f"1.2.826.0.1.3680043.10.7.{series}",
                           instance=i + 1, position=float(i), headers=GE_HEADERS,
                           sop_uid=f"1.2.826.0.1.3680043.10.7.{series}.{i}") for i in range(n)]


def _undecodable_copy(src: Path, dst: Path) -> Path:
    """``src`` (same SOPInstanceUID) RLE-compressed with a damaged RLE header: its header reads
    clean, only decoding the pixels fails (the damage headers cannot show)."""
    from pydicom.encaps import encapsulate, generate_fragmented_frames
    from pydicom.uid import RLELossless

    ds = pydicom.dcmread(src)
    sop = ds.SOPInstanceUID
    ds.compress(RLELossless)
    frame = bytearray(b"".join(next(generate_fragmented_frames(ds.PixelData))))
    frame[0:4] = (15).to_bytes(4, "little")              # 15 RLE segments announced, 2 present
    ds.PixelData = encapsulate([bytes(frame)])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.save_as(dst)
    return dst


def test_one_damaged_file_never_stops_a_folder(small_run, tmp_path):
    """The issue's reproduction: ``head -c 143 good.dcm > d/x.dcm`` among good files (pydicom
    raises BytesLengthException on it), plus a slice of another size, an undecodable slice and
    an undecodable duplicate of a good slice: each drops only itself, never its series."""
    from mridomain.iap import predict_paths
    from mridomain.io import scan_dicom_folder

    d = tmp_path / "d"
    good = _series(d, series=0) + _series(d, series=1)
    (d / "x.dcm").write_bytes(good[0].read_bytes()[:143])
    odd = _series(tmp_path / "odd", n=6, series=1, size=(24, 24))[5]       # slice 5 of series 1, other size
    (d / "s1_5_odd.dcm").write_bytes(odd.read_bytes())
    _undecodable_copy(good[2], d / "s0_2_rle.dcm")                         # a duplicate of s0_2 that fails
    _undecodable_copy(_series(tmp_path / "nine", n=10, series=0)[9], d / "s0_9_rle.dcm")   # a 10th slice that fails
    given = {str(p) for p in d.iterdir()}
    skipped: list = []
    volumes = scan_dicom_folder(d, skipped=skipped)
    assert [p for p, _ in skipped] == [str(d / "x.dcm")] and "corrupt DICOM header" in skipped[0][1]
    result = predict_paths(small_run[0], [d], out=tmp_path / "p.csv", progress=False)
    slices = result.table[result.table["level"] == "slice"]
    read, reasons = set(slices["file"]), dict(result.skipped)
    _accounted_once(given, read, [p for p, _ in result.skipped])
    assert {str(p) for p in good} == read                  # every good slice predicted, in its series
    assert len(volumes) == 2 and sorted(slices.groupby("series_uid").size()) == [5, 5]
    assert reasons[str(d / "s0_2_rle.dcm")].startswith("duplicate SOPInstanceUID of")
    assert "24x24" in reasons[str(d / "s1_5_odd.dcm")]
    assert "cannot decode pixel data" in reasons[str(d / "s0_9_rle.dcm")]
    _one_line_reasons(reasons.values())


def test_duplicate_keeps_the_copy_that_decodes(tmp_path):
    """Of two files with one SOPInstanceUID the decodable one is kept, though the other sorts first."""
    from mridomain.io import read_dicom_volume, scan_dicom_folder

    d = tmp_path / "d"
    good = _series(d, n=3)
    bad = _undecodable_copy(good[1], d / "a_first_copy.dcm")
    res = build_index(d, workers=1, progress=False)
    kept = {f for files in res.table["files"] for f in files}
    assert str(good[1]) in kept and str(bad) not in kept
    assert dict(res.skipped.itertuples(index=False))[str(bad)] == f"duplicate SOPInstanceUID of {good[1]}"
    skipped: list = []
    (volume,) = scan_dicom_folder(d, skipped=skipped)
    image = read_dicom_volume(volume, skipped=skipped)
    assert [str(f) for f in image.files] == [str(p) for p in good]
    assert [p for p, _ in skipped] == [str(bad)] and "was read instead" in skipped[0][1]
