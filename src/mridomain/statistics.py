"""Statistics every system reports with its figures (intervals a reviewer asks for)."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["wilson_interval", "bootstrap_ci", "bootstrap_statistic_ci", "wilcoxon_p", "smallest_p"]


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion k/n (small test sets: say how sure we are)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (centre - half, centre + half)


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, n_resamples: int = 10000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (scipy.stats.bootstrap); NaNs with < 2 values."""
    from scipy.stats import bootstrap

    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return float("nan"), float("nan")
    if np.all(x == x[0]):            # every resample has the same mean
        return float(x[0]), float(x[0])
    res = bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method="percentile",
                    rng=np.random.default_rng(seed), vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def wilcoxon_p(values: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value that the per-seed differences are centred on zero.

    NaN with fewer than two differences; 1.0 when every difference is zero (no evidence of any).
    """
    from scipy.stats import wilcoxon

    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return float("nan")
    if np.all(x == 0):
        return 1.0
    return float(wilcoxon(x, alternative="two-sided").pvalue)


def smallest_p(n: int) -> float:
    """The smallest two-sided exact Wilcoxon p-value n differences can reach (all of one sign)."""
    return min(1.0, 2.0 / 2 ** n) if n >= 1 else float("nan")


def bootstrap_statistic_ci(arrays: Sequence[Sequence[float]], statistic, confidence: float = 0.95,
                           n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*arrays)`` resampling the items of the arrays
    together (paired: item k of every array stays one unit, e.g. a subject's label and its scores).

    ``statistic`` may return NaN for a resample (an AUC with one class drawn): such resamples are
    dropped. NaNs when fewer than two items or no finite resample."""
    cols = [np.asarray(a, dtype=np.float64) for a in arrays]
    n = len(cols[0])
    if n < 2 or any(len(c) != n for c in cols):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(*[c[idx] for c in cols])
                       for idx in (rng.integers(0, n, n) for _ in range(n_resamples))], dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    alpha = (1 - confidence) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))
