"""The one parallel map of mridomain (indexing, cache writing, simulation, study runs).

Built on joblib's loky backend, which brings three things a hand-made ``multiprocessing.Pool``
does not:

- a worker that dies (the out-of-memory killer, a segfault in a codec) makes the map raise
  :class:`WorkerDiedError` at once instead of hanging forever on a result that never comes;
- BLAS / OpenMP thread pools are capped in every worker (``inner_max_num_threads``), so W workers
  use W cores, not W x cores;
- with one worker everything runs in the caller's process and nothing global is changed there
  (no warning filters, no environment variables).

Work functions must be importable module-level functions (they are pickled by reference).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from mridomain.progress import progress_bar

from mridomain.errors import InvalidArgumentError, MridomainError

T = TypeVar("T")

__all__ = ["parallel_map", "default_workers", "WorkerDiedError", "read_ahead"]


class WorkerDiedError(MridomainError, RuntimeError):
    """A worker process of :func:`parallel_map` died (killed by a signal or crashed)."""


def default_workers(workers: int | None) -> int:
    """All usable cores when ``workers`` is None, else ``workers``; fewer than 1 is a one-line
    :class:`InvalidArgumentError` (a 0 silently read as 1 hides a typo)."""
    if workers is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - non-Linux
            return max(1, os.cpu_count() or 1)
    if int(workers) < 1:
        from mridomain.errors import InvalidArgumentError

        raise InvalidArgumentError(f"workers {workers}: must be at least 1")
    return int(workers)


def parallel_map(func: Callable[[Any], T], items: Iterable[Any], *, workers: int | None = None,
                 total: int | None = None, ordered: bool = False, batch_size: int | str = "auto",
                 progress: bool = True, desc: str = "", unit: str = "it",
                 advance: Callable[[T], int] | None = None, advance_total: int | None = None) -> Iterator[T]:
    """Yield ``func(item)`` for every item, in worker processes when more than one worker is asked.

    Args:
        func: a module-level function of one argument.
        items: the work items (consumed lazily: a long iterator is fine).
        workers: processes (None: all usable cores); capped at ``total`` when it is known.
        total: number of items, for the progress bar and the worker cap.
        ordered: results in input order (else as they finish: a slow item holds nothing back).
        batch_size: items sent to a worker at a time; "auto" lets joblib amortize the transfer
            cost of cheap items (a header read is ~0.1-1 ms, about one pickle round trip).
        progress, desc, unit: the tqdm bar.
        advance: how far one result moves the bar (default 1), e.g. the images it wrote.
        advance_total: the bar's total in ``advance``'s unit (required with ``advance``: the bar
            must count to what it says).

    Raises:
        WorkerDiedError: a worker process died; the message says which signal where known.
    """
    if advance is not None and advance_total is None:
        raise InvalidArgumentError("parallel_map: advance needs advance_total (the bar's total in its unit)")
    n_workers = default_workers(workers)
    if total is not None:
        n_workers = min(n_workers, max(1, total))
    bar = progress_bar(total=total if advance is None else advance_total, desc=desc, unit=unit, enabled=progress, dynamic_ncols=True, smoothing=0.05)
    step = advance or (lambda _result: 1)
    try:
        if n_workers == 1:
            for item in items:
                result = func(item)
                yield result
                bar.update(step(result))
            return
        from joblib import Parallel, delayed, parallel_config
        from joblib.externals.loky.process_executor import TerminatedWorkerError

        with parallel_config(backend="loky", inner_max_num_threads=1):
            runner = Parallel(n_jobs=n_workers, batch_size=batch_size,
                              return_as="generator" if ordered else "generator_unordered")
            try:
                for result in runner(delayed(func)(item) for item in items):
                    yield result
                    bar.update(step(result))
            except TerminatedWorkerError as err:
                cause = str(err).split("\n")[0]
                raise WorkerDiedError(f"{desc or 'parallel map'}: a worker process died ({cause}); "
                                      "if it was killed for memory, use fewer workers") from None
    finally:
        bar.close()


def read_ahead(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` in order while a background thread already produces the next ``depth``.

    For a producer that reads and decodes files and a consumer that computes (a network on ONNX
    Runtime or PyTorch releases the GIL while it runs): the two overlap instead of taking turns.
    An exception of the producer is raised in the consumer at the item where it happened; a
    consumer that stops early stops the producer too. ``depth`` 0 is the plain iteration.
    """
    import queue
    import threading

    if depth < 1:
        yield from items
        return
    done = object()
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value: Any) -> bool:
        while not stop.is_set():
            try:
                slots.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            put((done, err))
            return
        put((done, None))

    thread = threading.Thread(target=produce, name="read_ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, err = slots.get()
            if item is done:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        thread.join()
