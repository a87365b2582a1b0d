"""End to end on a tiny simulated set: train (engine), resume, evaluate, contribution, dmap, generate,
the CLI, a checkpoint of another schema, the 4-D DCE path and the toy experiment."""
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mridomain.cli import app
from mridomain.errors import SchemaMismatchError
from mridomain.io import read_nifti
from mridomain.sim.brain import simulate_brains

pytestmark = pytest.mark.slow

TINY = {"network": {"enc_channels": (4, 8, 8), "dec_channels": (8, 4), "n_res_enc": 1, "n_res_dec": 1,
                    "lstm_layers": 1, "disc_channels": 4, "disc_layers": 1},
        "steps_per_epoch": 2, "batch_size": 2, "val_subjects": 1, "val_slices": 2, "fractions": (0.5, 0.2, 0.3)}


@pytest.fixture(scope="module")
def brains(tmp_path_factory):
    root = tmp_path_factory.mktemp("brains")
    simulate_brains(root, n_subjects=6, seed=0, voxel_mm=4.0, progress=False)
    return root


@pytest.fixture(scope="module")
def run(brains, tmp_path_factory):
    from mridomain.synth import train

    out = tmp_path_factory.mktemp("run")
    res = train(brains, out, preset="cpu", epochs=1, progress=False, **TINY)
    assert res.epochs_run == 1
    return out


def test_run_folder_is_self_describing(run):
    for name in ("generator.safetensors", "discriminator_t1ce.safetensors", "config.json", "schema.json",
                 "metrics.csv", "learning_curve.png", "last/state.json"):
        assert (run / name).exists(), name
    schema = json.loads((run / "schema.json").read_text())
    assert schema["sequences"] == ["t1", "t1ce", "t2", "flair"] and schema["mode"] == "2.5d"
    kept = schema["training_availability"]
    assert all(1 <= len(v) <= 3 for v in kept.values())          # 1-3 of 4 silenced per subject


def test_resume_continues_to_more_epochs(run, brains):
    from mridomain.synth import train

    res = train(brains, run, epochs=2, resume=True, progress=False)
    assert list(res.metrics["epoch"]) == [1, 2]


def test_evaluate_contribution_dmap_generate(run, brains, tmp_path):
    from mridomain.synth import dmap, evaluate, generate, rank_sequences

    ev = evaluate(run, brains, split="test", progress=False)
    assert len(ev.pairs) == 12 and set(ev.pairs.columns) >= {"source", "target", "psnr", "ssim", "psnr_gain_matched"}
    # one least-squares gain per volume can only lower the error, so its PSNR is never below the plain one
    rows = ev.rows
    assert (rows["psnr_gain_matched"] >= rows["psnr"] - 1e-3).all() and (rows["gain"] > 0).all()
    assert ev.overall["psnr_gain_matched"] >= ev.overall["psnr"]
    assert ev.dmap_check is not None and ev.dmap_check["auc"].between(0, 1).all()
    assert (run / "eval_test" / "report.html").exists()
    table, note = rank_sequences(run, split="test", normalization="minmax", out=tmp_path / "c.csv")
    assert sorted(table["rank_d"]) == [1, 2, 3, 4] and "two-term" in note and "minmax" in note
    assert (tmp_path / "c.png").exists()
    sid = json.loads((run / "schema.json").read_text())["splits"]["test"][0]
    files = dmap(run, brains / sid, tmp_path / "dm")
    img = read_nifti(files[0])
    ref = read_nifti(brains / sid / f"{sid}_t1.nii.gz")
    assert img.shape == ref.shape and np.allclose(img.meta["affine"], ref.meta["affine"])
    res = CliRunner().invoke(app, ["synth", "dmap", str(run), str(brains / sid), "-o", str(tmp_path / "dm"),
                                   "--match-gain"])
    assert res.exit_code == 0, res.output
    matched = sorted((tmp_path / "dm").glob("*_dmap_gain_matched.nii.gz"))
    assert len(matched) == 4 and len(list((tmp_path / "dm").glob("*_dmap.nii.gz"))) == 4
    eq5 = read_nifti(tmp_path / "dm" / matched[0].name.replace("_gain_matched", ""))
    assert read_nifti(matched[0]).shape == ref.shape and not np.allclose(read_nifti(matched[0]).pixels, eq5.pixels)
    out = generate(run, [brains / sid / f"{sid}_t1.nii.gz", brains / sid / f"{sid}_t2.nii.gz"], "flair",
                   tmp_path / "f.nii.gz")
    assert out.sources == ["t1", "t2"] and read_nifti(out.path).shape == ref.shape


