"""All-or-nothing file and folder writes, and the one JSON writer / reader of run folders.

Every file is written to a temporary name in its folder, flushed to disk and renamed over the old
one (``os.replace`` is atomic on POSIX); a folder is written to a temporary folder and swapped in
by :func:`write_folder_atomic`. A process killed at any moment leaves either the old version or
the new one, never a mix. No torch here: the data layer uses it too.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from mridomain.errors import EmptyInputError, SchemaMismatchError

__all__ = ["atomic_write", "dump_json", "write_json_atomic", "read_json", "write_folder_atomic", "resolve_folder",
           "clean_reason", "write_skip_report"]


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` fills a temporary file beside ``path``, which then replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dump_json(data: Any, path: str | Path | None = None) -> str:
    """Indented JSON text of ``data`` (numpy scalars as floats); also written all-or-nothing to
    ``path`` when given. The one JSON writer of run folders (configs, schemas, reports, states)."""
    text = json.dumps(data, indent=2, default=float)
    if path is not None:
        atomic_write(path, lambda tmp: tmp.write_text(text))
    return text


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """:func:`dump_json` to ``path``; returns the path."""
    dump_json(data, path)
    return Path(path)


def read_json(path: str | Path) -> Any:
    """Parsed JSON; a missing, empty or malformed file is a one-line error naming it."""
    path = Path(path)
    if not path.exists():
        raise EmptyInputError(path, "file missing")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise SchemaMismatchError(f"{path}: unreadable ({type(err).__name__}: {err})") from None
    if not text.strip():
        raise SchemaMismatchError(f"{path}: empty file (a write was interrupted?)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise SchemaMismatchError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None


def write_folder_atomic(folder: str | Path, fill: Callable[[Path], None]) -> Path:
    """Write a folder all-or-nothing: ``fill(tmp)`` writes into a fresh temporary folder beside it,
    which then replaces ``folder``.

    The old folder is first renamed to ``<folder>.old`` and removed only after the new one is in
    place; :func:`resolve_folder` falls back to ``.old`` when a kill came between the two renames.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    old = folder.with_name(folder.name + ".old")
    try:
        fill(tmp)
        if old.exists() and folder.exists():
            shutil.rmtree(old)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return folder


def resolve_folder(folder: str | Path) -> Path | None:
    """The complete checkpoint folder written by :func:`write_folder_atomic`: ``folder``, else
    ``<folder>.old`` (a kill between the swap's two renames), else None."""
    folder = Path(folder)
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if (candidate / "state.json").exists():
            return candidate
    return None


def clean_reason(reason: object, limit: int = 300) -> str:
    """A skip reason as one printable line: control characters (raw header bytes with \\r or \\n)
    become spaces, runs of whitespace one space, and long reasons are cut at ``limit``."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(reason))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_skip_report(rows: Iterable[Sequence[object]], path: str | Path,
                      columns: Sequence[str] = ("path", "reason")) -> Path:
    """The CSV of inputs a batch job skipped, one cleaned reason per row (the last column), quoted
    so that it reads back with ``pandas.read_csv`` whatever the reasons held."""
    import csv

    import pandas as pd

    rows = [list(r) for r in rows]
    for r in rows:
        r[-1] = clean_reason(r[-1])
    frame = pd.DataFrame(rows, columns=list(columns))
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, quoting=csv.QUOTE_NONNUMERIC))
    return Path(path)
