"""The study's networks: one logit per image, built from the sample shape, nothing downloaded.

- ``mrnet2d``: MRNet's 2-D slice model (the paper's [22], Prakash 2021, after Bien et al. 2018):
  AlexNet's five convolutional stages (Krizhevsky et al. 2012 layout: 11x11/4, 5x5, three 3x3,
  three 3x3/2 max pools), global average pooling and one linear logit. MRNet starts from ImageNet
  weights; none can be downloaded here, so it trains from scratch unless ``pretrained`` names a
  weight file.
- ``nodulex``: NoduleX-style crop model (the paper's [5], Causey et al. 2018). NoduleX's code reads
  each 47 x 47 x 5 cube as a 47 x 47 image with its 5 slices as channels (``img_channels = 5`` in
  its training script) and classifies it with a 2-D CNN; its layer widths ship only in a model file
  that is not public, so the stages here (two conv-conv-pool stages, a dense layer with dropout)
  are ours. Input (N, 1, D, H, W): the D slices become channels.
- ``densenet121``: MONAI's DenseNet-121 (Huang et al. 2017), the paper's X-ray model, 2-D or 3-D.
- ``package.module:callable``: a researcher's own network. The callable receives ``input_shape``
  (the shape of one sample, (H, W) or (D, H, W)) and ``spatial_dims`` when its signature names
  them, and must return a ``torch.nn.Module`` mapping (N, 1, *input_shape) to (N, 1) or (N,).

Nothing in a folder names code to run: the built-in networks form a closed registry
(:data:`MODEL_REGISTRY`), and a user model is imported only when the user names it on that
invocation (``--model``, a ``model=`` argument, a config object passed in). A study or model folder
that names a model outside the registry is refused by :func:`check_model_source` until the user
repeats the name.
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from mridomain.errors import InvalidArgumentError

__all__ = ["MRNet2D", "NoduleXNet", "build_model", "resolve_model_name", "model_factory", "BUILTIN_MODELS",
           "MODEL_REGISTRY", "is_user_model", "check_model_source"]


def _ch(n: int, width: float) -> int:
    return max(4, int(round(n * width)))


class MRNet2D(nn.Module):
    """AlexNet feature stages + global average pooling + one logit (MRNet's 2-D slice model)."""

    def __init__(self, width: float = 1.0, in_channels: int = 1):
        super().__init__()
        c = [_ch(64, width), _ch(192, width), _ch(384, width), _ch(256, width), _ch(256, width)]
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c[0], 11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(c[0], c[1], 5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(c[1], c[2], 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c[2], c[3], 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c[3], c[4], 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c[4], 1)

    #: smallest input side the three 3x3/2 pools after the 11x11/4 stem leave at least one pixel of
    MIN_SIZE = 63

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) images -> (N, 1) logits."""
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class NoduleXNet(nn.Module):
    """A crop's D slices as the channels of a 2-D CNN (NoduleX's reading of its 47x47x5 cubes)."""

    def __init__(self, depth: int, width: float = 1.0):
        super().__init__()
        c1, c2, dense = _ch(48, width), _ch(96, width), _ch(512, width)

        def stage(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                    nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                    nn.MaxPool2d(2), nn.Dropout(0.25)]

        self.depth = depth
        self.features = nn.Sequential(*stage(depth, c1), *stage(c1, c2), nn.AdaptiveAvgPool2d(4))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c2 * 16, dense), nn.ReLU(inplace=True),
                                        nn.Dropout(0.5), nn.Linear(dense, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, D, H, W) crops (or (N, D, H, W)) -> (N, 1) logits."""
        if x.ndim == 5:                      # (N, 1, D, H, W) -> (N, D, H, W)
            x = x.reshape(x.shape[0], x.shape[1] * x.shape[2], *x.shape[3:])
        return self.classifier(self.features(x))


def resolve_model_name(name: str, input_shape: Sequence[int], modality: str | None = None) -> str:
    """``auto`` -> the paper's choice for this kind of sample; other names are returned checked."""
    key = name.strip()
    if key.lower() == "auto":
        if len(input_shape) == 3:
            return "nodulex"
        if modality and modality.strip().lower().replace("-", "") in ("xray", "cr", "dx", "radiograph"):
            return "densenet121"
        return "mrnet2d"
    if key.lower() in BUILTIN_MODELS:
        return key.lower()
    if ":" in key:
        return key
    raise InvalidArgumentError(f"model {name!r}: choose auto, {', '.join(BUILTIN_MODELS)} or package.module:callable")


