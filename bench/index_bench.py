"""Files/s of ``build_index`` against a plain serial ``pydicom.dcmread`` loop over the same files,
with a warm and a cold page cache, and of the index's two header readers against each other.

Usage::

    python bench/index_bench.py                      # synthetic archive in a temp dir
    python bench/index_bench.py --files 4000 --rows 512
    python bench/index_bench.py --archive /data/DBC  # your own folder (read only)

The synthetic archive holds MR slices with a realistic header size: the usual MR tags plus a
vendor private block (an 8 KB CSA-like blob, as Siemens writes; GE and Philips private groups are
of the same order). Every contender reads the same files, first with a warm page cache (the files
were just read), then cold: before each cold run every file's cached pages are dropped with
``posix_fadvise(POSIX_FADV_DONTNEED)`` after an ``os.sync()`` (no root needed; a disk cache below
the OS, e.g. a VM host's, may still answer some reads). The ratios are printed whatever they are.
``build_index`` is timed end to end (walk, pool, grouping, normalization), once with its fast
struct-based header reader and once with pydicom for every file (``fast_reader=False``): the fast
reader only stays in the package while it wins on wall clock with a cold cache.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_archive(root: Path, n_files: int, rows: int, slices_per_series: int = 60) -> list[Path]:
    """Write ``n_files`` MR slices (uint16 ``rows`` x ``rows``) in series of ``slices_per_series``."""
    import pydicom
    from pydicom.uid import generate_uid

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))   # the tests' DICOM factory
    from dicom_factory import GE_HEADERS, write_mr_dicom

    rng = np.random.default_rng(0)
    template = write_mr_dicom(root / "_template.dcm", rng.integers(0, 4000, (rows, rows)),
                              patient_id="BENCH", study_uid="1.2.3", series_uid="1.2.3.4", instance=1,
                              position=0.0, headers=GE_HEADERS)
    ds = pydicom.dcmread(template)
    template.unlink()
    # The bulk of a real MR header: acquisition tags and a vendor private block.
    extra = {"StudyDescription": "MRI BREAST BILATERAL", "ProtocolName": "ax 3d dyn",
             "SequenceName": "*fl3d1", "MRAcquisitionType": "3D", "EchoTrainLength": 1,
             "NumberOfAverages": 1, "ImagingFrequency": 63.6, "PercentSampling": 100,
             "PercentPhaseFieldOfView": 100, "PixelBandwidth": 390, "SAR": 0.1,
             "InstitutionName": "Bench Hospital", "StationName": "MRC12345", "BodyPartExamined": "BREAST",
             "SoftwareVersions": "syngo MR B17", "DeviceSerialNumber": "12345", "ReceiveCoilName": "BR",
             "TransmitCoilName": "Body", "InPlanePhaseEncodingDirection": "ROW", "VariableFlipAngleFlag": "N",
             "dBdt": 0.0, "PatientBirthDate": "19700101", "PatientSex": "F", "PatientAge": "050Y",
             "PatientWeight": 60.0, "StudyDate": "19900101", "SeriesDate": "19900101",
             "AcquisitionDate": "19900101", "ContentDate": "19900101", "StudyTime": "120000",
             "SeriesTime": "120000", "AcquisitionTime": "120000", "ContentTime": "120000",
             "AccessionNumber": "A1", "ReferringPhysicianName": "", "StudyID": "1", "FrameOfReferenceUID": "1.2.3.9",
             "PositionReferenceIndicator": "", "WindowCenter": 500, "WindowWidth": 1000,
             "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"], "SpacingBetweenSlices": 1.1,
             "SliceLocation": 0.0, "AcquisitionNumber": 1}
    for k, v in extra.items():
        setattr(ds, k, v)
    block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    block.add_new(0x10, "OB", bytes(rng.integers(0, 255, 8000, dtype=np.uint8)))
    block.add_new(0x20, "OB", bytes(rng.integers(0, 255, 4000, dtype=np.uint8)))
    files = []
    n_series = (n_files + slices_per_series - 1) // slices_per_series
    k = 0
    for s in range(n_series):
        patient = f"BENCH_{s // 4:04d}"
        ds.PatientID = ds.PatientName = patient
        ds.StudyInstanceUID = generate_uid(entropy_srcs=[patient])
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=[patient, str(s)])
        folder = root / patient / f"series_{s:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(min(slices_per_series, n_files - k)):
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = i + 1
            ds.ImagePositionPatient = [0.0, 0.0, 1.1 * i]
            ds.SliceLocation = 1.1 * i
            path = folder / f"1-{i + 1:03d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
            k += 1
    return files


def warm_page_cache(files: list[str]) -> None:
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(1 << 20):
                pass


def drop_page_cache(files: list[str]) -> None:
    """Ask the kernel to forget every file's cached pages (dirty pages are written out first)."""
    os.sync()
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", type=Path, help="existing folder of DICOM files (default: synthetic)")
    ap.add_argument("--files", type=int, default=2000, help="synthetic files to write")
    ap.add_argument("--rows", type=int, default=256, help="synthetic image size (rows = columns)")
    ap.add_argument("--workers", type=int, default=None, help="build_index processes (default: all cores)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per contender (best is reported)")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic archive")
    args = ap.parse_args(argv)

    import pydicom

    from mridomain.data import build_index
    from mridomain.parallel import default_workers
    from mridomain.data.index import iter_files

    tmp = None
    if args.archive is None:
        tmp = Path(tempfile.mkdtemp(prefix="mridomain_index_bench_"))
        t0 = time.perf_counter()
        make_archive(tmp, args.files, args.rows)
        print(f"wrote {args.files} synthetic MR files ({args.rows}x{args.rows}) to {tmp} "
              f"in {time.perf_counter() - t0:.1f} s")
        root = tmp
    else:
        root = args.archive
    try:
        files = sorted(iter_files(root))
        size_mb = sum(os.path.getsize(f) for f in files) / 1e6
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"{len(files)} files, {size_mb:.0f} MB, {default_workers(args.workers)} worker(s), "
              f"{os.cpu_count()} CPUs visible, load average {load:.1f}, best of {args.repeat}")

        def serial_full() -> int:
            n = 0
            for f in files:
                try:
                    pydicom.dcmread(f)
                    n += 1
                except Exception:  # noqa: BLE001 - a plain loop would have to survive bad files too
                    pass
            return n

        def index_fast() -> object:
            return build_index(root, workers=args.workers, progress=False)

        def index_pydicom() -> object:
            return build_index(root, workers=args.workers, progress=False, fast_reader=False)

        contenders = {"serial pydicom.dcmread loop": serial_full, "build_index (fast reader)": index_fast,
                      "build_index (pydicom reader)": index_pydicom}
        for cache_state in ("warm", "cold"):
            # Best of N, interleaved: the machine may be shared, and the minimum is the least
            # disturbed run of each contender (as timeit reports).
            times = {name: float("inf") for name in contenders}
            for _ in range(args.repeat):
                for name, run in contenders.items():
                    (drop_page_cache if cache_state == "cold" else warm_page_cache)(files)
                    t0 = time.perf_counter()
                    run()
                    times[name] = min(times[name], time.perf_counter() - t0)
            print(f"-- {cache_state} page cache")
            for name, t in times.items():
                print(f"{name:30s}: {len(files) / t:8.0f} files/s ({t:.2f} s)")
            t_serial, t_fast, t_py = times.values()
            print(f"build_index (fast) over the serial loop: {t_serial / t_fast:.2f}x; fast reader over "
                  f"pydicom reader inside build_index: {t_py / t_fast:.2f}x ({cache_state})")
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
