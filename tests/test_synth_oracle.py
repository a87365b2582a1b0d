"""The simulator oracle: neighbourhood features by hand, and a constructed case whose answer is known."""
import numpy as np
import pandas as pd
import pytest

from mridomain.errors import InvalidArgumentError
from mridomain.synth.data import Subject
from mridomain.synth.oracle import (compare_with_oracle, fit_oracle, neighbourhood_features, oracle_auc,
                                    oracle_contribution)


def test_neighbourhood_features_by_hand():
    vol = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    mask = np.zeros_like(vol, bool)
    mask[1, 2, 3] = mask[0, 0, 0] = True
    f = neighbourhood_features([vol, -vol], mask)
    assert f.shape == (2, 54)
    # mask voxels in C order: (0, 0, 0) first; its neighbourhood repeats the edge
    padded = np.pad(vol, 1, mode="edge")
    assert np.array_equal(f[0, :27], padded[0:3, 0:3, 0:3].ravel())
    assert np.array_equal(f[1, :27], vol[0:3, 1:4, 2:5].ravel())
    assert np.array_equal(f[1, 27:], -vol[0:3, 1:4, 2:5].ravel())


def _subjects(n, seed):
    # "a" and "b" are functions of a shared tissue map; "c" adds an agent present only in a blob that
    # neither a nor b sees (as gadolinium on T1Gd): the oracle must rank c first and find the blob
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        tissue = rng.integers(1, 4, (8, 16, 16)).astype(np.float32)
        truth = np.full(tissue.shape, 3, np.uint8)          # white matter everywhere ...
        truth[2:6, 4:10, 4:10] = 5                           # ... and an "enhancing" blob
        agent = np.where(truth == 5, rng.uniform(0.2, 0.6), 0.0).astype(np.float32)
        a = tissue / 4
        b = (4 - tissue) / 4
        c = np.clip(0.2 * tissue + agent * rng.uniform(0.5, 1.5, tissue.shape), 0, None) / 2
        out.append(Subject(f"s{k}", {s: v[None].astype(np.float32) for s, v in (("a", a), ("b", b), ("c", c))},
                           truth=truth))
    return out


def test_oracle_finds_what_only_one_sequence_carries():
    train, test = _subjects(6, 0), _subjects(3, 1)
    res = fit_oracle(train, test, ["a", "b", "c"], voxels_per_subject=1500)
    t = res.table.set_index("sequence")
    assert res.order[0] == "c"
    assert t.loc["a", "unexplained"] < 0.05 and t.loc["b", "unexplained"] < 0.05
    assert t.loc["c", "unexplained"] > 0.2
    auc = oracle_auc(res, test, [("c", "enhancing"), ("a", "enhancing")])
    assert auc[("c", "enhancing")] > 0.9
    assert auc[("a", "enhancing")] < 0.8
    contrib = pd.DataFrame({"sequence": ["a", "b", "c"], "c_d": [0.1, -0.3, 0.9], "rank_d": [2, 3, 1]})
    cmp = compare_with_oracle(contrib, {"noisy": res})
    summary = cmp.attrs["summary"]["noisy"]
    assert summary["top_matches"] and summary["oracle_top"] == "c"
    assert cmp.set_index("sequence").loc["c", "rank_noisy"] == 1
    # one source at a time, scored by eq. 4 as the generator is: neither a nor b makes c's blob, while
    # a and b make each other exactly, so the oracle's own C_d puts c first by a wide margin
    pairwise = fit_oracle(train, test, ["a", "b", "c"], voxels_per_subject=1500, pairwise=True, kind="pairwise",
                          progress=False)
    own = oracle_contribution(pairwise).set_index("sequence")["c_d"]
    assert own.idxmax() == "c" and own["c"] > max(own["a"], own["b"]) + 1.0
    learned = pd.DataFrame({"sequence": ["a", "b", "c"], "c_d": [-0.5, -0.4, 0.9], "rank_d": [3, 2, 1]})
    eq4 = compare_with_oracle(learned, {"pairwise": pairwise}).attrs["summary"]["pairwise eq. 4"]
    assert eq4["oracle_order"][0] == "c" and eq4["top_matches"]


def test_per_timepoint_oracle_explains_a_difference_of_time_points():
    """A 3-D target that is a difference of a 4-D source's time points (as wash-in of the DCE): time
    point by time point the oracle explains it; averaging the source over time (the brain setting)
    cannot."""
    rng = np.random.default_rng(3)

    def subject(k):
        dce = rng.uniform(0, 1, (3, 4, 12, 12)).astype(np.float32)
        other = rng.uniform(0, 1, (1, 4, 12, 12)).astype(np.float32)
        wash = np.clip(dce[1] - dce[0], 0, None)[None]
        return Subject(f"s{k}", {"dce": dce, "other": other, "wash": wash})

    train, test = [subject(k) for k in range(6)], [subject(k) for k in range(6, 8)]
    seqs = ["dce", "other", "wash"]
    each = fit_oracle(train, test, seqs, per_timepoint=True, radius=0, progress=False).table.set_index("sequence")
    mean = fit_oracle(train, test, seqs, radius=0, progress=False).table.set_index("sequence")
    assert each.loc["wash", "unexplained"] < 0.1 < 0.5 < mean.loc["wash", "unexplained"]
    # a 4-D target is scored over its time points: the DCE's random phases stay unexplained
    assert each.loc["dce", "unexplained"] > 0.5


