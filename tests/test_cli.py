"""The command line: one error handler for every command, a version, no tracebacks on bad input."""
from __future__ import annotations

from typer.testing import CliRunner

from mridomain.cli import app

runner = CliRunner()


def _error_line(result) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("mridomain ")


def test_bad_inputs_are_one_line_errors(tmp_path):
    assert "no such file or folder" in _error_line(runner.invoke(app, ["index", str(tmp_path / "nowhere")]))
    line = _error_line(runner.invoke(app, ["prepare", str(tmp_path / "i.parquet"), "--fractions", "a,b,c"]))
    assert "--fractions" in line
    line = _error_line(runner.invoke(app, ["prepare", str(tmp_path / "i.parquet"), "--fractions", "0.5,0.5"]))
    assert "expected 3 numbers" in line
    line = _error_line(runner.invoke(app, ["route", str(tmp_path), str(tmp_path), "--model", "GE"]))
    assert "VALUE=FOLDER" in line
    assert "not a run folder" in _error_line(runner.invoke(app, ["evaluate", str(tmp_path)]))


def test_quiet_turns_every_progress_bar_off(monkeypatch):
    from mridomain.progress import QUIET_VARIABLE, progress_bar

    monkeypatch.delenv(QUIET_VARIABLE, raising=False)
    assert not progress_bar(range(3)).disable
    result = runner.invoke(app, ["--quiet", "--version"])   # --version is eager: exits before the callback
    assert result.exit_code == 0
    runner.invoke(app, ["--quiet", "index", "/nowhere"])
    import os

    assert os.environ.get(QUIET_VARIABLE) == "1" and progress_bar(range(3)).disable
    monkeypatch.delenv(QUIET_VARIABLE)
