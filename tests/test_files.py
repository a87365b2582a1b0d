"""Run files are written with the user's umask, like any other tool's (shareable in a group folder)."""
from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from mridomain.files import atomic_write, current_umask, dump_json, write_folder_atomic

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def umask():
    """Set the process umask for one test and put the old one back."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_atomic_files_and_folders_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    assert current_umask() == mask
    dump_json({"a": 1}, tmp_path / "x.json")
    atomic_write(tmp_path / "y.bin", lambda tmp: tmp.write_bytes(b"1"))
    write_folder_atomic(tmp_path / "last", lambda tmp: (tmp / "state.json").write_text("{}"))
    plain = tmp_path / "plain.txt"
    plain.write_text("as open() makes it")
    os.mkdir(tmp_path / "plain_dir")
    for name in ("x.json", "y.bin", "last/state.json"):
        assert _mode(tmp_path / name) == _mode(plain) == 0o666 & ~mask, name
    assert _mode(tmp_path / "last") == _mode(tmp_path / "plain_dir") == 0o777 & ~mask


def test_a_training_run_folder_is_group_readable_under_umask_022(tmp_path, umask):
    import ddp_task

    umask(0o022)
    ddp_task.fit(str(tmp_path / "run"), epochs=1)
    paths = [tmp_path / "run", *(tmp_path / "run").rglob("*")]
    assert any(p.name == "model.safetensors" for p in paths) and any(p.name == "last" for p in paths)
    unreadable = [str(p.relative_to(tmp_path)) for p in paths
                  if not _mode(p) & stat.S_IRGRP or (p.is_dir() and not _mode(p) & stat.S_IXGRP)]
    assert unreadable == []
