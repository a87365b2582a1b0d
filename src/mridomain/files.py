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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mridomain.errors import EmptyInputError, SchemaMismatchError

__all__ = ["atomic_write", "check_output_file", "check_output_folder", "clean_reason", "current_umask", "dump_json",
           "read_json", "read_versioned_json", "remove_stale_temporaries", "resolve_folder", "write_folder_atomic",
           "write_json_atomic", "write_npy_atomic", "write_skip_report"]


def current_umask() -> int:
    """The process's file-mode creation mask (read from /proc where it can be: setting the mask to
    read it back, the portable way, is not thread-safe)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_beside(path: str | Path, folder: bool) -> Path:
    """A fresh temporary file or folder beside ``path`` with the mode an ordinary ``open`` /
    ``mkdir`` would give it under the user's umask.

    ``tempfile`` makes its files 0600 and folders 0700 whatever the umask (they are meant to be
    private); renamed into place they would leave run files that the user's group cannot read.
    """
    path = Path(path)
    if folder:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
        os.chmod(tmp, 0o777 & ~current_umask())
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~current_umask())
        os.close(fd)
        tmp = Path(name)
    return tmp


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` fills a temporary file beside ``path``, which then replaces ``path``.
    The file gets the mode of any other new file (0644 under umask 022)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(path, folder=False)
    try:
        write(Path(tmp))
        # again: a writer may replace the file (safetensors writes its own, always 0600)
        os.chmod(tmp, 0o666 & ~current_umask())
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


def read_versioned_json(path: str | Path, version: int, *, key: str = "format", expect: str | None = None,
                        what: str = "file") -> dict[str, Any]:
    """The JSON object at ``path`` written by this or an older mridomain: one-line errors when it is not
    an object, when its ``key`` field is not ``expect`` (checked when given), or when its ``version`` is
    newer than ``version`` (a file from a later release this one cannot read).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "state.json"
    >>> _ = dump_json({"format": "demo-state", "version": 3}, p)
    >>> read_versioned_json(p, 2, expect="demo-state")
    Traceback (most recent call last):
    ...
    mridomain.errors.SchemaMismatchError: ...state.json: version 3 is newer than this mridomain reads (2)
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise SchemaMismatchError(f"{path}: not a JSON object (a {type(data).__name__})")
    if expect is not None and data.get(key) != expect:
        raise SchemaMismatchError(f"{path}: not a {expect} {what} ({key} {data.get(key)!r})")
    try:
        found = int(data.get("version", 0))
    except (TypeError, ValueError):
        raise SchemaMismatchError(f"{path}: version {data.get('version')!r} is not a number") from None
    if found > version:
        raise SchemaMismatchError(f"{path}: version {found} is newer than this mridomain reads ({version})")
    return data


def write_npy_atomic(path: str | Path, array: Any) -> Path:
    """``np.save`` of ``array`` to ``path`` (the name kept as given, no ``.npy`` appended), all-or-nothing."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)

    atomic_write(path, write)
    return Path(path)


def write_folder_atomic(folder: str | Path, fill: Callable[[Path], None]) -> Path:
    """Write a folder all-or-nothing: ``fill(tmp)`` writes into a fresh temporary folder beside it,
    which then replaces ``folder`` (with the mode of any other new folder: 0755 under umask 022).

    The old folder is first renamed to ``<folder>.old`` and removed only after the new one is in
    place; :func:`resolve_folder` falls back to ``.old`` when a kill came between the two renames.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(folder, folder=True)
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


