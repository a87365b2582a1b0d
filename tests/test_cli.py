"""The command line: one error handler for every command, a version, no tracebacks on bad input."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mridomain.cli import app

runner = CliRunner()


def _error_line(result) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def _error_after_work(result) -> str:
    """The one error line of a command that showed progress bars first (no traceback)."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("mridomain ")


def _every_command():
    """(path, click command) of every command and group, sub-apps included."""
    import typer

    def walk(command, path):
        yield path, command
        for name in getattr(command, "commands", {}):
            yield from walk(command.commands[name], [*path, name])

    yield from walk(typer.main.get_command(app), [])


def test_every_command_help_follows_the_one_convention():
    """-o/--out for every output, flags without a value type, arguments as RUN / PATHS..., help text
    shown as written (no Sphinx double backticks, nothing eaten as Rich markup)."""
    seen = 0
    for path, command in _every_command():
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
        assert result.exit_code == 0, (path, result.output)
        text = result.output
        where = " ".join(path) or "mridomain"
        assert "<bool>" not in text, where
        assert "``" not in text, where
        usage = next(line for line in text.splitlines() if "Usage:" in line).split("[OPTIONS]")[-1].split()
        for word in usage:
            assert word in ("COMMAND", "[ARGS]...") or word.rstrip(".").strip("[]").isupper(), (where, word)
        for param in command.params:
            if param.name == "out" and param.param_type_name == "option":
                assert sorted(param.opts) == ["--out", "-o"], where
            if param.param_type_name == "argument":
                assert param.metavar and param.metavar.isupper() and param.metavar in text, (where, param.name)
        seen += 1
    assert seen > 25
    study = runner.invoke(app, ["shift", "study", "--help"], env={"COLUMNS": "200"}).output
    assert "pip install 'mridomain[distributed]'" in study


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


# ---- output paths, numbers, empty results (issue 14) ------------------------------------------------

def _clash(tmp_path):
    """A file where a folder is needed and a folder where a file is needed."""
    a_file = tmp_path / "taken.txt"
    a_file.write_text("x")
    a_folder = tmp_path / "taken_dir"
    a_folder.mkdir()
    return a_file, a_folder


def test_output_path_of_the_wrong_kind_is_one_line_in_every_command(tmp_path):
    a_file, a_folder = _clash(tmp_path)
    some = str(tmp_path / "whatever")
    folder_outputs = {  # commands whose output is a folder, given a file (or a path inside one)
        "prepare": ["prepare", some, "-o"], "simulate": ["simulate", "-o"], "train": ["train", some, "-o"],
        "evaluate": ["evaluate", some, "-o"], "demo": ["demo", "--out"], "analyze": ["analyze", some, "-o"],
        "route-experiment": ["route-experiment", some, some, "-o"],
        "compare": ["compare", some, some, "--run", some, "-o"],
    }
    for name, args in folder_outputs.items():
        for target in (a_file, a_file / "sub"):
            line = _error_line(runner.invoke(app, [*args, str(target)]))
            assert str(target) in line and "folder" in line, (name, line)
    file_outputs = {  # commands whose output is a file, given a folder (or a path inside a file)
        "index": ["index", some, "-o"], "predict": ["predict", some, some, "-o"],
        "predict --figure": ["predict", some, some, "--figure"],
        "route": ["route", some, some, "--model", "GE=x", "-o"],
    }
    for name, args in file_outputs.items():
        for target in (a_folder, a_file / "out.csv"):
            line = _error_line(runner.invoke(app, [*args, str(target)]))
            assert str(target) in line, (name, line)
    assert a_file.read_text() == "x" and not any(a_folder.iterdir())   # nothing was written


def test_numbers_out_of_range_are_refused_before_any_work(tmp_path):
    some = str(tmp_path / "whatever")
    seeds = {"prepare": ["prepare", some], "simulate": ["simulate", "-o", str(tmp_path / "s")],
             "train": ["train", some, "-o", str(tmp_path / "t")], "demo": ["demo", "--out", str(tmp_path / "d")],
             "route-experiment": ["route-experiment", some, some, "-o", str(tmp_path / "r")]}
    for name, args in seeds.items():
        assert "--seed -1" in _error_line(runner.invoke(app, [*args, "--seed", "-1"])), name
    for name, args in {"compare": ["compare", some, some, "--run", some], "predict": ["predict", some, some],
                       "route": ["route", some, some, "--model", "GE=x"]}.items():
        line = _error_line(runner.invoke(app, [*args, "--header-miss", "maybe"]))
        assert "--header-miss maybe" in line, name   # checked before anything is read
    assert "--epochs 0" in _error_line(runner.invoke(app, ["train", some, "-o", str(tmp_path / "t"), "--epochs", "0"]))
    assert "--patients 0" in _error_line(runner.invoke(app, ["simulate", "-o", str(tmp_path / "s"), "--patients", "0"]))
    assert "--top-k 0" in _error_line(runner.invoke(app, ["predict", some, some, "--top-k", "0"]))
    assert not any(p.name in ("s", "t", "d", "r") for p in tmp_path.iterdir())


def test_header_only_annotation_file_is_one_line_before_work(tmp_path):
    from mridomain.data import build_index
    from dicom_factory import GE_HEADERS, write_mr_dicom

    write_mr_dicom(tmp_path / "a" / "1.dcm", np.full((8, 8), 9), patient_id="P1", study_uid="1.2.3",
                   series_uid="1.2.3.4", instance=1, position=0.0, headers=GE_HEADERS)
    build_index(tmp_path / "a", out=tmp_path / "i.parquet", workers=1, progress=False)
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("Patient ID,Start Row,End Row,Start Column,End Column,Start Slice,End Slice\n")
    line = _error_line(runner.invoke(app, ["prepare", str(tmp_path / "i.parquet"), "-o", str(tmp_path / "c"),
                                           "--annotations", str(boxes)]))
    assert str(boxes) in line and "only a header" in line
    assert not (tmp_path / "c").exists()


