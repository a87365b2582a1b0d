"""The multi-task IAP network (paper Sec. 4.1) and its masked loss, eq. (1)."""
from __future__ import annotations

from typing import Any, Sequence, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mridomain.data.kspace import view_rows
from mridomain.errors import InvalidArgumentError
from mridomain.iap.config import IAPConfig, KSpaceBranchKind
from mridomain.iap.labels import IGNORE_INDEX, LabelEncoder, mirror_output_map

BACKBONES = ("resnet18", "smallcnn")


def area_resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) matrix whose rows average the input cells PyTorch's area interpolation
    (adaptive average pooling) averages: output ``i`` covers ``floor(i n_in / n_out)`` to
    ``ceil((i + 1) n_in / n_out)``. Applied to both image axes it is ``F.interpolate(x,
    mode="area")`` up to float rounding, written as two linear maps that the ONNX exporter can
    express at any ratio (it cannot export adaptive pooling when ``n_in / n_out`` is not an integer).
    Built in NumPy, so a trace records it as one constant.

    >>> x = torch.arange(20.0).reshape(1, 1, 4, 5)
    >>> y = F.linear(F.linear(x, area_resize_matrix(5, 2)).transpose(-1, -2), area_resize_matrix(4, 3))
    >>> torch.allclose(y.transpose(-1, -2), F.interpolate(x, size=(3, 2), mode="area"))
    True
    """
    import numpy as np

    m = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        start, end = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        m[i, start:end] = 1.0 / (end - start)
    return torch.from_numpy(m)


def channel_statistics(x: torch.Tensor) -> torch.Tensor:
    """Per-channel spatial mean and standard deviation of a feature map (N, C, H, W) -> (N, 2C).

    These are the "style" statistics of a feature map (Huang & Belongie, ICCV 2017): they keep how
    strongly each filter responds anywhere in the image and drop where, so they describe texture
    (noise level and correlation, ringing, apodisation) rather than anatomy.
    """
    flat = x.float().flatten(2)
    return torch.cat([flat.mean(-1), flat.std(-1, unbiased=False)], dim=1)


class SmallCNN(nn.Module):
    """A compact 4-stage conv net of MONAI blocks, for training on a few CPU cores.

    Each stage halves the resolution (strided 3x3 conv) and refines with a second 3x3 conv.
    The last map is average-pooled to a 2 x 2 grid rather than to one value, giving
    ``4 * 8 * width`` features: global pooling would discard where things are, and patient
    position (HFP vs FFP) is a left-right mirror that only the layout of the anatomy reveals.

    With ``texture_stats`` the per-channel mean and std of every stage's output are appended
    (:func:`channel_statistics`, ``2 * 15 * width`` more features). A scanner's fingerprint is
    mostly texture: the noise floor of its coil combination, the correlation its zero-filling and
    k-space filter give the noise, the ringing of its matrix. Early stages see that texture at full
    detail, but a net that only pools its last map must carry it through three more stages built
    for anatomy; reading statistics off every stage gives the heads that texture directly, the way
    camera-model identification reads sensor noise rather than scene content.
    """

    def __init__(self, width: int = 16, in_channels: int = 1, texture_stats: bool = False):
        super().__init__()
        from monai.networks.blocks import Convolution

        layers: list[nn.Module] = []
        ch_in = in_channels
        for stage in range(4):
            ch = width * 2 ** stage
            layers.append(Convolution(2, ch_in, ch, strides=2, kernel_size=3, act="RELU", norm="BATCH"))
            layers.append(Convolution(2, ch, ch, strides=1, kernel_size=3, act="RELU", norm="BATCH"))
            ch_in = ch
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.texture_stats = bool(texture_stats)
        self.out_features = ch_in * 4 + (2 * width * 15 if texture_stats else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features (N, ``out_features``) of slices (N, C, H, W): the last map pooled to 2 x 2, then with
        ``texture_stats`` every stage's channel mean / std."""
        if not self.texture_stats:
            return self.pool(self.body(x)).flatten(1)
        stats = []
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i % 2:                       # the end of a stage
                stats.append(channel_statistics(x))
        return torch.cat([self.pool(x).flatten(1), *stats], dim=1)