def test_a_median_normalized_run_fits_its_levels_on_its_training_subjects(run, brains, tmp_path):
    """normalization="median": the levels are the training subjects' median over 99.5th percentile
    (computed here from the files), recorded in the run; evaluate and the demo's background oracle
    read the volumes with them, and data of the paper's normalization are refused."""
    from mridomain.synth import evaluate, train
    from mridomain.synth.data import NORMALIZATION, load_dataset
    from mridomain.synth.demo import demo_oracles

    assert json.loads((run / "schema.json").read_text())["normalization"] == NORMALIZATION
    out = tmp_path / "median"
    train(brains, out, preset="cpu", epochs=1, progress=False, normalization="median", **TINY)
    schema = json.loads((out / "schema.json").read_text())
    norm = schema["normalization"]
    assert norm["kind"] == "median" and set(norm["levels"]) == set(schema["sequences"])
    for seq, level in norm["levels"].items():
        ratios = []
        for sid in schema["splits"]["train"]:
            x = read_nifti(brains / sid / f"{sid}_{seq}.nii.gz").pixels.astype(np.float32)
            head = x[x != 0]
            ratios.append(np.median(head) / np.percentile(head, 99.5))
        assert level == pytest.approx(np.median(ratios), abs=1e-6)
    assert norm["levels"]["t1ce"] != pytest.approx(norm["levels"]["t1"], abs=1e-3)
    sequences, splits, background, oracles = demo_oracles(brains, TINY["fractions"], 0, "median")
    assert background == norm and splits["train"] == schema["splits"]["train"]
    ev = evaluate(out, brains, split="test", progress=False, html=False, out=tmp_path / "ev", oracles=oracles)
    assert ev.oracle is not None and len(ev.pairs) == 12
    paper = load_dataset(brains, schema["sequences"], progress=False)
    with pytest.raises(SchemaMismatchError, match="median-normalized"):
        evaluate(out, paper, split="test", progress=False, html=False, out=tmp_path / "bad")


def test_cli_errors_are_one_line(run, brains, tmp_path):
    runner = CliRunner()
    sid = json.loads((run / "schema.json").read_text())["splits"]["test"][0]
    res = runner.invoke(app, ["synth", "generate", str(run), str(brains / sid / f"{sid}_t1.nii.gz"), "--to", "dwi"])
    assert res.exit_code == 1 and "another sequence set" in res.output
    res = runner.invoke(app, ["synth", "train", str(tmp_path / "nothing"), "-o", str(tmp_path / "r")])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "does not exist" in res.output
    res = runner.invoke(app, ["synth", "dmap", str(tmp_path), str(brains / sid)])
    assert res.exit_code == 1 and "not a synthesis run folder" in res.output


def test_checkpoint_of_another_schema_is_refused(run, tmp_path):
    import shutil

    from mridomain.synth import load_run

    other = tmp_path / "other"
    shutil.copytree(run, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["network"]["enc_channels"] = [4, 8, 16]
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SchemaMismatchError, match="do not fit"):
        load_run(other)
    schema = json.loads((other / "schema.json").read_text())
    (other / "schema.json").write_text(json.dumps({**schema, "sequences": ["t1", "t2"]}))
    with pytest.raises(SchemaMismatchError, match="disagree"):
        load_run(other)


