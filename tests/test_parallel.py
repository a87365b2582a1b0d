"""The one parallel map: results, order, a killed worker, and no global side effects."""
from __future__ import annotations

import os
import signal
import warnings

import pytest

from mridomain.parallel import WorkerDiedError, parallel_map


def _square(x: int) -> int:
    return x * x


def _die_on_three(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)   # what the out-of-memory killer does
    return x


def _thread_caps(_: int) -> str:
    return os.environ.get("OMP_NUM_THREADS", "")


def test_results_in_order_or_as_they_come():
    assert list(parallel_map(_square, range(20), workers=2, total=20, ordered=True, progress=False)) == \
        [x * x for x in range(20)]
    assert sorted(parallel_map(_square, iter(range(20)), workers=2, progress=False)) == \
        sorted(x * x for x in range(20))
    assert list(parallel_map(_square, [1, 2], workers=1, progress=False)) == [1, 4]


def test_a_killed_worker_raises_instead_of_hanging():
    with pytest.raises(WorkerDiedError, match="worker process died") as err:
        list(parallel_map(_die_on_three, range(8), workers=2, total=8, batch_size=1, progress=False,
                          desc="toy"))
    assert "\n" not in str(err.value) and str(err.value).startswith("toy:")


def test_workers_get_one_blas_thread_each():
    caps = set(parallel_map(_thread_caps, range(4), workers=2, total=4, batch_size=1, progress=False))
    assert caps == {"1"}


def test_build_index_leaves_the_callers_warning_filters_alone(tmp_path):
    """With one worker the per-file work runs in the caller's process: it must not silence warnings."""
    import numpy as np

    from mridomain.data import build_index
    from mridomain.data.synthetic import write_mr_dicom

    write_mr_dicom(tmp_path / "a.dcm", np.zeros((8, 8), np.uint16), patient_id="P", study_uid="1.2",
                   series_uid="1.2.3", instance=1, position=0.0)
    (tmp_path / "junk.dcm").write_bytes(b"not dicom")
    before = list(warnings.filters)
    build_index(tmp_path, workers=1, progress=False)
    assert warnings.filters == before
    with warnings.catch_warnings(record=True) as caught:     # the filters as they are, not reset
        warnings.warn("still heard", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["still heard"]
