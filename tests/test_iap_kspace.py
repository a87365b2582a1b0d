"""The k-space view (mridomain.data.kspace) through cache, run folder and predict, and the
left-right awareness of IAP training (issue 28, parts 1-2)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mridomain.data.kspace import append_view, kspace_profiles, kspace_view_spec, split_view
from mridomain.errors import InvalidArgumentError

SPEC = kspace_view_spec(True, 224, 224)
#: the magnitude's profiles alone (rows 0-1 of SPEC's view): what the edge tests below read
MAGNITUDE = kspace_view_spec({"sources": ["magnitude"]}, 224, 224)


def _object(n: int) -> np.ndarray:
    """A smooth-edged two-ellipse phantom on an n x n grid (an anatomy-like spectrum)."""
    yy, xx = np.mgrid[:n, :n] / n
    return (((((yy - .5) / .35) ** 2 + ((xx - .45) / .3) ** 2) <= 1) * 1.0
            + 0.5 * (((((yy - .6) / .1) ** 2 + ((xx - .6) / .15) ** 2) <= 1)))


def _acquire(n: int, window: int | None, seed: int = 0) -> np.ndarray:
    """The stored magnitude image of an n x n reconstruction of a ``window``-sample acquisition
    (zero-filled beyond it; None = the full n samples), with complex k-space noise."""
    rng = np.random.default_rng(seed)
    kspace = np.fft.fft2(_object(n)) + 5.0 * (rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n)))
    if window is not None:
        k = np.abs(np.fft.fftfreq(n) * n)
        kspace[(k[:, None] >= window / 2) | (k[None, :] >= window / 2)] = 0
    return np.abs(np.fft.ifft2(kspace))


def test_view_separates_a_zero_filled_256_window_from_a_full_512_acquisition():
    zero_filled, full = kspace_profiles(_acquire(512, 256), SPEC), kspace_profiles(_acquire(512, None), SPEC)
    edge = 128 // 2          # |k| = 128 cycles per FOV at 2 cycles per bin
    for p in (zero_filled, full):
        assert p.shape == (4, 224) and p.dtype == np.float32 and p.max() == 0.0
    np.testing.assert_array_equal(zero_filled[:2], kspace_profiles(_acquire(512, 256), MAGNITUDE))
    zero_filled, full = zero_filled[:2], full[:2]     # the magnitude's rows
    # inside the window the two spectra agree; beyond its edge the zero-filled one falls away
    assert np.abs(zero_filled[:, 5:edge - 4] - full[:, 5:edge - 4]).mean() < 0.3
    drop = full[:, edge + 8:126].mean(axis=1) - zero_filled[:, edge + 8:126].mean(axis=1)
    assert (drop > 0.8).all(), drop
    # the same pictures resized to 224 (what the image input sees) no longer differ there
    from mridomain.data.cache import resize

    small = [kspace_profiles(resize(a, 224), MAGNITUDE) for a in (_acquire(512, 256), _acquire(512, None))]
    assert (np.abs(small[0][:, edge + 8:110] - small[1][:, edge + 8:110]).mean() <
            np.abs(zero_filled[:, edge + 8:110] - full[:, edge + 8:110]).mean() / 3)


def test_view_bins_absolute_frequency_so_the_grid_end_shows():
    p = kspace_profiles(_acquire(320, None), SPEC)
    # a 320-pixel grid ends at |k| = 160 (bin 80); bins past it hold the floor
    assert (p[:, 81:] == np.float32(np.log10(SPEC["floor"]))).all()
    assert (p[:, :80] > np.log10(SPEC["floor"])).all()
    # the view is the same for a left-right or up-down mirror: it carries no patient position
    img = _acquire(320, 256)
    np.testing.assert_allclose(kspace_profiles(img[:, ::-1], SPEC), kspace_profiles(img, SPEC), atol=1e-5)
    np.testing.assert_allclose(kspace_profiles(img[::-1], SPEC), kspace_profiles(img, SPEC), atol=1e-5)


def test_view_is_intensity_scale_free_and_packs_below_the_image():
    img = _acquire(256, 200)
    np.testing.assert_allclose(kspace_profiles(7.5 * img, SPEC), kspace_profiles(img, SPEC), atol=1e-5)
    assert (kspace_profiles(np.zeros((64, 64)), SPEC) == np.float32(np.log10(SPEC["floor"]))).all()
    view = kspace_profiles(img, SPEC)
    packed = append_view(np.ones((224, 224)), view)
    assert packed.shape == (228, 224)
    image, back = split_view(packed[None], SPEC)
    assert image.shape == (1, 224, 224) and np.array_equal(back[0], view)
    with pytest.raises(InvalidArgumentError, match="k-space view"):
        split_view(np.ones((1, 224, 224)), SPEC)          # an image without its view is refused
    assert split_view(np.ones((1, 224, 224)), None)[1] is None
    with pytest.raises(InvalidArgumentError, match="bins"):
        kspace_view_spec({"bins": 100}, 224)


def test_preprocess_slices_computes_the_view_at_native_resolution():
    from mridomain.data.cache import preprocess_slices

    raw = _acquire(512, 256)
    out = preprocess_slices(raw, 224, "max255", SPEC)
    assert out.shape == (1, 228, 224)
    np.testing.assert_array_equal(out[0, 224:], kspace_profiles(raw.astype(np.float32), SPEC))
    np.testing.assert_array_equal(out[0, :224], preprocess_slices(raw, 224, "max255")[0])


def _dicom_series(folder, n_files: int, window: int | None, seed: int) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True)
    series = generate_uid()
    for k in range(n_files):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{k}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "MR", f"P{seed}", generate_uid(), series
        ds.InstanceNumber, ds.ImagePositionPatient = k + 1, [0, 0, float(k)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        img = _acquire(256, window, seed + k)
        img = (img / img.max() * 4000).astype(np.uint16)
        ds.Rows, ds.Columns = img.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = img.tobytes()
        ds.save_as(folder / f"{k}.dcm", enforce_file_format=True)


def _tiny_run(tmp_path, kspace_view: bool, spec: dict | None = None, **overrides):
    """A cache with the view (from arrays: one window per class; ``spec``: the view's spec, by
    default this release's) and a 1-epoch run on it."""
    from mridomain.data import write_slice_cache
    from mridomain.data.cache import preprocess_slices
    from mridomain.iap import train

    raws, labels = [], []
    for i in range(24):
        window = (160, None)[i % 2]
        raws.append(_acquire(256, window, seed=i))
        labels.append(["160 X 160", "256 X 256"][i % 2])
    spec = spec or kspace_view_spec(True, 32, 32)
    images = np.concatenate([preprocess_slices(r, 32, "max255", spec) for r in raws])
    table = pd.DataFrame({"split": (["train"] * 3 + ["val"]) * 6, "acquisition_matrix": labels,
                          "patient_id": [f"P{i}" for i in range(24)]})
    cache = write_slice_cache(tmp_path / "cache", images, table,
                              [{"name": "acquisition_matrix", "kind": "categorical"}], kspace_view=spec)
    run = tmp_path / f"run_{int(kspace_view)}"
    train(cache, run, preset="cpu", epochs=1, progress=False, batch_size=8, width=4, input_size=32,
          continuous_iaps=(), kspace_view=kspace_view, **overrides)
    return cache, run, raws


def test_preprocess_json_round_trips_the_view_to_predict(tmp_path):
    from mridomain.iap import IAPPredictor
    from mridomain.iap.checkpoint import read_run

    cache, run, raws = _tiny_run(tmp_path, kspace_view=True)
    _, _, preprocess = read_run(run)
    assert preprocess["kspace_view"] == json.loads((cache / "meta.json").read_text())["kspace_view"]
    predictor = IAPPredictor.load(run)
    assert predictor.model.uses_kspace
    # raw arrays, the stored cache slices and DICOM files give the network the same inputs
    from_raw = predictor.forward(predictor._images(np.stack(raws[:4]), preprocessed=False))
    from_cache = predictor.forward(np.asarray(np.load(cache / "images.npy")[:4], np.float32))
    np.testing.assert_allclose(from_raw.features, from_cache.features, atol=0.05)
    _dicom_series(tmp_path / "dicom", 2, 160, seed=0)
    table = predictor.predict(tmp_path / "dicom")
    assert len(table) == 2 and set(table["acquisition_matrix"]) <= {"160 X 160", "256 X 256", "other"}
    direct = predictor.forward(predictor._images(tmp_path / "dicom", preprocessed=False))
    assert direct.features.shape[1] == predictor.model.feature_dim
    # the view's features change when only the outer k-space changes
    zf = predictor.forward(predictor._images(_acquire(256, 160, 5)[None], preprocessed=False)).features
    fl = predictor.forward(predictor._images(_acquire(256, None, 5)[None], preprocessed=False)).features
    assert not np.allclose(zf[:, -64:], fl[:, -64:])
    # a bad view in preprocess.json is a one-line error naming the file
    bad = json.loads((run / "preprocess.json").read_text())
    bad["kspace_view"]["bins"] = 7
    (run / "preprocess.json").write_text(json.dumps(bad))
    from mridomain.errors import SchemaMismatchError

    with pytest.raises(SchemaMismatchError, match="preprocess.json"):
        read_run(run)


def test_a_run_without_the_view_reads_the_same_cache(tmp_path):
    from mridomain.iap import IAPPredictor

    cache, run, raws = _tiny_run(tmp_path, kspace_view=False)
    predictor = IAPPredictor.load(run)
    assert not predictor.model.uses_kspace
    assert predictor.preprocess["kspace_view"]      # the stored layout is still image + view rows
    out = predictor.forward(predictor._images(np.stack(raws[:3]), preprocessed=False))
    assert out.features.shape == (3, predictor.model.feature_dim)


def test_network_inputs_are_named_and_the_view_is_required():
    from mridomain.iap.model import IAPNet

    net = IAPNet(5, backbone="smallcnn", input_size=32, width=4, kspace_bins=32).eval()
    image, kspace = torch.rand(2, 1, 32, 32), torch.rand(2, 2, 32)
    assert net(image=image, kspace=kspace).shape == (2, 5)
    with pytest.raises(InvalidArgumentError, match="k-space view"):
        net(image=image)
    plain = IAPNet(5, backbone="smallcnn", input_size=32, width=4).eval()
    assert plain(image=image).shape == (2, 5)


# ---- left-right awareness (part 2) ----


def test_no_augmentation_or_layer_hides_a_left_right_mirror():
    """Patient position is stored as a left-right mirror: the cpu preset's training must not
    flip left-right without relabelling, and its network must tell a slice from its mirror."""
    from mridomain.iap.config import get_preset
    from mridomain.iap.model import IAPNet
    from mridomain.iap.training import MemmapBatches

    cpu = get_preset("cpu")
    # the only left-right flip is mirror augmentation, which swaps the position label
    assert cpu.mirror_augment
    images = np.random.default_rng(1).random((64, 12, 8)).astype(np.float32)
    spec = kspace_view_spec(True, 8, 8)
    cat = np.zeros((64, 1), np.int64)
    ds = MemmapBatches(images, np.arange(64), cat, np.zeros((64, 0), np.float32), 64, shuffle=False,
                       seed=0, augment=True, mirror=None, kspace_view=spec)
    x, view, _, _ = ds[0]
    x = x.numpy()[:, 0]
    # ``augment`` flips up-down only (every IAP is unchanged by that); the view rows stay put
    for i in range(64):
        assert np.array_equal(x[i], images[i, :8]) or np.array_equal(x[i], images[i, :8][::-1])
    np.testing.assert_array_equal(view.numpy(), images[:, 8:])
    # the network: a slice and its mirror give different features (pooling keeps the layout)
    net = IAPNet(3, backbone="smallcnn", input_size=64, width=4, texture_stats=True, residual_input=True).eval()
    img = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        a, b = net.embed(img), net.embed(torch.flip(img, dims=[-1]))
    assert not torch.allclose(a, b, atol=1e-4)


def test_mirror_augmentation_flips_the_image_not_the_view():
    from mridomain.iap.training import MemmapBatches

    rng = np.random.default_rng(0)
    images = rng.random((40, 12, 8)).astype(np.float32)
    spec = kspace_view_spec(True, 8, 8)
    cat = np.array([[0], [1]] * 20, dtype=np.int64)
    ds = MemmapBatches(images, np.arange(40), cat, np.zeros((40, 0), np.float32), 40, shuffle=False,
                       seed=3, mirror=(0, np.array([1, 0])), kspace_view=spec)
    x, view, c, _ = ds[0]
    x, c = x.numpy()[:, 0], c.numpy()[:, 0]
    mirrored = np.array([np.array_equal(x[i], images[i, :8, ::-1]) for i in range(40)])
    assert 8 < mirrored.sum() < 32
    np.testing.assert_array_equal(c[mirrored], 1 - cat[mirrored, 0])
    np.testing.assert_array_equal(view.numpy(), images[:, 8:])


def test_onnx_export_of_the_two_input_network_matches_torch(tmp_path):
    """The k-space network exports with both named inputs, and ONNX Runtime gives PyTorch's
    predictions on raw arrays and on DICOM (the engines share one input path)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from mridomain.iap import IAPRun
    from mridomain.iap.runtime import ONNX_FILE

    cache, run, raws = _tiny_run(tmp_path, kspace_view=True)
    record = json.loads((run / (ONNX_FILE + ".json")).read_text())
    assert [i["name"] for i in record["inputs"]] == ["image", "kspace"]
    assert record["inputs"][1]["shape"] == ["batch", 4, 32]
    torch_run, onnx_run = IAPRun.load(run, engine="torch"), IAPRun.load(run, engine="onnx")
    assert onnx_run.engine_note.startswith("engine: onnx")
    stored = np.asarray(np.load(cache / "images.npy"), np.float32)
    a, b = torch_run.forward(stored), onnx_run.forward(stored)
    np.testing.assert_allclose(b.features, a.features, atol=1e-4, rtol=1e-4)
    for name in a.probabilities:
        np.testing.assert_allclose(b.probabilities[name], a.probabilities[name], atol=1e-4)


def _profiles_from_the_full_spectrum(img: np.ndarray, spec: dict) -> np.ndarray:
    """The view as the module docstring defines it, computed the slow way: the full fft2 power,
    summed over each axis, averaged per |k| bin over every signed frequency."""
    x = np.asarray(img, np.float64)
    return np.concatenate([_source_from_the_full_spectrum(x * x if source == "squared_magnitude" else x, spec)
                           for source in spec["sources"]])


def _source_from_the_full_spectrum(img: np.ndarray, spec: dict) -> np.ndarray:
    power = np.abs(np.fft.fft2(img)) ** 2
    bins, width, floor = spec["bins"], spec["cycles_per_bin"], spec["floor"]
    out = np.full((2, bins), np.log10(floor))
    for row, (profile, n) in enumerate(((power.sum(axis=0), img.shape[1]), (power.sum(axis=1), img.shape[0]))):
        k = np.abs(np.fft.fftfreq(n) * n)
        for b in range(bins):
            members = (k >= b * width) & (k < (b + 1) * width)
            if members.any():
                out[row, b] = profile[members].mean()
        measured = out[row] != np.log10(floor)
        out[row, measured] = np.log10(np.maximum(out[row, measured] / out[row, measured].max(), floor))
    return out


@pytest.mark.parametrize("shape", [(64, 64), (63, 50), (48, 81), (130, 96)])
def test_half_spectrum_view_equals_the_full_spectrum_definition(shape):
    rng = np.random.default_rng(sum(shape))
    img = rng.gamma(2.0, 50.0, size=shape) * np.hanning(shape[1])[None, :]
    spec = kspace_view_spec(True, 40, image_rows=40) | {"cycles_per_bin": 1.5}
    np.testing.assert_allclose(kspace_profiles(img, spec), _profiles_from_the_full_spectrum(img, spec), atol=1e-5)


# ---- the squared magnitude's profiles ----


def _phase_varying_magnitude(n: int, window: int, store: bool = True, seed: int = 0) -> np.ndarray:
    """The stored magnitude of a complex object whose phase varies (a fat-like region shifted by
    -188 degrees, as at TE 2.4 ms at 1.5 T, and a smooth off-resonance ramp), acquired with a
    ``window``-sample k-space window, complex noise inside it, zero-filled to n x n and stored as
    whole numbers up to 4000."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n] / n
    fat = (((yy - .45) / .3) ** 2 + ((xx - .5) / .38) ** 2 <= 1) & ~((((yy - .45) / .2) ** 2 + ((xx - .5) / .25) ** 2) <= 1)
    obj = _object(n) * np.exp(1j * (2.0 * np.pi * (xx - .5) ** 2 + 0.6 * yy)) + 0.8 * fat * np.exp(-1j * np.deg2rad(188))
    kspace = np.fft.fft2(obj) + 3.0 * (rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n)))
    k = np.abs(np.fft.fftfreq(n) * n)
    kspace[(k[:, None] >= window / 2) | (k[None, :] >= window / 2)] = 0
    magnitude = np.abs(np.fft.ifft2(kspace))
    return np.round(magnitude / magnitude.max() * 4000) if store else magnitude


