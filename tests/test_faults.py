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
    return write_crops(tmp_path_factory.mktemp("crops"), n_patients=24, shape=(3, 8, 8))


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
    # the CLI in its own interpreter (a regression would abort it, exit 134): a one-line error, exit 1
    _tamper_model(out / "study.json", "os:abort")
    proc = _cli_subprocess("shift", "study", crops, "-o", out, "--seeds", "1", "--workers", "1")
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "os:abort" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for command in ("mixing", "noise"):         # in-process: the check above showed nothing is imported
        code, output, _ = _cli("shift", command, crops, "-o", out, "--seeds", "1", "--workers", "1")
        assert_one_line_error(code, output, "names the user model 'os:abort'", "--model os:abort")


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


# ---- 3 and 4. bad arguments: a one-line error before any work, never a traceback, never exit 0 ----

@pytest.fixture(scope="module")
def iap_run(tmp_path_factory):
    """(one-epoch IAP run, its cache, a folder of 3 good DICOM slices)."""
    from dicom_factory import GE_HEADERS, write_mr_dicom
    from mridomain.iap import train

    from test_iap_utils import make_cache

    root = tmp_path_factory.mktemp("iap")
    cache = make_cache(root / "cache", n=48, size=16)
    train(cache, root / "run", preset="cpu", epochs=1, seed=0, progress=False, input_size=16, width=4, batch_size=16)
    rng = np.random.default_rng(0)
    for i in range(3):
        write_mr_dicom(root / "dicom" / f"{i}.dcm", rng.integers(0, 4000, (32, 32)), patient_id="P",
                       study_uid="1.2.826.0.1.3680043.10.8", series_uid="1.2.826.0.1.3680043.10.8.1",
                       instance=i + 1, position=float(i), headers=GE_HEADERS)
    return root / "run", cache, root / "dicom"