class ResNetWithTextureStats(nn.Module):
    """A MONAI ResNet whose features also carry each residual stage's channel mean / std
    (:func:`channel_statistics`), as ``SmallCNN(texture_stats=True)`` does."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        widths = [stage[-1].conv2.out_channels for stage in self.stages]
        self.out_features = widths[-1] + 2 * sum(widths)

    @property
    def stages(self) -> list[nn.Module]:
        """The wrapped ResNet's four residual stages (``layer1`` to ``layer4``)."""
        return [self.net.layer1, self.net.layer2, self.net.layer3, self.net.layer4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features (N, ``out_features``): the ResNet's average-pooled last map, then every stage's channel
        mean / std."""
        net = self.net
        x = net.act(net.bn1(net.conv1(x)))
        if not net.no_max_pool:
            x = net.maxpool(x)
        stats = []
        for stage in self.stages:
            x = stage(x)
            stats.append(channel_statistics(x))
        return torch.cat([net.avgpool(x).flatten(1), *stats], dim=1)


#: features of the k-space branch
KSPACE_FEATURES = 64


#: the k-space branch's forms (IAPConfig.kspace_branch)
KSPACE_BRANCHES: tuple[str, ...] = get_args(KSpaceBranchKind)


class KSpaceBranch(nn.Module):
    """The k-space view (N, rows, bins) (:mod:`mridomain.data.kspace`) -> ``KSPACE_FEATURES`` features.

    Each bin is standardized on its own (BatchNorm over the rows x bins values), so a drop of a few
    decades at one bin weighs as much as the smooth fall-off of the anatomy's spectrum. Then no
    convolution with pooling: what the view says is *where* each profile drops or bends (the
    acquired window's edge, the end of the reconstructed grid), an absolute bin position that a
    translation-invariant pooling would throw away. ``kind``:

    - ``"mlp"``: Linear -> ``hidden``, ReLU, Linear -> 64, ReLU (the branch before ``kind`` existed);
    - ``"linear"``: one Linear -> 64, so the heads read the view linearly, as a logistic regression on
      it does;
    - ``"mlp+linear"``: the sum of the two.

    ``rows`` is two per source of the view (2 for the magnitude alone, 4 with its square).
    """

    def __init__(self, bins: int, hidden: int = 128, rows: int = 2, kind: str = "mlp"):
        super().__init__()
        if kind not in KSPACE_BRANCHES:
            raise InvalidArgumentError(f"k-space branch {kind!r}: unknown (choose from {', '.join(KSPACE_BRANCHES)})")
        self.bins, self.rows, self.kind = int(bins), int(rows), kind
        n = self.rows * self.bins
        # one Sequential ``net`` whose first two layers standardize, so "mlp" runs saved before
        # ``kind`` existed load under their own tensor names
        layers = [nn.Flatten(), nn.BatchNorm1d(n)]
        if kind == "linear":
            layers.append(nn.Linear(n, KSPACE_FEATURES))
        else:
            layers += [nn.Linear(n, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, KSPACE_FEATURES),
                       nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)
        self.linear = nn.Linear(n, KSPACE_FEATURES) if kind == "mlp+linear" else None

    def forward(self, kspace: torch.Tensor) -> torch.Tensor:
        """Features (N, ``KSPACE_FEATURES``) of a k-space view (N, rows, bins), cast to float32 first."""
        if self.linear is None:
            return self.net(kspace.float())
        x = self.net[1](self.net[0](kspace.float()))
        return self.net[2:](x) + self.linear(x)


class IAPNet(nn.Module):
    """Backbone + one linear layer with sum(C_k) + M outputs, split into heads by the encoder.

    The input pipeline lives inside the module so that a checkpoint is self-contained: slices of
    any size are resized to ``input_size`` (area interpolation) and standardized with the training
    images' mean / std (buffers saved with the weights).

    Inputs, by name: ``image`` (N, 1, H, W) or (N, H, W), cache-normalized slices; and with
    ``kspace_bins`` > 0, ``kspace`` (N, kspace_rows, kspace_bins), each slice's k-space view
    (:mod:`mridomain.data.kspace`), whose :class:`KSpaceBranch` features are appended to the
    backbone's.
    """

    def __init__(self, n_outputs: int, backbone: str = "resnet18", input_size: int = 224, width: int = 32,
                 in_mean: float = 0.0, in_std: float = 1.0, texture_stats: bool = False,
                 residual_input: bool = False, kspace_bins: int = 0, kspace_rows: int = 2,
                 kspace_branch: str = "mlp", mirror_map: tuple[np.ndarray, np.ndarray] | None = None):
        super().__init__()
        in_channels = 2 if residual_input else 1      # the image, and its noise residual
        if backbone == "resnet18":
            from monai.networks.nets import resnet18

            # conv1 stride 2 as in torchvision's ResNet-18, which the paper used (MONAI's default is 1,
            # four times the compute for the same network).
            net = resnet18(spatial_dims=2, n_input_channels=in_channels, num_classes=n_outputs,
                           conv1_t_size=7, conv1_t_stride=2)
            self.head = net.fc          # the final linear layer: sum(C_k) + M units
            net.fc = nn.Identity()
            self.backbone = net
            self.feature_dim = self.head.in_features
            if texture_stats:
                self.backbone = ResNetWithTextureStats(net)
                self.feature_dim = self.backbone.out_features
                self.head = nn.Linear(self.feature_dim, n_outputs)
        elif backbone == "smallcnn":
            self.backbone = SmallCNN(width=width, in_channels=in_channels, texture_stats=texture_stats)
            self.feature_dim = self.backbone.out_features
            self.head = nn.Linear(self.feature_dim, n_outputs)
        else:
            raise InvalidArgumentError(f"backbone {backbone!r}: unknown (choose from {', '.join(BACKBONES)})")
        self.kspace = KSpaceBranch(kspace_bins, rows=kspace_rows, kind=kspace_branch) if kspace_bins > 0 else None
        if self.kspace is not None:
            self.feature_dim += KSPACE_FEATURES
            self.head = nn.Linear(self.feature_dim, n_outputs)
        self.input_size = int(input_size)
        self.residual_input = bool(residual_input)
        self.n_outputs = int(n_outputs)
        self.register_buffer("in_mean", torch.tensor(float(in_mean)))
        self.register_buffer("in_std", torch.tensor(float(in_std)))
        self.mirror_tta = mirror_map is not None
        if mirror_map is not None:
            index, has_mirror = (np.asarray(a) for a in mirror_map)
            if index.shape != (self.n_outputs,) or has_mirror.shape != (self.n_outputs,):
                raise InvalidArgumentError(f"mirror_map: needs two arrays of {self.n_outputs} outputs, got "
                                           f"{index.shape} and {has_mirror.shape}")
            # not saved with the weights: the label schema rebuilds them (build_model)
            self.register_buffer("mirror_index", torch.as_tensor(index, dtype=torch.long), persistent=False)
            self.register_buffer("mirror_weight", torch.as_tensor(0.5 * has_mirror, dtype=torch.float32),
                                 persistent=False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """(N, H, W) or (N, 1, H, W) cache-normalized slices -> standardized network input."""
        if x.ndim == 3:
            x = x.unsqueeze(1)
        x = x.float()
        if x.shape[-2:] != (self.input_size, self.input_size):
            if torch.onnx.is_in_onnx_export():
                # the same area average as two matrix products: the exporter has no adaptive
                # pooling at a non-integer ratio (224 -> 128), and training keeps its own kernel
                cols = area_resize_matrix(int(x.shape[-1]), self.input_size).to(x)
                rows = area_resize_matrix(int(x.shape[-2]), self.input_size).to(x)
                x = F.linear(F.linear(x, cols).transpose(-1, -2), rows).transpose(-1, -2)
            else:
                x = F.interpolate(x, size=(self.input_size, self.input_size), mode="area")
        x = (x - self.in_mean) / self.in_std
        if self.residual_input:
            x = torch.cat([x, x - F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)], dim=1)
        return x

    @property
    def uses_kspace(self) -> bool:
        """True when the network reads a k-space view beside the image (its second input)."""
        return self.kspace is not None

    @property
    def input_names(self) -> tuple[str, ...]:
        """The names of the network's inputs, in order (the ONNX export's input names)."""
        return ("image", "kspace") if self.uses_kspace else ("image",)

    def embed(self, image: torch.Tensor, kspace: torch.Tensor | None = None) -> torch.Tensor:
        """Penultimate features (N, feature_dim): the backbone's, then the k-space branch's."""
        features = self.backbone(self.prepare(image))
        if self.kspace is None:
            return features
        if kspace is None:
            raise InvalidArgumentError("this IAP network reads a k-space view: call it with kspace= "
                                       "(slices preprocessed with the run's preprocess.json carry it)")
        return torch.cat([features, self.kspace(kspace)], dim=1)

    def outputs_and_features(self, image: torch.Tensor, kspace: torch.Tensor | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(outputs (N, sum C_k + M), penultimate features (N, feature_dim)) of the slices.

        With ``mirror_tta`` and in eval mode, the outputs average the slice's and its left-right
        mirror's, the mirror's read through ``mirror_map`` (its HFP logit is the slice's FFP logit;
        every other IAP is the same for both). The predictor is then exactly mirror-equivariant:
        mirroring a slice swaps its position answer and changes nothing else. Training sees mirrored
        slices through ``mirror_augment`` instead. Both images go through the network as one batch;
        the features are the slice's own, so the domain detector reads what it was fitted on.
        """
        if self.training or not self.mirror_tta:
            features = self.embed(image, kspace)
            return self.head(features), features
        n = image.shape[0]
        both = torch.cat([image, torch.flip(image, dims=[-1])])
        features = self.embed(both, None if kspace is None else torch.cat([kspace, kspace]))
        outputs = self.head(features)
        own, mirrored = outputs[:n], outputs[n:][:, self.mirror_index]
        return (1.0 - self.mirror_weight) * own + self.mirror_weight * mirrored, features[:n]

    def forward(self, image: torch.Tensor, kspace: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs (N, sum C_k + M) from ``image`` and, for a network with a k-space branch, ``kspace``
        (mirror-averaged in eval mode with ``mirror_tta``: :meth:`outputs_and_features`)."""
        return self.outputs_and_features(image, kspace)[0]


def network_outputs(model: nn.Module, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs, features) of a network: an :class:`IAPNet`'s own (mirror-averaged when it is set
    to), or ``model.head(model.embed(...))`` for any other module with those two parts."""
    if isinstance(model, IAPNet):
        return model.outputs_and_features(*inputs)
    features = model.embed(*inputs)
    return model.head(features), features


def feature_blocks(backbone: str, width: int = 32, texture_stats: bool = False,
                   kspace: bool = False) -> list[tuple[str, int, int]]:
    """The parts of an :class:`IAPNet`'s penultimate features, as (name, start, stop): the pooled
    last map, then with ``texture_stats`` each stage's channel mean / std, then with ``kspace``
    the k-space branch's features. A feature-space
    detector models each part on its own (Lee et al. 2018 score every layer): the early stages'
    statistics see texture and contrast, the pooled map the anatomy."""
    if backbone == "smallcnn":
        pooled, stages = 8 * width * 4, [2 * width * 2 ** s for s in range(4)]
    elif backbone == "resnet18":
        pooled, stages = 512, [2 * c for c in (64, 128, 256, 512)]
    else:
        raise InvalidArgumentError(f"backbone {backbone!r}: unknown (choose from {', '.join(BACKBONES)})")
    blocks, start = [("pooled", 0, pooled)], pooled
    if texture_stats:
        for s, n in enumerate(stages, 1):
            blocks.append((f"stage{s}", start, start + n))
            start += n
    if kspace:
        blocks.append(("kspace", start, start + KSPACE_FEATURES))
    return blocks


def build_model(config: IAPConfig, encoder: LabelEncoder, in_mean: float = 0.0, in_std: float = 1.0,
                preprocess: dict[str, Any] | None = None) -> IAPNet:
    """The network for ``config`` with an output layer sized from ``encoder`` (sum C_k + M).

    With ``config.kspace_view`` (or None and a view in ``preprocess``, the run's preprocess.json)
    the network gets a k-space branch sized from that view; True without a view is a one-line error."""
    bins, rows = 0, 2
    view = (preprocess or {}).get("kspace_view")
    if config.kspace_view or (config.kspace_view is None and view):
        if not view:
            raise InvalidArgumentError("kspace_view=True needs slices with a k-space view: prepare the cache "
                                       "with --kspace-view (or train with kspace_view=False)")
        bins, rows = int(view["bins"]), view_rows(view)
    return IAPNet(encoder.n_outputs, backbone=config.backbone, input_size=config.input_size,
                  width=config.width, in_mean=in_mean, in_std=in_std, texture_stats=config.texture_stats,
                  residual_input=config.residual_input, kspace_bins=bins, kspace_rows=rows,
                  kspace_branch=config.kspace_branch,
                  mirror_map=mirror_output_map(encoder) if config.mirror_tta else None)


def reads_kspace(model: object) -> bool:
    """Whether ``model`` (an unwrapped network) takes the k-space view as its second input: an
    :class:`IAPNet` built with a k-space branch; any other module reads the image alone."""
    return bool(getattr(model, "uses_kspace", False))


def iap_loss(outputs: torch.Tensor, cat_targets: torch.Tensor, cont_targets: torch.Tensor,
             encoder: LabelEncoder, lam: float = 1.0, eta: float = 1.0
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. (1): lam * sum_k CE_k + eta * sum_m MSE_m, each term averaged over its labelled slices.

    Missing labels (IGNORE_INDEX / NaN) drop out of their own term only; a term with no labelled
    slice in the batch contributes 0. Returns the loss and each term's value (for logging).
    """
    outputs = outputs.float()
    total = outputs.new_zeros(())
    terms: dict[str, float] = {}
    for j, h in enumerate(encoder.categorical):
        logits = outputs[:, encoder.slices[h.name]]
        t = cat_targets[:, j]
        mask = t != IGNORE_INDEX
        if bool(mask.any()):
            ce = F.cross_entropy(logits[mask], t[mask])
            total = total + lam * ce
            terms[h.name] = float(ce.detach())
    for j, h in enumerate(encoder.continuous):
        pred = outputs[:, encoder.slices[h.name].start]
        t = cont_targets[:, j]
        mask = torch.isfinite(t)
        if bool(mask.any()):
            mse = F.mse_loss(pred[mask], t[mask])
            total = total + eta * mse
            terms[h.name] = float(mse.detach())
    return total, terms


__all__: Sequence[str] = ["IAPNet", "KSPACE_BRANCHES", "KSpaceBranch", "SmallCNN", "build_model", "iap_loss", "reads_kspace",
                          "network_outputs", "BACKBONES"]
