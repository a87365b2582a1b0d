"""VGG perceptual loss and LPIPS from weights the user supplies (nothing is ever downloaded).

The VGG layout follows the ImageNet VGG16 / VGG19 ``features`` stack, so a state dict saved from any
ImageNet VGG (keys ``features.N.weight`` / ``features.N.bias`` or ``N.weight``) loads as it is. Files
are safetensors, or a PyTorch state dict read with ``weights_only=True`` (no code runs on load).

LPIPS (Zhang et al. 2018) needs, besides the backbone, its learned per-channel layer weights
(``lin0..lin4``, keys as in the ``lpips`` package). Without them the score is LPIPS' uncalibrated
baseline (unit-normalized features, equal channel weights), and :attr:`LPIPS.calibrated` says so.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mridomain.errors import EmptyInputError, SchemaMismatchError

__all__ = ["VGG_LAYOUTS", "vgg_features", "load_state_file", "load_vgg", "PerceptualLoss", "LPIPS"]

VGG_LAYOUTS: dict[str, list[int | str]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg_features(arch: str = "vgg19") -> nn.Sequential:
    """The ImageNet VGG ``features`` stack (conv3x3 + ReLU, max-pools), randomly initialized."""
    if arch not in VGG_LAYOUTS:
        raise SchemaMismatchError(f"unknown VGG layout {arch!r} (choose from {sorted(VGG_LAYOUTS)})")
    layers: list[nn.Module] = []
    prev = 3
    for v in VGG_LAYOUTS[arch]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(prev, int(v), 3, padding=1), nn.ReLU(inplace=False)]
            prev = int(v)
    return nn.Sequential(*layers)


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or a weights-only PyTorch state dict."""
    path = Path(path)
    if not path.is_file():
        raise EmptyInputError(path, "weight file does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any parse failure is the file's fault
        raise SchemaMismatchError(f"{path}: not a readable weight file ({type(err).__name__}: "
                                  f"{str(err).splitlines()[0][:120] if str(err) else ''})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise SchemaMismatchError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return {k: v for k, v in state.items() if torch.is_tensor(v)}


def load_vgg(path: str | Path, arch: str = "vgg19") -> nn.Sequential:
    """A frozen VGG ``features`` stack with the weights of ``path``; every tensor must fit."""
    model = vgg_features(arch)
    state = load_state_file(path)
    feats = {k.removeprefix("features."): v for k, v in state.items()
             if k.startswith("features.") or k.split(".")[0].isdigit()}
    own = model.state_dict()
    wrong = [k for k in own if k not in feats or tuple(feats[k].shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        got = tuple(feats[k].shape) if k in feats else "absent"
        raise SchemaMismatchError(f"{path}: not {arch} features weights ({len(wrong)} tensors do not fit, "
                                  f"e.g. features.{k}: {got} vs {tuple(own[k].shape)})")
    model.load_state_dict({k: feats[k] for k in own})
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def _to_vgg_input(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` in [-1, 1] -> ``(N * C, 3, H, W)`` ImageNet-normalized grey images."""
    x = (x.reshape(-1, 1, *x.shape[-2:]) + 1.0) / 2.0
    mean = torch.tensor(_IMAGENET_MEAN, device=x.device, dtype=x.dtype).reshape(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD, device=x.device, dtype=x.dtype).reshape(1, 3, 1, 1)
    return (x.expand(-1, 3, -1, -1) - mean) / std


def _relu_outputs(features: nn.Sequential, x: torch.Tensor, wanted: set[int]) -> list[torch.Tensor]:
    outs = []
    for idx, layer in enumerate(features):
        x = layer(x)
        if idx in wanted:
            outs.append(x)
        if idx >= max(wanted):
            break
    return outs


def _block_ends(arch: str) -> list[int]:
    """Index of the last ReLU of each of the five VGG blocks (relu1_2, relu2_2, relu3_x, ...)."""
    ends, idx, last_relu = [], 0, -1
    for v in VGG_LAYOUTS[arch]:
        if v == "M":
            ends.append(last_relu)
            idx += 1
        else:
            last_relu = idx + 1
            idx += 2
    return ends


class PerceptualLoss(nn.Module):
    """Mean squared difference of VGG features at the five block ends (the VGG19 term of eq. 1)."""

    def __init__(self, weights: str | Path, arch: str = "vgg19"):
        super().__init__()
        self.features = load_vgg(weights, arch)
        self.layers = _block_ends(arch)

    def forward(self, generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean over the five block ends of the MSE between the VGG features of ``generated`` and
        ``target`` (both in [-1, 1]; each channel a grey image)."""
        a = _relu_outputs(self.features, _to_vgg_input(generated), set(self.layers))
        b = _relu_outputs(self.features, _to_vgg_input(target), set(self.layers))
        return sum(F.mse_loss(fa, fb) for fa, fb in zip(a, b)) / len(a)


class LPIPS(nn.Module):
    """LPIPS distance per image (lower is more similar) on a user-supplied VGG backbone.

    ``lin_weights``: a file with the five LPIPS layer weights (``lin{k}.model.1.weight``, shape
    ``(1, C_k, 1, 1)``); without it channels are weighted equally (the uncalibrated baseline).
    """

    def __init__(self, weights: str | Path, arch: str = "vgg16", lin_weights: str | Path | None = None):
        super().__init__()
        self.features = load_vgg(weights, arch)
        self.layers = _block_ends(arch)
        widths = [64, 128, 256, 512, 512]
        self.calibrated = lin_weights is not None
        lins = [torch.full((1, c, 1, 1), 1.0 / c) for c in widths]
        if lin_weights is not None:
            state = load_state_file(lin_weights)
            for k, c in enumerate(widths):
                key = next((n for n in state if n.startswith(f"lin{k}.") and n.endswith("weight")), None)
                if key is None or tuple(state[key].shape) != (1, c, 1, 1):
                    raise SchemaMismatchError(f"{lin_weights}: LPIPS layer lin{k} missing or not (1, {c}, 1, 1)")
                lins[k] = state[key].float()
        for k, w in enumerate(lins):
            self.register_buffer(f"lin{k}", w)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` images in [-1, 1] -> ``(N,)`` distances (channels of one image averaged)."""
        n = a.shape[0]
        fa = _relu_outputs(self.features, _to_vgg_input(a), set(self.layers))
        fb = _relu_outputs(self.features, _to_vgg_input(b), set(self.layers))
        dist = 0.0
        for k, (x, y) in enumerate(zip(fa, fb)):
            x = x / (x.norm(dim=1, keepdim=True) + 1e-10)
            y = y / (y.norm(dim=1, keepdim=True) + 1e-10)
            dist = dist + ((x - y) ** 2 * getattr(self, f"lin{k}")).sum(dim=1).mean(dim=(1, 2))
        return dist.reshape(n, -1).mean(dim=1)