def bad_invocations(tmp: Path, crops: Path, run: Path, cache: Path, dicom: Path) -> list[tuple[list, str]]:
    """Bad command lines over every command, each with a piece of the one-line error it must give
    (each must fail at once: nothing here may simulate, read a dataset or train first)."""
    blocker = tmp / "a_file"
    blocker.write_text("x")
    under = blocker / "out"                          # a path whose parent is a file: unwritable, even for root
    nowhere = tmp / "does_not_exist"
    m = str(crops)
    counter = iter(range(10_000))

    def new() -> Path:                               # a fresh output folder for each invocation
        return tmp / f"out{next(counter)}"

    is_file = "is a file, not a folder"
    return [
        (["index", nowhere], "does_not_exist"), (["index", dicom, "--workers", "0"], "--workers 0"),
        (["index", dicom, "-o", under / "i.parquet"], is_file), (["index", dicom, "--iap-config", blocker], "a_file"),
        (["prepare", nowhere], "does_not_exist"), (["prepare", cache / "slices.parquet", "--size", "0"], ""),
        (["simulate", "-o", new(), "--patients", "99999999999999999999"], "--patients 99999999999999999999"),
        (["simulate", "-o", new(), "--patients", "0"], "--patients 0"), (["simulate", "-o", under], is_file),
        (["simulate", "-o", new(), "--preset", "bogus", "--patients", "1"], "bogus"),
        (["simulate", "-o", new(), "--slab", "bogus", "--patients", "1"], "bogus"),
        (["simulate", "-o", new(), "--workers", "0"], "--workers 0"),
        (["train", cache, "-o", under], is_file), (["train", cache, "-o", new(), "--preset", "bogus"], "bogus"),
        (["train", cache, "-o", new(), "--device", "bogus"], "bogus"), (["train", nowhere, "-o", new()], "does_not_exist"),
        (["train", cache, "-o", new(), "--epochs", "0"], "--epochs 0"),
        (["evaluate", nowhere], "does_not_exist"), (["evaluate", run, "--split", "bogus"], "bogus"),
        (["evaluate", run, "-o", under], is_file),
        (["predict", run, nowhere, "-o", tmp / "p.csv"], "does_not_exist"),
        (["predict", run, dicom, "-o", under / "p.csv"], is_file),
        (["predict", run, dicom, "-o", tmp / "p.csv", "--top-k", "0"], "--top-k 0"),
        (["predict", nowhere, dicom, "-o", tmp / "p.csv"], "does_not_exist"),
        (["predict", run, dicom, "-o", tmp / "p.csv", "--keep-kind", "bogus"], "bogus"),
        (["predict", run, dicom, "-o", tmp / "p.csv", "--figure", under / "f.png"], is_file),
        (["calibrate", nowhere], "does_not_exist"), (["calibrate", run, "--cache", nowhere], "does_not_exist"),
        (["demo", "--out", under], is_file), (["demo", "--out", new(), "--patients", "0"], "--patients 0"),
        (["analyze", nowhere, "-o", new()], "does_not_exist"), (["analyze", cache, "-o", under], is_file),
        (["route", run, dicom, "--model", "bogus"], "bogus"),
        (["route", run, dicom, "--model", f"GE={nowhere}", "-o", under], is_file),
        (["route-experiment", cache, run, "-o", under], is_file),
        (["route-experiment", cache, run, "-o", new(), "--epochs", "0"], "--epochs 0"),
        (["compare", cache, dicom, "--run", run, "-o", under], is_file),
        (["compare", cache, dicom, "--run", run, "-o", new(), "--header-miss", "bogus"], "--header-miss bogus"),
        (["compare", cache, dicom, "--run", nowhere, "-o", new()], "does_not_exist"),
        (["compare", cache, dicom, "--run", run, "--header-iaps", "bogus", "-o", new()], "--header-iaps bogus"),
        (["shift", "manifest", nowhere, "-o", new() / "m.csv"], "--labels"),
        (["shift", "manifest", crops, "--kind", "bogus", "-o", new() / "m.csv"], "bogus"),
        (["shift", "manifest", tmp, "--kind", "sim", "--threshold", "-1", "-o", new() / "m.csv"], "--threshold -1"),
        (["shift", "manifest", crops, "--kind", "index", "--labels", nowhere, "-o", under], is_file),
        (["shift", "study", nowhere, "-o", new()], "does_not_exist"), (["shift", "study", m, "-o", under], is_file),
        (["shift", "study", m, "-o", blocker], "is a file"), (["shift", "study", m, "-o", new(), "--seeds", "0"], "seeds 0"),
        (["shift", "study", m, "-o", new(), "--seeds", "x"], "--seeds"),
        (["shift", "study", m, "-o", new(), "--model", "bogus"], "model 'bogus'"),
        (["shift", "study", m, "-o", new(), "--device", "bogus"], "device 'bogus'"),
        (["shift", "study", m, "-o", new(), "--workers", "0"], "--workers 0"),
        (["shift", "study", m, "-o", new(), "--preset", "bogus"], "preset 'bogus'"),
        (["shift", "study", m, "-o", new(), "--epochs", "0"], "--epochs 0"),
        (["shift", "study", m, "-o", new(), "--backend", "bogus"], "backend 'bogus'"),
        (["shift", "study", m, "-o", new(), "--domains", "A"], "--domains"),
        (["shift", "mixing", m, "-o", new(), "--fractions", "1.5"], "mixing fraction 1.5"),
        (["shift", "mixing", m, "-o", new(), "--fractions", "x"], "--fractions"),
        (["shift", "mixing", m, "-o", new(), "--fractions", ""], "no settings"),
        (["shift", "noise", m, "-o", new(), "--alphas", "-1"], "noise alpha -1"),
        (["shift", "noise", m, "-o", new(), "--alphas", "nan"], "finite"),
        (["shift", "report", nowhere], "does_not_exist"), (["shift", "report", blocker], "a_file"),
        (["shift", "attribute", nowhere, "--archive", nowhere], "does_not_exist"),
        (["shift", "attribute", nowhere, "--archive", nowhere, "--workers", "0"], "--workers 0"),
        (["shift", "demo", "-o", new(), "--main-seeds", "0"], "--main-seeds 0"),
        (["shift", "demo", "-o", new(), "--patients", "0"], "--patients 0: must be at least 1"), (["shift", "demo", "-o", under], is_file),
        (["shift", "demo", "-o", new(), "--extra-seeds", "-1"], "--extra-seeds -1"),
        (["shift", "demo", "-o", new(), "--threshold", "9"], "--threshold 9"),
        (["shift", "demo", "-o", new(), "--workers", "0"], "--workers 0"),
        (["synth", "brain", "-o", blocker], "is a file"), (["synth", "brain", "-o", under], is_file),
        (["synth", "brain", "-o", new(), "--subjects", "0"], "--subjects 0"),
        (["synth", "brain", "-o", new(), "--voxel-mm", "0"], "voxel_mm"),
        (["synth", "brain", "-o", new(), "--workers", "0"], "--workers 0"),
        (["synth", "brain", "-o", new(), "--subjects", "99999999999999999999"], "--subjects 99999999999999999999"),
        (["synth", "toy", "-o", under], is_file), (["synth", "toy", "-o", new(), "--preset", "bogus"], "bogus"),
        (["synth", "train", nowhere, "-o", new()], "does_not_exist"), (["synth", "train", tmp, "-o", under], is_file),
        (["synth", "train", tmp, "-o", new(), "--cache", blocker], "is a file"),
        (["synth", "train", tmp, "-o", new(), "--preset", "x"], "'x'"),
        (["synth", "train", tmp, "-o", new(), "--epochs", "0"], "--epochs 0"),
        (["synth", "train", tmp, "-o", new(), "--normalization", "zscore"], "--normalization 'zscore'"),
        (["synth", "train", tmp, "-o", new(), "--device", "x"], "device 'x'"),
        (["synth", "evaluate", nowhere], "does_not_exist"), (["synth", "evaluate", run, "--split", "bogus"], ""),
        (["synth", "contribution", nowhere, "--normalization", "bogus"], "--normalization 'bogus'"),
        (["synth", "contribution", nowhere], "does_not_exist"),
        (["synth", "dmap", nowhere, nowhere], "does_not_exist"),
        (["synth", "generate", nowhere, "a.nii.gz", "--to", "flair"], "does_not_exist"),
        (["synth", "demo", "-o", under], is_file), (["synth", "demo", "-o", new(), "--subjects", "0"], "--subjects 0"),
        (["synth", "demo", "-o", new(), "--epochs", "0"], "--epochs 0"),
        (["synth", "subsets", "demo", "-o", under], is_file),
        (["synth", "subsets", "demo", "-o", new(), "--subjects", "0"], "--subjects 0"),
        (["synth", "downstream", "demo", "-o", new(), "--outer-folds", "1"], "--outer-folds 1"),
        (["synth", "downstream", "demo", "-o", new(), "--epochs", "0"], "--epochs 0"),
    ]


