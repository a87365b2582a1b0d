"""The Seq2Seq generator (Han et al., sections 3.2-3.3) and its per-sequence patch discriminators.

``E`` (Encoder: a 7x7 stem, two stride-2 convolutions, residual blocks) compresses every time point of
a sequence into features; a ConvLSTM links the time points of a 4-D sequence (DCE phases, DWI b-values)
and a 4-D-wise average fuses them into one representation. ``G`` copies that representation to the
target's number of time points, disentangles them with a second ConvLSTM and reconstructs each with a
shared HyperDecoder whose HyperConv kernels are chosen by the target sequence's one-hot code
(Algorithm 1: kernel = weight bank x Linear(code)). A 3-D sequence is a 4-D one with one time point.

Two options that the paper does not have serve short CPU runs (the ``cpu-fullres`` preset):
``source_code`` makes the encoder's stem and stride convolutions HyperConvs of the *source* sequence's
code, and ``full_resolution`` drops the downsampling and upsampling.
``intensity_bins`` feeds the encoder Gaussian bumps of each input's intensity, and ``context_pool``
(in no preset) adds a coarse context branch after the encoder (:class:`ContextBranch`).

Tensors are ``(B, T, C, *spatial)``: ``spatial`` is ``(H, W)`` in the 2-D / 2.5-D modes (2.5-D: three
adjacent slices as the ``C = 3`` channels) and ``(D, H, W)`` in the 3-D mode.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mridomain.errors import InvalidArgumentError

__all__ = ["HyperConv", "ContextBranch", "ResidualBlock", "HyperResidualBlock", "Encoder", "HyperDecoder",
           "ConvLSTMCell", "ConvLSTM", "Seq2SeqGenerator", "intensity_features", "one_hot_code",
           "build_generator", "build_discriminator", "profile_generator", "profile_config"]


#: the negative slope of every LeakyReLU of the generator (its He initialisation uses it too)
LEAKY_SLOPE = 0.2


def _conv_cls(ndims: int) -> type[nn.Module]:
    return nn.Conv2d if ndims == 2 else nn.Conv3d


def _reflect_pad(ndims: int, pad: int) -> nn.Module:
    if pad == 0:
        return nn.Identity()
    return nn.ReflectionPad2d(pad) if ndims == 2 else nn.ReflectionPad3d(pad)


def _norm(kind: str, ndims: int, channels: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    # affine=False as in the authors' InstanceNorm: the statistics are per image and target, and the
    # target-specific scaling is the HyperConv's job
    return nn.InstanceNorm2d(channels) if ndims == 2 else nn.InstanceNorm3d(channels)


def one_hot_code(index: int, code_dim: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The ``(1, code_dim)`` one-hot sequence code of sequence ``index`` (the paper's ``s``)."""
    if not 0 <= index < code_dim:
        raise InvalidArgumentError(f"sequence index {index} outside a code of length {code_dim}")
    code = torch.zeros(1, code_dim, device=device)
    code[0, index] = 1.0
    return code


