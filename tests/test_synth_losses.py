"""Losses of section 3.4 against hand-computed values; silenced sequences never reach a loss."""
import numpy as np
import pytest
import torch

from mridomain.errors import EmptyInputError, InvalidArgumentError, SchemaMismatchError
from mridomain.synth.config import make_config
from mridomain.synth.data import Subject, SynthData, silence_mask
from mridomain.synth.losses import (cycle_loss, lsgan_discriminator_loss, lsgan_generator_loss, pair_mask,
                                    reconstruction_loss)
from mridomain.synth.network import one_hot_code
from mridomain.synth.training import SynthTask


def test_l1_losses_by_hand():
    gen = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    tgt = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    # |diffs| = 1, 0, 2, 3 -> mean 1.5
    assert float(reconstruction_loss(gen, tgt, weight=10.0)) == pytest.approx(15.0)
    assert float(cycle_loss(gen, tgt, weight=1.0)) == pytest.approx(1.5)
    # squares = 1, 0, 4, 9 -> mean 3.5
    assert float(reconstruction_loss(gen, tgt, weight=10.0, kind="l2")) == pytest.approx(35.0)
    with pytest.raises(ValueError, match="'huber'"):
        reconstruction_loss(gen, tgt, kind="huber")


def test_l1_and_l2_reconstruction_pick_the_median_and_the_mean_of_an_ambiguous_target():
    """One source value, three equally likely targets (0, 0, 0.9): L1's best constant answer is
    the median 0, L2's the mean 0.3, the one that maximises PSNR."""
    targets = torch.tensor([0.0, 0.0, 0.9])
    answers = torch.linspace(0, 1, 101)
    best = {kind: float(answers[int(torch.stack([reconstruction_loss(a.expand(3), targets, 1.0, kind)
                                                  for a in answers]).argmin())])
            for kind in ("l1", "l2")}
    assert best == {"l1": pytest.approx(0.0), "l2": pytest.approx(0.3)}


def test_lsgan_losses_by_hand():
    real = torch.tensor([1.0, 0.5, 0.0])     # (r - 1)^2 = 0, 0.25, 1 -> mean 5/12
    fake = torch.tensor([0.0, 0.5])          # f^2 = 0, 0.25 -> mean 0.125
    assert float(lsgan_discriminator_loss(real, fake)) == pytest.approx(5 / 12 + 0.125)
    assert float(lsgan_discriminator_loss(None, fake)) == pytest.approx(0.125)
    assert float(lsgan_generator_loss(fake)) == pytest.approx((1 + 0.25) / 2)
    with pytest.raises(ValueError):
        lsgan_discriminator_loss(None, None)


def test_pair_mask():
    avail = torch.tensor([[1, 0, 1], [1, 1, 0], [0, 1, 1]], dtype=torch.bool)
    assert pair_mask(avail, 0, 2).tolist() == [True, False, False]
    assert pair_mask(avail, torch.tensor([0, 1, 2]), 1).tolist() == [False, True, True]


def test_silence_mask_keeps_one_and_is_deterministic():
    m = silence_mask(200, 4, (1, 3), seed=3)
    assert m.sum(axis=1).min() >= 1 and m.sum(axis=1).max() <= 3
    assert set(np.unique(4 - m.sum(axis=1))) == {1, 2, 3}
    assert (m == silence_mask(200, 4, (1, 3), seed=3)).all()
    partial = np.array([[True, False, False, False]])          # a subject with one sequence keeps it
    assert silence_mask(1, 4, (1, 3), 0, partial).tolist() == partial.tolist()


def _subjects(n, seqs, rng, shape=(6, 16, 16)):
    subs = []
    for k in range(n):
        vols = {}
        for s in seqs:
            v = np.zeros((1, *shape), np.float32)
            v[:, 1:-1, 2:-2, 2:-2] = rng.uniform(0.2, 1.0, (1, shape[0] - 2, shape[1] - 4, shape[2] - 4))
            vols[s] = v
        subs.append(Subject(f"s{k}", vols, affine=np.eye(4)))
    return subs


