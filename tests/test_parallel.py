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
    from dicom_factory import write_mr_dicom

    write_mr_dicom(tmp_path / "a.dcm", np.zeros((8, 8), np.uint16), patient_id="P", study_uid="1.2",
                   series_uid="1.2.3", instance=1, position=0.0)
    (tmp_path / "junk.dcm").write_bytes(b"not dicom")
    before = list(warnings.filters)
    build_index(tmp_path, workers=1, progress=False)
    assert warnings.filters == before
    with warnings.catch_warnings(record=True) as caught:     # the filters as they are, not reset
        warnings.warn("still heard", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["still heard"]


class _RecordingBar:
    """Stands in for the progress bar: remembers its total and how far it was moved."""

    made: list["_RecordingBar"] = []

    def __init__(self, total=None, **_):
        self.total, self.n = total, 0
        _RecordingBar.made.append(self)

    def update(self, k=1):
        self.n += k

    def close(self):
        pass


def _two(x: int) -> int:
    return 2


def test_a_bar_that_counts_a_unit_of_its_own_ends_at_its_total(monkeypatch):
    import mridomain.parallel as parallel
    from mridomain.errors import InvalidArgumentError

    monkeypatch.setattr(parallel, "progress_bar", _RecordingBar)
    _RecordingBar.made.clear()
    list(parallel_map(_two, range(5), workers=1, total=5, advance=lambda r: r, advance_total=10))
    assert [(b.total, b.n) for b in _RecordingBar.made] == [(10, 10)]
    with pytest.raises(InvalidArgumentError, match="advance_total"):
        list(parallel_map(_two, range(5), workers=1, total=5, advance=lambda r: r))


def test_simulate_progress_counts_images_to_its_total(monkeypatch, tmp_path):
    """The simulate bar once counted 1,800 images of a total of 600 (it took patients for images)."""
    import mridomain.parallel as parallel
    from mridomain.sim.breast import simulate

    monkeypatch.setattr(parallel, "progress_bar", _RecordingBar)
    _RecordingBar.made.clear()
    simulate(tmp_path / "sim", n_patients=2, seed=0, slices=3, preset="dbc", phases=1, workers=1)
    bars = [b for b in _RecordingBar.made if b.total == 2 * 3]
    assert bars and all(b.n == b.total for b in bars)


def test_read_ahead_keeps_order_raises_where_the_producer_failed_and_stops_with_the_consumer():
    import threading

    from mridomain.parallel import read_ahead

    assert list(read_ahead(range(50), depth=3)) == list(range(50)) == list(read_ahead(range(50), depth=0))

    def failing():
        yield 1
        yield 2
        raise ValueError("file 3 is damaged")

    got = []
    with pytest.raises(ValueError, match="file 3 is damaged"):
        for item in read_ahead(failing(), depth=2):
            got.append(item)
    assert got == [1, 2]
    produced = []

    def endless():
        k = 0
        while True:
            produced.append(k)
            yield k
            k += 1

    reader = read_ahead(endless(), depth=2)
    assert [next(reader) for _ in range(3)] == [0, 1, 2]
    reader.close()                                  # the consumer stops: the producer thread ends
    assert not any(t.name == "read_ahead" for t in threading.enumerate())
    assert len(produced) <= 3 + 2 + 1
