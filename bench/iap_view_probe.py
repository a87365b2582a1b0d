"""How much of each IAP the k-space view alone tells, and where the acquisition matrix can be read.

    OMP_NUM_THREADS=1 python bench/iap_view_probe.py CACHE [RUN]     (a cache prepared with --kspace-view)

1. A logistic regression on the view (train split) -> top-1 on the test split, per IAP.
2. Acquisition-matrix top-1 on the test split by *stored grid*: slices stored at their acquired size
   (no zero-fill: the spectrum ends where the grid ends) against slices zero-filled to a larger grid
   (the acquired window's edge is all that marks the matrix), for the view-only regression (on each
   source of the view alone, the magnitude's and the squared magnitude's profiles, when the cache
   has both) and, with RUN, for that run's network on the same slices.
3. Where in the view the zero-filled matrices differ: a one-way ANOVA F per bin across the matrices of
   the zero-filled slices (every split), the largest F of each source's |kx| and |ky| profile and the
   |k| (cycles per FOV) where it is.
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


IAPS = ("acquisition_matrix", "scanner_model", "manufacturer", "field_strength", "flip_angle",
        "patient_position", "slice_thickness", "fov")


def view_only_probe(cache: SliceCache, C: float = 0.1, rows: slice = slice(None),
                    iaps: tuple[str, ...] = IAPS) -> dict[str, np.ndarray]:
    """Test-split predictions of a logistic regression on the view's ``rows``, per IAP; prints top-1
    and majority."""
    t = cache.table
    _, v = split_view(np.asarray(cache.images, np.float32), cache.kspace_view)
    X = v[:, rows].reshape(len(v), -1)
    tr, te = cache.split("train"), cache.split("test")
    predictions = {}
    for iap in iaps:
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
    sources = cache.kspace_view.get("sources", ["magnitude"])
    if len(sources) > 1:
        for k, source in enumerate(sources):
            print(f"({source} profiles alone)")
            alone = view_only_probe(cache, rows=slice(2 * k, 2 * k + 2), iaps=("acquisition_matrix",))
            readers[f"view-only regression, {source} alone"] = alone["acquisition_matrix"]
    if len(sys.argv) > 2:
        readers[f"network {sys.argv[2]}"] = network_predictions(sys.argv[2], cache, "acquisition_matrix")
    print("\nacquisition matrix top-1 on the test split, by stored grid:")
    print(f"{'reader':50s} {'stored at acquired size':>24s} {'zero-filled':>14s} {'all':>8s}")
    print(f"{'(slices)':50s} {(~filled).sum():>24d} {filled.sum():>14d} {len(filled):>8d}")
    for name, pred in readers.items():
        ok = pred == truth
        print(f"{name:50s} {100*ok[~filled].mean():23.1f}% {100*ok[filled].mean():13.1f}% {100*ok.mean():7.1f}%")
    where_the_matrices_differ(cache)
    print("cpu s", round(time.process_time() - t0, 1), "load", open("/proc/loadavg").read().strip())


def where_the_matrices_differ(cache: SliceCache) -> None:
    """Per source and axis of the view: the largest per-bin ANOVA F across the acquisition matrices of
    the zero-filled slices, and where it is."""
    import warnings

    from sklearn.feature_selection import f_classif

    filled = zero_filled(cache.table)
    y = cache.table["acquisition_matrix"].astype(str).to_numpy()[filled]
    _, v = split_view(np.asarray(cache.images, np.float32)[filled], cache.kspace_view)
    width = cache.kspace_view["cycles_per_bin"]
    print(f"\nwhere the {len(set(y))} matrices of the {filled.sum()} zero-filled slices differ (ANOVA F per bin):")
    for row, name in enumerate(cache.kspace_view.get("profiles", ["abs_kx", "abs_ky"])):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                   # bins past every grid's end are constant
            F = np.nan_to_num(f_classif(v[:, row], y)[0])
        b = int(F.argmax())
        print(f"  {name:16s} largest F {F[b]:7.1f} at |k| = {b * width:.0f}-{(b + 1) * width:.0f} cycles per FOV")


if __name__ == "__main__":
    main()