def test_a_silenced_sequence_never_enters_a_loss():
    """Silenced volumes are NaN: if any reached a loss (as target, real image or source), it would be NaN."""
    rng = np.random.default_rng(0)
    seqs = ("a", "b", "c")
    # every term on (the cpu preset turns the adversarial and cycle terms off): a silenced volume
    # must reach none of them
    cfg = make_config("cpu", sequences=seqs, batch_size=3, silence=(1, 2), val_subjects=1, val_slices=2,
                      lambda_adv=1.0, lambda_cyc=10.0,
                      network={"enc_channels": (4, 8, 8), "dec_channels": (8, 4), "n_res_enc": 1, "n_res_dec": 1,
                               "disc_channels": 4, "code_dim": 4})
    train = SynthData(seqs, _subjects(6, seqs, rng))
    val = SynthData(seqs, _subjects(1, seqs, rng))
    available = silence_mask(6, 3, (1, 2), seed=0)
    for n, sub in enumerate(train.subjects):
        for k, s in enumerate(seqs):
            if not available[n, k]:
                sub.volumes[s][:] = np.nan
    task = SynthTask(cfg, train, val, available)
    mods = task.build_modules()
    saw_silenced_target = 0
    for step in range(30):
        batch = task.make_batch(0, step)
        saw_silenced_target += int((~batch["has_target"]).sum())
        for key in ("x_source", "x_target", "real_target"):
            if batch[key] is not None:
                assert torch.isfinite(batch[key]).all(), key
        disc = mods[f"discriminator_{seqs[batch['target']]}"]
        total, parts, fake = task.generator_losses(batch, mods["generator"], disc, torch.device("cpu"))
        assert torch.isfinite(total) and all(torch.isfinite(v) for v in parts.values())
    assert saw_silenced_target > 0   # the case under test did occur


@pytest.mark.parametrize("lambda_adv, lambda_cyc", [(1.0, 10.0), (0.0, 10.0), (1.0, 0.0), (0.0, 0.0)])
def test_a_term_of_weight_zero_is_not_computed(lambda_adv, lambda_cyc):
    """A zero weight skips the work, not only the sum: no cycle pass (two generator halves fewer) and no
    discriminator call; a non-zero weight computes and logs its term."""
    rng = np.random.default_rng(2)
    seqs = ("a", "b")
    cfg = make_config("cpu", sequences=seqs, batch_size=2, silence=(0, 0), lambda_adv=lambda_adv,
                      lambda_cyc=lambda_cyc,
                      network={"enc_channels": (4, 8, 8), "dec_channels": (8, 4), "n_res_enc": 1, "n_res_dec": 1,
                               "disc_channels": 4, "code_dim": 4})
    subs = _subjects(3, seqs, rng)
    task = SynthTask(cfg, SynthData(seqs, subs[:2]), SynthData(seqs, subs[2:]), np.ones((2, 2), bool))
    mods = task.build_modules()
    gen, calls = mods["generator"], {"encode": 0, "disc": 0}
    encode = gen.encode

    def counting_encode(x, source_code=None):
        calls["encode"] += 1
        return encode(x, source_code)

    gen.encode = counting_encode
    batch = task.make_batch(0, 0)
    disc = mods[f"discriminator_{seqs[batch['target']]}"]
    disc.register_forward_hook(lambda *_: calls.__setitem__("disc", calls["disc"] + 1))
    total, parts, _ = task.generator_losses(batch, gen, disc, torch.device("cpu"))
    assert torch.isfinite(total)
    assert ("cyc_loss" in parts) == (lambda_cyc > 0) and ("adv_loss" in parts) == (lambda_adv > 0)
    assert calls["encode"] == (2 if lambda_cyc > 0 else 1)     # the cycle re-encodes X'_{i->j}
    assert calls["disc"] == (1 if lambda_adv > 0 else 0)


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_the_step_s_reconstruction_term_is_the_configured_loss(kind):
    """rec_loss reaches the step: its rec_loss part is the mean of the self and the i -> j term of that
    kind, computed here from the generator's own outputs."""
    rng = np.random.default_rng(4)
    seqs = ("a", "b")
    cfg = make_config("cpu", sequences=seqs, batch_size=2, silence=(0, 0), rec_loss=kind,
                      network={"enc_channels": (4, 8, 8), "dec_channels": (8, 4), "n_res_enc": 1, "n_res_dec": 1,
                               "disc_channels": 4, "code_dim": 4})
    subs = _subjects(3, seqs, rng)
    task = SynthTask(cfg, SynthData(seqs, subs[:2]), SynthData(seqs, subs[2:]), np.ones((2, 2), bool))
    gen = task.build_modules()["generator"]
    batch = task.make_batch(0, 0)
    with torch.no_grad():
        _, parts, fake = task.generator_losses(batch, gen, None, torch.device("cpu"))
        self_i = gen.decode(gen.encode(batch["x_source"]), one_hot_code(batch["source"], 4, torch.device("cpu")), 1)
    power = 1 if kind == "l1" else 2
    expected = (((self_i - batch["x_source"]).abs() ** power).mean()
                + ((fake - batch["x_target"]).abs() ** power).mean()) / 2
    assert float(parts["rec_loss"]) == pytest.approx(float(expected), rel=1e-5)