def test_the_squared_magnitude_keeps_the_window_edge_that_the_magnitude_smears():
    """A 160-sample window on a 512 grid: the magnitude of a phase-varying image spreads past the
    window's edge (|k| = 80, bin 40), while its square is the window's autocorrelation and stops
    at |k| = 160 (bin 80), up to the rounding of the stored whole numbers."""
    view = kspace_profiles(_phase_varying_magnitude(512, 160), SPEC)
    magnitude, squared = view[:2], view[2:]
    # the step across each edge, mean log power of 8 bins outside minus 8 inside
    step_magnitude = magnitude[:, 42:50].mean(axis=1) - magnitude[:, 30:38].mean(axis=1)
    step_squared = squared[:, 82:90].mean(axis=1) - squared[:, 70:78].mean(axis=1)
    assert (step_magnitude > -1.0).all(), step_magnitude        # measured -0.69, -0.91
    assert (step_squared < -2.0).all(), step_squared            # measured -2.24, -2.33
    assert (step_squared < step_magnitude - 1.2).all()
    # without the rounding of stored whole numbers the square has nothing past its edge: the floor
    exact = kspace_profiles(_phase_varying_magnitude(512, 160, store=False), SPEC)[2:]
    assert (exact[:, 82:128] < -9.9).all(), exact[:, 82:128].max(axis=1)


