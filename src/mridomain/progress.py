"""The one progress bar of mridomain (tqdm), which ``mridomain --quiet`` turns off everywhere.

Long steps show progress; logs of batch jobs would rather not hold thousands of redrawn bars.
The switch is an environment variable, so worker processes and torchrun ranks inherit it.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar", "set_quiet", "quiet", "QUIET_VARIABLE"]

QUIET_VARIABLE = "MRIDOMAIN_QUIET"


def set_quiet(value: bool = True) -> None:
    """Turn every progress bar of this process and its children off (or back on)."""
    if value:
        os.environ[QUIET_VARIABLE] = "1"
    else:
        os.environ.pop(QUIET_VARIABLE, None)


def quiet() -> bool:
    """True when ``--quiet`` (or :func:`set_quiet`) turned the progress bars off."""
    return os.environ.get(QUIET_VARIABLE, "") not in ("", "0")


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``, shown only when ``enabled`` and not quiet."""
    return tqdm(iterable, disable=(not enabled) or quiet(), **kwargs)