def test_pairwise_oracle_scores_each_single_source_as_c_d_does():
    """c = u + v of two independent unit-variance fields u (= a) and v (= b). Jointly every sequence is
    explained by the other two (a = c - b); one source at a time, R^2 is 1/2 between c and a or b and 0
    between a and b, so the unexplained fractions are a: (1 + 1/2) / 2 = 0.75, b: 0.75, c: 0.5."""
    rng = np.random.default_rng(4)

    def subject(k):
        u, v = rng.normal(0, 1, (2, 6, 12, 12)).astype(np.float32)
        brain = np.full(u.shape, 3, np.uint8)  # every voxel in the brain
        return Subject(f"s{k}", {"a": u[None], "b": v[None], "c": (u + v)[None]}, truth=brain)

    train, test = [subject(k) for k in range(8)], [subject(k) for k in range(8, 11)]
    joint = fit_oracle(train, test, ["a", "b", "c"], radius=0, progress=False)
    pairwise = fit_oracle(train, test, ["a", "b", "c"], radius=0, progress=False, pairwise=True, kind="pairwise")
    assert (joint.table["unexplained"] < 0.15).all()
    t = pairwise.table.set_index("sequence")["unexplained"]
    assert abs(t["a"] - 0.75) < 0.08 and abs(t["b"] - 0.75) < 0.08 and abs(t["c"] - 0.5) < 0.08
    assert pairwise.order[-1] == "c"
    pairs = pairwise.pairs.set_index(["source", "target"])["unexplained"]
    assert len(pairs) == 6
    assert pairs[("b", "a")] > 0.9 and abs(pairs[("c", "a")] - 0.5) < 0.1 and abs(pairs[("a", "c")] - 0.5) < 0.1
    # a target's map is the mean of its sources' error maps
    assert pairwise.maps["s8"]["c"].shape == (6, 12, 12)
    # every pair scored per held-out subject as Table 1 scores the generator (eq. 4 ranks them)
    m = pairwise.subject_metrics
    assert len(m) == 6 * 3 and set(m["subject"]) == {"s8", "s9", "s10"} and m["ssim"].between(-1, 1).all()
    mean_psnr = m.groupby(["source", "target"])["psnr"].mean()
    assert np.allclose(mean_psnr.sort_index().to_numpy(), pairs.sort_index().index.map(
        pairwise.pairs.set_index(["source", "target"])["psnr"]).to_numpy())
    assert oracle_contribution(joint) is None           # one regressor per target from all others


def test_oracle_pairs_puts_each_pairs_generator_psnr_beside_the_oracles():
    from mridomain.synth.evaluation import oracle_pairs

    learned = pd.DataFrame({"source": ["a", "b", "a"], "target": ["b", "a", "a"], "psnr": [20.0, 22.0, 30.0]})
    oracle = pd.DataFrame({"source": ["a", "b"], "target": ["b", "a"], "unexplained": [0.1, 0.3],
                           "psnr": [33.0, 25.5]})
    out = oracle_pairs(learned, oracle).set_index(["source", "target"])
    assert list(out.index) == [("a", "b"), ("b", "a")]       # the self pair has no oracle row
    assert out.loc[("a", "b"), "psnr_gap"] == 13.0 and out.loc[("b", "a"), "psnr_gap"] == 3.5
    assert out.loc[("b", "a"), "unexplained_oracle"] == 0.3


def test_oracle_fits_only_the_targets_asked_for():
    """targets= fits those sequences alone, from all the others, and gives the full fit's row for the
    first sequence (the same voxels drawn); an unknown target is a one-line error."""
    train, test = _subjects(4, 0), _subjects(2, 1)
    full = fit_oracle(train, test, ["a", "b", "c"], voxels_per_subject=800, progress=False)
    one = fit_oracle(train, test, ["a", "b", "c"], voxels_per_subject=800, progress=False, targets=["a"])
    assert list(one.table["sequence"]) == ["a"]
    assert one.table.iloc[0]["unexplained"] == pytest.approx(full.table.set_index("sequence").loc["a", "unexplained"])
    assert set(one.maps[test[0].subject_id]) == {"a"}
    with pytest.raises(InvalidArgumentError, match=r"\['d'\]"):
        fit_oracle(train, test, ["a", "b", "c"], targets=["d"], progress=False)
