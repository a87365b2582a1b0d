"""Losses of section 3.4 against hand-computed values; silenced sequences never reach a loss."""
import numpy as np
import pytest
import torch

from mridomain.errors import EmptyInputError, SchemaMismatchError
from mridomain.synth.config import make_config
from mridomain.synth.data import Subject, SynthData, silence_mask
from mridomain.synth.losses import (cycle_loss, lsgan_discriminator_loss, lsgan_generator_loss, pair_mask,
                                    reconstruction_loss)
from mridomain.synth.training import SynthTask


def test_l1_losses_by_hand():
    gen = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    tgt = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    # |diffs| = 1, 0, 2, 3 -> mean 1.5
    assert float(reconstruction_loss(gen, tgt, weight=10.0)) == pytest.approx(15.0)
    assert float(cycle_loss(gen, tgt, weight=1.0)) == pytest.approx(1.5)


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
