"""predict holds its output rows, not per-input garbage: memory grows with the table it returns.

tracemalloc counts python allocations deterministically (no timing), and the bound is loose: the
peak may grow by at most twice the returned table's own size per input. Gathering the rows as
python dicts of numpy scalars (what predict did) took about six times the table.

Since issue 28 predict gathers inputs into chunks of slices and reads a few inputs ahead: a
bounded working set (one chunk's arrays and tables, the inputs read ahead) that fills over the
first inputs and then stays the same. Growth is therefore measured between 36 and 72 inputs, past
that ramp (between 12 and 36 the ramp alone looked like 8 KB per input).
"""
from __future__ import annotations

import gc
import tracemalloc

import nibabel as nib
import numpy as np
import pytest

from mridomain.iap import predict_paths, train

from test_iap_utils import make_cache


@pytest.fixture(scope="module")
def run_and_volumes(tmp_path_factory):
    root = tmp_path_factory.mktemp("mem")
    run = root / "run"
    train(make_cache(root / "cache", n=48, size=16), run, preset="cpu", epochs=1, seed=0, progress=False,
          input_size=16, width=4, batch_size=16)
    rng = np.random.default_rng(0)
    volumes = []
    for i in range(72):
        path = root / "in" / f"v{i:03d}.nii"
        path.parent.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(rng.random((32, 32, 8)).astype(np.float32), np.eye(4)), str(path))
        volumes.append(path)
    return run, volumes


def _peak_and_table(run, paths) -> tuple[int, int]:
    gc.collect()
    tracemalloc.start()
    result = predict_paths(run, paths, out=None, progress=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, int(result.table.memory_usage(deep=True).sum())


@pytest.mark.slow
def test_predict_memory_grows_with_its_output_rows_only(run_and_volumes):
    run, volumes = run_and_volumes
    predict_paths(run, volumes[:2], out=None, progress=False)        # imports and caches warmed up
    small_peak, small_table = _peak_and_table(run, volumes[:36])
    large_peak, large_table = _peak_and_table(run, volumes)
    per_input = (large_peak - small_peak) / 36
    table_per_input = (large_table - small_table) / 36
    assert table_per_input > 0
    print(f"peak growth {per_input / 1e3:.1f} KB per input, table {table_per_input / 1e3:.1f} KB per input")
    assert per_input < 2 * table_per_input, (per_input, table_per_input)
