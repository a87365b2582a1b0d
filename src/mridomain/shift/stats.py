"""Statistics of the study: AUC, Table 2, and the per-seed paired Delta with its CI and p-value.

- ``R[i, j, k] = AUC(M_j, Test_k)`` for seed i (:func:`auc`).
- Table 2: mean and sample standard deviation (ddof = 1) over seeds per (train, test) domain.
- Delta of training domain j: per seed, ``R[i, j, other] - R[i, j, j]`` (out-of-domain minus
  in-domain, paired within a seed: same model, same seed), then the mean over seeds, a 95%
  percentile bootstrap interval over seeds (seeds resampled with replacement) and the two-sided
  Wilcoxon signed-rank p-value of the per-seed differences (exact for small samples, scipy).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from mridomain.errors import InvalidArgumentError
from mridomain.statistics import bootstrap_ci, detectable_difference, smallest_p, wilcoxon_p  # noqa: F401

__all__ = ["auc", "bootstrap_ci", "wilcoxon_p", "table2", "delta_table", "paired_deltas", "setting_table",
           "smallest_p", "sizes_table", "MIN_CLASS"]

#: a test set with fewer samples than this of either class gets a warning: its AUC moves in steps
#: of at least 1 / (25 * n_other) per rank swap, and one patient changes it visibly
MIN_CLASS = 25


def auc(labels: Sequence[float], scores: Sequence[float]) -> float:
    """ROC AUC of ``scores`` for 0/1 ``labels`` (ties count one half; scikit-learn's definition).

    A one-line :class:`InvalidArgumentError` when a class is missing or a score is not finite:
    AUC is undefined there, and a NaN in a results table would hide why.

    >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])      # 3 of the 4 (positive, negative) pairs ranked right
    0.75
    >>> auc([1, 1], [0.2, 0.3])
    Traceback (most recent call last):
    ...
    mridomain.errors.InvalidArgumentError: auc: needs both labels, got only 1 in 2 samples
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if len(y) != len(s):
        raise InvalidArgumentError(f"auc: {len(y)} labels but {len(s)} scores")
    if not np.isin(y, (0.0, 1.0)).all():
        raise InvalidArgumentError("auc: labels must be 0 or 1")
    if len(np.unique(y)) < 2:
        raise InvalidArgumentError(f"auc: needs both labels, got only {int(y[0]) if len(y) else 'none'}"
                                   f" in {len(y)} samples")
    if not np.isfinite(s).all():
        raise InvalidArgumentError(f"auc: {int((~np.isfinite(s)).sum())} scores are not finite")
    return float(roc_auc_score(y, s))


def _ok_runs(runs: pd.DataFrame, experiment: str) -> pd.DataFrame:
    if len(runs) == 0:
        return runs
    r = runs[(runs["experiment"] == experiment) & (runs["status"] == "ok")]
    return r[np.isfinite(r["auc"].astype(float))]