def test_bad_argument_sweep_gives_one_line_errors(crops, iap_run, tmp_path):
    """Every bad command line: exit 1 or 2 (never 0, never 3 = an error nobody foresaw), no traceback."""
    run, cache, dicom = iap_run
    wrong, tracebacks, unexpected = [], [], []
    invocations = bad_invocations(tmp_path, crops, run, cache, dicom)
    off_reason = []
    for args, needle in invocations:
        code, output, exc = _cli(*args)
        label = " ".join(str(a).replace(str(tmp_path), "T") for a in args)
        if code == 0:
            wrong.append(label)
        elif needle not in output:
            off_reason.append(f"{label}: expected {needle!r} in: {output.strip()[-300:]}")
        if "Traceback" in output or (exc is not None and not isinstance(exc, SystemExit)):
            tracebacks.append(f"{label}: {type(exc).__name__}: {exc}")
        if code == 3:
            unexpected.append(f"{label}: {output.strip()[-300:]}")
    print(f"\nbad-argument sweep: {len(invocations)} invocations, {len(tracebacks)} tracebacks, "
          f"{len(unexpected)} unforeseen errors, {len(wrong)} wrong exit 0s")
    assert not tracebacks and not unexpected and not wrong, "\n".join(tracebacks + unexpected + wrong)
    assert not off_reason, "\n".join(off_reason)      # each fails for the reason it was made to fail