#: a temporary file or folder of another process older than this is left over from a kill
STALE_SECONDS = 3600


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:            # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove what :func:`atomic_write` and :func:`write_folder_atomic` left in ``folder`` when a
    kill stopped them (``.<name>.<pid>.<random>.tmp``): those of processes no longer running on
    this machine, and any older than :data:`STALE_SECONDS` (names without a pid: older versions).
    Returns what was removed; a file another live process is writing is never touched."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    import time

    now = time.time()
    for entry in folder.iterdir():
        name = entry.name
        if not (name.startswith(".") and name.endswith(".tmp")):
            continue
        parts = name[1:-4].split(".")
        pid = next((int(p) for p in reversed(parts[:-1]) if p.isdigit()), None)
        try:
            age = now - entry.lstat().st_mtime
        except OSError:
            continue
        if (pid is not None and pid != os.getpid() and not _pid_alive(pid)) or age > STALE_SECONDS:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def resolve_folder(folder: str | Path) -> Path | None:
    """The complete checkpoint folder written by :func:`write_folder_atomic`: ``folder``, else
    ``<folder>.old`` (a kill between the swap's two renames), else None."""
    folder = Path(folder)
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if (candidate / "state.json").exists():
            return candidate
    return None


# ---- output paths and skip reports ---------------------------------------------------------------

def _first_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def check_output_file(path: str | Path, what: str = "output") -> Path:
    """``path`` can be written as a file: it is not a folder, and no file stands where one of its
    parent folders must be. Raises a one-line :class:`InvalidArgumentError` otherwise, before any
    work is done (instead of IsADirectoryError / FileExistsError once the work is over)."""
    from mridomain.errors import InvalidArgumentError

    path = Path(path)
    if path.is_dir():
        raise InvalidArgumentError(f"{path}: is a folder, but the {what} is a file; name a file")
    blocker = _first_existing(path.parent)
    if not blocker.is_dir():
        raise InvalidArgumentError(f"{path}: {blocker} is a file, not a folder, so the {what} cannot go there")
    _check_writable(path, blocker, what)
    return path


def _check_writable(path: Path, folder: Path, what: str) -> None:
    """The nearest existing folder of an output can be written (permissions, a read-only mount)."""
    from mridomain.errors import InvalidArgumentError

    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidArgumentError(f"{path}: no permission to write in {folder}, so the {what} cannot go there")


def check_output_folder(path: str | Path, what: str = "output") -> Path:
    """``path`` can be made a folder: it is not an existing file, nor inside one. Raises a
    one-line :class:`InvalidArgumentError` otherwise, before any work is done."""
    from mridomain.errors import InvalidArgumentError

    path = Path(path)
    blocker = _first_existing(path)
    if not blocker.is_dir():
        if blocker == path:
            raise InvalidArgumentError(f"{path}: is a file, but the {what} is a folder; name a folder")
        raise InvalidArgumentError(f"{path}: {blocker} is a file, not a folder, so the {what} cannot go there")
    _check_writable(path, blocker, what)
    return path


#: Longest reason a skip report keeps (the rest is cut and marked).
MAX_REASON = 300


def clean_reason(reason: Any, limit: int = MAX_REASON) -> str:
    """One printable line of at most ``limit`` characters: control characters (a ``\\r`` from raw
    header bytes, NUL, tabs, newlines) are written as escapes, so the reason survives a CSV."""
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(reason))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_skip_report(rows: Any, path: str | Path, columns: tuple[str, ...] = ("path", "reason")) -> Path | None:
    """The one writer of skip reports (index, prepare, predict, ...): ``rows`` (a DataFrame or
    tuples in ``columns`` order) as a CSV with every text field quoted and every ``reason``
    cleaned by :func:`clean_reason`, so ``pandas.read_csv`` gives back the same table whatever the
    reasons held. Written all-or-nothing; with no rows any old report is removed (it would
    mislead) and None is returned."""
    import csv

    import pandas as pd

    path = Path(path)
    table = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows), columns=list(columns))
    if len(table) == 0:
        path.unlink(missing_ok=True)
        return None
    for column in table.columns:
        if column == "reason":
            table[column] = [clean_reason(r) for r in table[column]]
        elif not pd.api.types.is_numeric_dtype(table[column]):
            table[column] = [v if not isinstance(v, str) else clean_reason(v, limit=10_000) for v in table[column]]
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False, quoting=csv.QUOTE_NONNUMERIC,
                                                lineterminator="\n"))
    return path
