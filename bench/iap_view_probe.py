"""How much of each IAP the k-space view alone tells, and where the acquisition matrix can be read.

    OMP_NUM_THREADS=1 python bench/iap_view_probe.py CACHE [RUN]     (a cache prepared with --kspace-view)

1. A logistic regression on the view (train split) -> top-1 on the test split, per IAP.
2. Acquisition-matrix top-1 on the test split by *stored grid*: slices stored at their acquired size
   (no zero-fill: the spectrum ends where the grid ends) against slices zero-filled to a larger grid
   (the acquired window's edge is all that marks the matrix), for the view-only regression and, with
   RUN, for that run's network on the same slices.
"""
import sys
import time

import numpy as np
import pandas as pd
import pydicom
from mridomain.data import SliceCache
from mridomain.data.kspace import split_view
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.pipeline import make_pipeline


def zero_filled(table: pd.DataFrame) -> np.ndarray:
    """True where a slice's stored grid is larger than its acquired matrix in either direction (DICOM
    Rows / Columns against the cache's AcquisitionMatrix label, "frequency X phase", compared sorted,
    since which of the two runs along the rows is not in the label)."""
    out = np.zeros(len(table), bool)
    for i, (path, matrix) in enumerate(zip(table["file"], table["acquisition_matrix"].astype(str))):
        header = pydicom.dcmread(path, stop_before_pixels=True)
        acquired = sorted(int(v) for v in matrix.split(" X "))
        stored = sorted((int(header.Rows), int(header.Columns)))
        out[i] = any(s > a for s, a in zip(stored, acquired))
    return out


def view_only_probe(cache: SliceCache, C: float = 0.1) -> dict[str, np.ndarray]:
    """Test-split predictions of a view-only logistic regression, per IAP; prints top-1 and majority."""
    t = cache.table
    _, v = split_view(np.asarray(cache.images, np.float32), cache.kspace_view)
    X = v.reshape(len(v), -1)
    tr, te = cache.split("train"), cache.split("test")
    predictions = {}
    for iap in ("acquisition_matrix", "scanner_model", "manufacturer", "field_strength", "flip_angle",
                "patient_position", "slice_thickness", "fov"):
        y = t[iap].astype(str).to_numpy()
        m = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000)).fit(X[tr], y[tr])
        predictions[iap] = m.predict(X[te])
        acc = (predictions[iap] == y[te]).mean()
        maj = (y[te] == max(set(y[tr]), key=list(y[tr]).count)).mean()
        print(f"{iap:20s} view-only top-1 {100*acc:5.1f}%  (majority {100*maj:5.1f}%)", flush=True)
    return predictions


def network_predictions(run: str, cache: SliceCache, iap: str) -> np.ndarray:
    """The run's top-1 class labels for ``iap`` on the cache's test split."""
    from mridomain.iap.run import IAPRun

    output = IAPRun.load(run).forward(cache.images, indices=cache.split("test"), progress=False)
    return output.predicted(iap)


def main() -> None:
    cache = SliceCache(sys.argv[1])
    t0 = time.process_time()
    view = view_only_probe(cache)
    test = cache.table.iloc[cache.split("test")].reset_index(drop=True)
    truth = test["acquisition_matrix"].astype(str).to_numpy()
    filled = zero_filled(test)
    readers = {"view-only regression": view["acquisition_matrix"]}
    if len(sys.argv) > 2:
        readers[f"network {sys.argv[2]}"] = network_predictions(sys.argv[2], cache, "acquisition_matrix")
    print("\nacquisition matrix top-1 on the test split, by stored grid:")
    print(f"{'reader':50s} {'stored at acquired size':>24s} {'zero-filled':>14s} {'all':>8s}")
    print(f"{'(slices)':50s} {(~filled).sum():>24d} {filled.sum():>14d} {len(filled):>8d}")
    for name, pred in readers.items():
        ok = pred == truth
        print(f"{name:50s} {100*ok[~filled].mean():23.1f}% {100*ok[filled].mean():13.1f}% {100*ok.mean():7.1f}%")
    print("cpu s", round(time.process_time() - t0, 1), "load", open("/proc/loadavg").read().strip())


if __name__ == "__main__":
    main()