def test_task_refuses_an_available_sequence_that_was_not_loaded():
    rng = np.random.default_rng(1)
    seqs = ("a", "b")
    subs = _subjects(2, seqs, rng)
    del subs[0].volumes["b"]
    cfg = make_config("cpu", sequences=seqs, silence=(0, 0))
    with pytest.raises(Exception, match="marked available but not loaded"):
        SynthTask(cfg, SynthData(seqs, subs), SynthData(seqs, subs[1:]), np.ones((2, 2), bool))
    with pytest.raises(EmptyInputError):
        SynthTask(cfg, SynthData(seqs, subs[:1]), SynthData(seqs, subs[1:]), np.zeros((1, 2), bool))


def _vgg_file(tmp_path, arch="vgg19"):
    from safetensors.torch import save_file

    from mridomain.synth.perceptual import vgg_features

    torch.manual_seed(0)
    net = vgg_features(arch)
    path = tmp_path / f"{arch}.safetensors"
    save_file({f"features.{k}": v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def test_perceptual_and_lpips_from_a_user_weight_file(tmp_path):
    from mridomain.synth.perceptual import LPIPS, PerceptualLoss

    x = torch.rand(2, 1, 32, 32) * 2 - 1
    y = torch.rand(2, 1, 32, 32) * 2 - 1
    per = PerceptualLoss(_vgg_file(tmp_path, "vgg19"))
    assert float(per(x, x)) == pytest.approx(0.0, abs=1e-9)
    assert float(per(x, y)) > 0
    lp = LPIPS(_vgg_file(tmp_path, "vgg16"), arch="vgg16")
    assert not lp.calibrated
    d = lp(x, torch.cat([x[:1], y[1:]]))
    assert d.shape == (2,) and float(d[0]) == pytest.approx(0.0, abs=1e-6) and float(d[1]) > 0


def test_perceptual_refuses_the_wrong_weights(tmp_path):
    from mridomain.synth.perceptual import PerceptualLoss

    with pytest.raises(SchemaMismatchError, match="not vgg19 features weights"):
        PerceptualLoss(_vgg_file(tmp_path, "vgg16"), arch="vgg19")
    bad = tmp_path / "junk.pt"
    bad.write_bytes(b"not a weight file")
    with pytest.raises(SchemaMismatchError, match="not a readable weight file"):
        PerceptualLoss(bad)
    with pytest.raises(EmptyInputError):
        PerceptualLoss(tmp_path / "absent.safetensors")


def _lesion_subjects(n, seqs, rng, shape=(6, 40, 40), lesion=(3, 30, 9)):
    """Background 0.2-0.5 everywhere in the head; one 2 x 2 lesion at 0.9 in slice ``lesion[0]``."""
    subs = []
    for k in range(n):
        vols = {s: rng.uniform(0.2, 0.5, (1, *shape)).astype(np.float32) for s in seqs}
        seg = np.zeros(shape, np.uint8)
        z, y, x = lesion
        seg[z, y:y + 2, x:x + 2] = 2
        for v in vols.values():
            v[0][seg > 0] = 0.9
        subs.append(Subject(f"s{k}", vols, affine=np.eye(4), seg=seg))
    return subs


def _lesion_task(oversample, seg=True, batch_size=4):
    rng = np.random.default_rng(3)
    seqs = ("a", "b")
    subs = _lesion_subjects(3, seqs, rng)
    if not seg:
        for s in subs:
            s.seg = None
    cfg = make_config("cpu", sequences=seqs, batch_size=batch_size, silence=(0, 0), crop=(8, 8),
                      lesion_oversample=oversample,
                      network={"enc_channels": (4, 8, 8), "dec_channels": (8, 4), "n_res_enc": 1, "n_res_dec": 1,
                               "disc_channels": 4, "code_dim": 4})
    return SynthTask(cfg, SynthData(seqs, subs[:2]), SynthData(seqs, subs[2:]), np.ones((2, 2), bool))


def _holds_lesion(crop):
    """The crop (C, H, W) in model range [-1, 1] holds a lesion voxel (0.9 -> 0.8) of its centre slice."""
    return bool(np.isclose(crop[crop.shape[0] // 2], 0.8, atol=1e-6).any())


def test_lesion_oversample_crops_the_last_items_of_each_batch_around_a_lesion():
    task = _lesion_task(0.5)
    for step in range(20):
        batch = task.make_batch(0, step)
        crops = batch["x_source"].numpy()[:, 0]           # (B, C, H, W): one time point
        targets = batch["x_target"].numpy()[:, 0]
        # nnU-Net's layout: the last round(0.5 x 4) = 2 items hold a lesion voxel, source and target alike
        assert all(_holds_lesion(c) for c in crops[2:]) and all(_holds_lesion(t) for t in targets[2:])
    # uniform crops of 8 x 8 from 40 x 40 slices, 1 slice in 6 with a 2 x 2 lesion: rarely one
    uniform = _lesion_task(0.0)
    hits = [_holds_lesion(c) for step in range(20) for c in uniform.make_batch(0, step)["x_source"].numpy()[:, 0]]
    assert sum(hits) < 10


def test_lesion_oversample_without_segmentations_draws_every_crop_uniformly(capsys):
    plain = _lesion_task(0.0, seg=False)
    task = _lesion_task(0.5, seg=False)
    assert "no training subject has a segmentation" in capsys.readouterr().out
    for step in range(5):
        a, b = plain.make_batch(0, step), task.make_batch(0, step)
        assert torch.equal(a["x_source"], b["x_source"]) and torch.equal(a["x_target"], b["x_target"])


@pytest.mark.parametrize("oversample", [0.0, 0.5])
def test_ranks_split_the_one_global_batch(oversample):
    """Under DDP every rank draws the whole batch from the same seed and keeps its part, so two ranks'
    items, lesion crops included, are exactly the single-process batch."""
    task = _lesion_task(oversample)
    for step in range(3):
        whole = task.make_batch(0, step)
        parts = [task.make_batch(0, step, rank=r, world_size=2) for r in (0, 1)]
        for key in ("x_source", "x_target", "has_target", "real_target"):
            assert torch.equal(torch.cat([p[key] for p in parts]), whole[key])


def test_a_batch_smaller_than_the_ranks_is_a_clear_error():
    """One crop per step (the demo's preset) is fine in one process; split over two DDP ranks it would
    leave a rank without items, which must be said, not crash inside the network."""
    task = _lesion_task(0.0, batch_size=1)
    assert task.make_batch(0, 0)["x_source"].shape[0] == 1
    with pytest.raises(InvalidArgumentError, match="cannot be split over 2 DDP ranks"):
        task.make_batch(0, 0, rank=1, world_size=2)


def _silenced_task(paired, available=None):
    rng = np.random.default_rng(4)
    seqs = ("a", "b", "c")
    cfg = make_config("cpu", sequences=seqs, batch_size=4, silence=(1, 2), crop=(8, 8), paired_items=paired,
                      network={"enc_channels": (4, 8, 8), "dec_channels": (8, 4), "n_res_enc": 1, "n_res_dec": 1,
                               "disc_channels": 4, "code_dim": 4})
    # subjects 0-1 have every sequence; 2-5 only one of them each, so most items lack a given target
    if available is None:
        available = np.array([[1, 1, 1], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], bool)
    return SynthTask(cfg, SynthData(seqs, _subjects(6, seqs, rng)), SynthData(seqs, _subjects(1, seqs, rng)),
                     available)


def test_paired_items_draw_every_item_from_subjects_with_both_sequences():
    plain, paired = _silenced_task(False), _silenced_task(True)
    plain_has = np.concatenate([plain.make_batch(0, s)["has_target"].numpy() for s in range(40)])
    paired_batches = [paired.make_batch(0, s) for s in range(40)]
    # every pair (i, j) has the two complete subjects, so every paired item has its target ...
    assert all(bool(b["has_target"].all()) for b in paired_batches)
    # ... while plain batches draw from every subject with the source: many items lack the target
    assert plain_has.mean() < 0.8
    # the pair drawn is the same: only the items change
    assert [(b["source"], b["target"]) for b in paired_batches] == \
        [(plain.make_batch(0, s)["source"], plain.make_batch(0, s)["target"]) for s in range(40)]


def test_paired_items_fall_back_to_the_source_s_subjects_when_no_subject_has_the_pair():
    one_each = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]], bool)
    task = _silenced_task(True, one_each)
    for step in range(10):
        batch = task.make_batch(0, step)
        assert not bool(batch["has_target"].any())      # no pair anywhere: self-reconstruction items only
        assert batch["x_source"].shape[0] == 4
