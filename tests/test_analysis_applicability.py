"""Applicability check: OOD score formulas by hand, and obvious outliers ranked above in-distribution."""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from mridomain.iap import compare
from mridomain.iap.applicability import KNNScorer, energy_score, msp_score
from mridomain.data import write_slice_cache
from mridomain.iap.predictor import PredictorOutput


def test_msp_and_energy_by_hand():
    # logits (0, 0): p = (0.5, 0.5), energy = -ln(e^0 + e^0) = -ln 2.
    # logits (ln 3, 0): p = (0.75, 0.25), energy = -ln(3 + 1) = -ln 4.
    lg = np.array([[0.0, 0.0], [math.log(3), 0.0]])
    p = np.exp(lg) / np.exp(lg).sum(1, keepdims=True)
    np.testing.assert_allclose(msp_score([p]), [0.5, 0.25])
    np.testing.assert_allclose(energy_score([lg]), [-math.log(2), -math.log(4)])
    # two heads are averaged
    np.testing.assert_allclose(msp_score([p, p[::-1]]), [0.375, 0.375])


def test_knn_distance_by_hand():
    ref = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])  # unit directions 0, 90 and 45 degrees
    knn = KNNScorer(k=1).fit(ref)
    # nearest other point of (1,0) on the unit circle is the 45-degree one: |(1,0)-(c,c)| = sqrt(2 - sqrt 2)
    d = knn.score(ref[:1], exclude_self=True)
    assert d[0] == pytest.approx(math.sqrt(2 - math.sqrt(2)))
    assert knn.score(np.array([[5.0, 0.0]]))[0] == pytest.approx(0.0)


class FeaturePredictor:
    """Stand-in IAP predictor: hand-made image features as the embedding, manufacturer from the
    mean intensity (mean above 0.5 is called TOSHIBA, a value absent from training)."""

    classes = {"manufacturer": ["GE", "SIEMENS", "TOSHIBA"]}
    preprocess = {"size": [16, 16], "normalization": {"method": "max255"}}

    @staticmethod
    def features(x):
        x = np.asarray(x, float)
        h, w = x.shape[1] // 2, x.shape[2] // 2
        q = [x[:, :h, :w], x[:, :h, w:], x[:, h:, :w], x[:, h:, w:]]
        return np.stack([x.mean((1, 2)), x.std((1, 2)), np.abs(np.diff(x, axis=1)).mean((1, 2)),
                         np.abs(np.diff(x, axis=2)).mean((1, 2))] + [v.mean((1, 2)) for v in q], axis=1)

    def forward(self, x):
        m = np.asarray(x, float).mean((1, 2))
        lg = np.stack([-40 * (m - 0.15) ** 2, -40 * (m - 0.26) ** 2, -40 * (m - 0.8) ** 2], axis=1) * 10
        e = np.exp(lg - lg.max(1, keepdims=True))
        return PredictorOutput(probabilities={"manufacturer": e / e.sum(1, keepdims=True)},
                               logits={"manufacturer": lg}, continuous={"tr": np.full(len(x), 5.0)},
                               features=self.features(x), classes=self.classes, units={"tr": "ms"})


def _images(n, rng, size=16):
    yy, xx = np.mgrid[:size, :size]
    amp = rng.choice([0.3, 0.7], n)
    out = np.empty((n, size, size), np.float32)
    for i in range(n):
        cy, cx = rng.uniform(5, size - 5, 2)
        out[i] = 0.1 + amp[i] * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0) + rng.normal(0, 0.02, (size, size))
    return out, np.where(amp > 0.5, "SIEMENS", "GE")


def _write_cache(path, images, table):
    write_slice_cache(path, images, table, [{"name": "manufacturer", "kind": "categorical", "unit": None},
                                            {"name": "tr", "kind": "continuous", "unit": "ms"}])