def test_manifest_rejects_leaks_and_single_class(tmp_path):
    import pandas as pd

    from mridomain.shift.manifest import ManifestError, validate_manifest

    base = pd.DataFrame({"image": ["a", "b", "c", "d"], "label": [0, 1, 0, 1], "domain": ["A", "A", "B", "B"],
                         "patient_id": ["1", "2", "3", "4"]})
    validate_manifest(base, where="m.csv", check_files=False)
    with pytest.raises(ManifestError, match="row 3: patient '1' is in domains A, B"):
        validate_manifest(base.assign(patient_id=["1", "2", "1", "4"]), where="m.csv", check_files=False)
    with pytest.raises(ManifestError, match="every label is 1"):
        validate_manifest(base.assign(label=1), where="m.csv", check_files=False)
    with pytest.raises(ManifestError, match="label 2 is not 0 or 1"):
        validate_manifest(base.assign(label=[0, 1, 2, 1]), where="m.csv", check_files=False)


def test_study_whose_every_run_fails_exits_non_zero(crops, tmp_path, monkeypatch):
    """A study that produced only failed runs says why and exits 1 (the failures stay in runs.jsonl)."""
    from mridomain.shift import runner

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure of every run")

    monkeypatch.setattr(runner, "train_and_test", broken)
    code, output, _ = _cli("shift", "study", crops, "-o", tmp_path / "s", "--seeds", "1", "--workers", "1",
                           "--model", "nodulex", "--epochs", "1")
    assert_one_line_error(code, output, "all 2 main runs failed", "simulated failure of every run")
    assert code == 1 and len((tmp_path / "s" / "runs.jsonl").read_text().splitlines()) == 2


# ---- 4. tampered run and study folders: one-line errors (or a warning and the rest), never a traceback ----

