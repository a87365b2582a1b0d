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
