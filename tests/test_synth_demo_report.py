"""The synth demo's report shows each figure once (issue 21: the M_d overlay appeared twice).

The demo's simulate / train / evaluate stages are replaced by stand-ins that write what the real ones
write, so only the report assembly of ``run_demo`` runs."""
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from mridomain.synth.evaluation import SynthEvaluation


def _png(path, value):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    fig.subplots().imshow(np.full((4, 4), value))
    fig.savefig(path)
    return path


@pytest.mark.parametrize("full", [False, True])
def test_demo_report_shows_the_md_overlay_once(tmp_path, monkeypatch, full):
    import json

    import torch

    import mridomain.sim.brain as brain
    import mridomain.synth.evaluation as evaluation
    import mridomain.synth.model as model
    import mridomain.synth.training as training
    from mridomain.synth.demo import run_demo

    out = tmp_path / "demo"
    ev_out = out / "run" / "eval_test"

    def fake_evaluate(run, data, split, progress, html, dmap_dir, oracles):
        assert oracles == {}             # the background oracles reach evaluate
        ev_out.mkdir(parents=True, exist_ok=True)
        _png(ev_out / "contribution.png", 0.1)
        _png(ev_out / "dmap_example.png", 0.5)
        dmap_dir.mkdir(parents=True, exist_ok=True)
        files = [_png(dmap_dir / "S_dmap.png", 0.5), dmap_dir / "S_t1_dmap.nii.gz"]
        contrib = pd.DataFrame({"sequence": ["t1", "t2"], "c_t": [0.1, -0.1], "c_d": [0.2, -0.2],
                                "rank_t": [1, 2], "rank_d": [1, 2]})
        pairs = pd.DataFrame({"source": ["t1"], "target": ["t2"], "psnr": [20.0], "ssim": [0.6]})
        return SynthEvaluation(ev_out, pairs, pairs, {"psnr": 20.0}, contrib, pd.DataFrame(), "note", None,
                               pd.DataFrame({"model": ["m"]}), [], files)

    monkeypatch.setattr(brain, "simulate_brains", lambda *a, **k: SimpleNamespace(summary=lambda: "sim"))
    trained = {}

    def fake_train(data, run_dir, **kwargs):
        trained.update(kwargs, threads=torch.get_num_threads())
        run_dir.mkdir(parents=True, exist_ok=True)
        _png(run_dir / "learning_curve.png", 0.9)
        return SimpleNamespace(epochs_run=1, best_epoch=1, precision="bf16-mixed")

    monkeypatch.setattr(training, "train", fake_train)
    from mridomain.synth.config import make_config

    monkeypatch.setattr(model, "load_run", lambda *a, **k: SimpleNamespace(
        schema={"splits": {"train": ["a"], "test": ["b"]}}, sequences=("t1", "t2"),
        config=make_config("cpu-fullres"), normalization={"kind": "median", "levels": {}}))
    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    import mridomain.synth.demo as demo

    monkeypatch.setattr(demo, "_start_oracles", lambda root, seed: SimpleNamespace(
        result=lambda: (("t1", "t2"), {"train": ["a"], "val": [], "test": ["b"]},
                        {"kind": "median", "levels": {}}, {}), cancel=None))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run_demo(out, subjects=4, progress=False, full=full)
        # one crop per step is too small to share out: one training thread, the demo and --full alike,
        # and the caller's count back afterwards
        assert trained["threads"] == 1 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    check = json.loads((out / "dmap_check.json").read_text())
    assert check["torch_threads_training"] == trained["threads"] and check["precision"] == "bf16-mixed"
    html = (out / "report.html").read_text()
    assert f"precision bf16-mixed, {trained['threads']} training thread(s)" in html
    assert "1 epochs of 480 steps, 1 crop(s) per step" in html
    # the learning curve, contribution.png and the M_d overlay, each once (the overlay used to come
    # back a second time from dmap/)
    assert html.count("<img") == 3
    assert "S_t1_dmap.nii.gz" in html
    assert "every layer at full resolution, the encoder told the source sequence" in html
    assert "batches drawn from subjects with both the source and the target" in html
    # the demo's generator: full resolution, source-conditioned, no instance normalization, four times
    # the rate; the cpu preset keeps the paper's shape
    cfg = make_config(trained["preset"], **{k: v for k, v in trained.items() if k in ("network", "lr")})
    assert cfg.cpu_amp == "auto" and make_config("cpu").cpu_amp == "off"   # bf16 where the CPU has it
    assert cfg.network.full_resolution and cfg.network.source_code and cfg.network.norm == "none"
    assert cfg.lr == 4 * make_config("cpu").lr and cfg.steps_per_epoch * cfg.epochs == 7680
    assert cfg.batch_size == 1 and make_config("cpu").batch_size == 4      # one crop per step
    # the demo's volumes are scaled by their medians; the paper's and the cpu preset's by percentiles
    assert cfg.normalization == "median"
    assert make_config("cpu").normalization == make_config("paper").normalization == "percentile"
    assert cfg.paired_items and not make_config("cpu").paired_items and not make_config("paper").paired_items
    preset = make_config("cpu").network
    assert not preset.full_resolution and not preset.source_code and preset.norm == "instance"