def test_a_rotated_slice_swaps_each_sources_profiles():
    from mridomain.data.kspace import swap_axes

    img = _phase_varying_magnitude(256, 200, seed=2)[:, :200]           # not square: rows != columns
    np.testing.assert_allclose(kspace_profiles(np.rot90(img), SPEC), swap_axes(kspace_profiles(img, SPEC)), atol=1e-5)
    assert np.array_equal(swap_axes(np.arange(8).reshape(4, 2)), np.array([[2, 3], [0, 1], [6, 7], [4, 5]]))


def test_a_stored_view_without_sources_is_the_magnitude_view_it_always_was():
    """Caches and runs written before the squared profiles have a spec without ``sources``: they
    keep their 2 rows and their exact values, so their networks read what they were trained on."""
    from mridomain.data.kspace import view_rows

    stored = {k: v for k, v in SPEC.items() if k not in ("sources", "profiles", "layout")}
    old = kspace_view_spec(stored, 224, 224)
    assert old["sources"] == ["magnitude"] and old["profiles"] == ["abs_kx", "abs_ky"] and view_rows(stored) == 2
    img = _acquire(320, 256)
    np.testing.assert_array_equal(kspace_profiles(img, stored), kspace_profiles(img, SPEC)[:2])
    assert split_view(np.ones((3, 226, 224)), stored)[1].shape == (3, 2, 224)
    assert SPEC["sources"] == ["magnitude", "squared_magnitude"] and view_rows(SPEC) == 4
    for bad in ([], ["phase"], "magnitude", ["magnitude", "magnitude"]):
        with pytest.raises(InvalidArgumentError, match="sources"):
            kspace_view_spec({"sources": bad}, 224)


