"""Fault tests of issue 20: no code runs from a folder, one bad file never stops a batch, a failure
never exits 0, and bad arguments or damaged run folders give one-line errors, never tracebacks.

Every case is seeded and small; the sweeps run the real CLI (typer's CliRunner in-process, or a
subprocess where a regression could kill the interpreter) and count tracebacks and wrong exit 0s.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mridomain.cli import app
from mridomain.errors import SchemaMismatchError
from shift_fixtures import write_crops

TESTS = Path(__file__).parent
RUNNER = CliRunner()


def _cli(*args: str):
    """Run the CLI in-process; return (exit code, output)."""
    result = RUNNER.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output, result.exception


def _cli_subprocess(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh interpreter (a regression that calls os.abort would kill pytest)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mridomain.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def assert_one_line_error(code: int, output: str, *needles: str) -> None:
    assert code not in (0, None), f"wrong exit 0: {output}"
    assert "Traceback" not in output, output
    for needle in needles:
        assert needle in output, output


# ---- 1. nothing in a folder names code to run ---------------------------------------------------

@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> Path:
    return write_crops(tmp_path_factory.mktemp("crops"), n_patients=8, shape=(3, 8, 8))


def _tamper_model(path: Path, spec: str, key=("config",)) -> None:
    meta = json.loads(path.read_text())
    node = meta
    for k in key:
        node = node[k]
    node["model"] = spec
    path.write_text(json.dumps(meta))


def test_tampered_study_folder_cannot_import_code(crops, tmp_path):
    from mridomain.shift.config import make_config
    from mridomain.shift.study import open_study, prepare_study, run_experiment, run_study

    out = tmp_path / "study"
    prepare_study(crops, out, make_config("cpu", model="nodulex", width=0.25, epochs=1, batch_size=4), progress=False)
    before = set(Path(tempfile.gettempdir()).iterdir())
    for spec in ("os:abort", "tempfile:mkdtemp"):
        _tamper_model(out / "study.json", spec)
        with pytest.raises(SchemaMismatchError, match=f"names the user model '{spec}'.*--model {spec}"):
            run_study(crops, out, seeds=1, progress=False, report=False)
        with pytest.raises(SchemaMismatchError, match="not built in"):
            run_study(crops, out, seeds=1, progress=False, report=False, epochs=2)   # other changes keep the model
        with pytest.raises(SchemaMismatchError, match="not built in"):
            run_experiment(open_study(out), "main", 1, progress=False)
    assert set(Path(tempfile.gettempdir()).iterdir()) == before       # mkdtemp never ran
    assert not (out / "runs.jsonl").exists()
    # the CLI, in its own interpreter: a one-line error, exit 1, never exit 134 (abort)
    _tamper_model(out / "study.json", "os:abort")
    for command in ("study", "mixing", "noise"):
        proc = _cli_subprocess("shift", command, crops, "-o", out, "--seeds", "1", "--workers", "1")
        assert proc.returncode == 1, (proc.returncode, proc.stderr)
        assert "os:abort" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_tampered_model_folder_cannot_import_code(tmp_path):
    from mridomain.shift.classifier import ShiftClassifier
    from mridomain.shift.config import make_config

    model = ShiftClassifier(make_config("cpu", model="nodulex", width=0.25), (3, 8, 8))
    model.net = model.architecture()
    model.save(tmp_path / "m")
    assert ShiftClassifier.load(tmp_path / "m").sample_shape == (3, 8, 8)
    _tamper_model(tmp_path / "m" / "config.json", "os:abort")
    with pytest.raises(SchemaMismatchError, match="config.json: names the user model 'os:abort'"):
        ShiftClassifier.load(tmp_path / "m")
    with pytest.raises(SchemaMismatchError, match="--model os:abort"):
        ShiftClassifier.load(tmp_path / "m", model="shift_fixtures:tiny_net")    # naming another one is no licence
