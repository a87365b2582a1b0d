"""The shared training engine: DDP equivalence, resume, all-or-nothing checkpoints, validation."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from mridomain.engine import (Engine, TrainSettings, epoch_batches, load_weights, read_json, save_weights,
                              write_folder_atomic)
from mridomain.engine.checkpoint import resolve_folder
from mridomain.errors import InvalidArgumentError, SchemaMismatchError

sys.path.insert(0, str(Path(__file__).parent))
import ddp_task  # noqa: E402
from multiprocess import infrastructure_error, run_child  # noqa: E402

HERE = Path(__file__).parent


def _torchrun(out: Path, epochs: int, resume: bool = False) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "ddp_task.py"), str(out), str(epochs)] + (["--resume"] if resume else [])
    proc = run_child(cmd, env)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _weights(folder: Path) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in load_file(str(folder / "model.safetensors")).items()}


def test_epoch_batches_split_each_global_batch_across_ranks():
    whole = epoch_batches(10, 4, seed=1, epoch=2)
    parts = [epoch_batches(10, 4, seed=1, epoch=2, rank=r, world_size=2) for r in range(2)]
    # a global batch of 4 is cut in two halves; the last global batch (2 items) is cut in ones
    assert [len(b) for b in whole] == [4, 4, 2]
    for k, b in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([parts[0][k], parts[1][k]]), b)
    # the order is a function of (seed, epoch): the same again, another for the next epoch
    np.testing.assert_array_equal(np.concatenate(whole), np.concatenate(epoch_batches(10, 4, 1, 2)))
    assert not np.array_equal(np.concatenate(whole), np.concatenate(epoch_batches(10, 4, 1, 3)))
    # fewer items than ranks: that global batch is dropped on every rank (equal step counts)
    assert [len(b) for b in epoch_batches(9, 4, 0, 0, rank=0, world_size=2)] == [2, 2]
    assert [len(b) for b in epoch_batches(9, 4, 0, 0, rank=1, world_size=2)] == [2, 2]


@pytest.mark.slow
def test_two_process_gloo_ddp_matches_one_process_and_resumes(tmp_path):
    single = ddp_task.fit(str(tmp_path / "single"), epochs=2)
    assert single.epochs_run == 2
    _torchrun(tmp_path / "ddp", 2)
    a, b = _weights(tmp_path / "single" / "last"), _weights(tmp_path / "ddp" / "last")
    for k in a:   # each rank saw half of every global batch; DDP averaged the gradients
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6)
    state = read_json(tmp_path / "ddp" / "last" / "state.json")
    assert state["world_size"] == 2 and state["epoch"] == 2
    # a DDP run interrupted after epoch 1 and resumed under DDP ends where the straight one did
    _torchrun(tmp_path / "ddp_resumed", 1)
    assert read_json(tmp_path / "ddp_resumed" / "last" / "state.json")["epoch"] == 1
    _torchrun(tmp_path / "ddp_resumed", 2, resume=True)
    c = _weights(tmp_path / "ddp_resumed" / "last")
    for k in a:
        np.testing.assert_array_equal(c[k], b[k])
    metrics = (tmp_path / "ddp_resumed" / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 3      # header + epochs 1 and 2, none twice


def test_only_infrastructure_errors_are_retried():
    assert infrastructure_error("torch.distributed.DistNetworkError: ... EADDRINUSE") == "port in use"
    assert infrastructure_error("RuntimeError: Gloo connectFullMesh failed with ... refused") == "gloo connect"
    assert infrastructure_error("[rank1]: AssertionError: weights differ") is None
    assert infrastructure_error("terminate called without an active exception") is None   # a crash: a bug
    assert infrastructure_error("FileNotFoundError: learning_curve.png") is None


def test_learning_curve_gives_each_unit_its_own_panel(tmp_path):
    import pandas as pd

    from mridomain.engine.engine import _metric_unit, plot_learning_curve

    m = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [3.0, 2.0, 1.5], "val_loss": [3.1, 2.2, 1.9],
                      "val_acc_fov": [0.2, 0.3, 0.4], "val_mse_tr": [1.4, 1.2, 1.1], "val_psnr": [18.0, 19.0, 20.0]})
    units = {c: _metric_unit(c, m[c]) for c in m.columns if c != "epoch"}
    assert units == {"train_loss": "loss", "val_loss": "loss", "val_acc_fov": "%", "val_mse_tr": "MSE",
                     "val_psnr": "value"}
    assert _metric_unit("val_mse_te", pd.Series([0.2, 0.5])) == "MSE"      # an MSE in 0..1 is still no %
    plot_learning_curve(m, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_single_process_resume_is_bit_exact(tmp_path):
    ddp_task.fit(str(tmp_path / "straight"), epochs=3)
    ddp_task.fit(str(tmp_path / "resumed"), epochs=1)
    res = ddp_task.fit(str(tmp_path / "resumed"), epochs=3, resume=True)
    assert res.metrics["epoch"].tolist() == [1, 2, 3]
    a, b = _weights(tmp_path / "straight" / "last"), _weights(tmp_path / "resumed" / "last")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert res.best_epoch == int(np.argmin(res.metrics["val_loss"])) + 1


def test_best_checkpoint_early_stopping_and_monitor(tmp_path):
    res = ddp_task.fit(str(tmp_path / "r"), epochs=6, patience=1, lr=5.0)   # diverges: stops early
    losses = res.metrics["val_loss"].to_numpy()
    assert res.best_metric == pytest.approx(losses.min())
    assert res.epochs_run < 6 or np.all(np.diff(losses) < 0)
    best = _weights(tmp_path / "r")
    with pytest.raises(SchemaMismatchError, match="monitor 'val_auc'"):
        ddp_task.fit(str(tmp_path / "m"), epochs=1, monitor="val_auc")
    assert best  # the best weights were written at the run folder's root


def test_folder_writes_are_all_or_nothing(tmp_path):
    folder = tmp_path / "last"

    def good(tmp: Path) -> None:
        (tmp / "state.json").write_text('{"epoch": 1}')
        (tmp / "w.bin").write_bytes(b"1")

    write_folder_atomic(folder, good)

    def killed(tmp: Path) -> None:   # dies half way through writing the next checkpoint
        (tmp / "state.json").write_text('{"epoch": 2}')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_folder_atomic(folder, killed)
    assert json.loads((folder / "state.json").read_text()) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]      # no temporary left behind
    # a kill between the swap's two renames leaves only last.old: it is what resume finds
    os.replace(folder, tmp_path / "last.old")
    assert resolve_folder(folder) == tmp_path / "last.old"


def test_damaged_checkpoints_are_one_line_errors(tmp_path):
    net = torch.nn.Linear(3, 2)
    path = save_weights(net, tmp_path / "model.safetensors")
    path.write_bytes(path.read_bytes()[:40])                       # truncated
    with pytest.raises(SchemaMismatchError, match="damaged safetensors") as err:
        load_weights(net, path)
    assert "\n" not in str(err.value)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["weight"][0, 0] = float("nan")
    save_file(state, str(tmp_path / "nan.safetensors"))
    with pytest.raises(SchemaMismatchError, match="NaN or infinite"):
        load_weights(net, tmp_path / "nan.safetensors")
    save_weights(torch.nn.Linear(4, 2), tmp_path / "other.safetensors")
    with pytest.raises(SchemaMismatchError, match="do not fit"):
        load_weights(net, tmp_path / "other.safetensors")
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(SchemaMismatchError, match="empty file"):
        read_json(tmp_path / "empty.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SchemaMismatchError, match="not valid JSON"):
        read_json(tmp_path / "bad.json")


def test_resume_without_checkpoint_and_bad_settings(tmp_path):
    from mridomain.errors import EmptyInputError

    with pytest.raises(EmptyInputError, match="nothing to resume"):
        ddp_task.fit(str(tmp_path / "none"), epochs=1, resume=True)
    with pytest.raises(Exception, match="epochs"):
        TrainSettings(epochs=0)
    with pytest.raises(InvalidArgumentError, match="settings"):
        Engine(object(), tmp_path)  # type: ignore[arg-type]


def test_run_without_checkpoints_or_plots_trains_the_same(tmp_path):
    s = ddp_task.TinySettings(epochs=3, seed=3, device="cpu")
    full = Engine(s, tmp_path / "full", progress=False).fit(ddp_task.TinyTask(s))
    lean = Engine(s, tmp_path / "lean", progress=False, resumable=False, plots=False).fit(ddp_task.TinyTask(s))
    assert not (tmp_path / "lean" / "last").exists() and not (tmp_path / "lean" / "learning_curve.png").exists()
    assert (tmp_path / "full" / "learning_curve.png").exists()
    assert lean.metrics.equals(full.metrics) and lean.best_epoch == full.best_epoch
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "lean")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    with pytest.raises(InvalidArgumentError, match="resumable=False"):
        Engine(s, tmp_path / "lean", progress=False, resumable=False).fit(ddp_task.TinyTask(s), resume=True)


@pytest.mark.parametrize("cpu_amp, native, expected", [("off", True, "32-true"), ("bf16", False, "bf16-mixed"),
                                                       ("auto", True, "bf16-mixed"), ("auto", False, "32-true")])
def test_cpu_amp_trains_the_wrapped_modules_in_bf16_only_when_asked_and_records_it(tmp_path, monkeypatch, cpu_amp,
                                                                                  native, expected):
    import mridomain.engine.engine as engine_module

    monkeypatch.setattr(engine_module, "cpu_has_native_bf16", lambda: native)
    seen = []
    build = ddp_task.TinyTask.build_modules

    def build_with_probe(self):
        modules = build(self)
        modules["model"][0].register_forward_hook(lambda module, args, out: seen.append(out.dtype))
        return modules

    monkeypatch.setattr(ddp_task.TinyTask, "build_modules", build_with_probe)
    res = ddp_task.fit(str(tmp_path / "r"), epochs=1, cpu_amp=cpu_amp)
    steps = ddp_task.N // ddp_task.BATCH
    # the training steps' convolution ran in bf16 under autocast; validation (unwrapped) in float32
    assert seen[:steps] == [torch.bfloat16 if expected == "bf16-mixed" else torch.float32] * steps
    assert seen[steps:] == [torch.float32]
    assert res.precision == expected
    assert read_json(tmp_path / "r" / "last" / "state.json")["precision"] == expected
    assert (expected != "32-true") == ("bf16-mixed" in res.summary())
    assert np.isfinite(res.metrics["val_loss"]).all()


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="reads the CPU flags of Linux's /proc/cpuinfo")
def test_native_bf16_probe_agrees_with_the_cpu_flags():
    from mridomain.engine import cpu_has_native_bf16

    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    assert cpu_has_native_bf16() == bool(flags & {"amx_tile", "avx512_bf16"})
