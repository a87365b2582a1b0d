"""Command-line argument checks shared by every room's CLI: one-line errors before any work.

Each raises :class:`~mridomain.errors.InvalidArgumentError` (or the output-path errors of
:mod:`mridomain.files`), which the top-level command group prints as one red line, exit 1.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from mridomain.errors import InvalidArgumentError, check_range


def file_out(path: Path, option: str) -> Path:
    """An output that must be a file: a one-line error, before any work, when it cannot be."""
    from mridomain.files import check_output_file

    return check_output_file(path, f"{option} output")


def folder_out(path: Path, option: str) -> Path:
    """An output that must be a folder: a one-line error, before any work, when it cannot be."""
    from mridomain.files import check_output_folder

    return check_output_folder(path, f"{option} output")


def at_least(value: Optional[float], option: str, minimum: float, maximum: float | None = None) -> None:
    """A one-line error for a number outside what the option accepts (None: not given)."""
    check_range(value, option, minimum, maximum)


#: Upper bounds of counts: far above any real run, low enough that a typo fails at once instead
#: of running until killed (DBC, the largest archive simulated here, has 922 patients).
MAX_PATIENTS = 100_000
MAX_SLICES = 4096


def numbers(text: str, option: str, count: int | None = None) -> tuple[float, ...]:
    """``"0.7,0.15,0.15"`` -> floats, with a one-line error naming the option.

    >>> numbers("0.7,0.15,0.15", "--fractions", 3)
    (0.7, 0.15, 0.15)
    >>> numbers("0.7,0.3", "--fractions", 3)
    Traceback (most recent call last):
    mridomain.errors.InvalidArgumentError: --fractions '0.7,0.3': expected 3 numbers, got 2"""
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise InvalidArgumentError(f"{option} {text!r}: expected comma-separated numbers") from None
    if count is not None and len(values) != count:
        raise InvalidArgumentError(f"{option} {text!r}: expected {count} numbers, got {len(values)}")
    return values


KEEP_KIND_HELP = ("Also read images of this kind (phase | derived | localizer | secondary capture), "
                   "skipped by default; repeat.")
