"""Memory of ``predict`` per input: what it holds beyond its output rows.

``predict_paths`` runs twice (``--small`` and ``--large`` inputs, each a NIfTI volume of
``--slices`` slices) under tracemalloc; the growth of the peak per extra input is compared with
the growth of the returned table (``memory_usage(deep=True)``) and with the same rows gathered as
python dicts and turned into one DataFrame at the end, the way predict kept them before issue 14.
Everything is measured in this one run, on a tiny freshly trained run folder.

    python bench/predict_bench.py [--small 20] [--large 80] [--slices 8]
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from mridomain.iap import predict_paths, train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_iap_utils import make_cache  # noqa: E402  (the tests' tiny learnable cache)


def _traced(func):
    gc.collect()
    tracemalloc.start()
    value = func()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=20)
    ap.add_argument("--large", type=int, default=80)
    ap.add_argument("--slices", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = root / "run"
        train(make_cache(root / "cache", n=48, size=16), run, preset="cpu", epochs=1, seed=0, progress=False,
              input_size=16, width=4, batch_size=16)
        rng = np.random.default_rng(0)
        volumes = []
        for i in range(args.large):
            path = root / "in" / f"v{i:04d}.nii"
            path.parent.mkdir(exist_ok=True)
            nib.save(nib.Nifti1Image(rng.random((32, 32, args.slices)).astype(np.float32), np.eye(4)), str(path))
            volumes.append(path)
        predict_paths(run, volumes[:2], out=None, progress=False)   # imports and caches warmed up
        runs = {}
        for n in (args.small, args.large):
            peak, result = _traced(lambda n=n: predict_paths(run, volumes[:n], out=None, progress=False))
            records = result.table.to_dict("records")
            # the former way: every row a dict until the end, then one DataFrame of them all
            dict_peak, _ = _traced(lambda r=records: pd.DataFrame([dict(row) for row in r]))
            runs[n] = (peak, int(result.table.memory_usage(deep=True).sum()), dict_peak)
        extra = args.large - args.small
        (p1, t1, d1), (p2, t2, d2) = runs[args.small], runs[args.large]
        per_input, table, dicts = (p2 - p1) / extra, (t2 - t1) / extra, (d2 - d1) / extra
        print(f"load average {os.getloadavg()[0]:.1f}; {args.slices} slices per input, "
              f"{args.small} vs {args.large} inputs")
        print(f"predict peak growth per input   {per_input / 1e3:8.1f} KB")
        print(f"output table per input          {table / 1e3:8.1f} KB   (peak / table = {per_input / table:.2f})")
        print(f"same rows as dicts, then table  {dicts / 1e3:8.1f} KB   (that / table = {dicts / table:.2f}; "
              f"that / predict = {dicts / per_input:.2f})")


if __name__ == "__main__":
    main()
