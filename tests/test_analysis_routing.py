"""Routing (paper Table 2) with stand-in models whose answers are known, and the tumor classifier."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from mridomain.iap import TumorClassifier, evaluate_routing, route, run_routing_experiment
from mridomain.data import write_slice_cache
from mridomain.errors import InvalidArgumentError, SchemaMismatchError
from mridomain.iap.predictor import PredictorOutput

# Stand-in images encode what the stand-ins need: pixel (0,0) = tumor label, (0,1) = true domain
# (0 GE, 1 SIEMENS), (0,2) = 1 where the IAP stand-in must get the domain wrong, (0,3) = 1 where the
# Siemens stand-in must get the label wrong.


class DomainPredictor:
    """Predicts manufacturer from pixel (0,1), flipped where pixel (0,2) is set; with
    ``unknown_value`` image 0 is most probably that value (GE next, then SIEMENS)."""

    classes = {"manufacturer": ["GE", "SIEMENS", "TOSHIBA"]}
    preprocess = {"size": [8, 8], "normalization": {"method": "max255"}}

    def __init__(self, unknown_value: str | None = None):
        if unknown_value is not None:
            self.classes = {"manufacturer": ["GE", "SIEMENS", unknown_value]}
        self.unknown_value = unknown_value

    def forward(self, x):
        dom = (x[:, 0, 1] > 0.5) ^ (x[:, 0, 2] > 0.5)
        p = np.zeros((len(x), 3))
        p[np.arange(len(x)), dom.astype(int)] = 0.7
        p[np.arange(len(x)), 1 - dom.astype(int)] = 0.2
        p[:, 2] = 0.1
        if self.unknown_value:
            p[0] = [0.3, 0.2, 0.5]
        return PredictorOutput(probabilities={"manufacturer": p}, logits={"manufacturer": np.log(p)},
                               continuous={}, features=np.zeros((len(x), 1)), classes=self.classes)


class GEModel:
    """Right on GE images, wrong on every Siemens image."""

    def predict(self, x):
        lab = (x[:, 0, 0] > 0.5).astype(int)
        return np.where(x[:, 0, 1] > 0.5, 1 - lab, lab)


class SiemensModel:
    """Wrong on every GE image; right on Siemens images except where pixel (0,3) is set."""

    def predict(self, x):
        lab = (x[:, 0, 0] > 0.5).astype(int)
        right = (x[:, 0, 1] > 0.5) & (x[:, 0, 3] < 0.5)
        return np.where(right, lab, 1 - lab)


def _standin_images():
    x = np.zeros((10, 4, 4), np.float32)
    x[:, 0, 0] = [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]          # tumor labels
    x[:, 0, 1] = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]          # 6 GE, 4 SIEMENS
    x[1, 0, 2] = 1                                       # one GE image predicted as SIEMENS
    x[9, 0, 3] = 1                                       # Siemens model wrong on one Siemens image
    dom = np.where(x[:, 0, 1] > 0.5, "SIEMENS", "GE")
    return x, x[:, 0, 0].astype(int), dom


def test_six_columns_match_hand_computation():
    x, y, dom = _standin_images()
    models = {"GE": GEModel(), "SIEMENS": SiemensModel()}
    t2, cross, per, key_acc = evaluate_routing(x, y, dom, DomainPredictor(), models)
    row = t2.iloc[0]
    # GE model: 6 GE right, 4 Siemens wrong -> 6/10. Own domain: 6/6.
    assert row["GE model"] == pytest.approx(60.0)
    assert row["GE model (only GE images)"] == pytest.approx(100.0)
    # Siemens model: 0 of 6 GE, 3 of 4 Siemens -> 3/10; own 3/4.
    assert row["SIEMENS model"] == pytest.approx(30.0)
    assert row["SIEMENS model (only SIEMENS images)"] == pytest.approx(75.0)
    # True routing: 6 + 3 = 9/10. Predicted routing sends one GE image to the Siemens model,
    # which is wrong on GE images: 8/10.
    assert row["routed by true manufacturer"] == pytest.approx(90.0)
    assert row["routed by predicted manufacturer"] == pytest.approx(80.0)
    assert key_acc == pytest.approx(0.9)
    assert cross.set_index("model").loc["SIEMENS model", "on GE images (n=6)"] == pytest.approx(0.0)


def test_route_sends_each_image_to_its_predicted_domain_model():
    x, _, _ = _standin_images()
    res = route(x, DomainPredictor(), {"ge": GEModel(), "SIEMENS": SiemensModel()})
    # keys match case-insensitively ("GE" -> "ge"); image 1 is predicted SIEMENS.
    assert res["model"].tolist() == ["ge"] + ["SIEMENS"] + ["ge"] * 4 + ["SIEMENS"] * 4
    # image 1 (label 0, GE) routed to the Siemens model, which flips GE labels -> 1.
    assert res["prediction"].iloc[1] == 1
    assert res["prediction"].iloc[0] == 1 and res["prediction"].iloc[9] == 1  # 9: Siemens model wrong


def test_route_unknown_value_errors_or_falls_back():
    x, _, _ = _standin_images()
    models = {"GE": GEModel(), "SIEMENS": SiemensModel()}
    with pytest.raises(SchemaMismatchError, match="TOSHIBA"):
        route(x, DomainPredictor("TOSHIBA"), models)
    res = route(x, DomainPredictor("TOSHIBA"), models, default="SIEMENS")
    assert res.loc[0, "model"] == "SIEMENS" and res.loc[0, "routed_by"] == "default"
    # most likely among the values with a model: image 0 is GE with p(GE) = 0.7 > p(SIEMENS) = 0.2
    res = route(x, DomainPredictor("TOSHIBA"), models, unknown="most_likely")
    assert res.loc[0, "model"] == "GE" and res.loc[0, "routed_by"] == "most_likely"


def test_route_bad_arguments_are_invalid_argument_errors():
    # The CLI reports these as one line (InvalidArgumentError is a MridomainError and a ValueError).
    x, _, _ = _standin_images()
    models = {"GE": GEModel(), "SIEMENS": SiemensModel()}
    with pytest.raises(InvalidArgumentError, match="most_likely"):
        route(x, DomainPredictor(), models, unknown="guess")
    with pytest.raises(InvalidArgumentError, match="'TOSHIBA' is not among the models"):
        route(x, DomainPredictor("TOSHIBA"), models, default="TOSHIBA")
    with pytest.raises(InvalidArgumentError, match="scanner_model"):
        route(x, DomainPredictor(), models, key_iap="scanner_model")
    with pytest.raises(InvalidArgumentError, match="preset 'huge'"):
        TumorClassifier(preset="huge")


def _blob_images(n, rng, size=16):
    """Tumor slices carry a bright blob, normal slices none; intensity scale per domain."""
    yy, xx = np.mgrid[:size, :size]
    imgs = rng.normal(0.2, 0.03, (n, size, size)).astype(np.float32)
    y = rng.integers(0, 2, n)
    for i in np.flatnonzero(y):
        cy, cx = rng.integers(4, size - 4, 2)
        imgs[i] += 0.8 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0)
    return imgs * 255, y


@pytest.mark.slow
def test_tumor_classifier_learns_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    x, y = _blob_images(96, rng)
    clf = TumorClassifier(preset="cpu", size=16, epochs=12, width=8, batch_size=16, seed=0, device="cpu")
    clf.fit(x[:64], y[:64], x[64:], y[64:], progress=False)
    acc = (clf.predict(x[64:]) == y[64:]).mean()
    assert acc >= 0.8  # chance is ~0.5; a visible blob is easy
    clf.save(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").exists()
    assert json.loads((tmp_path / "m" / "config.json").read_text())["config"]["arch"] == "small_cnn"
    loaded = TumorClassifier.load(tmp_path / "m", device="cpu")
    np.testing.assert_allclose(loaded.predict_proba(x[64:]), clf.predict_proba(x[64:]), rtol=1e-5, atol=1e-6)
    with pytest.raises(SchemaMismatchError):
        TumorClassifier.load(tmp_path / "nothing")


def _write_cache(path, images, table):
    write_slice_cache(path, images, table, [{"name": "manufacturer", "kind": "categorical", "unit": None}])


class PixelDomainPredictor:
    """Manufacturer from the mean intensity (Siemens slices are scaled brighter below)."""

    classes = {"manufacturer": ["GE", "SIEMENS"]}
    preprocess = {"size": [16, 16], "normalization": {"method": "max255"}}

    def forward(self, x):
        siemens = (x.reshape(len(x), -1).mean(1) > 70).astype(float)
        p = np.stack([1 - siemens, siemens], axis=1)
        return PredictorOutput(probabilities={"manufacturer": p}, logits={"manufacturer": p},
                               continuous={}, features=np.zeros((len(x), 1)), classes=self.classes)


@pytest.mark.slow
def test_routing_experiment_end_to_end_on_tiny_cache(tmp_path):
    rng = np.random.default_rng(1)
    n = 160
    x, y = _blob_images(n, rng)
    man = np.array(["GE", "SIEMENS"] * (n // 2))
    x[man == "SIEMENS"] *= 1.6
    split = np.array((["train"] * 6 + ["val"] * 2 + ["test"] * 2) * (n // 10))
    table = pd.DataFrame({"manufacturer": man, "split": split, "tumor": y.astype(float),
                          "patient_id": [f"P{i // 4}" for i in range(n)]})
    table.loc[::7, "tumor"] = np.nan  # slices between the tumor and the 5-slice margin: unlabelled
    _write_cache(tmp_path / "cache", x, table)
    exp = run_routing_experiment(tmp_path / "cache", PixelDomainPredictor(), tmp_path / "out", preset="cpu",
                                 epochs=3, size=16, batch_size=16, progress=False, device="cpu")
    assert list(exp.table2.columns) == ["GE model", "GE model (only GE images)", "SIEMENS model",
                                        "SIEMENS model (only SIEMENS images)", "routed by predicted manufacturer",
                                        "routed by true manufacturer"]
    assert exp.key_accuracy == pytest.approx(1.0)
    # perfect domain prediction: predicted routing equals true routing
    assert exp.table2.iloc[0, 4] == pytest.approx(exp.table2.iloc[0, 5])
    n_test = int(((split == "test") & table.tumor.notna()).sum())
    assert len(exp.per_image) == n_test
    for f in ("table2.csv", "table2.json", "table2.md", "per_image.csv", "report.html",
              "models/GE/model.safetensors", "models/SIEMENS/config.json"):
        assert (tmp_path / "out" / f).exists(), f
    assert ("NOT" in exp.verdict) == (not exp.ok)
    assert "| GE model |" in exp.to_markdown()
    doc = (tmp_path / "out" / "report.html").read_text()
    assert "{&#x27;" not in doc and "{'" not in doc              # no Python dict in the text
    table_html = doc.split("Routing decisions", 1)[1].split("</table>", 1)[0]
    header = re.findall(r"<th>([^<]*)</th>", table_html)
    assert header == ["true manufacturer", "routed to model", "chosen by", "images"]
    counts = [int(row[-1]) for row in re.findall(r"<tr>\s*((?:<td>[^<]*</td>\s*)+)</tr>", table_html)
              for row in [re.findall(r"<td>([^<]*)</td>", row)]]
    assert sum(counts) == n_test


class OutOfDomainPredictor(DomainPredictor):
    """As DomainPredictor, with a domain model that calls image 0 out of the training domain."""

    def forward(self, x):
        out = super().forward(x)
        out.domain_score = np.where(np.arange(len(x)) == 0, 10.0, 1.0)
        out.domain_threshold = 2.0
        return out


def test_route_reports_the_domain_and_abstains(tmp_path):
    x, _, _ = _standin_images()
    models = {"GE": GEModel(), "SIEMENS": SiemensModel()}
    res = route(x, OutOfDomainPredictor(), models, out=tmp_path / "routed.csv")
    assert res["in_domain"].tolist()[:2] == [False, True] and res.loc[0, "model"] in ("GE", "SIEMENS")
    res = route(x, OutOfDomainPredictor(), models, abstain=True)
    assert res.loc[0, "routed_by"] == "out_of_domain" and pd.isna(res.loc[0, "model"])
    assert np.isnan(res.loc[0, "prediction"]) and (res["routed_by"][1:] == "predicted").all()
    assert pd.read_csv(tmp_path / "routed.csv").shape[0] == len(x)


def test_tumor_classifier_folder_of_the_earlier_flat_format_still_loads(tmp_path):
    from safetensors.torch import save_file

    clf = TumorClassifier(preset="cpu", size=16, width=4, device="cpu")
    net = clf.architecture()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "model.safetensors"))
    flat = {"kind": "tumor_classifier", "arch": "small_cnn", "size": 16, "epochs": 15, "batch_size": 64,
            "lr": 1e-3, "weight_decay": 1e-4, "seed": 0, "width": 4, "mean": 10.0, "std": 2.0, "augment": True}
    (tmp_path / "config.json").write_text(json.dumps(flat))
    loaded = TumorClassifier.load(tmp_path, device="cpu")
    assert loaded.config.mean == 10.0 and loaded.predict_proba(np.zeros((2, 16, 16), np.float32)).shape == (2,)


@pytest.mark.parametrize("content, message", [
    ({"kind": "tumor_classifier", "version": 2, "config": {}}, "version 2 is newer than this mridomain reads (1)"),
    ([1, 2], "not a JSON object"),
    ({"kind": "tumor_classifier", "version": "two", "config": {}}, "version 'two' is not a number"),
])
def test_tumor_classifier_config_from_a_later_release_or_damaged_is_one_line_error(tmp_path, content, message):
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "config.json").write_text(json.dumps(content))
    with pytest.raises(SchemaMismatchError, match=re.escape(message)):
        TumorClassifier.load(tmp_path, device="cpu")
