"""The analysis tools with a real (tiny, barely trained) mridomain IAPPredictor instead of stand-ins."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mridomain import iap
from mridomain.iap import compare, route, run_routing_experiment
from mridomain.iap.predictor import Predictor
from mridomain.data import write_slice_cache


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("integ")
    rng = np.random.default_rng(0)
    n, size = 80, 32
    yy, xx = np.mgrid[:size, :size]
    man = np.array(["GE", "SIEMENS"] * (n // 2))
    imgs = np.empty((n, size, size), np.float32)
    for i in range(n):
        cy, cx = rng.uniform(8, size - 8, 2)
        amp = 80 if man[i] == "GE" else 180
        imgs[i] = 20 + amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 40.0) + rng.normal(0, 3, (size, size))
    split = np.array((["train"] * 6 + ["val"] * 2 + ["test"] * 2) * (n // 10))
    table = pd.DataFrame({"manufacturer": man, "tr": np.where(man == "GE", 5.96, 4.42), "split": split,
                          "tumor": rng.integers(0, 2, n).astype(float)})
    write_slice_cache(tmp / "cache", imgs, table, [{"name": "manufacturer", "kind": "categorical", "unit": None},
                                                   {"name": "tr", "kind": "continuous", "unit": "ms"}])
    cfg = iap.get_preset("cpu").updated(input_size=32, width=8, epochs=2, batch_size=16)
    iap.IAPPredictor(config=cfg, device="cpu").fit(tmp / "cache", tmp / "run", progress=False)
    return tmp, imgs


class CountingPredictor:
    """Passes everything to a real predictor and counts its forward passes."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []
        self.classes, self.preprocess = inner.classes, inner.preprocess

    def forward(self, images):
        self.calls.append(len(images))
        return self.inner.forward(images)


@pytest.mark.slow
def test_iap_predictor_is_a_predictor_and_compare_makes_one_pass_per_image_set(tiny):
    tmp, imgs = tiny
    p = iap.IAPPredictor.load(tmp / "run", device="cpu")
    assert isinstance(p, Predictor)
    counting = CountingPredictor(p)
    new = imgs[-5:]
    res = compare(tmp / "cache", new, counting, None, progress=False)
    n_train = int((pd.read_parquet(tmp / "cache" / "slices.parquet")["split"] == "train").sum())
    # 16 val slices are too few to calibrate on (< 20), so a held-out quarter of the training
    # reference's pass serves the thresholds: one pass over the 48 training slices, one over the 5 new
    assert res.summary["calibration"] == "held-out train" and res.summary["n_calibration"] == 12
    assert counting.calls == [n_train, 5] and len(res.verdicts) == 5


@pytest.mark.slow
def test_compare_route_and_experiment_with_real_predictor(tiny):
    tmp, imgs = tiny
    noise = np.random.default_rng(1).uniform(0, 255, (3, 32, 32)).astype(np.float32)
    res = compare(tmp / "cache", np.concatenate([imgs[-8:], noise]), tmp / "run", tmp / "cmp", progress=False)
    assert res.summary["energy_available"]
    assert len(res.verdicts) == 11 and set(res.verdicts["verdict"]) <= {"in", "out"}
    # the verdict is predict's, with the run's one threshold: the same slices, the same answers
    from mridomain.iap import IAPPredictor

    same = IAPPredictor.load(tmp / "run").forward(np.concatenate([imgs[-8:], noise])).in_domain
    assert (res.verdicts["verdict"].eq("in").to_numpy() == same).all()
    assert res.thresholds["domain_score"] == IAPPredictor.load(tmp / "run").domain.threshold
    assert "tr" in set(res.iap_shift["iap"])  # continuous head found under its "tr_ms" column
    models = {"GE": lambda x: np.zeros(len(x), int), "SIEMENS": lambda x: np.ones(len(x), int)}
    r = route(imgs[:6], tmp / "run", models, unknown="most_likely")
    assert set(r["model"]) <= {"GE", "SIEMENS"}
    assert (r["prediction"] == np.where(r["model"] == "GE", 0, 1)).all()
    exp = run_routing_experiment(tmp / "cache", tmp / "run", tmp / "rt", epochs=1, size=16, width=8,
                                 progress=False, device="cpu")
    assert exp.table2.shape == (1, 6)
    assert ((exp.table2.to_numpy() >= 0) & (exp.table2.to_numpy() <= 100)).all()
