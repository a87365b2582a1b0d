"""Deterministic train/val/test split by patient."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from mridomain.errors import InvalidArgumentError  # noqa: F401  (re-exported: its old home)

SPLIT_NAMES = ("train", "val", "test")


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Validate (train, val, test) fractions: three non-negative numbers summing to 1 (+-1e-6)."""
    try:
        fr = tuple(float(f) for f in fractions)
    except (TypeError, ValueError) as err:
        raise InvalidArgumentError(f"fractions {fractions!r}: not numbers") from err
    if len(fr) != 3 or any(f < 0 or not np.isfinite(f) for f in fr) or abs(sum(fr) - 1) > 1e-6:
        raise InvalidArgumentError(
            f"fractions {fractions!r}: need three non-negative train,val,test fractions summing to 1")
    return fr  # type: ignore[return-value]


def split_counts(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """Patients per split by largest remainder: each count is within one of ``fraction * n``.

    >>> split_counts(10, (0.7, 0.15, 0.15))     # 7 + 1.5 + 1.5: the tie for the last patient goes to val
    (7, 2, 1)
    """
    fr = check_fractions(fractions)
    exact = np.asarray(fr) * n
    counts = np.floor(exact).astype(int)
    # Hand the leftover patients to the largest remainders (ties: train, val, test order).
    order = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - int(counts.sum())]:
        counts[i] += 1
    return int(counts[0]), int(counts[1]), int(counts[2])


def split_patients(patient_ids: Iterable[str], fractions: Sequence[float] = (0.7, 0.15, 0.15),
                   seed: int = 0) -> dict[str, str]:
    """Assign every distinct patient to "train", "val" or "test".

    Deterministic for a seed and independent of the order or repetition of ``patient_ids`` (the
    unique ids are sorted before a seeded permutation). A patient is in exactly one split, and
    each split holds ``round``-ed ``fraction * n_patients`` patients, within one patient.

    >>> splits = split_patients(["p1", "p2", "p1", "p3", "p4"], (0.5, 0.25, 0.25), seed=0)
    >>> sorted(splits), sorted(splits.values())
    (['p1', 'p2', 'p3', 'p4'], ['test', 'train', 'train', 'val'])
    """
    unique = sorted({str(p) for p in patient_ids})
    n_train, n_val, _ = split_counts(len(unique), fractions)
    perm = np.random.default_rng(seed).permutation(len(unique))
    out: dict[str, str] = {}
    for rank, i in enumerate(perm):
        out[unique[i]] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return out