class HyperConv(nn.Module):
    """Algorithm 1: a convolution whose kernel is a weight bank mixed by a Linear map of the code.

    ``kernel = bank @ Linear(code_dim, bank_dim)(code)``, ``bank`` of shape ``(*kshape, bank_dim)``;
    the bias is mixed the same way from its own bank. One code per call: every item of the batch is
    generated for the same target sequence, which is what makes the kernel a plain tensor.
    """

    def __init__(self, code_dim: int, in_channels: int, out_channels: int, kernel_size: int,
                 ndims: int = 2, stride: int = 1, padding: int = 0, bank_dim: int = 16, bias: bool = True):
        super().__init__()
        if ndims not in (2, 3):
            raise InvalidArgumentError(f"HyperConv: ndims must be 2 or 3, got {ndims}")
        self.ndims, self.stride, self.padding, self.bank_dim = ndims, stride, padding, bank_dim
        self.kshape = (out_channels, in_channels) + (kernel_size,) * ndims
        self.mix = nn.Linear(code_dim, bank_dim)
        self.bank = nn.Parameter(torch.empty(*self.kshape, bank_dim))
        # fan-in of one mixed kernel element, as for a plain convolution of this shape
        nn.init.normal_(self.bank, 0.0, math.sqrt(2.0 / (in_channels * kernel_size ** ndims * bank_dim)))
        if bias:
            self.bias_mix = nn.Linear(code_dim, bank_dim)
            self.bias_bank = nn.Parameter(torch.zeros(out_channels, bank_dim))
        else:
            self.bias_mix, self.bias_bank = None, None

    def kernel(self, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The convolution kernel (and bias) this code selects."""
        code = code.reshape(1, -1)
        weight = torch.matmul(self.bank, self.mix(code).reshape(self.bank_dim, 1)).reshape(self.kshape)
        bias = None
        if self.bias_bank is not None:
            bias = torch.matmul(self.bias_bank, self.bias_mix(code).reshape(self.bank_dim, 1)).reshape(-1)
        return weight, bias

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """Convolve ``x`` with the kernel and bias that ``code`` selects."""
        weight, bias = self.kernel(code)
        conv = F.conv2d if self.ndims == 2 else F.conv3d
        return conv(x, weight, bias, stride=self.stride, padding=self.padding)


class ResidualBlock(nn.Module):
    """x + (pad, conv3, norm, LeakyReLU 0.2, pad, conv3, norm)(x)."""

    def __init__(self, channels: int, ndims: int = 2, norm: str = "instance"):
        super().__init__()
        conv = _conv_cls(ndims)
        self.body = nn.Sequential(
            _reflect_pad(ndims, 1), conv(channels, channels, 3), _norm(norm, ndims, channels),
            nn.LeakyReLU(LEAKY_SLOPE),
            _reflect_pad(ndims, 1), conv(channels, channels, 3), _norm(norm, ndims, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` plus the block's two convolutions of it."""
        return x + self.body(x)


class HyperResidualBlock(nn.Module):
    """The residual block with both convolutions replaced by HyperConv layers (section 3.2)."""

    def __init__(self, code_dim: int, channels: int, ndims: int = 2, norm: str = "instance",
                 bank_dim: int = 16):
        super().__init__()
        self.pad = _reflect_pad(ndims, 1)
        self.conv1 = HyperConv(code_dim, channels, channels, 3, ndims=ndims, bank_dim=bank_dim)
        self.norm1 = _norm(norm, ndims, channels)
        self.conv2 = HyperConv(code_dim, channels, channels, 3, ndims=ndims, bank_dim=bank_dim)
        self.norm2 = _norm(norm, ndims, channels)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """``x`` plus the block's two HyperConv layers of it, with the kernels ``code`` selects."""
        y = F.leaky_relu(self.norm1(self.conv1(self.pad(x), code)), LEAKY_SLOPE)
        return x + self.norm2(self.conv2(self.pad(y), code))


class Encoder(nn.Module):
    """Stem conv (k0, stride 1), two stride-2 convs (4x down), ``n_res`` residual blocks.

    With ``code_dim`` the stem and the two stride-2 convolutions are HyperConv layers of the *source*
    sequence's code (``source_code`` in :class:`Seq2SeqGenerator`; not in the paper, whose encoder sees
    no code and must tell the source's contrast from the pixels); the residual blocks stay plain.
    """

    def __init__(self, in_channels: int, channels: tuple[int, int, int] = (64, 128, 256),
                 kernels: tuple[int, int, int] = (7, 3, 3), n_res: int = 6, ndims: int = 2,
                 norm: str = "instance", code_dim: int | None = None, bank_dim: int = 16,
                 downsample: bool = True):
        super().__init__()
        conv = _conv_cls(ndims)
        self.conditioned = code_dim is not None
        layers: list[nn.Module] = []
        prev = in_channels
        for c, k, s in zip(channels, kernels, (1, 2, 2) if downsample else (1, 1, 1)):
            layers += [_reflect_pad(ndims, (k - 1) // 2),
                       HyperConv(code_dim, prev, c, k, ndims=ndims, stride=s, bank_dim=bank_dim)
                       if self.conditioned else conv(prev, c, k, stride=s),
                       _norm(norm, ndims, c), nn.LeakyReLU(LEAKY_SLOPE)]
            prev = c
        layers += [ResidualBlock(prev, ndims, norm) for _ in range(n_res)]
        self.net = nn.Sequential(*layers)     # one Sequential, so plain encoders keep their state-dict keys
        self.out_channels = prev

    def forward(self, x: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        """Features of ``x`` at a quarter of its resolution per spatial axis (at its resolution without
        downsampling), ``out_channels`` channels; ``code`` (the source's style) is needed, and used,
        only by a conditioned encoder."""
        if not self.conditioned:
            return self.net(x)
        if code is None:
            raise InvalidArgumentError("this generator's encoder is conditioned on the source sequence: "
                                       "pass its code (source_code)")
        for layer in self.net:
            x = layer(x, code) if isinstance(layer, HyperConv) else layer(x)
        return x


class ContextBranch(nn.Module):
    """Features plus what a coarse view of them adds: average-pool by ``pool``, two 3x3 convolutions
    (LeakyReLU between), bilinear upsampling back, added to the input.

    Not in the paper. A full-resolution generator of a few 3x3 layers sees 13 x 13 pixels; a tissue
    told apart only by its surroundings (simulated vasogenic edema against the CSF border, both mid-grey
    on T2) needs a wider view. The branch reaches ``pool`` x 5 pixels around each one for 2 / pool^2 of
    a full-resolution layer's work. Its last convolution starts at zero, so the branch starts as the
    identity (SkipInit, De & Smith, NeurIPS 2020).
    """

    def __init__(self, channels: int, pool: int, ndims: int = 2):
        super().__init__()
        conv = _conv_cls(ndims)
        self.pool, self.ndims = pool, ndims
        self.body = nn.Sequential(_reflect_pad(ndims, 1), conv(channels, channels, 3), nn.LeakyReLU(LEAKY_SLOPE),
                                  _reflect_pad(ndims, 1), conv(channels, channels, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` plus the upsampled convolutions of its ``pool``-fold average (sizes multiples of ``pool``)."""
        pooled = (F.avg_pool2d if self.ndims == 2 else F.avg_pool3d)(x, self.pool)
        mode = "bilinear" if self.ndims == 2 else "trilinear"
        return x + F.interpolate(self.body(pooled), size=x.shape[2:], mode=mode, align_corners=False)


class HyperDecoder(nn.Module):
    """``n_res`` hyper-residual blocks, then (2x upsample, HyperConv, norm, LeakyReLU) twice and a
    last HyperConv with tanh: three HyperConv layers outside the blocks, two upsamplings."""

    def __init__(self, code_dim: int, in_channels: int, out_channels: int,
                 channels: tuple[int, int] = (128, 64), kernels: tuple[int, int, int] = (3, 3, 7),
                 n_res: int = 6, ndims: int = 2, norm: str = "instance", bank_dim: int = 16,
                 upsample: bool = True):
        super().__init__()
        self.ndims, self.upsample = ndims, upsample
        self.res = nn.ModuleList(HyperResidualBlock(code_dim, in_channels, ndims, norm, bank_dim)
                                 for _ in range(n_res))
        self.pads = nn.ModuleList()
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        prev = in_channels
        for c, k in zip(channels, kernels[:2]):
            self.pads.append(_reflect_pad(ndims, (k - 1) // 2))
            self.convs.append(HyperConv(code_dim, prev, c, k, ndims=ndims, bank_dim=bank_dim))
            self.norms.append(_norm(norm, ndims, c))
            prev = c
        self.pad_last = _reflect_pad(ndims, (kernels[2] - 1) // 2)
        self.conv_last = HyperConv(code_dim, prev, out_channels, kernels[2], ndims=ndims, bank_dim=bank_dim)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """The image in [-1, 1] (tanh) that ``code`` asks for, at 4 x the resolution of the features ``x``."""
        for block in self.res:
            x = block(x, code)
        mode = "bilinear" if self.ndims == 2 else "trilinear"
        for pad, conv, norm in zip(self.pads, self.convs, self.norms):
            if self.upsample:
                x = F.interpolate(x, scale_factor=2, mode=mode, align_corners=False)
            x = F.leaky_relu(norm(conv(pad(x), code)), LEAKY_SLOPE)
        return torch.tanh(self.conv_last(self.pad_last(x), code))


class ConvLSTMCell(nn.Module):
    """One ConvLSTM cell (Shi et al. 2015): the four gates from one convolution of [input, hidden]."""

    def __init__(self, in_channels: int, hidden: int, kernel_size: int = 3, ndims: int = 2):
        super().__init__()
        self.hidden = hidden
        self.conv = _conv_cls(ndims)(in_channels + hidden, 4 * hidden, kernel_size,
                                     padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step: ``(h, c)`` after input ``x`` from the previous ``state`` ``(h, c)``."""
        h, c = state
        i, f, o, g = torch.split(self.conv(torch.cat([x, h], dim=1)), self.hidden, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class ConvLSTM(nn.Module):
    """Stacked ConvLSTM over ``(B, T, C, *spatial)``; returns the last layer's hidden state at every
    time point, same shape with ``C = hidden``."""

    def __init__(self, channels: int, layers: int = 3, kernel_size: int = 3, ndims: int = 2):
        super().__init__()
        self.cells = nn.ModuleList(ConvLSTMCell(channels, channels, kernel_size, ndims)
                                   for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The last layer's hidden state at every time point of ``x`` (B, T, C, *spatial), same shape;
        every layer starts from zero state."""
        for cell in self.cells:
            h = torch.zeros_like(x[:, 0, :cell.hidden])
            c = torch.zeros_like(h)
            outputs = []
            for t in range(x.shape[1]):
                h, c = cell(x[:, t], (h, c))
                outputs.append(h)
            x = torch.stack(outputs, dim=1)
        return x


def intensity_features(x: torch.Tensor, bins: int) -> torch.Tensor:
    """``x`` ``(N, C, *spatial)`` in [-1, 1] with, after its channels, ``bins`` Gaussian bumps of each
    channel's intensity: ``exp(-((x - c_k) / w)^2 / 2)`` at ``bins`` centres ``c_k`` evenly spaced on
    [-1, 1], ``w`` their spacing (``bins`` 0: ``x`` unchanged).

    Not in the paper. A ReLU network learns a sharp function of a voxel's intensity slowly (the
    spectral bias of Rahaman et al., ICML 2019; Tancik et al., NeurIPS 2020, lift it with Fourier
    features of the input): the tissue that is bright in one sequence can sit in a narrow band of
    another's intensities (simulated edema's T1, between grey and white matter). Over these bumps any
    smooth lookup table of the intensity is one linear layer.
    """
    if bins == 0:
        return x
    centres = torch.linspace(-1.0, 1.0, bins, dtype=x.dtype, device=x.device)
    width = 2.0 / (bins - 1)
    shape = (1, 1, bins) + (1,) * (x.dim() - 2)
    bumps = torch.exp(-0.5 * ((x.unsqueeze(2) - centres.reshape(shape)) / width) ** 2)
    return torch.cat([x, bumps.flatten(1, 2)], dim=1)


class Seq2SeqGenerator(nn.Module):
    """Any sequence to any sequence: ``forward(x, code, n_out)`` with ``x`` ``(B, T, C, *spatial)``."""

    def __init__(self, in_channels: int = 3, ndims: int = 2, code_dim: int = 64, bank_dim: int = 16,
                 enc_channels: tuple[int, int, int] = (64, 128, 256),
                 enc_kernels: tuple[int, int, int] = (7, 3, 3),
                 dec_channels: tuple[int, int] = (128, 64), dec_kernels: tuple[int, int, int] = (3, 3, 7),
                 n_res_enc: int = 6, n_res_dec: int = 6, lstm_layers: int = 3, norm: str = "instance",
                 source_code: bool = False, full_resolution: bool = False, intensity_bins: int = 0,
                 context_pool: int = 0):
        super().__init__()
        if norm not in ("instance", "none"):
            raise InvalidArgumentError(f"norm must be 'instance' or 'none', got {norm!r}")
        if intensity_bins == 1 or intensity_bins < 0:
            raise InvalidArgumentError(f"intensity_bins must be 0 (off) or at least 2, got {intensity_bins}")
        self.ndims, self.in_channels, self.code_dim, self.norm = ndims, in_channels, code_dim, norm
        self.full_resolution, self.intensity_bins = full_resolution, intensity_bins
        self.encoder = Encoder(in_channels * (1 + intensity_bins), enc_channels, enc_kernels, n_res_enc, ndims, norm,
                               code_dim if source_code else None, bank_dim, downsample=not full_resolution)
        feat = self.encoder.out_channels
        if context_pool == 1 or context_pool < 0:
            raise InvalidArgumentError(f"context_pool must be 0 (off) or at least 2, got {context_pool}")
        self.context = ContextBranch(feat, context_pool, ndims) if context_pool else None
        self.enc_lstm = ConvLSTM(feat, lstm_layers, 3, ndims) if lstm_layers else None
        self.dec_lstm = ConvLSTM(feat, lstm_layers, 3, ndims) if lstm_layers else None
        # the MLP of Fig. 2(c) before every HyperConv's own Linear map
        self.code_mlp = nn.Sequential(nn.Linear(code_dim, code_dim), nn.LeakyReLU(LEAKY_SLOPE))
        self.decoder = HyperDecoder(code_dim, feat, in_channels, dec_channels, dec_kernels, n_res_dec,
                                    ndims, norm, bank_dim, upsample=not full_resolution)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """He initialisation (fan-in, LeakyReLU slope 0.2) of every convolution of the encoder and the
        decoder, the HyperConv kernels included.

        A HyperConv's kernel is ``bank @ mix(style)``, so its variance is the bank's times
        ``|mix(style)|^2``: each bank is drawn so that the *mixed* kernel has He variance, averaged
        over the sequence codes. Drawn for the bank alone, the mixed kernels started at 0.15-0.30 of
        He scale and, without normalization layers, the signal reaching the output shrank a
        thousandfold (output std 0.0006 on inputs of std 0.58, cpu preset): the decoder learned its
        biases, a blurred mean image, before any structure. PyTorch's default for the plain
        convolutions (0.41 of He scale for this slope) shrank the encoder's signal eightfold the same
        way. The ConvLSTMs keep PyTorch's default.

        Two layers are drawn otherwise. The last HyperConv feeds the tanh, not a LeakyReLU: gain 1,
        so the output starts unsaturated. Without normalization layers, the last convolution of every
        residual branch starts at zero (SkipInit, De & Smith, NeurIPS 2020), so each block starts as
        the identity instead of doubling the variance of the stream it adds to; with instance
        normalization after it, that convolution's scale does not matter and it keeps He's.
        """
        if next(self.parameters()).is_meta:
            return                     # built to be profiled: shapes only, no values to draw
        gain2 = 2.0 / (1.0 + LEAKY_SLOPE ** 2)
        branch_ends: set[int] = set()
        if self.norm == "none":
            branch_ends = {id(b.body[5]) for b in self.encoder.modules() if isinstance(b, ResidualBlock)}
            branch_ends |= {id(b.conv2) for b in self.decoder.res}
        if self.context is not None:
            branch_ends.add(id(self.context.body[4]))
        plain = list(self.encoder.modules()) + (list(self.context.modules()) if self.context is not None else [])
        for m in plain:
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                m.weight.normal_(0.0, math.sqrt(gain2 / m.weight[0].numel()))
                if id(m) in branch_ends:
                    m.weight.zero_()
                if m.bias is not None:
                    m.bias.zero_()
        styles = self.code_mlp(torch.eye(self.code_dim))
        for m in self.modules():
            if isinstance(m, HyperConv):
                mixed = max(float(m.mix(styles).pow(2).sum(dim=1).mean()), 1e-12)
                gain = 1.0 if m is self.decoder.conv_last else gain2
                m.bank.normal_(0.0, math.sqrt(gain / math.prod(m.kshape[1:]) / mixed))
                if id(m) in branch_ends:
                    m.bank.zero_()

    @property
    def downsampling(self) -> int:
        """Spatial sizes must be multiples of this: two stride-2 convolutions (none at full resolution),
        times the context branch's pooling."""
        stride = 1 if self.full_resolution else 4
        return stride * (self.context.pool if self.context is not None else 1)

    def encode(self, x: torch.Tensor, source_code: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T, C, *spatial)`` -> the fused representation ``(B, 1, F, *spatial / 4)`` (``spatial``
        itself at full resolution); ``source_code`` (the one-hot code of ``x``'s sequence) is required
        by a generator built with ``source_code=True`` and ignored otherwise."""
        if x.dim() != self.ndims + 3 or x.shape[2] != self.in_channels:
            raise InvalidArgumentError(
                f"generator input must be (B, T, {self.in_channels}, {'D, ' if self.ndims == 3 else ''}H, W), "
                f"got {tuple(x.shape)}")
        if any(s % self.downsampling for s in x.shape[3:]):
            raise InvalidArgumentError(f"spatial size {tuple(x.shape[3:])} must be a multiple of "
                                       f"{self.downsampling}")
        b, t = x.shape[:2]
        style = None   # a plain encoder ignores the source code: no MLP pass for it
        if source_code is not None and self.encoder.conditioned:
            style = self.code_mlp(source_code.reshape(1, -1).to(x.dtype))
        feats = self.encoder(intensity_features(x.reshape(b * t, *x.shape[2:]), self.intensity_bins), style)
        if self.context is not None:
            feats = self.context(feats)
        feats = feats.reshape(b, t, *feats.shape[1:])
        if self.enc_lstm is not None:
            feats = self.enc_lstm(feats)
        return feats.mean(dim=1, keepdim=True)  # 4-D-wise average

    def decode(self, z: torch.Tensor, code: torch.Tensor, n_out: int = 1) -> torch.Tensor:
        """Representation ``(B, 1, F, ...)`` -> target ``(B, n_out, C, *spatial)`` for ``code``."""
        b = z.shape[0]
        z = z.expand(b, n_out, *z.shape[2:])  # 4-D-wise copy
        if self.dec_lstm is not None:
            z = self.dec_lstm(z.contiguous())
        style = self.code_mlp(code.reshape(1, -1).to(z.dtype))
        out = self.decoder(z.reshape(b * n_out, *z.shape[2:]), style)
        return out.reshape(b, n_out, *out.shape[1:])

    def forward(self, x: torch.Tensor, code: torch.Tensor, n_out: int = 1,
                source_code: torch.Tensor | None = None, n_source: int | None = None, cycle: bool = True):
        """``X'_{i->j} = G(E(x) | code)``; with ``source_code`` also the self-reconstruction
        ``G(E(x) | s_i)`` and the cycle ``X''_{i->j->i} = G(E(X'_{i->j}) | s_i)`` (eq. 3), all in
        one call so that a training step runs the (possibly DDP-wrapped) generator forward once.
        ``cycle=False`` returns ``None`` for the cycle (a run without the cycle loss skips its
        second encoding and third decoding, 40 % of the step)."""
        z = self.encode(x, source_code)
        y = self.decode(z, code, n_out)
        if source_code is None:
            return y
        n_source = x.shape[1] if n_source is None else n_source
        cycled = self.decode(self.encode(y, code), source_code, n_source) if cycle else None
        return y, self.decode(z, source_code, n_source), cycled


def build_generator(network: Any) -> Seq2SeqGenerator:
    """The generator a :class:`mridomain.synth.config.NetworkConfig` describes."""
    return Seq2SeqGenerator(
        in_channels=network.in_channels, ndims=network.ndims, code_dim=network.code_dim,
        bank_dim=network.bank_dim, enc_channels=tuple(network.enc_channels),
        enc_kernels=tuple(network.enc_kernels), dec_channels=tuple(network.dec_channels),
        dec_kernels=tuple(network.dec_kernels), n_res_enc=network.n_res_enc, n_res_dec=network.n_res_dec,
        lstm_layers=network.lstm_layers, norm=network.norm, source_code=network.source_code,
        full_resolution=network.full_resolution, intensity_bins=network.intensity_bins,
        context_pool=network.context_pool)


def build_discriminator(network: Any) -> nn.Module:
    """One PatchGAN discriminator (MONAI's ``PatchDiscriminator``, instance norm) for one sequence;
    it sees the ``C`` channels of one time point and returns a map of real/fake scores."""
    from monai.networks.nets import PatchDiscriminator

    return _LastOutput(PatchDiscriminator(
        spatial_dims=network.ndims, channels=network.disc_channels, in_channels=network.in_channels,
        out_channels=1, num_layers_d=network.disc_layers, norm="INSTANCE"))


class _LastOutput(nn.Module):
    """MONAI's discriminators return every intermediate feature map; the loss needs the last."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[-1]


def _leaf_parameter_count(model: nn.Module) -> int:
    # counts only parameters registered on leaf modules, as the THOP profiler does (it skips any
    # module with children, so a HyperConv's weight banks, which sit next to its Linear maps, vanish)
    return sum(p.numel() for m in model.modules() if not list(m.children())
               for p in m.parameters(recurse=False))


def profile_generator(model: Seq2SeqGenerator, spatial: tuple[int, ...], t_in: int = 1,
                      t_out: int = 1) -> dict[str, float]:
    """Parameters and multiply-accumulates of one generation (encode + decode) of one image.

    ``gmacs`` is counted with ``torch.utils.flop_counter`` (a MAC is two FLOPs). The paper's Table 1
    profile is reproduced by ``params_leaf_m`` / ``gmacs_modules``: parameters of leaf modules only
    and MACs of ``nn.Module`` convolutions / linears only, which is how the THOP profiler counts and
    which leaves out the HyperConv weight banks and their functional convolutions.
    """
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device   # the "meta" device profiles without computing
    x = torch.zeros(1, t_in, model.in_channels, *spatial, device=device)
    code = one_hot_code(0, model.code_dim, device)
    functional = [0.0]

    def count_hyperconv(module: HyperConv, inputs: tuple, output: torch.Tensor) -> None:
        # the kernel mixing (bank @ f) and the functional convolution, both invisible to THOP
        per_output = module.kshape[1] * math.prod(module.kshape[2:])
        functional[0] += output.numel() * per_output + math.prod(module.kshape) * module.bank_dim
        if module.bias_bank is not None:
            functional[0] += module.bias_bank.numel()

    hooks = [m.register_forward_hook(count_hyperconv) for m in model.modules() if isinstance(m, HyperConv)]
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            z = model.encode(x, code)
            model.decode(z, code, n_out=t_out)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    total = counter.get_total_flops() / 2
    hyper = functional[0]
    return {
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "params_leaf_m": _leaf_parameter_count(model) / 1e6,
        "gmacs": total / 1e9,
        "gmacs_modules": (total - hyper) / 1e9,
    }


def profile_config(network: Any, spatial: tuple[int, ...]) -> dict[str, float]:
    """:func:`profile_generator` of the generator ``network`` describes, built on the meta device
    (no memory, no arithmetic: the paper preset's 155 M parameters profile in seconds)."""
    return dict(_profile_json(network.model_dump_json(), tuple(spatial)))


@functools.lru_cache(maxsize=8)
def _profile_json(network_json: str, spatial: tuple[int, ...]) -> tuple[tuple[str, float], ...]:
    from mridomain.synth.config import NetworkConfig

    with torch.device("meta"):
        model = build_generator(NetworkConfig.model_validate_json(network_json))
    return tuple(profile_generator(model, spatial).items())