def test_compare_flags_noise_and_inverted_images(tmp_path):
    rng = np.random.default_rng(0)
    imgs, man = _images(300, rng)
    split = np.array(["train"] * 200 + ["val"] * 100)
    _write_cache(tmp_path / "train", imgs, pd.DataFrame({"manufacturer": man, "tr": 5.0, "split": split}))
    new_id, _ = _images(40, rng)
    noise = rng.uniform(0, 1, (3, 16, 16)).astype(np.float32)
    inverted = 1.0 - new_id[:3]
    new = np.concatenate([new_id, noise, inverted])
    # a stand-in without a domain model: the verdict is its feature distance, at the quantile asked for
    res = compare(tmp_path / "train", new, FeaturePredictor(), tmp_path / "out", progress=False, quantile=0.95)
    v = res.verdicts
    ood = np.arange(40, 46)
    # feature distance ranks every obvious outlier above every in-distribution image
    for col in ("mahalanobis", "knn_distance"):
        assert v[col].iloc[ood].min() > v[col].iloc[:40].max(), col
    assert (v["verdict"].iloc[ood] == "out").all()
    # thresholds bound the 95th percentile of val scores: most fresh in-distribution images pass
    assert (v["verdict"].iloc[:40] == "in").mean() >= 0.7
    assert all(re.search("manufacturer=TOSHIBA never seen in training", r) for r in v["notes"].iloc[43:46])
    assert (v["domain_reason"].iloc[ood] == "image").all()
    assert res.summary["energy_available"] and res.summary["calibration"] == "val"
    # the threshold bounds the 95th percentile of the 100 val scores from above with 95% confidence
    from scipy.stats import binom

    cal = np.sort(res.reference_scores["mahalanobis"].to_numpy())
    k = next(k for k in range(1, len(cal) + 1) if binom.cdf(k - 1, len(cal), 0.95) >= 0.95)
    assert res.thresholds["mahalanobis"] == pytest.approx(cal[k - 1])
    assert res.thresholds["mahalanobis"] >= np.quantile(cal, 0.95) and not res.summary["thresholds_widened"]
    shift = res.iap_shift.set_index("iap")
    # TOSHIBA is predicted exactly for the inverted images (mean ~0.8): 3 of 46
    assert shift.loc["manufacturer", "share_new_unseen"] == pytest.approx(
        (v["pred_manufacturer"] == "TOSHIBA").mean())
    assert (v["pred_manufacturer"].iloc[43:46] == "TOSHIBA").all()
    for f in ("verdicts.csv", "iap_shift.csv", "distribution.csv", "scores.csv", "thresholds.json", "report.html"):
        assert (tmp_path / "out" / f).exists(), f
    doc = (tmp_path / "out" / "report.html").read_text()
    assert all(s.startswith("data:image/png;base64,") for s in re.findall(r'src="([^"]*)"', doc))
    assert "https://" not in doc and "http://" not in doc


def test_compare_measures_shift_label_free_and_lists_series(tmp_path):
    """New images drawn like the in-domain ones show no shift above the noise floor, although the
    stand-in's predictions are wrong on a third of them (model error is on both sides); a new set of
    only bright images shifts the predicted manufacturer. Series are listed with patient and description."""
    rng = np.random.default_rng(3)
    imgs, man = _images(300, rng)
    split = np.array(["train"] * 200 + ["val"] * 100)
    _write_cache(tmp_path / "train", imgs, pd.DataFrame({"manufacturer": man, "tr": 5.0, "split": split}))
    same, _ = _images(60, rng)
    ids = pd.DataFrame({"manufacturer": "GE", "tr": 5.0, "split": "test", "patient_id": np.repeat(["P1", "P2"], 30),
                        "series_uid": np.repeat(["1.2.1", "1.2.2"], 30),
                        "series_description": np.repeat(["ax dyn pre", "ax dyn post"], 30)})
    _write_cache(tmp_path / "same", same, ids)
    res = compare(tmp_path / "train", tmp_path / "same", FeaturePredictor(), None, progress=False, quantile=0.95)
    shift = res.iap_shift.set_index("iap")
    assert not shift["above_floor"].any(), shift
    assert res.summary["shift_above_floor"] == [] and "no IAP and no image-feature distance" in res.to_markdown()
    assert set(res.series["patient_id"]) == {"P1", "P2"}
    assert set(res.series["series_description"]) == {"ax dyn pre", "ax dyn post"}
    assert (res.series["n_slices"] == 30).all()
    # only bright (SIEMENS-like) images: the predicted manufacturer share moves beyond its floor
    bright = imgs[200:][man[200:] == "SIEMENS"][:40]
    shifted = compare(tmp_path / "train", bright, FeaturePredictor(), None, progress=False, quantile=0.95)
    row = shifted.iap_shift.set_index("iap").loc["manufacturer"]
    assert row["above_floor"] and row["distance"] > row["noise_floor"]
