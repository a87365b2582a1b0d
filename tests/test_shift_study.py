"""End to end on a small two-domain dataset: reproducible runs, resume, report, CLI, Ray."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from mridomain.cli import app
from mridomain.errors import SchemaMismatchError
from mridomain.shift import runner as runner_module
from mridomain.shift.config import make_config
from mridomain.shift.manifest import ManifestError
from mridomain.shift.protocol import RunSpec
from mridomain.shift.runner import results_table, train_and_test
from mridomain.shift.study import open_study, prepare_study, run_experiment, run_study
from shift_fixtures import one_torch_thread, write_crops  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = dict(model="nodulex", width=0.25, epochs=2, batch_size=16)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return write_crops(tmp_path_factory.mktemp("crops"), n_patients=24)


@pytest.mark.slow
def test_seed_reproduces_a_run_exactly(manifest, tmp_path):
    study = prepare_study(manifest, tmp_path / "s", make_config("cpu", **FAST), progress=False, stratify=True)
    data = study.data("dataset")
    spec = RunSpec("noise", "dataset", 3, "A", "B", 5.0)
    a = train_and_test(spec, data, study.config, stratify=True)
    b = train_and_test(spec, data, study.config, stratify=True)
    assert a["tests"] == b["tests"] and a["curve"] == b["curve"] and a["split_digest"] == b["split_digest"]
    c = train_and_test(RunSpec("noise", "dataset", 4, "A", "B", 5.0), data, study.config, stratify=True)
    assert c["split_digest"] != a["split_digest"] and c["tests"]["A"]["score"] != a["tests"]["A"]["score"]
    assert a["n_train"] == 16 and a["n_val"] == 4 and a["tests"]["A"]["n"] == 4 and a["tests"]["B"]["n"] == 4
    mix = train_and_test(RunSpec("mixing", "dataset", 3, "A", "B", 0.5), data, study.config, stratify=True)
    assert (mix["n_train_source"], mix["n_train_target"], mix["n_duplicates"]) == (16, 16, 0)


@pytest.mark.slow
def test_interrupted_study_resumes_without_retraining(manifest, tmp_path, monkeypatch):
    out = tmp_path / "study"
    calls = []
    real = runner_module.train_and_test

    def counting(spec, *args, **kwargs):
        calls.append(spec.run_id)
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(runner_module, "train_and_test", counting)

    def interrupt_after_two(record):
        if len(calls) == 2:
            raise KeyboardInterrupt

    study = prepare_study(manifest, out, make_config("cpu", **FAST), progress=False, stratify=True)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(study, "main", seeds=2, workers=1, progress=False, on_result=interrupt_after_two)
    first = {r["run_id"]: r for r in study.store.records()}
    assert len(first) == 2
    with open(out / "runs.jsonl", "a") as fh:          # a record cut short by a kill
        fh.write('{"run_id": "main/dataset/seed1/tr')
    calls.clear()
    result = run_study(manifest, out, seeds=2, workers=1, progress=False, report=False)
    assert result.resumed == 2 and len(calls) == 2 and set(calls).isdisjoint(first)
    records = {r["run_id"]: r for r in open_study(out).store.records()}
    assert len(records) == 4 and all(r["status"] == "ok" for r in records.values())
    for rid, rec in first.items():                      # finished runs were kept as they were
        assert records[rid]["finished_at"] == rec["finished_at"]
    calls.clear()
    again = run_study(manifest, out, seeds=2, workers=1, progress=False, report=False)
    assert calls == [] and again.resumed == 4
    with pytest.raises(SchemaMismatchError, match="another config epochs"):
        run_study(manifest, out, seeds=2, epochs=3, progress=False, report=False)


@pytest.mark.slow
def test_pool_study_report_and_cli(manifest, tmp_path):
    out = tmp_path / "study"
    res = run_study(manifest, out, seeds=2, workers=2, progress=False, report=False, stratify=True, **FAST)
    assert len(res.records) == 4 and not res.failed
    cli = CliRunner()
    r = cli.invoke(app, ["shift", "mixing", str(manifest), "-o", str(out), "--fractions", "0.5", "--seeds", "1",
                         "--workers", "1"])
    assert r.exit_code == 0, r.output
    r = cli.invoke(app, ["shift", "noise", str(manifest), "-o", str(out), "--alphas", "10", "--seeds", "1",
                         "--workers", "1"])
    assert r.exit_code == 0, r.output
    r = cli.invoke(app, ["shift", "report", str(out)])
    assert r.exit_code == 0, r.output
    t2 = pd.read_csv(out / "table2.csv")
    assert list(t2.columns) == ["dataset", "train_domain", "test_domain", "auc_mean", "auc_std", "n_seeds"]
    assert len(t2) == 4 and (t2["n_seeds"] == 2).all() and t2["auc_mean"].between(0, 1).all()
    delta = pd.read_csv(out / "delta.csv")
    assert list(delta.columns[:6]) == ["dataset", "train_domain", "delta", "ci_low", "ci_high", "p_value"]
    runs = pd.read_csv(out / "runs.csv")
    a_in = runs[(runs.experiment == "main") & (runs.train_domain == "A") & (runs.test_domain == "A")]["auc"]
    a_out = runs[(runs.experiment == "main") & (runs.train_domain == "A") & (runs.test_domain == "B")]["auc"]
    assert delta.set_index("train_domain").loc["A", "delta"] == pytest.approx(a_out.mean() - a_in.mean())
    mixing = pd.read_csv(out / "mixing.csv")
    assert set(mixing["f"]) == {0.0, 0.5} and set(mixing.loc[mixing["f"] == 0, "source"]) == {"main"}
    noise = pd.read_csv(out / "noise.csv")
    assert set(noise["alpha"]) == {0.0, 10.0} and (noise["alpha_rel"] >= 0).all()
    for name in ("fig2_auc_bars", "fig3_delta_box", "fig4_mixing", "fig5_noise"):
        assert (out / f"{name}.png").stat().st_size > 1000
    html = (out / "report.html").read_text()
    assert "What the study found" in html and "Delta" in html and 'src="http' not in html
    # the preset and the split are stated, the per-run table is folded away, figures have captions
    assert "preset cpu (nodulex" in html and "split stratified by label within each domain" in html
    assert "<details><summary>Show all" in html and "<figcaption>Figure 2. Test AUC" in html
    assert {r.get("preset") for r in open_study(out).store.records()} == {"cpu"}
    assert set(delta.columns) >= {"ci_half_width", "detectable_delta", "min_test_positives", "warning"}
    sizes = pd.read_csv(out / "test_sets.csv")
    assert (sizes["positives_min"] == 2).all() and sizes["warning"].str.startswith("fewer than 25").all()
    assert len(pd.read_csv(out / "splits.csv").query("seed == 0")) == 48
    assert (out / "models").is_dir() and len(list((out / "models").iterdir())) == 4   # main models kept
    splits = pd.read_csv(out / "splits.csv")
    assert (splits.groupby(["seed", "patient_id"])["split"].nunique() == 1).all()


def test_defaults_paper_split_and_preset_by_hardware(manifest, tmp_path):
    import torch

    from mridomain.shift.config import default_preset

    expected = "paper" if torch.cuda.is_available() else "cpu"
    assert default_preset() == expected
    study = prepare_study(manifest, tmp_path / "s", progress=False)
    assert study.stratify is False and study.preset == expected and study.config == make_config(expected)
    assert "split random within each domain (the paper's)" in study.settings_line()
    assert json.loads((tmp_path / "s" / "study.json").read_text())["preset"] == expected
    # a later call without a preset keeps the folder's (and its split)
    again = prepare_study(manifest, tmp_path / "s", progress=False)
    assert again.preset == expected and again.stratify is False
    with pytest.raises(SchemaMismatchError, match="split"):
        prepare_study(manifest, tmp_path / "s", progress=False, stratify=True)


@pytest.mark.slow
def test_single_class_split_stops_before_training(manifest, tmp_path):
    m = pd.read_csv(manifest)
    m["image"] = [str(Path(manifest).parent / p) for p in m["image"]]
    m.loc[m["domain"] == "B", "label"] = 0
    m.loc[m.index[-1], "label"] = 1
    with pytest.raises(ManifestError, match="domain 'B'"):
        run_study(m, tmp_path / "s", seeds=1, progress=False, **FAST)
    assert not (tmp_path / "s" / "runs.jsonl").exists()


@pytest.mark.slow
def test_ray_backend_matches_the_process_pool(manifest, tmp_path):
    """A tiny study on a local Ray instance gives the process pool's result table, run for run."""
    import ray   # a test dependency (pyproject [test]): never skipped

    seeds = [0, 1]
    pool = run_study(manifest, tmp_path / "pool", seeds=seeds, workers=2, progress=False, report=False,
                     stratify=True, **FAST)
    assert not pool.failed
    # two CPUs, no dashboard, a small object store: starts on a loaded 2-core machine and in CI
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=80 * 1024 ** 2)
    try:
        on_ray = run_study(manifest, tmp_path / "ray", seeds=seeds, workers=2, backend="ray", progress=False,
                           report=False, stratify=True, **FAST)
    finally:
        ray.shutdown()
    assert not on_ray.failed, [r.get("error") for r in on_ray.failed]
    assert len(on_ray.records) == len(pool.records) == 4
    assert {r["pid"] for r in on_ray.records}.isdisjoint({os.getpid()})   # ran in Ray's workers

    def table(out):
        cols = ["run_id", "test_domain", "auc", "n_test", "n_test_positive", "n_train", "split_digest", "best_epoch",
                "best_val_auc", "epochs_run"]
        return results_table(open_study(out).store.records())[cols].sort_values(["run_id", "test_domain"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(table(tmp_path / "ray"), table(tmp_path / "pool"))
    scores = {r["run_id"]: r["tests"] for r in pool.records}
    assert all(r["tests"] == scores[r["run_id"]] for r in on_ray.records)   # every test score, exactly
