"""The brain simulator: signal equations, contrasts of the rendered tissues, NIfTI round trip."""
from dataclasses import replace

import numpy as np
import pytest

from mridomain.io import read_nifti
from mridomain.sim.brain import (PROTOCOLS, TRUTH_LABELS, csf_null_ti, inversion_recovery_signal, make_subject,
                                 render_subject, sequence_signal, simulate_brains, spin_echo_signal, tissue_values,
                                 write_like_image)
from mridomain.sim.physics import spgr_signal


def _signal(seq, tissue, b0, gd=0.0):
    t1, t2, pd_ = tissue_values(b0)[tissue]
    return float(sequence_signal(PROTOCOLS[seq], pd_, t1, t2, b0, gd_mM=gd))


def test_signal_equations_by_hand():
    assert float(spin_echo_signal(1.0, 1000.0, 100.0, tr=2000.0, te=100.0)) == pytest.approx(
        (1 - np.exp(-2)) * np.exp(-1))
    assert float(inversion_recovery_signal(0.5, 1000.0, 100.0, tr=3000.0, te=50.0, ti=500.0)) == pytest.approx(
        0.5 * abs(1 - 2 * np.exp(-0.5) + np.exp(-3)) * np.exp(-0.5))
    assert csf_null_ti(4000.0, 1e9) == pytest.approx(4000.0 * np.log(2))   # TR >> T1: T1 ln 2


@pytest.mark.parametrize("b0", [1.5, 3.0])
def test_flair_nulls_csf_and_t2_shows_it_bright(b0):
    assert _signal("flair", "csf", b0) < 1e-6 * _signal("flair", "wm", b0) + 1e-12
    assert _signal("flair", "edema", b0) > 1.5 * _signal("flair", "wm", b0)
    assert _signal("t2", "csf", b0) > _signal("t2", "gm", b0) > _signal("t2", "wm", b0)
    assert _signal("t1", "wm", b0) > _signal("t1", "gm", b0) > _signal("t1", "csf", b0)
    # gadolinium shortens T1 only in the contrast-enhanced protocol: there the rim is the brightest
    # tissue; on the other sequences some other tissue outshines it
    tissues = ("csf", "gm", "wm", "edema", "necrosis")
    assert _signal("t1ce", "enhancing", b0, gd=0.3) > 1.5 * max(_signal("t1ce", t, b0) for t in tissues)
    assert _signal("t1", "enhancing", b0, gd=0.3) == pytest.approx(_signal("t1", "enhancing", b0))
    for seq in ("t1", "t2", "flair"):
        assert _signal(seq, "enhancing", b0) < max(_signal(seq, t, b0) for t in tissues)
    t1, t2, pd_ = tissue_values(b0)["wm"]
    assert _signal("t1ce", "wm", b0) == pytest.approx(float(spgr_signal(pd_, t1, t2, 9.0, 4.0, 20.0)))
    assert _signal("t1", "wm", b0) == pytest.approx(float(spin_echo_signal(pd_, t1, t2, 500.0, 12.0)))


@pytest.mark.parametrize("b0", [1.5, 3.0])
def test_vasogenic_edema_is_t1_hypointense_and_t2_flair_hyperintense_to_white_matter(b0):
    # real vasogenic edema: dark on T1-weighted images, bright on T2 and FLAIR (its extra water lengthens
    # T1 more than it adds proton density); the uncited PD 0.85 gave 0.297 vs 0.297 at 1.5 T
    assert _signal("t1", "edema", b0) < 0.93 * _signal("t1", "wm", b0)
    assert _signal("t1ce", "edema", b0) < _signal("t1ce", "wm", b0)
    assert _signal("t2", "edema", b0) > 1.5 * _signal("t2", "wm", b0)
    assert _signal("flair", "edema", b0) > 1.5 * _signal("flair", "wm", b0)
    t1_edema, _, pd_edema = tissue_values(b0)["edema"]
    t1_wm, _, pd_wm = tissue_values(b0)["wm"]
    assert 0.05 <= pd_edema - pd_wm <= 0.08          # microgravimetry: +5-8 % water in peritumoural WM
    assert pd_edema >= 0.75 and t1_edema > 1.3 * t1_wm   # above the in-vivo oedema threshold (75 %, 850 ms)


def test_rendered_edema_is_darker_than_white_matter_on_t1():
    sub = make_subject(seed=0, i=0, voxel_mm=3.0, noise=False)
    truth = sub.anatomy.truth_labels()
    edema, wm = truth == TRUTH_LABELS["edema"], truth == TRUTH_LABELS["wm"]
    assert edema.sum() > 20
    assert sub.images["t1"][edema].mean() < sub.images["t1"][wm].mean()
    assert sub.images["flair"][edema].mean() > sub.images["flair"][wm].mean()


