"""The settings every training config shares (``IAPConfig``, ``TumorClassifierConfig``, the shift
and synthesis configs subclass :class:`TrainSettings`): validated by pydantic before anything is
written to a run folder (see :mod:`mridomain.config`).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from mridomain.config import Settings, validated, validation_message  # noqa: F401  (re-exported)

__all__ = ["Settings", "TrainSettings", "validation_message", "validated"]


class TrainSettings(Settings):
    """What the engine needs of every training config (see :class:`mridomain.engine.Engine`)."""

    epochs: int = Field(1, ge=1, description="epochs to train (with resume: train up to this many)")
    seed: int = Field(0, ge=0, description="seed of initialization, batch order and augmentation")
    device: str | None = Field(None, description="cpu | cuda | cuda:N; None = cuda when available")
    devices: int = Field(1, ge=1, description="processes / GPUs per node (torchrun sets it)")
    num_nodes: int = Field(1, ge=1, description="machines (torchrun sets it)")
    strategy: Literal["auto", "ddp"] = "auto"
    amp: bool = Field(True, description="bf16 (else fp16) mixed precision; only used on CUDA")
    cpu_amp: Literal["off", "bf16", "auto"] = Field(
        "off", description="bf16 mixed precision on the CPU: bf16, or auto = bf16 only where the CPU "
                           "computes it natively (AMX or AVX512-BF16: engine.cpu_has_native_bf16); "
                           "elsewhere oneDNN emulates bf16 and a synthesis step was 8.7x slower")
    channels_last: bool = Field(True, description="NHWC memory layout; only used on CUDA")
    patience: int | None = Field(None, ge=1, description="early stopping after this many epochs "
                                                        "without improvement (None = off)")
    monitor: str = Field("val_loss", description="validation metric that picks the best checkpoint")
    monitor_mode: Literal["min", "max"] = "min"
    find_unused_parameters: bool = Field(False, description="DDP: some parameters get no gradient "
                                                           "in a step (GANs, optional heads)")
