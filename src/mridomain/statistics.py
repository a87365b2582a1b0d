"""Statistics every system reports with its figures (intervals a reviewer asks for)."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["wilson_interval", "bootstrap_ci", "bootstrap_statistic_ci", "wilcoxon_p", "smallest_p",
           "detectable_difference"]


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n (small test sets: say how sure we are); NaNs for n = 0.

    >>> [round(v, 3) for v in wilson_interval(9, 10)]
    [0.596, 0.982]
    """
    from scipy.stats import binomtest

    if n == 0:
        return (float("nan"), float("nan"))
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


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
    """The smallest two-sided exact Wilcoxon p-value n differences can reach (all of one sign).

    >>> smallest_p(5), smallest_p(10)           # 5 seeds can never reach p < 0.05
    (0.0625, 0.001953125)
    """
    return min(1.0, 2.0 / 2 ** n) if n >= 1 else float("nan")


def detectable_difference(values: Sequence[float], alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest mean difference a paired two-sided test of these per-seed differences would
    detect with probability ``power`` at level ``alpha``: ``(t_{1-alpha/2} + t_{power}) * sd / sqrt(n)``
    (t with n - 1 degrees of freedom; the Wilcoxon test's efficiency against the t test is ~0.95,
    so read it as a slight underestimate for the Wilcoxon p). NaN with fewer than two values."""
    from scipy.stats import t

    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return float("nan")
    df = len(x) - 1
    return float((t.ppf(1 - alpha / 2, df) + t.ppf(power, df)) * np.std(x, ddof=1) / math.sqrt(len(x)))


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