def test_dce_phases_train_through_the_convlstm(tmp_path):
    from mridomain.engine import Engine
    from mridomain.synth import make_config, simulate_dce_dataset
    from mridomain.synth.training import SynthTask

    data = simulate_dce_dataset(tmp_path / "dce", n_patients=2, phases=3, slices=3, size=(32, 32), progress=False)
    assert data.timepoints == {"pre": 1, "dce": 2}
    net = dict(TINY["network"], mode="2d")
    cfg = make_config("cpu", sequences=("pre", "dce"), silence=(0, 0), epochs=1,
                      **{**TINY, "network": net})
    a, b = (s.subject_id for s in data.subjects)
    task = SynthTask(cfg, data.subset([a]), data.subset([b]), np.ones((1, 2), bool))
    Engine(cfg, tmp_path / "run", progress=False).fit(task)
    from mridomain.synth import load_run

    r = load_run(tmp_path / "run")
    out = r.translate(data.subjects[1], "pre", ["dce"])
    assert out["dce"].shape == (2, 3, 32, 32)      # two post-contrast time points from one phase


def test_toy_experiment_runs(tmp_path):
    from mridomain.synth import run_toy_experiment

    res = run_toy_experiment(tmp_path, preset="cpu", size=32, n_train=24, n_val=10, n_test=10, train_sizes=(24,),
                             synth_epochs=1, synth_steps_per_epoch=2, epochs=1, batch_size=12, progress=False)
    assert len(res.curve) == 2 and res.curve[["acc_x1", "acc_x2"]].stack().between(0, 1).all()
    for name in ("fig4.csv", "fig4.png", "fig3_examples.png", "report.html", "toy_test.npz"):
        assert (tmp_path / name).exists()


def test_3d_mode_trains_on_crops_and_translates_volumes(brains, tmp_path):
    from mridomain.synth import load_run, train

    net = dict(TINY["network"], mode="3d")
    train(brains, tmp_path / "r3", preset="cpu", epochs=1, progress=False,
          **{**TINY, "network": net, "crop": (16, 16, 16), "steps_per_epoch": 1})
    r = load_run(tmp_path / "r3")
    sid = r.schema["splits"]["test"][0]
    from mridomain.synth import load_subject

    sub = load_subject(brains / sid, r.sequences)
    out = r.translate(sub, "t2", ["flair"])
    assert out["flair"].shape == (1, *sub.shape) and 0 <= out["flair"].min() <= out["flair"].max() <= 1


def test_oracles_fitted_beside_training_equal_those_evaluate_fits(run, brains, tmp_path):
    """The demo fits the oracle in a worker while the generator trains (demo_oracles) and hands it to
    evaluate: same split as the run, same oracle table as evaluate's own fit; oracles that lack a
    test subject are refused."""
    from mridomain.errors import InvalidArgumentError
    from mridomain.synth import evaluate
    from mridomain.synth.demo import demo_oracles

    schema = json.loads((run / "schema.json").read_text())
    sequences, splits, normalization, oracles = demo_oracles(brains, TINY["fractions"], 0)
    assert list(sequences) == schema["sequences"] and normalization == schema["normalization"]
    assert splits["train"] == schema["splits"]["train"] and splits["test"] == schema["splits"]["test"]
    own = evaluate(run, brains, split="test", progress=False, html=False, out=tmp_path / "own")
    given = evaluate(run, brains, split="test", progress=False, html=False, out=tmp_path / "given", oracles=oracles)
    assert given.oracle is not None
    pd.testing.assert_frame_equal(given.oracle, own.oracle)
    for res in oracles.values():
        res.maps.pop(splits["test"][0])
    with pytest.raises(InvalidArgumentError, match="no maps for the test subjects"):
        evaluate(run, brains, split="test", progress=False, html=False, out=tmp_path / "bad", oracles=oracles)
