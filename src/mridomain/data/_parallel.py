"""Process-pool map with a progress bar, shared by the indexer and the cache builder."""
from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def default_workers(workers: int | None) -> int:
    """All usable cores when ``workers`` is None, else at least 1."""
    if workers is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - non-Linux
            return max(1, os.cpu_count() or 1)
    return max(1, int(workers))


def pmap(func: Callable[[Any], T], items: Iterable[Any], *, n_items: int | None, workers: int | None,
         chunksize: int | None = None, ordered: bool = False, progress: bool = True, desc: str = "",
         unit: str = "it", initializer: Callable | None = None, initargs: tuple = ()) -> Iterator[T]:
    """Yield ``func(item)`` for every item, in a process pool when more than one worker is asked for.

    Results come back in input order when ``ordered`` else as they finish (faster: a slow item does
    not hold the others back). Chunking keeps inter-process traffic from dominating when items are
    cheap (one header read is ~0.1-1 ms, about the cost of one pickle round trip).
    """
    n_workers = default_workers(workers)
    if n_items is not None:
        n_workers = min(n_workers, max(1, n_items))
    bar = tqdm(total=n_items, desc=desc, unit=unit, disable=not progress, dynamic_ncols=True,
               smoothing=0.05)
    try:
        if n_workers == 1:
            if initializer is not None:
                initializer(*initargs)
            for item in items:
                yield func(item)
                bar.update(1)
            return
        if chunksize is None:
            # ~16 chunks per worker balances load while amortizing IPC.
            chunksize = max(1, min(512, (n_items or 1000) // (n_workers * 16)))
        with mp.get_context().Pool(n_workers, initializer=initializer, initargs=initargs) as pool:
            mapper = pool.imap if ordered else pool.imap_unordered
            for result in mapper(func, items, chunksize=chunksize):
                yield result
                bar.update(1)
    finally:
        bar.close()
