"""AUC, bootstrap interval, Wilcoxon p and the Table 2 / Delta aggregation against hand-computed values."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mridomain.errors import InvalidArgumentError
from mridomain.shift.stats import (auc, bootstrap_ci, delta_table, paired_deltas, sizes_table, smallest_p, table2,
                                   wilcoxon_p)


def test_auc_hand_computed_and_against_sklearn():
    # 4 positive-negative pairs: (0.35 > 0.1), (0.35 < 0.4), (0.8 > 0.1), (0.8 > 0.4) -> 3/4
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # a tie between a positive and a negative counts one half: (1 + 0.5 + 1 + 1) / 4
    assert auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875)
    # perfectly reversed scores
    assert auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    hand_made = [([0, 1, 1, 0, 1, 0, 0], [3, 7, 7, 1, 2, 7, 0]),
                 ([1, 0, 1, 0, 1, 0, 1, 0], [-2.5, -1.0, 0.0, 0.0, 4.0, 1e-9, 1e-9, -3.0]),
                 ([0, 0, 0, 1], [0.9, 0.8, 0.7, 0.75])]
    for y, s in hand_made:
        assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_refuses_what_it_cannot_score():
    with pytest.raises(InvalidArgumentError, match="needs both labels"):
        auc([1, 1, 1], [0.2, 0.3, 0.4])
    with pytest.raises(InvalidArgumentError, match="not finite"):
        auc([0, 1], [0.2, float("nan")])
    with pytest.raises(InvalidArgumentError, match="0 or 1"):
        auc([0, 2], [0.1, 0.2])


def test_bootstrap_ci_hand_computed():
    assert bootstrap_ci([0.25, 0.25, 0.25]) == (0.25, 0.25)
    # two values a < b: resampled means are a (p 1/4), (a+b)/2 (1/2), b (1/4); the 2.5% and 97.5%
    # quantiles of that distribution are a and b
    lo, hi = bootstrap_ci([-0.2, 0.1], n_resamples=20000)
    assert lo == pytest.approx(-0.2) and hi == pytest.approx(0.1)
    # [0, 0, 1]: P(mean = 1) = 1/27 = 0.037 > 0.025 and P(mean = 0) = 8/27 -> [0, 1]
    lo, hi = bootstrap_ci([0.0, 0.0, 1.0], n_resamples=20000)
    assert (lo, hi) == (pytest.approx(0.0), pytest.approx(1.0))
    assert all(np.isnan(bootstrap_ci([0.3])))
    a = bootstrap_ci(np.linspace(-1, 1, 9), seed=3)
    assert a == bootstrap_ci(np.linspace(-1, 1, 9), seed=3)


def test_wilcoxon_hand_computed():
    # five differences of one sign: W = 0, exact two-sided p = 2 / 2^5
    assert wilcoxon_p([0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(2 / 32)
    # the smallest |difference| negative: W- = 1; P(W <= 1) = 2/32 -> two-sided 4/32
    assert wilcoxon_p([-0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(4 / 32)
    # six positive: 2 / 64
    assert wilcoxon_p([0.05, 0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(2 / 64)
    assert wilcoxon_p([0.0, 0.0, 0.0]) == 1.0
    assert np.isnan(wilcoxon_p([0.2]))
    assert smallest_p(3) == 0.25 and smallest_p(10) == pytest.approx(2 / 1024)


def _runs(rows):
    return pd.DataFrame([{"experiment": "main", "dataset": "d", "status": "ok", "setting": np.nan, **r} for r in rows])


def test_table2_and_paired_delta():
    # seed 0: A->A 0.9, A->B 0.7; seed 1: A->A 0.8, A->B 0.75; B->B 0.6/0.7, B->A 0.65/0.72
    rows = [dict(seed=0, train_domain="A", test_domain="A", auc=0.9), dict(seed=0, train_domain="A", test_domain="B", auc=0.7),
            dict(seed=1, train_domain="A", test_domain="A", auc=0.8), dict(seed=1, train_domain="A", test_domain="B", auc=0.75),
            dict(seed=0, train_domain="B", test_domain="B", auc=0.6), dict(seed=0, train_domain="B", test_domain="A", auc=0.65),
            dict(seed=1, train_domain="B", test_domain="B", auc=0.7), dict(seed=1, train_domain="B", test_domain="A", auc=0.72)]
    runs = _runs(rows)
    t2 = table2(runs).set_index(["train_domain", "test_domain"])
    assert list(table2(runs).columns) == ["dataset", "train_domain", "test_domain", "auc_mean", "auc_std", "n_seeds"]
    assert t2.loc[("A", "A"), "auc_mean"] == pytest.approx(0.85)
    assert t2.loc[("A", "A"), "auc_std"] == pytest.approx(np.std([0.9, 0.8], ddof=1))
    assert t2.loc[("A", "B"), "n_seeds"] == 2
    d = delta_table(runs).set_index("train_domain")
    # paired per seed: A: (0.7 - 0.9, 0.75 - 0.8) = (-0.2, -0.05); B: (0.05, 0.02)
    assert d.loc["A", "delta"] == pytest.approx(-0.125)
    assert (d.loc["A", "ci_low"], d.loc["A", "ci_high"]) == (pytest.approx(-0.2), pytest.approx(-0.05))
    assert d.loc["B", "delta"] == pytest.approx(0.035)
    assert d.loc["A", "p_value"] == pytest.approx(wilcoxon_p([-0.2, -0.05]))
    per_seed = paired_deltas(runs)
    assert sorted(per_seed["delta"].round(6)) == sorted(np.round([-0.2, -0.05, 0.05, 0.02], 6))


def test_failed_runs_are_left_out():
    rows = [dict(seed=0, train_domain="A", test_domain="A", auc=0.9), dict(seed=0, train_domain="A", test_domain="B", auc=0.7)]
    runs = pd.concat([_runs(rows), _runs([dict(seed=1, train_domain="A", test_domain=None, auc=np.nan)]).assign(status="failed")])
    assert table2(runs)["n_seeds"].tolist() == [1, 1]


def test_power_columns_hand_computed():
    from scipy.stats import t

    deltas = [-0.10, -0.02, -0.06, -0.04]
    rows = []
    for seed, d in enumerate(deltas):
        n = dict(n_test=40 + seed, n_test_positive=24 + seed, n_test_patients=40 + seed, n_test_positive_patients=24 + seed)
        rows += [dict(seed=seed, train_domain="A", test_domain="A", auc=0.9, **n),
                 dict(seed=seed, train_domain="A", test_domain="B", auc=0.9 + d, **n)]
    d = delta_table(_runs(rows)).iloc[0]
    sd = np.std(deltas, ddof=1)
    assert d["detectable_delta"] == pytest.approx((t.ppf(0.975, 3) + t.ppf(0.8, 3)) * sd / 2)
    assert d["ci_half_width"] == pytest.approx((d["ci_high"] - d["ci_low"]) / 2)
    # the smallest test set: seed 0, 24 positives and 16 negatives
    assert (d["min_test_positives"], d["min_test_negatives"]) == (24, 16)
    assert "only 16 negatives (< 25)" in d["warning"] and "4 seeds cannot give p below 0.125" in d["warning"]
    sizes = sizes_table(_runs(rows)).set_index("test_domain")
    assert sizes.loc["B", "positives_min"] == 24 and sizes.loc["B", "positives_max"] == 27
    assert sizes.loc["B", "negatives_min"] == 16 and sizes.loc["B", "patients_max"] == 43
    assert sizes.loc["B", "warning"].startswith("fewer than 25")
