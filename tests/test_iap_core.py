"""IAP unit tests: config, label encoding, masked loss of eq. (1), output size, Table 1 metrics.

Expected values are hand computations, never outputs of the code under test.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from mridomain.errors import SchemaMismatchError
from mridomain.iap import IGNORE_INDEX, PRESETS, IAPConfig, LabelEncoder, build_model, compute_report, iap_loss
from mridomain.iap.evaluation import aggregate_by_group, regression_metrics, topk_accuracy

IAPS = [{"name": "manufacturer", "kind": "categorical", "unit": None},
        {"name": "field_strength", "kind": "categorical", "unit": "T"},
        {"name": "tr", "kind": "continuous", "unit": "ms"}]


def _table():
    return pd.DataFrame({
        "split": ["train", "train", "train", "train", "val", "test", "test"],
        "manufacturer": ["SIEMENS", "GE", "GE", None, "PHILIPS", "GE", float("nan")],
        "field_strength": ["3", "1.5", "1.494", "3", "1.5", "7", "3"],
        "tr": [4.0, 6.0, np.nan, 5.0, 5.0, 6.0, None],
    })


def test_presets_follow_the_paper_and_round_trip():
    p = PRESETS["paper"]
    assert (p.backbone, p.lr, p.weight_decay, p.batch_size, p.epochs, p.input_size) == \
        ("resnet18", 1e-3, 1e-4, 512, 100, 224)
    assert p.lam == 1.0 and p.eta == 1.0 and p.augment is False
    cfg = PRESETS["cpu"].updated(iaps_as_continuous=("flip_angle",), patience=3)
    assert IAPConfig.from_json(cfg.to_json()) == cfg


def test_label_encoder_vocab_from_train_only_unseen_other_missing_masked():
    t = _table()
    enc = LabelEncoder.fit(t, IAPS)
    man, fs = enc.head("manufacturer"), enc.head("field_strength")
    assert man.classes == ["GE", "SIEMENS", "other"]            # PHILIPS is only in val
    assert fs.classes == ["1.494", "1.5", "3", "other"]          # numeric order, "7" only in test
    assert man.counts == [2, 1, 0]
    cat, cont = enc.encode(t)
    assert cat[:, 0].tolist() == [1, 0, 0, IGNORE_INDEX, 2, 0, IGNORE_INDEX]
    assert cat[:, 1].tolist() == [2, 1, 0, 2, 1, 3, 2]
    # train TR values 4, 6, 5 (NaN ignored): mean 5, population std sqrt(2/3)
    sd = math.sqrt(2 / 3)
    np.testing.assert_allclose(cont[[0, 1, 3, 5], 0], [-1 / sd, 1 / sd, 0, 1 / sd], rtol=1e-6)
    assert np.isnan(cont[2, 0]) and np.isnan(cont[6, 0])
    np.testing.assert_allclose(enc.to_units(np.array([[1.0]])), [[5 + sd]])
    assert enc.n_outputs == 3 + 4 + 1
    assert LabelEncoder.from_json(enc.to_json()) == enc


def test_dense_iap_as_continuous():
    t = _table()
    enc = LabelEncoder.fit(t, IAPS, as_continuous={"field_strength"})
    h = enc.head("field_strength")
    assert h.kind == "continuous" and h.source_kind == "categorical"
    # train values 3, 1.5, 1.494, 3 -> mean 2.2485
    assert h.mean == pytest.approx((3 + 1.5 + 1.494 + 3) / 4)
    assert enc.n_outputs == 3 + 1 + 1


def test_schema_mismatch_is_one_line():
    enc = LabelEncoder.fit(_table(), IAPS)
    with pytest.raises(SchemaMismatchError) as err:
        enc.check_schema([{"name": "manufacturer", "kind": "categorical"}, {"name": "te", "kind": "continuous"}],
                         where="other/meta.json", mine="run/labels.json")
    msg = str(err.value)
    assert "\n" not in msg and "run/labels.json" in msg and "other/meta.json" in msg and "field_strength" in msg


@pytest.mark.parametrize("backbone", ["resnet18", "smallcnn"])
@pytest.mark.parametrize("texture_stats,residual_input", [(False, False), (True, True)])
def test_output_layer_is_sum_ck_plus_m(backbone, texture_stats, residual_input):
    enc = LabelEncoder.fit(_table(), IAPS)
    cfg = IAPConfig(backbone=backbone, input_size=32, width=4, texture_stats=texture_stats,
                    residual_input=residual_input)
    model = build_model(cfg, enc)
    assert model.head.out_features == 3 + 4 + 1
    out = model.eval()(torch.rand(2, 1, 40, 40))
    assert out.shape == (2, 8)
    assert model.embed(torch.rand(2, 1, 32, 32)).shape == (2, model.feature_dim)


def test_channel_statistics_by_hand():
    from mridomain.iap.model import channel_statistics
    x = torch.tensor([[[[1.0, 3.0], [1.0, 3.0]], [[0.0, 0.0], [0.0, 8.0]]]])   # (1, 2, 2, 2)
    # channel 0: mean 2, population std 1; channel 1: mean 2, std sqrt((3 * 4 + 36) / 4) = sqrt(12)
    assert torch.allclose(channel_statistics(x), torch.tensor([[2.0, 2.0, 1.0, math.sqrt(12)]]))
    # a channel a ReLU switched off for the whole image has std 0: its gradient must stay finite
    dead = torch.zeros(1, 2, 3, 3, requires_grad=True)
    channel_statistics(dead).sum().backward()
    assert torch.isfinite(dead.grad).all()


def test_texture_statistics_follow_the_texture_not_where_it_is():
    """The pooled stage statistics barely move when the content moves, but do when its texture changes."""
    enc = LabelEncoder.fit(_table(), IAPS)
    torch.manual_seed(0)
    model = build_model(IAPConfig(backbone="smallcnn", input_size=192, width=4, texture_stats=True), enc).eval()
    layout = 4 * 8 * 4
    assert model.feature_dim == layout + 2 * 15 * 4
    x = torch.zeros(1, 1, 192, 192)
    x[..., 48:80, 48:80] = 10 * torch.rand(32, 32)
    # a shift the total stride (16) divides, far enough from the borders that no padding is seen
    moved = torch.roll(x, shifts=(64, 64), dims=(-2, -1))
    noisier = x.clone()
    noisier[..., 48:80, 48:80] += 3 * torch.randn(32, 32)

    @torch.no_grad()
    def texture_change(other: torch.Tensor) -> float:
        a, b = model.embed(x)[:, layout:], model.embed(other)[:, layout:]
        return float((a - b).norm() / a.norm())

    assert texture_change(moved) < 1e-4
    assert texture_change(noisier) > 100 * texture_change(moved)


def test_residual_input_channel_is_the_image_minus_its_local_mean():
    enc = LabelEncoder.fit(_table(), IAPS)
    cfg = IAPConfig(backbone="smallcnn", input_size=16, width=4, residual_input=True)
    model = build_model(cfg, enc, in_mean=2.0, in_std=4.0)
    x = torch.full((1, 16, 16), 6.0)
    x[0, 5, 7] = 15.0                                              # standardized: 1.0 and 3.25
    prepared = model.prepare(x)
    assert prepared.shape == (1, 2, 16, 16)
    assert torch.allclose(prepared[0, 0, 0, 0], torch.tensor(1.0))
    # centre of the 3 x 3 window: 3.25 - (8 * 1.0 + 3.25) / 9 = 2.0; flat regions: 0
    assert torch.allclose(prepared[0, 1, 5, 7], torch.tensor(2.0))
    assert torch.allclose(prepared[0, 1, 12, 2], torch.tensor(0.0))
    assert model(torch.rand(3, 16, 16)).shape == (3, enc.n_outputs)


def test_masked_loss_matches_hand_calculation():
    enc = LabelEncoder.fit(_table(), IAPS)                        # heads: 3 + 4 classes, 1 continuous
    out = torch.zeros(3, 8)
    out[:, 7] = torch.tensor([1.0, 2.0, 3.0])                      # standardized TR predictions
    cat = torch.tensor([[0, 1], [IGNORE_INDEX, 2], [1, IGNORE_INDEX]])
    cont = torch.tensor([[1.0], [float("nan")], [1.0]])
    loss, terms = iap_loss(out, cat, cont, enc)
    # zero logits: every CE is log(C); MSE over labelled rows: ((1-1)^2 + (3-1)^2) / 2 = 2
    assert terms["manufacturer"] == pytest.approx(math.log(3))
    assert terms["field_strength"] == pytest.approx(math.log(4))
    assert terms["tr"] == pytest.approx(2.0)
    assert float(loss) == pytest.approx(math.log(3) + math.log(4) + 2.0)
    loss2, _ = iap_loss(out, cat, cont, enc, lam=2.0, eta=0.5)
    assert float(loss2) == pytest.approx(2 * (math.log(3) + math.log(4)) + 1.0)


def test_masked_loss_equals_functional_terms_on_labelled_rows():
    torch.manual_seed(0)
    enc = LabelEncoder.fit(_table(), IAPS)
    out = torch.randn(5, 8)
    cat = torch.tensor([[0, 1], [1, IGNORE_INDEX], [IGNORE_INDEX, 3], [2, 0], [0, 2]])
    cont = torch.tensor([[0.5], [float("nan")], [-1.0], [2.0], [float("nan")]])
    loss, _ = iap_loss(out, cat, cont, enc)
    keep_a, keep_b, keep_c = [0, 1, 3, 4], [0, 2, 3, 4], [0, 2, 3]
    expected = (F.cross_entropy(out[keep_a, 0:3], cat[keep_a, 0])
                + F.cross_entropy(out[keep_b, 3:7], cat[keep_b, 1])
                + F.mse_loss(out[keep_c, 7], cont[keep_c, 0]))
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    # a term without any label in the batch contributes 0, and gradients still flow
    out.requires_grad_(True)
    loss3, terms3 = iap_loss(out, torch.full((5, 2), IGNORE_INDEX), cont, enc)
    assert set(terms3) == {"tr"}
    loss3.backward()
    assert torch.isfinite(out.grad).all()


def test_topk_and_regression_by_hand():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.3, 0.5], [0.9, 0.05, 0.05]])
    t = np.array([0, 0, 1, IGNORE_INDEX])
    assert topk_accuracy(probs, t, 1) == (pytest.approx(1 / 3), 3)
    assert topk_accuracy(probs, t, 2) == (pytest.approx(2 / 3), 3)
    m = regression_metrics(np.array([5.0, 5.2, 4.0, 4.05]), np.array([5.05, 5.0, 4.0, np.nan]))
    assert m["n"] == 3
    assert m["mse"] == pytest.approx((0.05 ** 2 + 0.2 ** 2) / 3)
    assert m["mae"] == pytest.approx(0.25 / 3)
    assert m["within"] == pytest.approx(2 / 3)          # 0.99 % and 0 % are inside 2 %, 4 % is not
    keys, means = aggregate_by_group(probs, np.array(["b", "a", "b", "a"]))
    assert keys.tolist() == ["a", "b"]
    np.testing.assert_allclose(means, [[0.5, 0.325, 0.175], [0.35, 0.3, 0.35]])


def test_report_on_made_up_predictions():
    train = pd.DataFrame({"split": ["train"] * 8, "series_uid": list("abcdefgh"),
                          "cls": list("AAAAABBC"), "tr": [4.0, 5.0, 6.0, 5.0, 5.0, 5.0, 5.0, 5.0]})
    enc = LabelEncoder.fit(train, [{"name": "cls", "kind": "categorical"}, {"name": "tr", "kind": "continuous",
                                                                         "unit": "ms"}])
    test = pd.DataFrame({"series_uid": ["X", "X", "Y", "Y"], "cls": ["A", "A", "B", None],
                         "tr": [5.05, 5.0, 4.0, np.nan]})
    probs = {"cls": np.array([[0.5, 0.3, 0.2, 0.0], [0.1, 0.6, 0.3, 0.0], [0.2, 0.3, 0.5, 0.0],
                              [0.1, 0.7, 0.2, 0.0]]),
             "tr": np.array([5.0, 5.2, 4.0, 4.05])}
    rep = compute_report(probs, test, enc)
    c = rep.row("cls")
    assert c["n"] == 3 and c["n_classes"] == 3
    assert c["top1"] == pytest.approx(1 / 3) and c["top2"] == pytest.approx(2 / 3)
    assert c["baseline_top1"] == pytest.approx(2 / 3)    # majority class A: 2 of the 3 labelled slices
    # series X: mean [0.3, 0.45, 0.25] -> B, truth A: wrong; series Y: mean [0.15, 0.5, 0.35] -> B: right
    assert c["series_n"] == 2 and c["series_top1"] == pytest.approx(0.5)
    r = rep.row("tr")
    assert r["n"] == 3 and r["mse"] == pytest.approx((0.05 ** 2 + 0.2 ** 2) / 3)
    assert r["within2"] == pytest.approx(2 / 3)
    # mean predictor: train mean 5.0 -> errors 0.05, 0, 1
    assert r["baseline_mse"] == pytest.approx((0.05 ** 2 + 1.0) / 3)
    # series X: pred mean 5.1 vs truth mean 5.025; series Y: 4.025 vs 4.0
    assert r["series_mse"] == pytest.approx((0.075 ** 2 + 0.025 ** 2) / 2)
    md = rep.to_markdown()
    assert "| cls |" in md.replace("| 1 | cls", "| cls") and "33.33" in md


def test_memmap_batches_pickle_without_copying(tmp_path):
    import pickle

    from mridomain.data import write_slice_cache
    from mridomain.iap.training import MemmapBatches

    imgs = np.random.default_rng(0).random((6, 64, 64)).astype(np.float32)
    t = pd.DataFrame({"split": ["train"] * 6, "manufacturer": list("ABABAB")})
    write_slice_cache(tmp_path / "c", imgs, t, [{"name": "manufacturer", "kind": "categorical"}])
    mm = np.load(tmp_path / "c" / "images.npy", mmap_mode="r")
    ds = MemmapBatches(mm, np.arange(6), np.zeros((6, 1), np.int64), np.zeros((6, 0), np.float32), 4,
                       shuffle=False)
    blob = pickle.dumps(ds)
    assert len(blob) < imgs.nbytes        # the file name travels, not the pixels
    ds2 = pickle.loads(blob)
    assert isinstance(ds2.images, np.memmap)
    np.testing.assert_array_equal(ds2[1][0].numpy()[:, 0], imgs[4:6].astype(np.float16).astype(np.float32))


def test_mirror_relabeling_swaps_head_and_feet_first():
    from mridomain.iap.labels import mirror_relabeling
    table = pd.DataFrame({"split": ["train"] * 5, "patient_position": ["FFP", "HFP", "HFP", "HFS", None]})
    enc = LabelEncoder.fit(table, [{"name": "patient_position", "kind": "categorical"}])
    assert enc.categorical[0].classes == ["FFP", "HFP", "HFS", "other"]
    column, relabel = mirror_relabeling(enc)
    # FFP <-> HFP; HFS's mirror FFS was never seen and "other" has none: both drop out of the loss
    assert column == 0 and relabel.tolist() == [1, 0, IGNORE_INDEX, IGNORE_INDEX]
    assert mirror_relabeling(LabelEncoder.fit(_table(), IAPS)) is None


def test_mirrored_slices_carry_the_mirrored_position():
    from mridomain.iap.training import MemmapBatches
    rng = np.random.default_rng(0)
    images = rng.random((40, 8, 8)).astype(np.float32)
    cat = np.stack([np.arange(40) % 3, np.array([0, 1, IGNORE_INDEX, 2] * 10)], axis=1).astype(np.int64)
    relabel = np.array([1, 0, IGNORE_INDEX], dtype=np.int64)
    ds = MemmapBatches(images, np.arange(40), cat, np.zeros((40, 0), np.float32), 40, shuffle=False,
                       seed=3, mirror=(1, relabel))
    x, view, c, _ = ds[0]
    assert view.shape == (40, 0)                                            # no k-space view in this cache
    x, c = x.numpy()[:, 0], c.numpy()
    mirrored = np.array([np.array_equal(x[i], images[i, :, ::-1]) for i in range(40)])
    kept = np.array([np.array_equal(x[i], images[i]) for i in range(40)])
    assert (mirrored ^ kept).all() and 8 < mirrored.sum() < 32
    np.testing.assert_array_equal(c[:, 0], cat[:, 0])                       # other IAPs untouched
    np.testing.assert_array_equal(c[kept, 1], cat[kept, 1])
    expected = np.where(cat[:, 1] == IGNORE_INDEX, IGNORE_INDEX, relabel[np.maximum(cat[:, 1], 0)])
    np.testing.assert_array_equal(c[mirrored, 1], expected[mirrored])
    assert (cat[:, 1] == np.array([0, 1, IGNORE_INDEX, 2] * 10)).all()      # the source is not modified


def test_mirror_output_map_reads_the_mirror_s_position_logits_as_the_swapped_class():
    from mridomain.iap.labels import mirror_output_map
    table = pd.DataFrame({"split": ["train"] * 5, "manufacturer": ["GE", "SIEMENS", "GE", "GE", "GE"],
                          "patient_position": ["FFP", "HFP", "HFP", "HFS", None], "tr": [1.0, 2, 3, 4, 5]})
    enc = LabelEncoder.fit(table, [{"name": "manufacturer"}, {"name": "patient_position"},
                                   {"name": "tr", "kind": "continuous"}])
    # outputs: manufacturer GE, SIEMENS, other (0-2); position FFP, HFP, HFS, other (3-6); tr (7)
    index, has_mirror = mirror_output_map(enc)
    assert index.tolist() == [0, 1, 2, 4, 3, 5, 6, 7]
    assert has_mirror.tolist() == [True, True, True, True, True, False, False, True]
    plain = LabelEncoder.fit(_table(), IAPS)                                # no position head
    index, has_mirror = mirror_output_map(plain)
    assert index.tolist() == list(range(plain.n_outputs)) == list(range(8)) and has_mirror.all()


def _mirror_tta_net(mirror_tta: bool):
    table = pd.DataFrame({"split": ["train"] * 4, "manufacturer": ["GE", "SIEMENS", "GE", "SIEMENS"],
                          "patient_position": ["FFP", "HFP", "HFP", "FFP"], "tr": [1.0, 2, 3, 4]})
    enc = LabelEncoder.fit(table, [{"name": "manufacturer"}, {"name": "patient_position"},
                                   {"name": "tr", "kind": "continuous"}])
    torch.manual_seed(0)
    model = build_model(IAPConfig(backbone="smallcnn", input_size=32, width=4, mirror_tta=mirror_tta), enc)
    with torch.no_grad():       # a head strong enough that the outputs depend on the image
        model.head.weight.mul_(50.0)
    return model, enc


def test_mirror_tta_makes_the_network_exactly_mirror_equivariant():
    """In eval mode, mirroring a slice swaps its FFP / HFP outputs and leaves every other output as it
    was; the same weights without mirror_tta are not equivariant, and training sees the plain network."""
    x = torch.rand(5, 1, 32, 32)
    mirror = torch.flip(x, dims=[-1])
    plain, _ = _mirror_tta_net(False)
    model, enc = _mirror_tta_net(True)
    model.load_state_dict(plain.state_dict())
    model.eval(), plain.eval()
    pos = enc.slices["patient_position"]                 # FFP, HFP, other
    with torch.no_grad():
        out, out_m = model(x), model(mirror)
        ref, ref_m = plain(x), plain(mirror)
    swap = [pos.start + 1, pos.start]
    others = [k for k in range(enc.n_outputs) if not pos.start <= k < pos.stop]
    torch.testing.assert_close(out_m[:, swap], out[:, [pos.start, pos.start + 1]], atol=1e-6, rtol=0)
    torch.testing.assert_close(out_m[:, others], out[:, others], atol=1e-6, rtol=0)
    # the mean of the slice's own and its mirror's (swapped) outputs, by hand from the plain network
    expected = ref.clone()
    expected[:, others] = 0.5 * (ref[:, others] + ref_m[:, others])
    expected[:, pos.start] = 0.5 * (ref[:, pos.start] + ref_m[:, pos.start + 1])
    expected[:, pos.start + 1] = 0.5 * (ref[:, pos.start + 1] + ref_m[:, pos.start])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)          # "other" has no mirror: its own
    assert (ref_m[:, others] - ref[:, others]).abs().max() > 1e-4          # the plain net is not invariant
    features = model.outputs_and_features(x)[1]
    torch.testing.assert_close(features, plain.embed(x))                   # the slice's own features
    model.train(), plain.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(1)
    torch.testing.assert_close(a, plain(x))                                # training: the plain forward


def test_bad_device_name_is_an_invalid_argument():
    from mridomain.errors import InvalidArgumentError
    from mridomain.iap.inference import resolve_device

    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(InvalidArgumentError, match="'gpu'"):
        resolve_device("gpu")


def test_confusion_panels_grow_with_the_class_count_and_keep_labels_whole(tmp_path):
    """A 20 x 20 slice-thickness matrix gets about a third of an inch per class (readable 9-pt
    labels); a 2-class head stays small; long scan-option names wrap, they are not cut."""
    from PIL import Image

    from mridomain.iap.evaluation import confusion_panel_inches, plot_confusion_matrices
    from mridomain.report import wrap_label

    thick = [f"{1 + 0.1 * i:.1f}" for i in range(20)]
    opts = ["FAST_GEMS\\SAT_GEMS\\PFP\\FS", "FAST_GEMS\\SAT_GEMS\\ACC_GEMS\\PFP\\FS",
            "FAST_GEMS\\SAT_GEMS\\MP_GEMS\\PFP\\FS", "FAST_GEMS\\SAT_GEMS\\MP_GEMS\\ACC_GEMS\\PFP\\FS"]
    n = 40
    table = pd.DataFrame({"split": "train", "manufacturer": ["GE", "SIEMENS"] * 20,
                          "slice_thickness": thick * 2, "scan_options": opts * 10})
    iaps = [{"name": c, "kind": "categorical", "unit": None} for c in ("manufacturer", "slice_thickness", "scan_options")]
    enc = LabelEncoder.fit(table, iaps)
    cat, _ = enc.encode(table)
    rng = np.random.default_rng(0)
    probs = {h.name: rng.random((n, len(h.classes))) for h in enc.categorical}
    path = tmp_path / "cm.png"
    plot_confusion_matrices(probs, cat, enc, path)
    width, height = Image.open(path).size
    assert confusion_panel_inches(20) >= 0.3 * 20 > confusion_panel_inches(2) / 2
    # the 20-class panel alone is at least 0.3 in (27 px at 90 dpi) per class
    assert height >= 90 * 0.3 * 20 and width >= 90 * 0.3 * 20
    labels = [wrap_label(o) for o in opts]
    assert len(set(labels)) == len(opts) and all(lab.replace("\n", "") == o for lab, o in zip(labels, opts))