def table2(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 2: dataset, train_domain, test_domain, auc_mean, auc_std, n_seeds (main runs).

    ``runs`` is the long results table: one row per (run, test domain) with columns experiment,
    dataset, seed, train_domain, test_domain, auc, status.

    >>> import pandas as pd
    >>> runs = pd.DataFrame({"experiment": "main", "dataset": "d", "status": "ok", "train_domain": "GE",
    ...                      "seed": [0, 0, 1, 1], "test_domain": ["GE", "SIEMENS"] * 2, "auc": [0.9, 0.8, 0.8, 0.6]})
    >>> table2(runs).round(4).values.tolist()
    [['d', 'GE', 'GE', 0.85, 0.0707, 2], ['d', 'GE', 'SIEMENS', 0.7, 0.1414, 2]]
    """
    cols = ["dataset", "train_domain", "test_domain", "auc_mean", "auc_std", "n_seeds"]
    r = _ok_runs(runs, "main")
    if len(r) == 0:
        return pd.DataFrame(columns=cols)
    g = r.groupby(["dataset", "train_domain", "test_domain"], sort=True)["auc"]
    out = g.agg(auc_mean="mean", auc_std=lambda a: float(np.std(a, ddof=1)) if len(a) > 1 else float("nan"),
                n_seeds="count").reset_index()
    return out[cols]


def paired_deltas(runs: pd.DataFrame, experiment: str = "main") -> pd.DataFrame:
    """Per (dataset, train domain, seed, setting): in-domain AUC, out-of-domain AUC and their difference."""
    r = _ok_runs(runs, experiment)
    cols = ["dataset", "train_domain", "seed", "setting", "auc_in", "auc_out", "delta"]
    if len(r) == 0:
        return pd.DataFrame(columns=cols)
    r = r.assign(setting=r["setting"].astype(float).fillna(-1.0),
                 where=np.where(r["test_domain"] == r["train_domain"], "auc_in", "auc_out"))
    wide = r.pivot_table(index=["dataset", "train_domain", "seed", "setting"], columns="where", values="auc",
                         aggfunc="first").reset_index()
    if "auc_in" not in wide or "auc_out" not in wide:
        return pd.DataFrame(columns=cols)
    wide = wide.dropna(subset=["auc_in", "auc_out"])
    wide["delta"] = wide["auc_out"] - wide["auc_in"]
    wide["setting"] = wide["setting"].replace(-1.0, np.nan)
    return wide[cols].reset_index(drop=True)


def sizes_table(runs: pd.DataFrame, experiment: str = "main") -> pd.DataFrame:
    """Per (dataset, train domain, test domain): the test sets' sizes over seeds (min and max of
    samples, positives, negatives, patients and positive patients) and a warning when any seed's
    test set holds fewer than :data:`MIN_CLASS` of either class."""
    cols = ["dataset", "train_domain", "test_domain", "n_seeds", "samples_min", "samples_max", "positives_min",
            "positives_max", "negatives_min", "negatives_max", "patients_min", "patients_max",
            "positive_patients_min", "positive_patients_max", "warning"]
    r = _ok_runs(runs, experiment)
    if len(r) == 0 or "n_test" not in r.columns:
        return pd.DataFrame(columns=cols)
    r = r.assign(n_test_negative=r["n_test"] - r["n_test_positive"])
    rows = []
    for (ds, train, test), g in r.groupby(["dataset", "train_domain", "test_domain"], sort=True):
        row = {"dataset": ds, "train_domain": train, "test_domain": test, "n_seeds": int(g["seed"].nunique())}
        for name, col in (("samples", "n_test"), ("positives", "n_test_positive"), ("negatives", "n_test_negative"),
                          ("patients", "n_test_patients"), ("positive_patients", "n_test_positive_patients")):
            v = pd.to_numeric(g[col], errors="coerce") if col in g else pd.Series(dtype=float)
            row[f"{name}_min"] = int(v.min()) if v.notna().any() else None
            row[f"{name}_max"] = int(v.max()) if v.notna().any() else None
        few = min(row["positives_min"], row["negatives_min"])
        row["warning"] = (f"fewer than {MIN_CLASS} of a class in a test set ({row['positives_min']} positives, "
                          f"{row['negatives_min']} negatives at the least): its AUC is coarse" if few < MIN_CLASS else "")
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def delta_table(runs: pd.DataFrame, confidence: float = 0.95, n_resamples: int = 10000, seed: int = 0) -> pd.DataFrame:
    """dataset, train_domain, delta, ci_low, ci_high, p_value, n_seeds, auc_in, auc_out (main runs),
    and the power the row had: ``ci_half_width`` (half the bootstrap interval), ``detectable_delta``
    (the smallest Delta a paired test of these seeds detects with 80 % power at alpha 0.05, from
    the per-seed spread: :func:`mridomain.statistics.detectable_difference`), the smallest test
    set's positives and negatives over both domains and seeds, and a warning below
    :data:`MIN_CLASS` of either class."""
    cols = ["dataset", "train_domain", "delta", "ci_low", "ci_high", "p_value", "n_seeds", "auc_in", "auc_out",
            "ci_half_width", "detectable_delta", "min_test_positives", "min_test_negatives", "warning"]
    d = paired_deltas(runs, "main")
    sizes = sizes_table(runs)
    rows = []
    for (ds, dom), g in d.groupby(["dataset", "train_domain"], sort=True):
        lo, hi = bootstrap_ci(g["delta"], confidence, n_resamples, seed)
        s = sizes[(sizes["dataset"] == ds) & (sizes["train_domain"] == dom)]
        pos = int(s["positives_min"].min()) if len(s) else 0
        neg = int(s["negatives_min"].min()) if len(s) else 0
        warn = [f"a test set holds only {min(pos, neg)} {'positives' if pos <= neg else 'negatives'} "
                f"(< {MIN_CLASS})"] if min(pos, neg) < MIN_CLASS else []
        if len(g) and smallest_p(len(g)) > 0.05:
            warn.append(f"{len(g)} seeds cannot give p below {smallest_p(len(g)):.3g}")
        rows.append({"dataset": ds, "train_domain": dom, "delta": float(g["delta"].mean()), "ci_low": lo,
                     "ci_high": hi, "p_value": wilcoxon_p(g["delta"]), "n_seeds": int(len(g)),
                     "auc_in": float(g["auc_in"].mean()), "auc_out": float(g["auc_out"].mean()),
                     "ci_half_width": (hi - lo) / 2 if math.isfinite(lo) else float("nan"),
                     "detectable_delta": detectable_difference(g["delta"]), "min_test_positives": pos,
                     "min_test_negatives": neg, "warning": "; ".join(warn)})
    return pd.DataFrame(rows, columns=cols)


def setting_table(runs: pd.DataFrame, experiment: str, setting_name: str) -> pd.DataFrame:
    """Mixing / noise curves: dataset, train_domain, <setting_name>, test_domain, auc_mean, auc_std,
    n_seeds, plus the main runs of the same seeds as the setting-0 point (f = 0, alpha = 0)."""
    cols = ["dataset", "train_domain", setting_name, "test_domain", "auc_mean", "auc_std", "n_seeds", "source"]
    r = _ok_runs(runs, experiment)
    if len(r) == 0:
        return pd.DataFrame(columns=cols)
    base = _ok_runs(runs, "main")
    base = base[base["seed"].isin(r["seed"].unique())].assign(setting=0.0)
    frames = [r.assign(source=experiment), base.assign(source="main")]
    both = pd.concat([f for f in frames if len(f)], ignore_index=True)
    g = both.groupby(["dataset", "train_domain", "setting", "test_domain", "source"], sort=True)["auc"]
    out = g.agg(auc_mean="mean", auc_std=lambda a: float(np.std(a, ddof=1)) if len(a) > 1 else float("nan"),
                n_seeds="count").reset_index().rename(columns={"setting": setting_name})
    return out[cols]


def fmt_p(p: float) -> str:
    """A p-value for prose: three significant digits, '<0.001' below that."""
    if p is None or not math.isfinite(p):
        return "n/a"
    return "<0.001" if p < 1e-3 else f"{p:.3g}"
