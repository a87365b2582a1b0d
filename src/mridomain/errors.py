"""Errors with one-line messages that name the file and the problem.

Batch jobs catch :class:`MridomainError` per item, record the message and go on, so one bad
file never costs the rest of a run.
"""
from __future__ import annotations

from pathlib import Path


class MridomainError(Exception):
    """Base class for every error the toolkit raises on bad input."""


class ImageReadError(MridomainError):
    """A file or folder could not be read as an image (or its header could not be parsed)."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class EmptyInputError(MridomainError):
    """A folder or list held nothing that could be used."""

    def __init__(self, path: str | Path, reason: str = "no readable images found"):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class SchemaMismatchError(MridomainError):
    """A checkpoint, cache or config does not fit the data or code it is used with."""


class InvalidArgumentError(MridomainError, ValueError):
    """An argument has a value the function cannot use (a choice not offered, a bad number).

    Also a ``ValueError``, so callers that catch ``ValueError`` for bad arguments keep working; the
    CLI reports it, like every :class:`MridomainError`, as one line.
    """


def check_range(value: float | None, name: str, minimum: float | None = None, maximum: float | None = None) -> None:
    """One-line :class:`InvalidArgumentError` for a number outside ``[minimum, maximum]`` or not
    finite (None: not given, nothing to check). Used before any work starts, so a bad count
    fails at once instead of after a simulation or a training."""
    import math

    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgumentError(f"{name} {value}: must be a finite number")
    if minimum is not None and value < minimum:
        raise InvalidArgumentError(f"{name} {value}: must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise InvalidArgumentError(f"{name} {value}: must be at most {maximum:,}")


def check_choice(value: str | None, name: str, choices: tuple[str, ...] | list[str]) -> None:
    """One-line :class:`InvalidArgumentError` for a value not among ``choices`` (None: not given)."""
    if value is not None and value not in choices:
        raise InvalidArgumentError(f"{name} {value!r}: choose {', '.join(choices)}")