def test_a_failed_training_stops_the_background_oracle(tmp_path, monkeypatch):
    import torch

    import mridomain.sim.brain as brain
    import mridomain.synth.demo as demo
    import mridomain.synth.training as training

    cancelled = []
    monkeypatch.setattr(brain, "simulate_brains", lambda *a, **k: SimpleNamespace(summary=lambda: "sim"))
    monkeypatch.setattr(demo, "_start_oracles", lambda root, seed: SimpleNamespace(
        result=lambda: pytest.fail("the oracle was waited for"), cancel=lambda: cancelled.append(True)))

    def failing_train(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(training, "train", failing_train)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            demo.run_demo(tmp_path / "demo", subjects=4, progress=False)
        assert torch.get_num_threads() == 2       # the training's one thread does not outlive it
    finally:
        torch.set_num_threads(threads)
    assert cancelled == [True]


def test_background_work_can_be_stopped():
    import multiprocessing
    import time

    from mridomain.synth.demo import _Background

    others = set(multiprocessing.active_children())
    work = _Background(time.sleep, 600)
    worker = set(multiprocessing.active_children()) - others
    assert worker                                      # the worker runs
    work.cancel()
    assert not worker & set(multiprocessing.active_children())   # and is gone, without its ten minutes
    assert _Background(divmod, 7, 2).result() == (3, 1)


def _announce_and_sleep(path: str) -> None:
    import os
    import time

    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)


def _process_gone(pid: int) -> bool:
    import os

    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")   # exited, not yet reaped
    except FileNotFoundError:
        return not os.path.exists(f"/proc/{pid}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_the_background_worker_dies_with_a_killed_demo(tmp_path):
    """A demo killed by SIGKILL runs no cleanup at all; its oracle worker must not run on."""
    import subprocess
    import time

    marker = tmp_path / "worker.pid"
    script = (f"import os, signal, time, sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "from mridomain.synth.demo import _Background\n"
              "from test_synth_demo_report import _announce_and_sleep\n"
              f"work = _Background(_announce_and_sleep, {str(marker)!r})\n"
              f"while not os.path.exists({str(marker)!r}) or not open({str(marker)!r}).read():\n"
              "    time.sleep(0.05)\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    demo = subprocess.run([sys.executable, "-c", script], timeout=300)
    assert demo.returncode == -9
    worker = int(marker.read_text())
    deadline = time.monotonic() + 120   # generous: the kernel signals at once, the machine may be slow
    while not _process_gone(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _process_gone(worker), f"the background worker {worker} outlived the killed demo"
