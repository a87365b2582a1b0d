"""Typed, validated configuration: the base of every config and config file of mridomain.

A :class:`Settings` is a pydantic model that refuses unknown fields and validates every value when
it is built or changed, so a bad value is a one-line error naming the field before anything is
written. No torch here: the data layer's YAML configs use it too.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from mridomain.errors import InvalidArgumentError, SchemaMismatchError
from mridomain.files import dump_json, read_json

S = TypeVar("S", bound="Settings")

__all__ = ["Settings", "validation_message", "validated"]


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
        """The settings as plain JSON-ready values (what is saved next to a checkpoint)."""
        return self.model_dump(mode="json")

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialize to JSON text; also write it atomically to ``path`` when given."""
        return dump_json(self.to_dict(), path)

    @classmethod
    def from_dict(cls: type[S], data: Any, where: str = "config") -> S:
        """Build and validate; a bad or unknown field is a :class:`SchemaMismatchError`."""
        if not isinstance(data, dict):
            raise SchemaMismatchError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise SchemaMismatchError(validation_message(err, where)) from None

    @classmethod
    def from_json(cls: type[S], text_or_path: str | Path) -> S:
        """Read a config from JSON text or from a ``config.json`` path."""
        text = str(text_or_path)
        if text.lstrip().startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise SchemaMismatchError(f"config: not valid JSON ({err})") from None
            return cls.from_dict(data)
        return cls.from_dict(read_json(text_or_path), where=str(text_or_path))

    @classmethod
    def from_preset(cls: type[S], presets: Mapping[str, Mapping[str, Any]], preset: str,
                    overrides: Mapping[str, Any] | None = None, *, what: str | None = None,
                    merge: tuple[str, ...] = ()) -> S:
        """The config of a named preset with ``overrides`` applied (``None`` values leave the
        preset's value; a key in ``merge`` names a nested dict that the override updates rather
        than replaces). One-line :class:`InvalidArgumentError` for an unknown preset or a bad value.

        >>> class Demo(Settings):
        ...     epochs: int = 1
        ...     lr: float = 0.1
        >>> Demo.from_preset({"cpu": {"epochs": 3}}, "cpu", {"lr": None, "epochs": 5}).epochs
        5
        >>> Demo.from_preset({"cpu": {}}, "gpu")
        Traceback (most recent call last):
        mridomain.errors.InvalidArgumentError: Demo: unknown preset 'gpu' (choose from cpu)
        """
        what = what or cls.__name__
        if preset not in presets:
            raise InvalidArgumentError(f"{what}: unknown preset {preset!r} (choose from {', '.join(presets)})")
        data = copy.deepcopy(dict(presets[preset]))
        overrides = dict(overrides or {})
        for key in merge:
            data[key] = {**dict(data.get(key) or {}), **dict(overrides.pop(key, None) or {})}
        data.update({k: v for k, v in overrides.items() if v is not None})
        return validated(cls, data, where=f"{what} ({preset} preset)")

    def updated(self: S, **overrides: Any) -> S:
        """A validated copy with some fields replaced; a bad value is an :class:`InvalidArgumentError`."""
        return validated(type(self), {**self.model_dump(), **overrides}, where=type(self).__name__)


def validated(cls: type[S], data: dict[str, Any], where: str) -> S:
    """``cls(**data)`` with one-line :class:`InvalidArgumentError` on bad user input."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise InvalidArgumentError(validation_message(err, where)) from None