def test_rendered_rim_is_bright_only_on_t1gd_and_csf_dark_on_flair():
    sub = make_subject(seed=0, i=0, voxel_mm=3.0, noise=False)
    truth = sub.anatomy.truth_labels()
    rim, wm, csf = (truth == TRUTH_LABELS[t] for t in ("enhancing", "wm", "csf"))
    assert rim.sum() > 5 and csf.sum() > 100
    # gadolinium changes T1Gd in the enhancing compartment only, and brightens it there
    no_gd, _ = render_subject(replace(sub.anatomy, gd_mM=np.zeros_like(sub.anatomy.gd_mM)), sub.b0, None, ("t1ce",))
    untouched = sub.anatomy.fractions["enhancing"] == 0
    assert np.allclose(sub.images["t1ce"][untouched], no_gd["t1ce"][untouched])
    assert sub.images["t1ce"][rim].mean() > 1.3 * no_gd["t1ce"][rim].mean()
    assert sub.images["t1"][rim].mean() < sub.images["t1"][wm].mean()      # no enhancement on native T1
    assert sub.images["flair"][csf].mean() < 0.5 * sub.images["flair"][wm].mean()
    assert sub.images["t2"][csf].mean() > 1.5 * sub.images["t2"][wm].mean()   # partial volume at 3 mm
    assert (sub.images["t1"][sub.anatomy.brain < 0.05] == 0).all()   # skull-stripped background


def test_simulator_is_deterministic_and_subjects_differ():
    a = make_subject(1, 3, voxel_mm=4.0)
    b = make_subject(1, 3, voxel_mm=4.0)
    c = make_subject(1, 4, voxel_mm=4.0)
    assert np.array_equal(a.images["flair"], b.images["flair"])
    assert not np.array_equal(a.anatomy.brain, c.anatomy.brain)
    assert all(s % 4 == 0 for s in a.anatomy.brain.shape)


def test_nifti_round_trip_keeps_orientation(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.random((5, 6, 7)).astype(np.float32)       # (S, H, W) as read_nifti returns
    pixels[1, 2, 3] = 9.0
    affine = np.array([[-2.0, 0, 0, 10], [0, 0, 3.0, -5], [0, 1.5, 0, 2], [0, 0, 0, 1]])
    path = write_like_image(tmp_path / "x.nii.gz", pixels, affine)
    back = read_nifti(path)
    assert np.array_equal(back.pixels, pixels)
    assert np.allclose(back.meta["affine"], affine)
    s, h, w = np.argwhere(back.pixels == 9.0)[0]
    world = np.asarray(back.meta["affine"]) @ [w, h, s, 1]   # voxel (i, j, k) = (w, h, s)
    assert np.allclose(world, affine @ [3, 2, 1, 1])


def test_simulate_brains_writes_the_brats_layout(tmp_path):
    res = simulate_brains(tmp_path / "b", n_subjects=2, seed=0, voxel_mm=4.0, progress=False)
    assert len(res.subjects) == 2 and len(res.manifest) == 2
    sid = res.subjects[0].name
    for suffix in ("t1", "t1ce", "t2", "flair", "seg", "truth"):
        assert (res.subjects[0] / f"{sid}_{suffix}.nii.gz").exists()
    mem = make_subject(0, 0, voxel_mm=4.0)
    img = read_nifti(res.subjects[0] / f"{sid}_t2.nii.gz")
    assert np.allclose(img.pixels, np.transpose(mem.images["t2"], (2, 1, 0)))   # (x, y, z) -> (S, H, W)
    seg = read_nifti(res.subjects[0] / f"{sid}_seg.nii.gz").pixels
    assert set(np.unique(seg)) <= {0, 1, 2, 4} and (seg == 4).any()
    assert "Simulated 2 brains" in res.summary()
    # the downstream trait: in the manifest and labels.csv, and exactly the upper half of the Gd range
    import pandas as pd

    labels = pd.read_csv(tmp_path / "b" / "labels.csv")
    assert list(labels.columns) == ["subject_id", "strong_enhancement"]
    assert (labels["strong_enhancement"].to_numpy() == (res.manifest["gd_mM"] >= 0.3).astype(int).to_numpy()).all()
    assert (labels["strong_enhancement"] == res.manifest["strong_enhancement"]).all()