# ---- the k-space branch's forms ----


@pytest.mark.parametrize("kind", ["mlp", "linear", "mlp+linear"])
def test_each_kspace_branch_gives_its_features_and_only_linear_is_affine(kind):
    from mridomain.iap.model import KSPACE_FEATURES, KSpaceBranch

    torch.manual_seed(0)
    branch = KSpaceBranch(16, rows=4, kind=kind)
    branch.train()
    branch(torch.randn(64, 4, 16) * 3 - 5)          # batch statistics for the standardization
    branch.eval()
    a, b = torch.randn(2, 8, 4, 16)
    fa, fb, mid = branch(a), branch(b), branch((a + b) / 2)
    assert fa.shape == (8, KSPACE_FEATURES)
    affine = torch.allclose(mid, (fa + fb) / 2, atol=1e-5)
    assert affine == (kind == "linear")
    with pytest.raises(InvalidArgumentError, match="k-space branch"):
        KSpaceBranch(16, kind="conv")


def test_a_run_saved_before_the_branch_kind_loads_as_the_mlp_it_was(tmp_path):
    """config.json of earlier runs has no kspace_branch: it must load as the "mlp" branch it was
    trained with, with the same weights and answers; the kind a run was trained with is saved."""
    from mridomain.iap import IAPPredictor

    cache, run, raws = _tiny_run(tmp_path, kspace_view=True, kspace_branch="mlp")
    before = IAPPredictor.load(run).forward(np.asarray(np.load(cache / "images.npy")[:6], np.float32))
    config = json.loads((run / "config.json").read_text())
    assert config["kspace_branch"] == "mlp"
    del config["kspace_branch"]
    (run / "config.json").write_text(json.dumps(config))
    predictor = IAPPredictor.load(run)
    assert predictor.model.kspace.kind == "mlp"
    after = predictor.forward(np.asarray(np.load(cache / "images.npy")[:6], np.float32))
    np.testing.assert_array_equal(after.features, before.features)
    # the same weights under another kind do not fit: a one-line error naming the weights file
    config["kspace_branch"] = "linear"
    (run / "config.json").write_text(json.dumps(config))
    from mridomain.errors import SchemaMismatchError

    with pytest.raises(SchemaMismatchError, match="safetensors"):
        IAPPredictor.load(run)


def test_a_run_on_a_cache_from_before_the_squared_profiles_predicts_as_it_was_trained(tmp_path):
    """A cache and run written before ``sources`` existed: their spec has no sources, their slices
    two view rows. Training, the run folder and predict on raw arrays must keep that layout."""
    from mridomain.iap import IAPPredictor

    legacy = {k: v for k, v in kspace_view_spec(True, 32, 32).items() if k not in ("sources", "profiles", "layout")}
    cache, run, raws = _tiny_run(tmp_path, kspace_view=True, spec=legacy, kspace_branch="mlp")
    assert np.load(cache / "images.npy").shape[1:] == (34, 32)
    predictor = IAPPredictor.load(run)
    assert predictor.preprocess["kspace_view"] == legacy        # the run records the cache's spec as it is
    assert predictor.model.kspace.rows == 2
    from_raw = predictor.forward(predictor._images(np.stack(raws[:4]), preprocessed=False))
    from_cache = predictor.forward(np.asarray(np.load(cache / "images.npy")[:4], np.float32))
    np.testing.assert_allclose(from_raw.features, from_cache.features, atol=0.05)
