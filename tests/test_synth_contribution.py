"""C_t / C_d (eq. 4) and M_d (eq. 5) on hand-made cases; the M_d check's AUC summary."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mridomain.errors import EmptyInputError, InvalidArgumentError
from mridomain.sim.brain.anatomy import TRUTH_LABELS
from mridomain.synth.contribution import adjacency, centrality, contribution_table, least_squares_gain
from mridomain.synth.data import Subject
from mridomain.synth.differentiation import (dmap_auc_rows, differentiation_map, subject_dmaps,
                                             summarize_dmap_check)


def test_centralities_of_a_hand_made_adjacency():
    a = pd.DataFrame([[np.nan, 1.0, 2.0], [0.0, np.nan, -1.0], [3.0, 1.0, np.nan]],
                     index=["x", "y", "z"], columns=["x", "y", "z"])
    t = centrality(a).set_index("sequence")
    # C_t(i) = row sum / S, C_d(i) = -column sum / S, S = 3
    assert t.loc["x", "c_t"] == pytest.approx(1.0)
    assert t.loc["y", "c_t"] == pytest.approx(-1 / 3)
    assert t.loc["z", "c_t"] == pytest.approx(4 / 3)
    assert t.loc["x", "c_d"] == pytest.approx(-1.0)
    assert t.loc["y", "c_d"] == pytest.approx(-2 / 3)
    assert t.loc["z", "c_d"] == pytest.approx(-1 / 3)
    assert t["rank_t"].to_dict() == {"x": 2, "y": 3, "z": 1}
    assert t["rank_d"].to_dict() == {"x": 3, "y": 2, "z": 1}


def _rows():
    # two sequences, two subjects; p->q is generated better than q->p in both metrics
    return pd.DataFrame({"subject": ["s1", "s1", "s2", "s2"], "source": ["p", "q", "p", "q"],
                         "target": ["q", "p", "q", "p"], "psnr": [30.0, 20.0, 32.0, 22.0],
                         "ssim": [0.9, 0.5, 0.7, 0.5]})


def test_adjacency_zscore_by_hand():
    a, terms = adjacency(_rows(), ["p", "q"], "zscore")
    assert terms == ["psnr", "ssim"]
    psnr = np.array([30, 20, 32, 22.0])
    ssim = np.array([0.9, 0.5, 0.7, 0.5])
    z = lambda v, m: (m - v.mean()) / v.std()   # noqa: E731 - the z-score over all rows
    assert a.loc["p", "q"] == pytest.approx(z(psnr, 31.0) + z(ssim, 0.8), rel=1e-6)
    assert a.loc["q", "p"] == pytest.approx(z(psnr, 21.0) + z(ssim, 0.5), rel=1e-6)
    assert np.isnan(a.loc["p", "p"])


def test_adjacency_minmax_and_lpips_sign():
    rows = _rows().assign(lpips=[0.1, 0.3, 0.1, 0.3])
    a, terms = adjacency(rows, ["p", "q"], "minmax")
    assert terms == ["psnr", "ssim", "lpips"]
    assert a.loc["p", "q"] == pytest.approx(1 + 1 - 0)     # best PSNR, best SSIM, lowest LPIPS
    assert a.loc["q", "p"] == pytest.approx(0 + 0 - 1)
    table, _, note = contribution_table(rows, ["p", "q"], "minmax")
    # p is the hard one to generate (q -> p is the worst pair), so p ranks first in C_d
    assert "nLPIPS" in note and table.set_index("sequence").loc["p", "rank_d"] == 1
    _, _, note2 = contribution_table(_rows(), ["p", "q"])
    assert "two-term" in note2


def test_adjacency_bad_input():
    with pytest.raises(InvalidArgumentError):
        adjacency(_rows(), ["p", "q"], "rank")
    with pytest.raises(EmptyInputError):
        adjacency(_rows().assign(target=_rows()["source"]), ["p", "q"])


def test_dmap_is_eq5_on_a_hand_made_case():
    x = np.array([[0.0, 0.5], [1.0, 0.2]])
    g1 = np.array([[0.1, 0.5], [0.0, 0.2]])
    g2 = np.array([[0.0, 0.1], [1.0, 0.6]])
    expected = (np.abs(g1 - x) + np.abs(g2 - x)) / 2
    assert np.allclose(differentiation_map(x, [g1, g2]), expected)
    with pytest.raises(InvalidArgumentError):
        differentiation_map(x, [])
    with pytest.raises(InvalidArgumentError):
        differentiation_map(x, [np.zeros(3)])


def test_subject_dmaps_with_and_without_the_self_translation():
    vol = {s: np.full((1, 1, 2, 2), v, np.float32) for s, v in (("a", 0.5), ("b", 0.2), ("c", 0.9))}
    sub = Subject("s", vol)
    tr = {(src, tgt): np.full((1, 1, 2, 2), g, np.float32)
          for (src, tgt), g in {("b", "a"): 0.4, ("c", "a"): 0.8, ("a", "a"): 0.5,
                                ("a", "b"): 0.2, ("a", "c"): 0.0}.items()}
    maps = subject_dmaps(sub, tr)
    assert np.allclose(maps["a"], (0.1 + 0.3 + 0.0) / 3)  # eq. 5 as published: a->a is averaged in
    assert np.allclose(subject_dmaps(sub, tr, include_self=False)["a"], (0.1 + 0.3) / 2)
    assert np.allclose(maps["c"], 0.9)


def test_dmap_check_auc():
    rng = np.random.default_rng(0)
    rows = [{"subject": f"s{k}", "map": "m", "region": "r", "pos": rng.uniform(0.5, 1, 50),
             "neg": rng.uniform(0, 0.5, 80), "base_pos": rng.uniform(0, 1, 50), "base_neg": rng.uniform(0, 1, 80)}
            for k in range(2)]
    out = summarize_dmap_check(rows)
    assert out.loc[0, "auc"] == pytest.approx(1.0)
    assert 0.3 < out.loc[0, "auc_target_intensity"] < 0.7
    flipped = [dict(r, pos=r["neg"][:50], neg=r["pos"]) for r in rows]
    assert summarize_dmap_check(flipped).loc[0, "auc"] == pytest.approx(0.0)


def test_gain_matched_dmap_removes_a_global_scale_and_keeps_the_region():
    # the target is the generated image at 0.7 of its scale, plus a bright region no source shows:
    # eq. 5 lights the whole image up by the scale error, the gain-matched map only the region
    generated = np.linspace(0.2, 1.0, 100).reshape(10, 10)
    region = np.zeros((10, 10), bool)
    region[0:2, 2:6] = True                   # where the image is dark, as an enhancing rim in grey matter
    target = 0.7 * generated + 0.2 * region
    gain = least_squares_gain(generated, target)
    assert gain == pytest.approx(float(generated.ravel() @ target.ravel() / (generated.ravel() @ generated.ravel())))
    published = differentiation_map(target, [generated])
    matched = differentiation_map(target, [generated], match_gain=True)
    assert np.allclose(published, np.abs(generated - target), atol=1e-6)
    assert np.allclose(matched, np.abs(gain * generated - target), atol=1e-6)
    # outside the region the published map is the scale error (0.3 x intensity), far above the matched one
    assert published[~region].mean() > 5 * matched[~region].mean()
    assert matched[region].min() > matched[~region].max()
    assert published[region].min() < published[~region].max()    # eq. 5 alone does not separate it


def test_dmap_rows_carry_the_gain_matched_auc():
    truth = np.zeros((1, 6, 6), np.int16)
    truth[0, 1:5, 1:5] = TRUTH_LABELS["wm"]
    truth[0, 2:4, 2:4] = TRUTH_LABELS["enhancing"]
    base = np.linspace(0.3, 0.9, 36, dtype=np.float32).reshape(1, 1, 6, 6)
    enhancing = (truth == TRUTH_LABELS["enhancing"])[None].astype(np.float32)
    vol = {"t1": base, "t1ce": 0.6 * base + 0.4 * enhancing}
    sub = Subject("s", vol, truth=truth)
    tr = {("t1", "t1ce"): base.copy(), ("t1ce", "t1"): base.copy(), ("t1", "t1"): base.copy(),
          ("t1ce", "t1ce"): vol["t1ce"].copy()}
    maps = subject_dmaps(sub, tr, include_self=False)
    matched = subject_dmaps(sub, tr, include_self=False, match_gain=True)
    rows = [r for r in dmap_auc_rows(sub, maps, tr, matched) if r["map"] == "t1ce"]
    out = summarize_dmap_check(rows)
    assert out.loc[0, "auc_gain_matched"] == pytest.approx(1.0)
    assert out.loc[0, "auc"] < 1.0
    no_matched = summarize_dmap_check([r for r in dmap_auc_rows(sub, maps, tr) if r["map"] == "t1ce"])
    assert np.isnan(no_matched.loc[0, "auc_gain_matched"])


def _three_sequence_rows():
    # one subject, all 9 ordered pairs (self-translations included), PSNR only varies by target and
    # SSIM is constant, so nSSIM is 0 and A_ij is the z-scored PSNR of the pair
    psnr = {("a", "a"): 40.0, ("a", "b"): 24.0, ("a", "c"): 26.0,
            ("b", "a"): 25.0, ("b", "b"): 45.0, ("b", "c"): 26.0,
            ("c", "a"): 25.0, ("c", "b"): 24.0, ("c", "c"): 28.0}
    return pd.DataFrame([{"subject": "s1", "source": s, "target": t, "psnr": v, "ssim": 0.8}
                         for (s, t), v in psnr.items()]), psnr


def test_eq4_keeps_the_diagonal_in_the_pool_and_the_sums_as_published():
    rows, psnr = _three_sequence_rows()
    seqs = ["a", "b", "c"]
    table, a, note = contribution_table(rows, seqs)
    # by hand: z-score over all nine rows (the authors' all_psnr keeps i == j), then sums over all j / S
    pool = np.array(list(psnr.values()))
    hand = {k: (v - pool.mean()) / pool.std() for k, v in psnr.items()}
    for (s, t), v in hand.items():
        assert a.loc[s, t] == pytest.approx(v, abs=1e-6)
    t = table.set_index("sequence")
    for i in seqs:
        assert t.loc[i, "c_t"] == pytest.approx(sum(hand[(i, j)] for j in seqs) / 3, abs=1e-6)
        assert t.loc[i, "c_d"] == pytest.approx(-sum(hand[(j, i)] for j in seqs) / 3, abs=1e-6)
    assert "diagonal i = j included" in note
    # c is the only sequence the model cannot reproduce from itself: it ranks first in C_d as published
    assert t.loc["c", "rank_d"] == 1
    # without the diagonal (the documented option), the pool is the six cross pairs and b ranks first
    off = {k: v for k, v in psnr.items() if k[0] != k[1]}
    pool_off = np.array(list(off.values()))
    table_off, a_off, note_off = contribution_table(rows, seqs, include_self=False)
    assert np.isnan(a_off.loc["a", "a"]) and "excluded" in note_off
    assert a_off.loc["a", "b"] == pytest.approx((24.0 - pool_off.mean()) / pool_off.std(), abs=1e-6)
    t_off = table_off.set_index("sequence")
    assert t_off.loc["b", "rank_d"] == 1 and t_off.loc["c", "rank_d"] == 3


def test_subject_dmaps_include_the_self_translation_by_default():
    vol = {s: np.full((1, 1, 2, 2), v, np.float32) for s, v in (("a", 0.5), ("b", 0.2))}
    sub = Subject("s", vol)
    tr = {("b", "a"): np.full((1, 1, 2, 2), 0.4, np.float32), ("a", "a"): np.full((1, 1, 2, 2), 0.2, np.float32),
          ("a", "b"): np.full((1, 1, 2, 2), 0.2, np.float32)}
    assert np.allclose(subject_dmaps(sub, tr)["a"], (0.1 + 0.3) / 2)            # eq. 5: (1/S) sum over all j
    assert np.allclose(subject_dmaps(sub, tr, include_self=False)["a"], 0.1)


def test_translate_all_makes_self_pairs_so_include_self_changes_the_map():
    import torch

    from mridomain.synth.config import make_config
    from mridomain.synth.model import SynthRun
    from mridomain.synth.network import build_generator

    torch.manual_seed(0)
    cfg = make_config("cpu", sequences=("a", "b", "c"), silence=(1, 2),
                      network={"enc_channels": (4, 8, 8), "dec_channels": (8, 4), "n_res_enc": 1, "n_res_dec": 1})
    run = SynthRun(path=Path("."), config=cfg, schema={}, generator=build_generator(cfg.network).eval(),
                   device=torch.device("cpu"))
    rng = np.random.default_rng(0)
    sub = Subject("s", {s: rng.uniform(0, 1, (1, 4, 8, 8)).astype(np.float32) for s in ("a", "b", "c")})
    tr = run.translate_all(sub)
    assert set(tr) == {(s, t) for s in "abc" for t in "abc"}
    assert set(run.translate_all(sub, include_self=False)) == {(s, t) for s in "abc" for t in "abc" if s != t}
    with_self = subject_dmaps(sub, tr)["a"]
    without = subject_dmaps(sub, tr, include_self=False)["a"]
    assert not np.allclose(with_self, without)
    expected = np.mean([np.abs(tr[(s, "a")] - sub.volumes["a"]) for s in "abc"], axis=0).mean(axis=0)
    assert np.allclose(with_self, expected, atol=1e-6)


def test_gain_matched_psnr_by_hand():
    from mridomain.synth.contribution import gain_matched_psnr

    t = np.array([[0.0, 1.0], [0.0, 1.0]])
    x = t + 0.1                                   # an offset, which no gain removes
    gain, psnr = gain_matched_psnr(x, t)
    # g = (x . t) / (x . x) = (1.1 + 1.1) / (2 x 0.01 + 2 x 1.21) = 2.2 / 2.44
    assert gain == pytest.approx(2.2 / 2.44)
    residual = np.array([0.1 * gain, 1.1 * gain - 1.0])    # the two kinds of voxel, two of each
    assert psnr == pytest.approx(10 * np.log10(1.0 / np.mean(residual ** 2)))
    assert psnr > 20.0                            # the plain PSNR: 10 log10(1 / 0.01) = 20 dB
    assert gain_matched_psnr(np.zeros(4), np.ones(4)) == (1.0, 0.0)   # nothing to scale: the plain PSNR
