"""IAP training, checkpoints, resume, evaluation and prediction end to end on a tiny cache."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from mridomain.errors import SchemaMismatchError
from mridomain.iap import IAPPredictor, NotFittedError, evaluate, predict_paths, train
from mridomain.iap.cache import open_cache

from test_iap_utils import IAPS, make_cache

FAST = dict(input_size=32, width=8, batch_size=16, lr=3e-3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("iap")
    cache = make_cache(root / "cache")
    run = root / "run"
    result = train(cache, run, preset="cpu", epochs=6, seed=0, progress=False, **FAST)
    return cache, run, result


@pytest.mark.slow
def test_run_folder_is_self_describing(trained):
    cache, run, result = trained
    for name in ("model.safetensors", "config.json", "labels.json", "preprocess.json", "metrics.csv",
                 "learning_curve.png", "last/model.safetensors", "last/optimizer_adam.safetensors",
                 "last/optimizer_adam.json", "last/rng.safetensors", "last/state.json"):
        assert (run / name).exists(), name
    pre = json.loads((run / "preprocess.json").read_text())
    assert pre["size"] == [32, 32] and pre["normalization"] == {"method": "max255"}
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    assert {"val_acc_manufacturer", "val_mse_tr"} <= set(metrics.columns)
    # output layer: (2 + other) + (2 + other) + (3 + other) + 1 continuous
    assert load_file(str(run / "model.safetensors"))["head.weight"].shape[0] == 3 + 3 + 4 + 1


@pytest.mark.slow
def test_learns_a_learnable_problem(trained):
    cache, run, _ = trained
    report = evaluate(run, split="test", progress=False)
    c = open_cache(cache)
    test = c.table[c.table["split"] == "test"]
    man, pos = report.row("manufacturer"), report.row("patient_position")
    assert man["n"] == len(test) and pos["n"] == int(test["patient_position"].notna().sum())
    assert man["top1"] > 0.9 and pos["top1"] > 0.9
    assert report.row("tr")["mse"] < report.row("tr")["baseline_mse"]
    assert (run / "eval_test" / "report.md").exists() and (run / "eval_test" / "confusion_matrices.png").exists()
    assert "manufacturer" in report.to_markdown()
    # the joint answer over the run's hierarchical IAPs (combinations.json) is scored beside the heads
    assert json.loads((run / "combinations.json").read_text())["heads"] == ["manufacturer", "field_strength"]
    assert man["joint_top1"] > 0.9 and "joint_top1" not in pos
    assert " joint top-1 % |" in report.to_markdown().splitlines()[2]


@pytest.mark.slow
def test_checkpoint_round_trip_identical_predictions(trained, tmp_path):
    cache, run, _ = trained
    images = np.asarray(open_cache(cache).images[:12], dtype=np.float32)
    a = IAPPredictor.load(run)
    a.save(tmp_path / "copy")
    b = IAPPredictor.load(tmp_path / "copy")
    pa, pb = a.predict_proba(images, preprocessed=True), b.predict_proba(images, preprocessed=True)
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k])
    df = b.predict(images, top_k=2, preprocessed=True)
    assert len(df) == 12 and {"manufacturer", "manufacturer_prob", "manufacturer_top2", "tr_ms"} <= set(df.columns)
    out = b.forward(images)                     # one pass: probabilities, logits, values, features
    assert out.features.shape[0] == 12 and len(out) == 12
    temp = b.temperatures["manufacturer"]      # train() calibrated the run: probabilities = softmax(logits / T)
    assert temp > 0 and a.temperatures == b.temperatures
    logits = out.logits["manufacturer"] / temp
    e = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(1, keepdims=True), pb["manufacturer"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out.probabilities["manufacturer"], pb["manufacturer"], rtol=1e-6)
    np.testing.assert_allclose(out.continuous["tr"], pb["tr"], rtol=1e-6)


def test_unfitted_predictor_says_so():
    with pytest.raises(NotFittedError, match="not fitted"):
        IAPPredictor(preset="cpu").predict(np.zeros((1, 8, 8)))


@pytest.mark.slow
def test_schema_mismatch_refused(trained, tmp_path):
    cache, run, _ = trained
    other = make_cache(tmp_path / "other", n=16, iaps=[s for s in IAPS if s["name"] != "field_strength"])
    with pytest.raises(SchemaMismatchError) as err:
        evaluate(run, cache=other, progress=False)
    assert "\n" not in str(err.value) and "labels.json" in str(err.value) and "meta.json" in str(err.value)
    with pytest.raises(SchemaMismatchError):
        train(other, run, resume=True, epochs=7, progress=False)


@pytest.mark.slow
def test_resume_continues_from_saved_epoch(tmp_path):
    cache = make_cache(tmp_path / "cache", n=48, size=16)
    # "Interrupted" here means trained with epochs=2, which would also shorten a cosine schedule;
    # a constant rate keeps the two runs' schedules equal so only the resume mechanics are tested.
    kw = dict(preset="cpu", seed=1, progress=False, input_size=16, width=4, batch_size=16,
              lr_schedule="constant")
    train(cache, tmp_path / "straight", epochs=3, **kw)
    train(cache, tmp_path / "resumed", epochs=2, **kw)
    res = train(cache, tmp_path / "resumed", epochs=3, resume=True, progress=False)
    assert res.metrics["epoch"].tolist() == [1, 2, 3]
    assert json.loads((tmp_path / "resumed" / "last" / "state.json").read_text())["epoch"] == 3
    a = load_file(str(tmp_path / "straight" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "last" / "model.safetensors"))
    for k in a:   # same batches (seeded per epoch), restored Adam and RNG state: bit-identical weights
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())


def test_cosine_learning_rate_is_a_pure_function_of_epoch():
    from mridomain.iap.config import IAPConfig, learning_rate

    cfg = IAPConfig(lr=1e-3, epochs=4, lr_schedule="cosine")
    # 0.5 * lr * (1 + cos(pi * e / 4)) by hand: 1e-3, 0.853553e-3, 0.5e-3, 0.146447e-3
    expected = [1e-3, 0.8535534e-3, 0.5e-3, 0.1464466e-3]
    np.testing.assert_allclose([learning_rate(cfg, e) for e in range(4)], expected, rtol=1e-6)
    assert learning_rate(IAPConfig(lr=1e-3, lr_schedule="constant"), 3) == 1e-3


def _write_dicom(path, pixels):
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Manufacturer, ds.PatientPosition = "MR", "GE MEDICAL SYSTEMS", "FFP"
    ds.RepetitionTime, ds.EchoTime, ds.MagneticFieldStrength = 5.96, 2.54, 1.5
    ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.InstanceNumber = generate_uid(), generate_uid(), 1
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)


@pytest.mark.slow
def test_predict_files_skips_the_corrupt_one(trained, tmp_path):
    import nibabel as nib
    from PIL import Image

    from test_iap_utils import synthetic_images

    _, run, _ = trained
    rng = np.random.default_rng(5)
    ge_ffp = synthetic_images(np.array(["GE"] * 3), np.array(["FFP"] * 3), 48, rng)   # 3 slices
    scale = 1000.0 / ge_ffp.max()
    png = tmp_path / "slice.png"
    Image.fromarray((ge_ffp[0] * 255 / ge_ffp[0].max()).astype(np.uint8)).save(png)
    nii = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.moveaxis(ge_ffp * scale, 0, -1), np.eye(4)), str(nii))
    dcm = tmp_path / "slice.dcm"
    _write_dicom(dcm, ge_ffp[1] * scale)
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"this is not an image")
    out = tmp_path / "preds.csv"
    res = predict_paths(run, [png, nii, dcm, bad], out=out, top_k=2, figure=tmp_path / "fig.png",
                        progress=False)
    assert [p for p, _ in res.skipped] == [str(bad)]
    assert res.slices.shape[0] == 1 + 3 + 1 and res.series.shape[0] == 3
    assert (res.series["manufacturer"] == "GE").all()
    assert {"manufacturer_top2", "manufacturer_prob2", "tr_ms"} <= set(res.table.columns)
    assert out.exists() and (tmp_path / "fig.png").exists() and "broken.dcm" in res.summary()
    dicom_rows = res.table[res.table["source"] == str(dcm)]
    assert (dicom_rows["true_manufacturer"] == "GE").all()
    res_json = predict_paths(run, [png], out=tmp_path / "p.json", progress=False)
    assert json.loads((tmp_path / "p.json").read_text())[0]["level"] == "slice" and not res_json.skipped


@pytest.mark.slow
def test_prediction_figure_marks_out_of_domain_inputs_and_keeps_names_whole(trained, tmp_path):
    from mridomain.iap import LabelEncoder
    from mridomain.iap.prediction import _column, _draw_figure

    _, run, _ = trained
    encoder = LabelEncoder.from_json(run / "labels.json")
    long_name = "3.000000-t1_fl3d_tra_dynVIEWS_spair_pre-87149"
    row = {_column(h): ("GE" if h.kind == "categorical" else 5.0) for h in encoder.heads}
    panels = [{"source": long_name, "image": np.zeros((8, 8)), "row": {**row, "in_domain": True}, "truth": {}},
              {"source": "MR_small.dcm", "image": np.zeros((8, 8)), "row": {**row, "in_domain": False}, "truth": {}}]
    fig = _draw_figure(panels, encoder, tmp_path / "f.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].replace("\n", "") == long_name                  # wrapped, not cut
    assert titles[1].startswith("OUT OF DOMAIN") and not titles[0].startswith("OUT OF DOMAIN")
    assert any("OUT OF DOMAIN" in t.get_text() and "red frame" in t.get_text() for t in fig.texts)   # the legend


def test_run_knows_its_domain_and_abstains_on_real_scanner_files(trained, tmp_path):
    """Trained on synthetic slices, the run calls pydicom's real Toshiba / Philips / Siemens MR files
    out of its domain, keeps held-out slices of its own kind in, and abstains when asked."""
    from pydicom.data import get_testdata_file

    _, run, _ = trained
    assert (run / "domain.json").exists() and (run / "calibration.json").exists()
    real = [get_testdata_file(n) for n in ("MR_small.dcm", "MR2_J2KR.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm")]
    res = predict_paths(run, real, out=tmp_path / "real.csv", progress=False, abstain=True,
                        figure=tmp_path / "real.png")
    assert res.n_out_of_domain == 3
    assert (tmp_path / "real.png").stat().st_size > 0
    series = res.series
    assert (series["manufacturer"] == "unknown").all() and series["tr_ms"].isna().all()
    toshiba = series[series["source"].str.endswith("MR_small.dcm")].iloc[0]
    assert "manufacturer=TOSHIBA not in the training vocabulary" in toshiba["header_unseen"]
    assert "OUTSIDE the training domain" in res.summary()
    # the headers alone would do it (TOSHIBA, Philips, SIEMENS values the run never saw) ...
    assert series["domain_reason"].str.contains("header").all()
    # ... and so does the image evidence alone: with header misses only a warning, all three stay out
    from mridomain.iap.domain import DomainRule

    image_only = predict_paths(run, real, out=None, progress=False, rule=DomainRule(header_miss="warn")).series
    assert (~image_only["in_domain"]).all() and (image_only["domain_reason"] == "image").all()
    # route judges with the same function: the same files go to no model, with the same reasons
    from mridomain.iap import route

    models = {"GE": lambda x: np.zeros(len(x), int), "SIEMENS": lambda x: np.ones(len(x), int)}
    routed = route(real, run, models, unknown="most_likely", abstain=True, progress=False)
    assert (routed["routed_by"] == "out_of_domain").all() and routed["model"].isna().all()
    assert routed["domain_reason"].str.contains("header").all()
    # held-out slices drawn like the training ones (another seed) stay inside
    from test_iap_utils import synthetic_images

    rng = np.random.default_rng(11)
    own = synthetic_images(np.array(["GE", "SIEMENS"] * 10), np.array(["FFP"] * 10 + ["HFP"] * 10), 32, rng)
    p = IAPPredictor.load(run)
    out = p.forward(own)
    assert out.in_domain.mean() >= 0.9


def test_training_without_calibration_leaves_it_for_the_calibrate_command(trained, tmp_path):
    """train(calibrate=False) / --no-calibrate writes no trust files and says nothing false about
    them; `mridomain calibrate RUN` then adds them, and top-1 answers do not move."""
    from typer.testing import CliRunner

    from mridomain.cli import app

    cache, _, _ = trained
    run = tmp_path / "quick"
    result = CliRunner().invoke(app, ["train", str(cache), "-o", str(run), "--epochs", "1", "--no-calibrate"])
    assert result.exit_code == 0, result.output
    trust_files = ("calibration.json", "domain.json", "combinations.json")
    assert not any((run / name).exists() for name in trust_files)
    before = evaluate(run, split="test", out=tmp_path / "before", progress=False, html=False)
    assert any("no calibration.json" in note for note in before.notes)
    result = CliRunner().invoke(app, ["calibrate", str(run)])
    assert result.exit_code == 0, result.output
    assert all((run / name).exists() for name in trust_files)
    after = evaluate(run, split="test", out=tmp_path / "after", progress=False, html=False)
    assert [r.get("top1") for r in after.rows] == [r.get("top1") for r in before.rows]
