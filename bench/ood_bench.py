"""Out-of-domain benchmark of real MR files: does a run call real scans it never saw out of domain?

The out-of-domain side is every real MR file that installed packages ship (nothing is
downloaded): pydicom's and pydicom-data's MR test files, nibabel's nicom DICOM files (Siemens
DWI, a Philips MPRAGE), its NIfTI volumes (real brain volumes among them), its PAR/REC and MGH
volumes (written to NIfTI first: mridomain reads neither; a 4-D volume gives its first volume).
Files that hold one image in several transfer syntaxes count once; files whose pixels are all one
value (nibabel's nicom header fixtures) are left out and listed. The in-domain side is the run's own test split (the slices of its
cache), which ``evaluate`` reports on.

Per source: the AUROC of the image score (``domain_score``) against the test split, the FPR at
95 % TPR (the share of the source's slices that a threshold keeping 95 % of the test split
would keep), and the share of series and of slices that the run calls in domain: by the image
alone, and by predict's verdict (image and header evidence). Every number comes from
``predict_paths``, the code behind ``mridomain predict``.

    python bench/ood_bench.py RUN [--cache CACHE] [--abstain] [--csv out.csv]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd


#: files left out because their pixels are all one value (test fixtures of header parsing)
BLANK: list[str] = []


def _site(package: str) -> Path:
    module = __import__(package)
    return Path(module.__file__).parent


def _pixel_key(path: Path) -> str | None:
    """A hash of a DICOM file's decoded pixels (one image in many transfer syntaxes counts once)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        if str(getattr(ds, "Modality", "")) != "MR":
            return None
        arr = ds.pixel_array
    except Exception:  # noqa: BLE001 - a file the reader cannot decode is left out
        return None
    if arr.min() == arr.max():      # header fixtures with zeroed pixels (nibabel's nicom files): no image
        BLANK.append(path.name)
        return None
    return hashlib.sha1(np.ascontiguousarray(arr.astype(np.float32)).tobytes()).hexdigest()


def pydicom_mr_files() -> list[Path]:
    """pydicom's and pydicom-data's MR test files, one per distinct image."""
    from pydicom.data import get_testdata_files

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")         # "download failures": nothing is downloaded
        names = sorted(set(get_testdata_files("*MR*")) | set(get_testdata_files("emri*"))
                       | set(get_testdata_files("liver*")))
    seen, out = set(), []
    for name in names:
        path = Path(name)
        key = _pixel_key(path) if path.suffix == ".dcm" else None
        if key is None or key in seen:
            continue
        seen.add(key)
        out.append(path)
    return out


def nicom_files(work: Path) -> list[Path]:
    """nibabel's nicom DICOM test files (gzipped ones unpacked), one per distinct image."""
    data = _site("nibabel") / "nicom" / "tests" / "data"
    seen, out = set(), []
    for path in sorted(data.glob("*.dcm*")):
        if path.suffix == ".gz":
            target = work / "nicom" / path.stem
            target.parent.mkdir(parents=True, exist_ok=True)
            with gzip.open(path) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            path = target
        key = _pixel_key(path)
        if key is None or key in seen:
            continue
        seen.add(key)
        out.append(path)
    return out


def _as_3d(img, path: Path, work: Path) -> Path:
    """A 3-D NIfTI of the first volume of a 4-D one (mridomain reads 2-D and 3-D volumes)."""
    import nibabel as nib

    arr = np.asarray(img.dataobj, dtype=np.float32)
    if arr.ndim <= 3 and path.name.endswith((".nii", ".nii.gz")):
        return path
    target = work / "volumes" / (path.name.split(".")[0] + ".nii.gz")
    target.parent.mkdir(parents=True, exist_ok=True)
    while arr.ndim > 3:
        arr = arr[..., 0]
    nib.save(nib.Nifti1Image(arr, img.affine), target)
    return target


def nifti_files(work: Path) -> list[Path]:
    """nibabel's NIfTI test volumes with at least 32 x 32 pixels per slice (the rest are a few
    voxels, not images); a 4-D one gives its first volume."""
    import nibabel as nib

    data = _site("nibabel") / "tests" / "data"
    out = []
    for path in sorted(data.glob("*.nii*")):
        try:
            img = nib.load(path)
        except Exception:  # noqa: BLE001
            continue
        if len(img.shape) >= 2 and min(img.shape[:2]) >= 32:
            out.append(_as_3d(img, path, work))
    return out


def converted_volumes(work: Path) -> list[Path]:
    """nibabel's PAR/REC and MGH volumes with pixel data, written to NIfTI."""
    import nibabel as nib

    data = _site("nibabel") / "tests" / "data"
    sources = [p for p in sorted(data.glob("*.PAR")) if p.with_suffix(".REC").exists()]
    sources += sorted(data.glob("*.mgz"))
    out = []
    for path in sources:
        try:
            img = nib.load(path)
            arr = np.asarray(img.dataobj, dtype=np.float32)
        except Exception:  # noqa: BLE001 - a truncated test file: left out
            continue
        if arr.ndim < 2 or min(arr.shape[:2]) < 32:
            continue
        out.append(_as_3d(img, path, work))
    return out


def sources(work: Path) -> dict[str, list[Path]]:
    return {"pydicom MR (DICOM)": pydicom_mr_files(), "nibabel nicom (DICOM)": nicom_files(work),
            "nibabel NIfTI": nifti_files(work), "nibabel PAR/REC, MGH (as NIfTI)": converted_volumes(work)}