def is_user_model(name: str | None) -> bool:
    """True when ``name`` is not ``auto`` nor a built-in model: it names code outside the registry."""
    key = (name or "auto").strip().lower()
    return key != "auto" and key not in BUILTIN_MODELS


def check_model_source(name: str | None, explicit: str | None, where: str) -> None:
    """Refuse a model named by a folder (``where``: its config file) that is outside the registry,
    unless the user named the same model on this invocation (``explicit``): a folder shared by a
    colleague or downloaded must never choose code to import."""
    from mridomain.errors import SchemaMismatchError

    if is_user_model(name) and (explicit is None or explicit.strip() != str(name).strip()):
        raise SchemaMismatchError(
            f"{where}: names the user model {name!r}, which is not built in ({', '.join(BUILTIN_MODELS)}); "
            f"a folder never chooses code to run, so repeat it to run it: --model {name}")


def model_factory(spec: str) -> Callable[..., Any]:
    """Import the callable named by ``package.module:callable`` (one-line errors when it cannot)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InvalidArgumentError(f"model {spec!r}: a user model is given as package.module:callable")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any import failure is the user's module
        raise InvalidArgumentError(f"model {spec!r}: cannot import {module_name} ({type(err).__name__}: {err})") from None
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise InvalidArgumentError(f"model {spec!r}: {module_name} has no attribute {attr}")
    if not callable(obj):
        raise InvalidArgumentError(f"model {spec!r}: {attr} is not callable")
    return obj


def _mrnet2d(shape: tuple[int, ...], width: float) -> nn.Module:
    if len(shape) != 2:
        raise InvalidArgumentError(f"model mrnet2d classifies 2-D images; samples are {shape} (use nodulex)")
    if min(shape) < MRNet2D.MIN_SIZE:
        raise InvalidArgumentError(f"model mrnet2d needs images of at least {MRNet2D.MIN_SIZE} px "
                                   f"(AlexNet's stride 4 stem and three pools); got {shape}: set image_size")
    return MRNet2D(width)


def _nodulex(shape: tuple[int, ...], width: float) -> nn.Module:
    if len(shape) != 3:
        raise InvalidArgumentError(f"model nodulex classifies 3-D crops (D, H, W); samples are {shape}")
    return NoduleXNet(shape[0], width)


def _densenet121(shape: tuple[int, ...], width: float) -> nn.Module:
    from monai.networks.nets import DenseNet121

    return DenseNet121(spatial_dims=len(shape), in_channels=1, out_channels=1)


#: The closed registry of built-in networks: name -> builder(sample shape, width).
MODEL_REGISTRY: dict[str, Callable[[tuple[int, ...], float], nn.Module]] = {
    "mrnet2d": _mrnet2d, "nodulex": _nodulex, "densenet121": _densenet121}
BUILTIN_MODELS = tuple(MODEL_REGISTRY)


def build_model(name: str, input_shape: Sequence[int], width: float = 1.0, modality: str | None = None) -> nn.Module:
    """The network for samples of ``input_shape`` ((H, W) or (D, H, W)), one input channel, one logit."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) not in (2, 3):
        raise InvalidArgumentError(f"sample shape {shape}: the study classifies 2-D images or 3-D crops")
    kind = resolve_model_name(name, shape, modality)
    if kind in MODEL_REGISTRY:
        return MODEL_REGISTRY[kind](shape, width)
    factory = model_factory(kind)
    params = inspect.signature(factory).parameters
    offered = {"input_shape": shape, "spatial_dims": len(shape)}
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in offered.items() if takes_all or k in params}
    try:
        net = factory(**kwargs)
    except Exception as err:  # noqa: BLE001 - the user's code
        raise InvalidArgumentError(f"model {kind!r}: the factory raised {type(err).__name__}: {err}") from None
    if not isinstance(net, nn.Module):
        raise InvalidArgumentError(f"model {kind!r}: the factory returned {type(net).__name__}, not a torch.nn.Module")
    return net
