"""Seq2Seq network: HyperConv (Algorithm 1), ConvLSTM over time points, generator shapes, profile."""
import pytest
import torch
import torch.nn.functional as F

from mridomain.errors import InvalidArgumentError
from mridomain.synth.config import make_config
from mridomain.synth.network import (ContextBranch, ConvLSTM, HyperConv, Seq2SeqGenerator, build_discriminator, intensity_features,
                                     one_hot_code, profile_config)


def _mixed_kernel(layer: HyperConv, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Algorithm 1 written out: f = W s + b, kernel = sum_k bank[..., k] f_k
    f = layer.mix.weight @ code.reshape(-1) + layer.mix.bias
    fb = layer.bias_mix.weight @ code.reshape(-1) + layer.bias_mix.bias
    return (layer.bank * f).sum(-1), (layer.bias_bank * fb).sum(-1)


@pytest.mark.parametrize("ndims", [2, 3])
def test_hyperconv_equals_plain_convolution_with_the_mixed_kernel(ndims):
    torch.manual_seed(0)
    layer = HyperConv(code_dim=5, in_channels=3, out_channels=4, kernel_size=3, ndims=ndims, padding=1, bank_dim=6)
    torch.nn.init.normal_(layer.bias_bank)  # the bias bank starts at zero; make the bias path count
    x = torch.randn(2, 3, *([8] * ndims))
    code = one_hot_code(2, 5)
    kernel, bias = _mixed_kernel(layer, code)
    conv = F.conv2d if ndims == 2 else F.conv3d
    expected = conv(x, kernel, bias, padding=1)
    assert torch.allclose(layer(x, code), expected, atol=1e-5)


def test_switching_the_code_switches_the_kernel():
    torch.manual_seed(1)
    layer = HyperConv(code_dim=4, in_channels=2, out_channels=3, kernel_size=3, bank_dim=5)
    k0, _ = layer.kernel(one_hot_code(0, 4))
    k1, _ = layer.kernel(one_hot_code(1, 4))
    assert not torch.allclose(k0, k1)
    # the one-hot code for sequence 1 selects column 1 of the Linear map (plus its bias)
    f1 = layer.mix.weight[:, 1] + layer.mix.bias
    assert torch.allclose(k1, (layer.bank * f1).sum(-1), atol=1e-6)
    x = torch.randn(1, 2, 6, 6)
    assert not torch.allclose(layer(x, one_hot_code(0, 4)), layer(x, one_hot_code(1, 4)))


def test_convlstm_keeps_time_points_and_is_causal():
    torch.manual_seed(2)
    lstm = ConvLSTM(channels=4, layers=2)
    x = torch.randn(2, 5, 4, 6, 6)
    y = lstm(x)
    assert y.shape == (2, 5, 4, 6, 6)
    x2 = x.clone()
    x2[:, 3:] = torch.randn(2, 2, 4, 6, 6)       # change only the later time points
    y2 = lstm(x2)
    assert torch.allclose(y[:, :3], y2[:, :3])   # earlier outputs cannot see the future
    assert not torch.allclose(y[:, 3:], y2[:, 3:])


def _small(**kw):
    args = dict(code_dim=4, bank_dim=3, enc_channels=(4, 8, 8), dec_channels=(8, 4), n_res_enc=1, n_res_dec=1,
                lstm_layers=1)
    args.update(kw)
    return Seq2SeqGenerator(**args)


def test_generator_4d_in_and_out_shapes():
    torch.manual_seed(3)
    g = _small(in_channels=3)
    x = torch.randn(2, 3, 3, 16, 12)               # 3 time points (e.g. DCE phases), 2.5-D channels
    z = g.encode(x)
    assert z.shape == (2, 1, 8, 4, 3)              # fused over time, 4x down
    y = g.decode(z, one_hot_code(1, 4), n_out=4)
    assert y.shape == (2, 4, 3, 16, 12)            # copied to 4 target time points
    assert float(y.detach().abs().max()) <= 1.0    # tanh output
    fake, self_rec, cycle = g(x, one_hot_code(1, 4), n_out=4, source_code=one_hot_code(0, 4))
    assert fake.shape == (2, 4, 3, 16, 12) and self_rec.shape == x.shape and cycle.shape == x.shape


def test_generator_3d_mode():
    g = _small(in_channels=1, ndims=3)
    y = g(torch.randn(1, 1, 1, 8, 8, 8), one_hot_code(0, 4))
    assert y.shape == (1, 1, 1, 8, 8, 8)


def test_generator_refuses_bad_shapes():
    g = _small(in_channels=3)
    with pytest.raises(InvalidArgumentError, match="multiple of 4"):
        g(torch.randn(1, 1, 3, 10, 12), one_hot_code(0, 4))
    with pytest.raises(InvalidArgumentError, match=r"\(B, T, 3"):
        g(torch.randn(1, 1, 1, 12, 12), one_hot_code(0, 4))
    with pytest.raises(InvalidArgumentError):
        one_hot_code(4, 4)


def test_discriminator_scores_patches():
    net = make_config("cpu").network
    d = build_discriminator(net)
    assert d(torch.randn(2, net.in_channels, 64, 64)).shape[:2] == (2, 1)


def test_paper_preset_reproduces_table1_profile_as_thop_counts():
    """Seq2Seq-C of Table 1: 35.8 MPa and 83.4 GMACs at 192 x 192 (2.5-D). THOP skips parameters of
    non-leaf modules (the HyperConv weight banks) and functional convolutions; counted in full the
    same network has 155 M parameters and 105 GMACs, the paper's Seq2Seq-A figure."""
    prof = profile_config(make_config("paper").network, (192, 192))
    assert prof["params_leaf_m"] == pytest.approx(35.8, abs=0.05)
    assert prof["gmacs_modules"] == pytest.approx(83.4, abs=0.3)
    assert prof["params_m"] > 4 * prof["params_leaf_m"]
    assert prof["gmacs"] == pytest.approx(105.5, abs=0.3)


def test_cpu_preset_is_small():
    prof = profile_config(make_config("cpu").network, (100, 80))
    assert prof["params_m"] < 5 and prof["gmacs"] < 1


@pytest.mark.parametrize("norm,source_code", [("none", False), ("instance", False), ("none", True)])
def test_initial_generator_passes_its_input_scale_to_the_output(norm, source_code):
    """He initialisation of the mixed HyperConv kernels (bank @ mix(code)), not of the bank alone:
    drawn for the bank alone the mixed kernels started at 0.15-0.30 of He scale and, without
    normalization layers, the output of the cpu preset's generator had std 0.0006 on inputs of 0.58.
    A source-conditioned encoder's HyperConvs are drawn the same way."""
    import math

    torch.manual_seed(0)
    net = make_config("cpu", network={"norm": norm}).network
    gen = Seq2SeqGenerator(in_channels=3, code_dim=net.code_dim, bank_dim=net.bank_dim,
                           enc_channels=net.enc_channels, dec_channels=net.dec_channels,
                           n_res_enc=net.n_res_enc, n_res_dec=net.n_res_dec, lstm_layers=0, norm=norm,
                           source_code=source_code)
    styles = gen.code_mlp(torch.eye(net.code_dim))
    hyper = [m for m in gen.modules() if isinstance(m, HyperConv) and m.bank.abs().sum() > 0]
    assert sum(m in list(gen.encoder.modules()) for m in hyper) == (3 if source_code else 0)
    for layer in hyper:
        he = math.sqrt((1.0 if layer is gen.decoder.conv_last else 2 / 1.04) / math.prod(layer.kshape[1:]))
        spread = torch.stack([_mixed_kernel(layer, s)[0].std() for s in styles]).pow(2).mean().sqrt()
        assert 0.8 < float(spread) / he < 1.25
    x = torch.rand(2, 1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        outputs = [gen.decode(gen.encode(x, one_hot_code(0, net.code_dim)), one_hot_code(k, net.code_dim)).std()
                   for k in range(4)]
    assert min(float(o) for o in outputs) > 0.1
    assert max(float(o) for o in outputs) < 0.9          # and the tanh is not saturated either


def test_a_source_conditioned_encoder_reads_the_source_code_and_a_plain_one_ignores_it():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 3, 16, 16)
    codes = [one_hot_code(k, 4) for k in range(2)]
    plain, conditioned = _small(), _small(source_code=True)
    with torch.no_grad():
        assert torch.equal(plain.encode(x, codes[0]), plain.encode(x, codes[1]))
        assert torch.equal(plain.encode(x, codes[0]), plain.encode(x))
        assert not torch.allclose(conditioned.encode(x, codes[0]), conditioned.encode(x, codes[1]))
        with pytest.raises(InvalidArgumentError, match="source_code"):
            conditioned.encode(x)
        with pytest.raises(InvalidArgumentError, match="source_code"):
            conditioned(x, codes[1])
        fake, self_rec, cycle = conditioned(x, codes[1], source_code=codes[0])
    assert fake.shape == self_rec.shape == cycle.shape == x.shape
    # the plain encoder keeps the parameter names of runs saved before the option existed
    assert {k for k in plain.state_dict() if k.startswith("encoder.")} >= {"encoder.net.1.weight",
                                                                          "encoder.net.5.weight",
                                                                          "encoder.net.9.weight"}


@pytest.mark.parametrize("ndims", [2, 3])
def test_a_full_resolution_generator_keeps_every_layer_at_the_input_size(ndims):
    torch.manual_seed(0)
    g = _small(in_channels=1, ndims=ndims, full_resolution=True, source_code=True, lstm_layers=0)
    assert g.downsampling == 1
    spatial = (6, 10, 7) if ndims == 3 else (10, 7)     # sizes no 4x-down generator accepts
    x = torch.randn(2, 1, 1, *spatial)
    z = g.encode(x, one_hot_code(0, 4))
    assert z.shape == (2, 1, 8, *spatial)
    fake, self_rec, cycle = g(x, one_hot_code(1, 4), n_out=2, source_code=one_hot_code(0, 4))
    assert fake.shape == (2, 2, 1, *spatial) and self_rec.shape == cycle.shape == x.shape


def test_intensity_features_by_hand():
    """Three bumps at -1, 0, 1 of width 1 after the channel itself."""
    x = torch.tensor([-1.0, 0.5]).reshape(1, 1, 2, 1)          # (N, C, H, W)
    out = intensity_features(x, 3)
    assert out.shape == (1, 4, 2, 1)
    e = torch.exp(torch.tensor(-0.5))
    expected = [[-1.0, 0.5], [1.0, torch.exp(torch.tensor(-0.5 * 1.5 ** 2))], [e, torch.exp(torch.tensor(-0.125))],
                [torch.exp(torch.tensor(-2.0)), torch.exp(torch.tensor(-0.125))]]
    assert torch.allclose(out[0, :, :, 0], torch.tensor(expected))
    assert intensity_features(x, 0) is x


def test_a_generator_with_intensity_bins_reads_them_and_refuses_one_bin():
    torch.manual_seed(0)
    g = _small(in_channels=3, full_resolution=True, source_code=True, lstm_layers=0, intensity_bins=4)
    x = torch.rand(2, 1, 3, 8, 8) * 2 - 1
    fake = g(x, one_hot_code(1, 4), source_code=one_hot_code(0, 4), cycle=False)[0]
    assert fake.shape == x.shape
    # the first layer sees 3 channels and their 4 bumps each
    first = g.encoder.net[1]
    assert first.kshape[1] == 15
    with pytest.raises(InvalidArgumentError, match="at least 2"):
        _small(intensity_bins=1)


def test_context_branch_adds_the_upsampled_coarse_convolutions_by_hand():
    """The branch is x + upsample(conv(leaky(conv(avgpool(x))))), and starts as the identity."""
    torch.manual_seed(0)
    branch = ContextBranch(channels=2, pool=4)
    x = torch.rand(1, 2, 8, 12)
    first, last = branch.body[1], branch.body[4]
    for conv in (first, last):
        torch.nn.init.normal_(conv.weight)
    pooled = x.reshape(1, 2, 2, 4, 3, 4).mean(dim=(3, 5))          # 4 x 4 blocks averaged by hand
    y = F.conv2d(F.pad(pooled, (1, 1, 1, 1), mode="reflect"), first.weight, first.bias)
    y = F.conv2d(F.pad(F.leaky_relu(y, 0.2), (1, 1, 1, 1), mode="reflect"), last.weight, last.bias)
    expected = x + F.interpolate(y, size=(8, 12), mode="bilinear", align_corners=False)
    assert torch.allclose(branch(x), expected, atol=1e-6)


@pytest.mark.parametrize("norm", ["none", "instance"])
def test_a_generator_with_a_context_branch_starts_without_it_and_pads_to_its_pooling(norm):
    torch.manual_seed(1)
    kw = dict(in_channels=3, full_resolution=True, source_code=True, lstm_layers=0, norm=norm)
    g = _small(context_pool=4, **kw)
    assert g.downsampling == 4 and _small(**kw).downsampling == 1
    assert _small(context_pool=2, in_channels=3, lstm_layers=0).downsampling == 8   # 4x down, then 2x pooled
    x = torch.rand(2, 1, 3, 8, 8) * 2 - 1
    code, source = one_hot_code(1, 4), one_hot_code(0, 4)
    # the branch's last convolution starts at zero (SkipInit), with or without normalization: no effect yet
    assert torch.count_nonzero(g.context.body[4].weight) == 0
    with torch.no_grad():
        features = g.encoder(x.reshape(2, 3, 8, 8), g.code_mlp(source))     # no intensity bins here
        assert torch.equal(g.context(features), features)
    with pytest.raises(InvalidArgumentError, match="multiple of 4"):
        g(torch.rand(1, 1, 3, 8, 6), code, source_code=source, cycle=False)
    with pytest.raises(InvalidArgumentError, match="at least 2"):
        _small(context_pool=1)


def test_a_crop_that_the_context_pooling_does_not_divide_is_refused():
    with pytest.raises(ValueError, match="context branch"):
        make_config("cpu-fullres", crop=(60, 60), network={"context_pool": 8})
    assert make_config("cpu-fullres", crop=(64, 64), network={"context_pool": 8}).network.context_pool == 8
