"""The §3.1 protocol: split proportions and disjointness per domain, mixing counts, noise, run plans."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from mridomain.data.splits import split_counts
from mridomain.shift.manifest import ManifestError
from mridomain.shift.protocol import (PAPER_FRACTIONS, add_noise, check_splits, mixing_indices, plan_runs,
                                      split_domain, study_splits)


@pytest.mark.parametrize("n", [6, 7, 13, 60, 101])
@pytest.mark.parametrize("stratify", [True, False])
def test_split_proportions_exact(n, stratify):
    labels = pd.Series([i % 3 == 0 for i in range(n)], index=[f"p{i}" for i in range(n)]).astype(int)
    assign = split_domain(labels, seed=4, stratify=stratify)
    counts = Counter(assign.values())
    assert (counts["train"], counts["val"], counts["test"]) == split_counts(n, PAPER_FRACTIONS)
    for name, frac in zip(("train", "val", "test"), PAPER_FRACTIONS):
        assert abs(counts[name] - frac * n) < 1.0
    assert set(assign) == set(labels.index)   # every patient exactly once


def test_stratified_split_gives_every_split_both_classes():
    # 18 patients, 6 positive: an unstratified 1/6 test split (3 patients) often has no positive
    labels = pd.Series([1] * 6 + [0] * 12, index=[f"p{i:02d}" for i in range(18)])
    for seed in range(30):
        assign = split_domain(labels, seed=seed, stratify=True)
        for name in ("train", "val", "test"):
            got = {labels[p] for p, s in assign.items() if s == name}
            assert got == {0, 1}, (seed, name)


def test_splits_by_patient_per_domain_and_deterministic():
    rows = []
    for dom in ("GE", "SIEMENS"):
        for p in range(30):
            for k in range(3):   # three samples (slices) per patient
                rows.append({"domain": dom, "patient_id": f"{dom}{p}", "label": (p + k) % 2})
    table = pd.DataFrame(rows)
    s0 = study_splits(table, "d", seed=0)
    assert (s0 == study_splits(table, "d", seed=0)).all()
    assert (s0 != study_splits(table, "d", seed=1)).any()
    per_patient = pd.DataFrame({"p": table["patient_id"], "s": s0}).groupby("p")["s"].nunique()
    assert (per_patient == 1).all()      # a patient's samples never straddle two splits
    for dom in ("GE", "SIEMENS"):
        pats = table.loc[table["domain"] == dom, "patient_id"].to_numpy()
        split_of = dict(zip(pats, s0[table["domain"] == dom]))
        counts = Counter(split_of.values())
        assert (counts["train"], counts["val"], counts["test"]) == (20, 5, 5)
    # one domain's split does not depend on the other domain's patients
    ge_only = table[table["domain"] == "GE"].reset_index(drop=True)
    assert (study_splits(ge_only, "d", seed=0) == s0[table["domain"].to_numpy() == "GE"]).all()


def test_fixed_split_column_is_used_and_checked():
    table = pd.DataFrame({"domain": ["A"] * 6, "patient_id": list("abcdef"), "label": [0, 1, 0, 1, 0, 1],
                          "split": ["train", "train", "val", "val", "test", "test"]})
    assert list(study_splits(table, "d", seed=5)) == list(table["split"])
    check_splits(table, "d", seeds=[0, 1])
    bad = table.assign(label=[0, 1, 0, 1, 0, 0])
    with pytest.raises(ManifestError, match=r"domain 'A', split test .*only label 0") as err:
        check_splits(bad, "d", seeds=[0], where="m.csv")
    assert "\n" not in str(err.value) and str(err.value).startswith("m.csv:")


def test_mixing_fraction_counted_exactly():
    src, tgt = np.arange(12), np.arange(100, 120)
    mixed, dups = mixing_indices(src, tgt, 0.25, seed=0)
    n_target = np.isin(mixed, tgt).sum()
    assert n_target == 4 and dups == 0                   # round(0.25 / 0.75 * 12) = 4
    assert n_target / len(mixed) == pytest.approx(0.25)
    assert (mixed[:12] == src).all() and len(set(mixed[12:])) == 4
    for f in (0.1, 0.2, 0.3, 0.4, 0.5):
        mixed, _ = mixing_indices(np.arange(90), np.arange(1000, 1200), f, seed=1)
        assert np.isin(mixed, np.arange(1000, 1200)).sum() == round(f / (1 - f) * 90)
        assert abs(np.isin(mixed, np.arange(1000, 1200)).mean() - f) < 1 / 90


def test_mixing_duplicates_when_target_runs_short():
    src, tgt = np.arange(12), np.arange(100, 105)         # f = 0.5 needs 12 target samples, 5 exist
    mixed, dups = mixing_indices(src, tgt, 0.5, seed=2)
    target_part = mixed[12:]
    assert len(target_part) == 12 and dups == 7
    counts = Counter(target_part.tolist())
    assert set(counts) == set(tgt.tolist())               # every target sample used
    assert sorted(counts.values()) == [2, 2, 2, 3, 3]      # 12 = 2 x 5 + 2: each 2 or 3 times
    assert (mixing_indices(src, tgt, 0.5, seed=2)[0] == mixed).all()
    assert mixing_indices(src, tgt, 0.0, seed=2) == (pytest.approx(src), 0)
    with pytest.raises(ManifestError):
        mixing_indices(src, tgt, 1.0, seed=0)


def test_noise_in_stored_units_and_seeded():
    x = np.full((200, 8, 8), 500.0, dtype=np.float32)
    y = add_noise(x, 7.0, seed=3, key=("d", "A"))
    assert np.std(y - x) == pytest.approx(7.0, rel=0.02) and abs(np.mean(y - x)) < 0.1
    assert (add_noise(x, 7.0, seed=3, key=("d", "A")) == y).all()
    assert not (add_noise(x, 7.0, seed=4, key=("d", "A")) == y).all()


def test_plan_runs_counts_and_ids():
    doms = {"d": ("GE", "SIEMENS")}
    assert len(plan_runs("main", doms, range(10))) == 20
    mix = plan_runs("mixing", doms, range(3), [0.1, 0.2, 0.3, 0.4, 0.5])
    assert len(mix) == 30 and len({r.run_id for r in mix}) == 30
    assert {(r.train_domain, r.other_domain) for r in mix} == {("GE", "SIEMENS"), ("SIEMENS", "GE")}
    with pytest.raises(ManifestError):
        plan_runs("other", doms, [0])
