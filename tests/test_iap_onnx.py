"""ONNX export at train time and the engine choice of predict / route / compare (mridomain.iap.runtime)."""
from __future__ import annotations

import importlib.util
import json
import shutil
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mridomain.cli import app
from mridomain.iap import IAPRun, predict_paths, train
from mridomain.iap import runtime
from mridomain.iap.cache import open_cache, split_indices
from mridomain.iap.checkpoint import WEIGHTS
from mridomain.iap.runtime import ONNX_FILE, EngineUnavailableError, ExportCheckError, export_run

from test_iap_utils import make_cache, make_table_and_images

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

FAST = dict(input_size=32, width=8, batch_size=16, lr=3e-3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    cache = make_cache(root / "cache", n=96)
    run = root / "run"
    result = train(cache, run, preset="cpu", epochs=1, seed=0, progress=False, **FAST)
    # NIfTI volumes of the tests' learnable images: predict's input path end to end
    _, images = make_table_and_images(24, 32, seed=5)
    inputs = []
    for k in range(3):
        path = root / f"v{k}.nii"
        nib.save(nib.Nifti1Image(np.moveaxis(images[8 * k:8 * (k + 1)] * 1000, 0, -1), np.eye(4)), str(path))
        inputs.append(path)
    return cache, run, result, inputs


def _without_onnxruntime(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("onnxruntime", "onnx")
                        else real(name, *a))


def test_train_exports_onnx_that_matches_torch(trained):
    cache, run, result, _ = trained
    assert (run / ONNX_FILE).exists() and "matches PyTorch on the val split" in result.summary()
    record = json.loads((run / (ONNX_FILE + ".json")).read_text())
    assert record["inputs"][0]["name"] == "image" and record["inputs"][0]["shape"][0] == "batch"
    assert record["check"]["split"] == "val" and record["check"]["checked_rows"] == len(split_indices(open_cache(cache), "val"))
    torch_run, onnx_run = IAPRun.load(run, engine="torch"), IAPRun.load(run, engine="onnx")
    assert onnx_run.engine_note.startswith("engine: onnx")
    images = np.asarray(open_cache(cache).images, dtype=np.float32)
    for batch_size in (1, 7, 64):          # the batch axis is dynamic
        ref = torch_run.forward(images, batch_size=batch_size)
        got = onnx_run.forward(images, batch_size=batch_size)
        for name in ref.logits:
            np.testing.assert_allclose(got.logits[name], ref.logits[name], atol=1e-4, rtol=1e-4)
            assert (got.predicted(name) == ref.predicted(name)).all()
        np.testing.assert_allclose(got.features, ref.features, atol=1e-4, rtol=1e-4)
        for name in ref.continuous:
            np.testing.assert_allclose(got.continuous[name], ref.continuous[name], rtol=1e-4)


def test_predict_engine_onnx_gives_the_torch_table(trained, tmp_path):
    _, run, _, inputs = trained
    ref = predict_paths(run, inputs, out=None, progress=False, engine="torch")
    got = predict_paths(run, inputs, out=tmp_path / "p.csv", progress=False, engine="onnx")
    assert "engine: onnx" in got.summary() and "engine: torch" in ref.summary()
    assert list(got.table.columns) == list(ref.table.columns) and len(got.table) == len(ref.table) == 27
    for col in ref.table.columns:
        if pd.api.types.is_float_dtype(ref.table[col]):
            np.testing.assert_allclose(got.table[col], ref.table[col], rtol=1e-4, atol=1e-5, err_msg=col)
        else:
            assert got.table[col].equals(ref.table[col]), col


def test_engine_onnx_without_onnxruntime_is_a_one_line_error(trained, monkeypatch, tmp_path):
    _, run, _, inputs = trained
    _without_onnxruntime(monkeypatch)
    with pytest.raises(EngineUnavailableError, match="onnxruntime"):
        IAPRun.load(run, engine="onnx")
    result = CliRunner().invoke(app, ["predict", str(run), str(inputs[0]), "-o", str(tmp_path / "p.csv"),
                                      "--engine", "onnx"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--engine onnx" in lines[0] and "onnxruntime not installed" in lines[0], result.output
    # auto still predicts, on PyTorch, and says why
    auto = predict_paths(run, inputs[:1], out=None, progress=False, engine="auto")
    assert "PyTorch fallback: onnxruntime" in auto.engine


def test_auto_falls_back_to_torch_with_a_stated_reason(trained, tmp_path):
    _, run, _, inputs = trained
    bare = tmp_path / "bare"
    shutil.copytree(run, bare, ignore=shutil.ignore_patterns("model.onnx*", "last"))
    result = predict_paths(bare, inputs[:1], out=None, progress=False)          # engine auto
    assert "engine: torch (PyTorch fallback:" in result.summary() and "model.onnx not found" in result.engine
    with pytest.raises(EngineUnavailableError, match="model.onnx not found"):
        IAPRun.load(bare, engine="onnx")
    # an ONNX file from other weights is never used in their place
    stale = tmp_path / "stale"
    shutil.copytree(run, stale, ignore=shutil.ignore_patterns("last"))
    from mridomain.engine.checkpoint import save_weights

    changed = IAPRun.load(stale)
    changed.model.head.bias.data.add_(1.0)
    save_weights(changed.model, stale / WEIGHTS)
    assert "exported from other weights" in IAPRun.load(stale, engine="auto").engine_note
    # nor one that answers from the slice alone for a run set to average it with its mirror
    assert json.loads((run / (ONNX_FILE + ".json")).read_text())["mirror_tta"] is True     # the cpu preset's
    plain = tmp_path / "plain"
    shutil.copytree(run, plain, ignore=shutil.ignore_patterns("last"))
    config = json.loads((plain / "config.json").read_text())
    (plain / "config.json").write_text(json.dumps({**config, "mirror_tta": False}))
    note = IAPRun.load(plain, engine="auto").engine_note
    assert "PyTorch fallback" in note and "exported with mirror_tta=True" in note and "has mirror_tta=False" in note


def test_a_failed_export_check_is_loud_and_leaves_no_file(trained, tmp_path, monkeypatch):
    cache, run, _, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("model.onnx*", "last"))
    real = runtime.OnnxNetwork.__call__
    monkeypatch.setattr(runtime.OnnxNetwork, "__call__", lambda self, inputs: tuple(
        a + np.float32(1e-3) for a in real(self, inputs)))
    with pytest.raises(ExportCheckError, match="differ from PyTorch's"):
        export_run(copy, cache)
    assert not list(copy.glob("*.onnx*")) and not list(copy.glob("tmp*"))


def test_train_without_export_packages_says_so_and_continues(trained, tmp_path, monkeypatch):
    cache, run, _, _ = trained
    from mridomain.iap.training import _export_onnx

    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("model.onnx*", "last"))
    _without_onnxruntime(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        note = _export_onnx(copy, cache)
    assert "model.onnx not written: onnxruntime and onnx not installed" in note
    assert [str(w.message) for w in caught] == [note] and "\n" not in note
    assert not (copy / ONNX_FILE).exists()


def test_chunked_read_ahead_predict_gives_the_one_input_at_a_time_table(trained, tmp_path):
    _, run, _, inputs = trained
    broken = tmp_path / "broken.nii"
    broken.write_bytes(b"not a nifti file")
    paths = [inputs[0], broken, *inputs[1:]]
    # chunk_slices=1 and no read-ahead is predict as it was: every input alone
    one = predict_paths(run, paths, out=None, progress=False, engine="torch", chunk_slices=1, read_ahead_inputs=0)
    chunked = predict_paths(run, paths, out=None, progress=False, engine="torch", chunk_slices=12,
                            read_ahead_inputs=2)
    assert [p for p, _ in chunked.skipped] == [p for p, _ in one.skipped] == [str(broken)]
    assert list(chunked.table.columns) == list(one.table.columns)
    assert (chunked.table.dtypes == one.table.dtypes).all()
    for col in one.table.columns:
        if pd.api.types.is_float_dtype(one.table[col]):
            # the same network on batches of other sizes: float rounding only
            np.testing.assert_allclose(chunked.table[col], one.table[col], rtol=1e-5, atol=1e-6, err_msg=col)
        else:
            assert chunked.table[col].equals(one.table[col]), col


def test_route_and_compare_state_their_engine(trained):
    cache, run, _, _ = trained
    from mridomain.iap import compare, route

    images = np.asarray(open_cache(cache).images[:6], dtype=np.float32)
    routed = route(images, run, {"GE": lambda x: np.zeros(len(x)), "SIEMENS": lambda x: np.ones(len(x))})
    assert routed.attrs["engine"].startswith("engine: onnx")
    assert route(images, run, {"GE": lambda x: np.zeros(len(x))}, default="GE",
                 engine="torch").attrs["engine"] == "engine: torch (PyTorch)"
    result = compare(cache, images, run, progress=False, engine="onnx")
    assert "engine: onnx" in result.summary["engine"] and "engine: onnx" in result.to_markdown()


def test_a_network_that_resizes_by_a_non_integer_ratio_exports(tmp_path):
    """The cpu preset resizes the 224-pixel cache to 128 pixels inside the network (area
    interpolation, 1.75x): the exporter has no adaptive pooling at such a ratio, so the export writes
    the same average as matrix products. Here 48 -> 32 pixels (1.5x); the demo's run had no
    model.onnx before this was fixed."""
    cache = make_cache(tmp_path / "cache", n=64, size=48)
    run = tmp_path / "run"
    train(cache, run, preset="cpu", epochs=1, seed=0, progress=False, **{**FAST, "input_size": 32})
    assert (run / ONNX_FILE).exists()
    images = np.asarray(open_cache(cache).images, dtype=np.float32)
    a, b = IAPRun.load(run, engine="torch").forward(images), IAPRun.load(run, engine="onnx").forward(images)
    np.testing.assert_allclose(b.features, a.features, atol=1e-4, rtol=1e-4)
    for name in a.probabilities:
        np.testing.assert_array_equal(b.probabilities[name].argmax(1), a.probabilities[name].argmax(1))
