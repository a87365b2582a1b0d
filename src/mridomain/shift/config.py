"""Training settings of the domain-shift study's models (saved as ``config.json`` next to every model).

The ``paper`` preset is §3.1 of Guo et al.: 60 epochs, batch 50, learning rate 1e-4, the best epoch
chosen on the training domain's validation AUC. The ``cpu`` preset keeps the same protocol with a
narrower network, fewer epochs and a larger step so that `mridomain shift demo` runs its ~100
trainings on two CPU cores in minutes; it is a speed setting, not a tuned one.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from mridomain.engine.classification import ClassifierSettings

__all__ = ["ShiftConfig", "PRESETS", "make_config", "default_preset"]


class ShiftConfig(ClassifierSettings):
    """One model of the study: architecture, input size and optimizer settings."""

    model: str = Field("auto", description="auto | mrnet2d | nodulex | densenet121 | package.module:callable "
                                           "(auto: nodulex for 3-D crops, densenet121 for X-ray, else mrnet2d)")
    width: float = Field(1.0, gt=0, description="channel multiplier of mrnet2d / nodulex (1.0: full width)")
    image_size: int | None = Field(None, ge=16, description="2-D images are resized to this many pixels square "
                                                            "(None: native size, all images must agree)")
    batch_size: int = Field(50, ge=2)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    augment: bool = Field(False, description="random in-plane flips of training images")
    pretrained: str | None = Field(None, description="safetensors file of initial weights (never downloaded)")
    epochs: int = Field(60, ge=1)
    monitor: str = "val_auc"                 # paper: model selection on Val_j
    monitor_mode: Literal["min", "max"] = "max"
    amp: bool = False
    channels_last: bool = False


PRESETS: dict[str, dict[str, Any]] = {
    # Guo et al. §3.1: "trained for 60 epochs with a batch size of 50, and a learning rate of 0.0001".
    "paper": dict(model="auto", width=1.0, epochs=60, batch_size=50, lr=1e-4, augment=False, amp=True,
                  channels_last=True),
    # Two CPU cores: a quarter-width network, 12 epochs at 1e-3 (a 1e-4 step needs the paper's 60).
    "cpu": dict(model="auto", width=0.25, image_size=64, epochs=12, batch_size=32, lr=1e-3, augment=True),
}


def default_preset() -> str:
    """``paper`` when CUDA is available, else ``cpu``: a researcher with a GPU who names no preset
    gets the paper's model, and a laptop gets a run that finishes."""
    import torch

    return "paper" if torch.cuda.is_available() else "cpu"


def make_config(preset: str = "cpu", **overrides: Any) -> ShiftConfig:
    """A validated :class:`ShiftConfig` from a preset name plus overrides (None values are ignored)."""
    return ShiftConfig.from_preset(PRESETS, preset, overrides)