def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _nan_tensor_file(path: Path) -> None:
    """Put a NaN into the first floating tensor of a safetensors file."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(path))


def _scale_tensors(path: Path, factor: float) -> None:
    """Every floating tensor times ``factor`` (finite, but the network's outputs overflow)."""
    from safetensors.torch import load_file, save_file

    tensors = {k: (v * factor if v.is_floating_point() else v) for k, v in load_file(str(path)).items()}
    save_file(tensors, str(path))


IAP_TAMPERS = {
    "calibration.json: non-numeric temperature": ("calibration.json", lambda p: _json_edit(p, lambda d: d["temperatures"].update({next(iter(d["temperatures"])): "hot"}))),
    "calibration.json: NaN temperature": ("calibration.json", lambda p: p.write_text(p.read_text().replace('"temperatures": {', '"temperatures": {"x": NaN, ', 1))),
    "calibration.json: zero temperature": ("calibration.json", lambda p: _json_edit(p, lambda d: d["temperatures"].update({next(iter(d["temperatures"])): 0}))),
    "calibration.json: negative temperature": ("calibration.json", lambda p: _json_edit(p, lambda d: d["temperatures"].update({next(iter(d["temperatures"])): -1.5}))),
    "calibration.json: not JSON": ("calibration.json", lambda p: p.write_bytes(b"\xff\xfe{")),
    "preprocess.json: a list": ("preprocess.json", lambda p: p.write_text("[1, 2]")),
    "preprocess.json: size a string": ("preprocess.json", lambda p: _json_edit(p, lambda d: d.update(size="big"))),
    "preprocess.json: bad normalization": ("preprocess.json", lambda p: _json_edit(p, lambda d: d.update(normalization=7))),
    "preprocess.json: unknown normalization": ("preprocess.json", lambda p: _json_edit(p, lambda d: d.update(normalization={"method": "x"}))),
    "preprocess.json: empty": ("preprocess.json", lambda p: p.write_text("")),
    "domain.safetensors: NaN": ("domain.safetensors", _nan_tensor_file),
    "domain.safetensors: truncated": ("domain.safetensors", lambda p: p.write_bytes(p.read_bytes()[:50])),
    "model.safetensors: NaN": ("model.safetensors", _nan_tensor_file),
    "model.safetensors: huge finite weights": ("model.safetensors", lambda p: _scale_tensors(p, 1e30)),
    "model.safetensors: pickle": ("model.safetensors", lambda p: p.write_bytes(__import__("pickle").dumps({"w": 1}))),
    "config.json: a list": ("config.json", lambda p: p.write_text("[]")),
    "labels.json: damaged": ("labels.json", lambda p: p.write_text('{"heads": 3}')),
    "domain.json: wrong types": ("domain.json", lambda p: _json_edit(p, lambda d: d.update(threshold="high"))),
}


def _json_edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_tampered_iap_run_folders_give_one_line_errors(iap_run, tmp_path):
    run, cache, dicom = iap_run
    failures = []
    for i, (label, (name, tamper)) in enumerate(IAP_TAMPERS.items()):
        bad = _copy(run, tmp_path / f"run{i}")
        tamper(bad / name)
        for args in (["predict", bad, dicom, "-o", tmp_path / f"p{i}.csv"],
                     ["compare", cache, dicom, "--run", bad, "-o", tmp_path / f"c{i}"]):
            code, output, exc = _cli(*args)
            if code != 1 or "Traceback" in output or name not in output:
                failures.append(f"{label} / {args[0]}: exit {code}: {output.strip()[-250:]}")
    print(f"\ntampered IAP runs: {len(IAP_TAMPERS)} tampers x 2 commands, {len(failures)} not a one-line error")
    assert not failures, "\n".join(failures)


def test_tampered_study_folders(crops, tmp_path):
    """Damaged files of a study folder: one-line errors naming the file, or (runs.jsonl) a warning
    and the intact records; stale temporary files of a killed call are removed."""


    from mridomain.shift.config import make_config
    from mridomain.shift.study import prepare_study

    study = tmp_path / "study"
    prepare_study(crops, study, make_config("cpu", model="nodulex", width=0.25, epochs=1, batch_size=8),
                  progress=False)
    cases = {
        "study.json: a list": ("study.json", lambda p: p.write_text("[]"), "study.json: not a JSON object"),
        "study.json: no domains": ("study.json", lambda p: _json_edit(p, lambda d: d.pop("domains")), "damaged study"),
        "study.json: fractions text": ("study.json", lambda p: _json_edit(p, lambda d: d.update(fractions="a")), "damaged"),
        "study.json: version text": ("study.json", lambda p: _json_edit(p, lambda d: d.update(version="x")), "version"),
        "study.json: another format": ("study.json", lambda p: _json_edit(p, lambda d: d.update(format="x")),
                                       "not a mridomain.shift.study file"),
        "study.json: newer version": ("study.json", lambda p: _json_edit(p, lambda d: d.update(version=99)),
                                      "version 99 is newer than this mridomain reads"),
        "study.json: config model os:abort": ("study.json", lambda p: _json_edit(p, lambda d: d["config"].update(model="os:abort")), "os:abort"),
        "study.json: config epochs -1": ("study.json", lambda p: _json_edit(p, lambda d: d["config"].update(epochs=-1)), "epochs"),
        "splits.csv: empty": ("splits.csv", lambda p: p.write_text(""), "splits.csv: damaged"),
        "splits.csv: not UTF-8": ("splits.csv", lambda p: p.write_bytes(b"dataset,seed\n\xff\xfe,1\n"), "splits.csv: damaged"),
        "splits.csv: other columns": ("splits.csv", lambda p: p.write_text("a,b\n1,2\n"), "splits.csv: damaged"),
        "images.npy: empty": ("data/dataset/images.npy", lambda p: p.write_bytes(b""), "study data is damaged"),
        "images.npy: truncated": ("data/dataset/images.npy", lambda p: p.write_bytes(p.read_bytes()[:200]), "study data is damaged"),
        "samples.parquet: garbage": ("data/dataset/samples.parquet", lambda p: p.write_bytes(b"PAR1garbage"), "study data is damaged"),
    }
    failures = []
    for i, (label, (name, tamper, needle)) in enumerate(cases.items()):
        bad = _copy(study, tmp_path / f"s{i}")
        if name == "splits.csv":
            (bad / name).write_text("")
        tamper(bad / name)
        for command in ("study", "report"):
            args = (["shift", "study", crops, "-o", bad, "--seeds", "1", "--workers", "1"] if command == "study"
                    else ["shift", "report", bad])
            code, output, exc = _cli(*args)
            if command == "report" and code == 0:
                continue                              # the report reads only what it needs: fine when it works
            if code in (0, None) or code == 3 or "Traceback" in output or needle not in output:
                failures.append(f"{label} / {command}: exit {code}: {output.strip()[-250:]}")
    print(f"\ntampered study folders: {len(cases)} tampers x 2 commands, {len(failures)} not a one-line error")
    assert not failures, "\n".join(failures)
    # runs.jsonl: a damaged byte and a torn last line are skipped with a warning, the rest is kept
    from mridomain.shift.runner import ResultsStore

    store = ResultsStore(tmp_path / "runs.jsonl")
    for k in range(3):
        store.append({"run_id": f"r{k}", "status": "ok"})
    raw = (tmp_path / "runs.jsonl").read_bytes().splitlines(keepends=True)
    (tmp_path / "runs.jsonl").write_bytes(raw[0] + raw[1].replace(b'"ok"', b'"\xff"') + raw[2][:-9])
    with pytest.warns(UserWarning, match="skipped 2 damaged line"):
        assert [r["run_id"] for r in store.records()] == ["r0"]
    store.append({"run_id": "r3", "status": "ok"})          # appending after a torn line starts a new line
    with pytest.warns(UserWarning):
        assert [r["run_id"] for r in store.records()] == ["r0", "r3"]
    # stale temporaries of a killed earlier call go; a live process's stay
    stale = study / ".study.json.999999999.abc.tmp"
    stale.write_text("{")
    live = study / f".runs.jsonl.{os.getpid()}.abc.tmp"
    live.write_text("{")
    (study / ".last.999999999.xyz.tmp").mkdir()
    prepare_study(crops, study, progress=False)
    assert not stale.exists() and not (study / ".last.999999999.xyz.tmp").exists() and live.exists()


def test_synth_subjects_with_nan_voxels_are_named_and_refused(tmp_path):
    """A subject with NaN voxels is skipped and named before any training (and the same reader
    refuses it for generate and dmap); training reports every skipped subject."""
    import nibabel as nib

    from mridomain.errors import ImageReadError
    from mridomain.synth.data import load_dataset, subject_from_files

    rng = np.random.default_rng(0)
    for k in range(3):                                     # three tiny subjects in the BraTS layout
        folder = tmp_path / "b" / f"S{k}"
        folder.mkdir(parents=True)
        for seq in ("t1", "t1ce", "t2", "flair"):
            nib.save(nib.Nifti1Image(rng.uniform(0, 100, (10, 10, 10)).astype(np.float32), np.eye(4)),
                     str(folder / f"S{k}_{seq}.nii.gz"))
    subject = tmp_path / "b" / "S0"
    t2 = subject / "S0_t2.nii.gz"
    data = np.ascontiguousarray(nib.load(str(t2)).get_fdata(dtype=np.float32))
    data.flat[::100] = np.nan                              # 1 % of the voxels
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(t2))
    seqs = ("t1", "t1ce", "t2", "flair")
    dataset = load_dataset(tmp_path / "b", seqs, progress=False)
    assert len(dataset) == 2 and dataset.skipped == [(str(t2), dataset.skipped[0][1])]
    assert "are NaN or infinite" in dataset.skipped[0][1] and "(1%)" in dataset.skipped[0][1]
    with pytest.raises(ImageReadError, match="NaN or infinite"):
        subject_from_files({"t2": t2}, subject.name)      # what generate and dmap read inputs with
