"""Typed, validated settings shared by every training config of mridomain.

Each system's config (``IAPConfig``, ``TumorClassifierConfig``, the shift and synthesis configs)
subclasses :class:`TrainSettings`: pydantic validates every field when the config is built, so a
bad value is a one-line error naming the field before anything is written to a run folder.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mridomain.errors import InvalidArgumentError, SchemaMismatchError

S = TypeVar("S", bound="Settings")

__all__ = ["Settings", "TrainSettings", "validation_message", "validated"]


def validation_message(err: ValidationError, where: str) -> str:
    """One line from a pydantic error: ``where: field 'lr_schedule': Input should be ...``."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e.get("loc", ())) or "(config)"
        msg = e.get("msg", "invalid")
        if e.get("type") == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"field {loc!r}: {msg}")
    return f"{where}: " + "; ".join(parts)


class Settings(BaseModel):
    """A frozen-schema config: unknown fields are refused, values are validated on assignment.

    ``to_json`` / ``from_json`` round-trip through a run folder's JSON; ``updated`` returns a
    validated copy with some fields replaced.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialize to JSON text; also write it atomically to ``path`` when given."""
        from mridomain.engine.checkpoint import dump_json

        return dump_json(self.to_dict(), path)

    @classmethod
    def from_dict(cls: type[S], data: Any, where: str = "config") -> S:
        """Build and validate; a bad or unknown field is a :class:`SchemaMismatchError`."""
        if not isinstance(data, dict):
            raise SchemaMismatchError(f"{where}: expected a JSON object, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise SchemaMismatchError(validation_message(err, where)) from None

    @classmethod
    def from_json(cls: type[S], text_or_path: str | Path) -> S:
        """Read a config from JSON text or from a ``config.json`` path."""
        from mridomain.engine.checkpoint import read_json

        text = str(text_or_path)
        if text.lstrip().startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise SchemaMismatchError(f"config: not valid JSON ({err})") from None
            return cls.from_dict(data)
        return cls.from_dict(read_json(text_or_path), where=str(text_or_path))

    def updated(self: S, **overrides: Any) -> S:
        """A validated copy with some fields replaced; a bad value is an :class:`InvalidArgumentError`."""
        return validated(type(self), {**self.model_dump(), **overrides}, where=type(self).__name__)


def validated(cls: type[S], data: dict[str, Any], where: str) -> S:
    """``cls(**data)`` with one-line :class:`InvalidArgumentError` on bad user input."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise InvalidArgumentError(validation_message(err, where)) from None


class TrainSettings(Settings):
    """What the engine needs of every training config (see :class:`mridomain.engine.Engine`)."""

    epochs: int = Field(1, ge=1, description="epochs to train (with resume: train up to this many)")
    seed: int = Field(0, ge=0, description="seed of initialization, batch order and augmentation")
    device: str | None = Field(None, description="cpu | cuda | cuda:N; None = cuda when available")
    devices: int = Field(1, ge=1, description="processes / GPUs per node (torchrun sets it)")
    num_nodes: int = Field(1, ge=1, description="machines (torchrun sets it)")
    strategy: Literal["auto", "ddp"] = "auto"
    amp: bool = Field(True, description="bf16 (else fp16) mixed precision; only used on CUDA")
    channels_last: bool = Field(True, description="NHWC memory layout; only used on CUDA")
    patience: int | None = Field(None, ge=1, description="early stopping after this many epochs "
                                                        "without improvement (None = off)")
    monitor: str = Field("val_loss", description="validation metric that picks the best checkpoint")
    monitor_mode: Literal["min", "max"] = "min"
    find_unused_parameters: bool = Field(False, description="DDP: some parameters get no gradient "
                                                           "in a step (GANs, optional heads)")
