"""Tumor-vs-normal slice classifier: the downstream model of the paper's routing experiment (§5.2).

Positives are slices inside the tumor box, negatives slices >= 5 slices away (the slice cache's
``tumor`` column). The ``paper`` preset is MONAI's ResNet-18 with one input channel at 224 px
and the IAP model's training settings (Adam lr 1e-3, weight decay 1e-4, best-validation
checkpoint); the ``cpu`` preset is a four-block CNN at 64 px so the experiment runs on a laptop.
Weights are saved as safetensors next to a JSON config (the shared ``ArrayClassifier`` format).
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from mridomain.engine.classification import ArrayClassifier, ClassifierSettings
from mridomain.engine.settings import validated
from mridomain.errors import InvalidArgumentError

__all__ = ["TumorClassifierConfig", "TumorClassifier", "PRESETS"]


class TumorClassifierConfig(ClassifierSettings):
    """Architecture and training settings (saved as config.json)."""

    arch: Literal["small_cnn", "resnet18"] = "small_cnn"
    size: int = Field(64, ge=8)    # input height = width in pixels
    epochs: int = Field(15, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    width: int = Field(16, ge=1)   # channels of the first small_cnn block
    mean: float = 0.0              # intensity standardization fitted on the training images
    std: float = Field(1.0, gt=0)
    augment: bool = True           # random left-right / up-down flips (tumors occur in both breasts)
    amp: bool = False
    channels_last: bool = False
    monitor: str = "val_accuracy"  # the paper keeps the best-validation-accuracy weights
    monitor_mode: Literal["min", "max"] = "max"


PRESETS: dict[str, dict[str, Any]] = {
    # Paper §5.2: ResNet-18 "using the same training settings as before" (Sec. 4: Adam 1e-3,
    # wd 1e-4, batch 512, 100 epochs, 224x224).
    "paper": dict(arch="resnet18", size=224, epochs=100, batch_size=512, amp=True, channels_last=True),
    "cpu": dict(arch="small_cnn", size=64, epochs=15, batch_size=64),
}


class TumorClassifier(ArrayClassifier):
    """Binary slice classifier with ``fit`` / ``predict_proba`` / ``predict`` / ``save`` / ``load``
    (the shared :class:`mridomain.engine.classification.ArrayClassifier`)."""

    kind = "mridomain.tumor_classifier"
    legacy_kinds = ("tumor_classifier",)
    config_class = TumorClassifierConfig

    def __init__(self, config: TumorClassifierConfig | None = None, preset: str | None = None,
                 device: str | None = None, **overrides: Any):
        if config is None:
            if preset and preset not in PRESETS:
                raise InvalidArgumentError(f"preset {preset!r}: choose {' or '.join(PRESETS)}")
            base = dict(PRESETS[preset]) if preset else {}
            base.update(overrides)
            if device is not None:
                base["device"] = device
            config = validated(TumorClassifierConfig, base, "TumorClassifierConfig")
        elif device is not None:
            config = config.updated(device=device)
        super().__init__(config)

    def architecture(self):
        """The network: MONAI's 2-D ResNet-18 when ``arch == 'resnet18'``, else a small CNN of ``width`` channels."""
        import torch.nn as nn

        cfg = self.config
        if cfg.arch == "resnet18":
            from monai.networks.nets import resnet18

            return resnet18(spatial_dims=2, n_input_channels=1, num_classes=1)
        w = cfg.width
        chans = [1, w, 2 * w, 4 * w, 4 * w]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(chans[-1], 1))

    def prepare(self, batch: np.ndarray):
        """(N, H, W) raw slices -> standardized (N, 1, size, size) tensor."""
        import torch
        import torch.nn.functional as F

        arr = np.asarray(batch, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[None]
        t = torch.from_numpy((arr - self.config.mean) / self.config.std)[:, None]
        if t.shape[-2:] != (self.config.size, self.config.size):
            t = F.interpolate(t, size=(self.config.size, self.config.size), mode="bilinear", align_corners=False)
        return t

    def before_fit(self, images: np.ndarray) -> None:
        """Learn the intensity scaling (mean, std) from the training images."""
        # One intensity scale at train and test time, from (a sample of) the training pixels, as
        # the IAP model standardizes its inputs.
        n = len(images)
        if n:
            rng = np.random.default_rng(self.config.seed)
            sample = np.asarray(images[rng.choice(n, min(n, 256), replace=False)], np.float32)
            self.config.mean, self.config.std = float(sample.mean()), float(sample.std() or 1.0)
