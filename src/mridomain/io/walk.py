"""The one file walker: every regular file under a folder, depth first, hidden entries skipped,
reproducible order.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def iter_candidate_files(root: str | Path) -> Iterator[Path]:
    """Every regular file under ``root`` (or ``root`` itself if it is a file), depth first.

    Uses ``os.scandir`` (one ``stat``-free system call per folder on most file systems),
    skips hidden files and folders (names starting with ``.``), does not follow symlinked
    folders (no cycles), and sorts each folder's entries so the order is reproducible.
    """
    return map(Path, iter_file_paths(root))


def iter_file_paths(root: str | Path) -> Iterator[str]:
    """:func:`iter_candidate_files` as plain strings (no ``Path`` per file: archive walks are long)."""
    root = os.fspath(root)
    if os.path.isfile(root):
        yield root
        return
    # A stack of iterators over sorted folder listings gives depth-first, name-ordered output
    # (the same order as sorting the full relative paths folder by folder).
    stack: list[Iterator[os.DirEntry]] = [iter(_sorted_entries(root))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                stack.append(iter(_sorted_entries(entry.path)))
            elif entry.is_file():
                yield entry.path
        except OSError:
            continue


def _sorted_entries(folder: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError:  # unreadable or vanished folder: nothing to list, the walk goes on
        return []