def test_prepare_kspace_sources_option(tmp_path):
    """--kspace-view stores both sources' profiles by default; --kspace-sources picks them, and a
    source it does not know is a one-line error before any work."""
    import json

    from mridomain.data import build_index
    from dicom_factory import GE_HEADERS, write_mr_dicom

    for p in range(2):
        for i in range(2):
            write_mr_dicom(tmp_path / "a" / f"P{p}" / f"{i}.dcm", np.random.default_rng(i).integers(0, 900, (24, 24)),
                           patient_id=f"P{p}", study_uid=f"1.2.{p}", series_uid=f"1.2.{p}.4", instance=i + 1,
                           position=float(i), headers=GE_HEADERS)
    build_index(tmp_path / "a", out=tmp_path / "i.parquet", workers=1, progress=False)
    base = ["prepare", str(tmp_path / "i.parquet"), "--size", "16", "--workers", "1", "--fractions", "0.5,0.5,0",
            "--kspace-view"]
    result = runner.invoke(app, base + ["-o", str(tmp_path / "both")])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "both" / "meta.json").read_text())
    assert meta["kspace_view"]["sources"] == ["magnitude", "squared_magnitude"]
    assert np.load(tmp_path / "both" / "images.npy").shape[1:] == (20, 16)
    result = runner.invoke(app, base + ["-o", str(tmp_path / "one"), "--kspace-sources", "magnitude"])
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "one" / "images.npy").shape[1:] == (18, 16)
    line = _error_line(runner.invoke(app, base + ["-o", str(tmp_path / "bad"), "--kspace-sources", "phase"]))
    assert "--kspace-sources" in line and "phase" in line
    assert not (tmp_path / "bad").exists()


def test_index_keep_kind_option(tmp_path):
    from dicom_factory import GE_HEADERS, write_mr_dicom

    for i in range(2):
        write_mr_dicom(tmp_path / "a" / f"{i}.dcm", np.full((8, 8), 9), patient_id="P1", study_uid="1.2.3",
                       series_uid="1.2.3.4", instance=i + 1, position=float(i),
                       headers={**GE_HEADERS, "ImageType": ["ORIGINAL", "PRIMARY", "P", "ND"]})
    line = _error_after_work(runner.invoke(app, ["index", str(tmp_path / "a"), "-o", str(tmp_path / "i.parquet"),
                                                 "--workers", "1"]))
    assert "phase image" in line
    result = runner.invoke(app, ["index", str(tmp_path / "a"), "-o", str(tmp_path / "i.parquet"),
                                 "--keep-kind", "phase", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "1 series" in result.output
    assert "keep_kinds" in _error_line(runner.invoke(app, ["index", str(tmp_path / "a"), "--keep-kind", "mip"]))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from mridomain.iap import train

    from test_iap_utils import make_cache

    root = tmp_path_factory.mktemp("cli_run")
    train(make_cache(root / "cache"), root / "run", preset="cpu", epochs=1, seed=0, progress=False,
          input_size=32, width=8, batch_size=16)
    return root / "run"


@pytest.mark.slow
def test_predict_exits_nonzero_when_nothing_was_read(tiny_run, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    out = tmp_path / "p.csv"
    (tmp_path / "empty_dir").mkdir()
    line = _error_after_work(runner.invoke(app, ["predict", str(tiny_run), str(bad), str(tmp_path / "empty_dir"),
                                                 "-o", str(out)]))
    assert "nothing to predict" in line and str(bad) in line
    assert not out.exists()
    report = pd.read_csv(tmp_path / "p_skipped.csv")
    assert report["path"].tolist() == [str(bad), str(tmp_path / "empty_dir")]


@pytest.mark.slow
def test_predict_on_an_archive_folder_predicts_every_series(tiny_run, tmp_path):
    from dicom_factory import GE_HEADERS, write_mr_dicom

    uids = ["1.2.3.1", "1.2.3.2", "1.2.3.3"]
    for k, uid in enumerate(uids):
        for i in range(2 + k):
            write_mr_dicom(tmp_path / "archive" / f"p{k}" / uid / f"{i}.dcm", np.full((32, 32), 50 + i),
                           patient_id=f"P{k}", study_uid="1.2.3", series_uid=uid, instance=i + 1,
                           position=float(i), headers=GE_HEADERS)
    out = tmp_path / "p.csv"
    result = runner.invoke(app, ["predict", str(tiny_run), str(tmp_path / "archive"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    series = table[table["level"] == "series"]
    assert series["series_uid"].astype(str).tolist() == uids
    assert series["n_slices"].tolist() == [2, 3, 4]
    assert series["patient_id"].tolist() == ["P0", "P1", "P2"]
    assert (table["level"] == "slice").sum() == 9


@pytest.mark.slow
@pytest.mark.parametrize("html", [True, False])
def test_evaluate_prints_its_report_path_last(tiny_run, tmp_path, html):
    args = ["evaluate", str(tiny_run), "-o", str(tmp_path / "ev")] + ([] if html else ["--no-html"])
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    if html:
        assert last == f"report: {tmp_path / 'ev' / 'report.html'}" and (tmp_path / "ev" / "report.html").exists()
    else:
        assert not last.startswith("report:")