def auroc_fpr95(in_scores: np.ndarray, out_scores: np.ndarray) -> tuple[float, float]:
    """(AUROC of the score separating out-of-domain (higher) from in-domain, the share of
    out-of-domain slices at or below the score that keeps 95 % of the in-domain slices)."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    auc = float(roc_auc_score(y, np.r_[in_scores, out_scores]))
    return auc, float(np.mean(out_scores <= np.quantile(in_scores, 0.95)))


def test_split_scores(run: Path, cache: Path | None, split: str = "test") -> tuple[np.ndarray, float, float]:
    """(image scores of the run's test split, the share in domain by the image, the share in
    domain by the verdict with the cache's labels as the header values)."""
    from mridomain.iap.applicability import cache_headers
    from mridomain.iap import IAPPredictor
    from mridomain.iap.cache import open_cache, split_indices

    predictor = IAPPredictor.load(run)
    cache_obj = open_cache(cache if cache is not None else predictor.preprocess.get("source_cache"))
    idx = split_indices(cache_obj, split)
    out = predictor.forward(cache_obj.images, indices=idx, progress=False)
    table = cache_obj.table.iloc[idx].reset_index(drop=True)
    verdict = predictor.domain.judge(out.domain_score, cache_headers(table, predictor))
    for col in ("manufacturer", "scanner_model"):
        if col in table:
            rates = pd.Series(out.in_domain).groupby(table[col].astype(str)).agg(["mean", "size"])
            print(f"test split in domain (image) per {col}: "
                  + ", ".join(f"{k} {100 * r['mean']:.1f}% of {int(r['size'])}" for k, r in rates.iterrows()))
    return np.asarray(out.domain_score), float(np.mean(out.in_domain)), float(verdict["in_domain"].mean())


def benchmark(run: Path, cache: Path | None = None, abstain: bool = True) -> tuple[pd.DataFrame, dict]:
    from mridomain.iap import predict_paths

    in_scores, in_rate, verdict_rate = test_split_scores(run, cache)
    rows, info = [], {"test_split_slices": len(in_scores), "test_split_in_domain": in_rate,
                      "test_split_in_domain_verdict": verdict_rate, "series": []}
    with tempfile.TemporaryDirectory(prefix="ood_bench_") as tmp:
        for name, paths in sources(Path(tmp)).items():
            if not paths:
                continue
            from mridomain.errors import EmptyInputError

            try:
                res = predict_paths(run, paths, out=None, progress=False, abstain=abstain)
            except EmptyInputError as err:          # every file of the source unreadable: say so
                info.setdefault("skipped", []).append((name, str(err)))
                continue
            sl, se = res.slices, res.series
            scores = sl["domain_score"].to_numpy(float)
            auc, fpr = auroc_fpr95(in_scores, scores)
            from mridomain.iap import IAPPredictor

            thr = IAPPredictor.load(run).domain.threshold
            rows.append({"source": name, "files": len(paths), "series": len(se), "slices": len(sl),
                         "skipped": len(res.skipped), "AUROC": auc, "FPR@95TPR": fpr,
                         "series in (image)": float(np.mean(se["domain_score"] <= thr)),
                         "slices in (image)": float(np.mean(scores <= thr)),
                         "series in (verdict)": float(se["in_domain"].mean()),
                         "slices in (verdict)": float(sl["in_domain"].mean()),
                         "series answered unknown": (float((se["manufacturer"] == "unknown").mean())
                                                     if abstain else float("nan"))})
            for _, r in se.iterrows():
                info["series"].append({"source": name, "file": Path(str(r["source"])).name,
                                       "slices": int(r["n_slices"]), "score": float(r["domain_score"]),
                                       "in_domain": bool(r["in_domain"]), "reason": r.get("domain_reason", "")})
            info.setdefault("skipped", []).extend(res.skipped)
    all_rows = pd.DataFrame(rows)
    return all_rows, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--cache", type=Path, default=None, help="the run's cache (default: its source_cache)")
    ap.add_argument("--csv", type=Path, default=None, help="also write the table here")
    ap.add_argument("--series", action="store_true", help="also print every series with its score")
    args = ap.parse_args()
    from mridomain.iap import IAPPredictor

    domain = IAPPredictor.load(args.run).domain
    if domain is None:
        sys.exit(f"{args.run}: no domain model (`mridomain calibrate RUN` adds one)")
    table, info = benchmark(args.run, args.cache)
    print(f"run {args.run}: {domain.note}")
    print(f"test split: {info['test_split_slices']} slices, {100 * info['test_split_in_domain']:.1f}% in domain by "
          f"the image, {100 * info['test_split_in_domain_verdict']:.1f}% by the verdict (labels as headers)")
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3):
        print(table.to_string(index=False))
    total = table[["series", "slices"]].sum()
    n_in_series = sum(s["in_domain"] for s in info["series"])
    n_in_slices = float((table["slices in (verdict)"] * table["slices"]).sum())
    print(f"all sources: {n_in_series} of {int(total['series'])} series and {n_in_slices:.0f} of "
          f"{int(total['slices'])} slices ({100 * n_in_slices / max(total['slices'], 1):.1f}%) called in domain")
    if args.series:
        print(pd.DataFrame(info["series"]).to_string(index=False))
    if BLANK:
        print(f"left out (all pixels one value, header fixtures): {', '.join(sorted(set(BLANK)))}")
    for path, reason in info.get("skipped", []):
        print(f"skipped {Path(path).name}: {reason}")
    print(f"load average: {open('/proc/loadavg').read().strip()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    if args.csv is not None:
        table.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
