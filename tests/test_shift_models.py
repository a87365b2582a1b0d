"""The study's networks, the user-model factory and the estimator's save / load."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mridomain.errors import InvalidArgumentError, SchemaMismatchError
from mridomain.shift.classifier import ShiftClassifier
from mridomain.shift.config import PRESETS, make_config
from mridomain.shift.models import MRNet2D, NoduleXNet, build_model, resolve_model_name
from shift_fixtures import one_torch_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name,shape", [("mrnet2d", (64, 64)), ("nodulex", (5, 47, 47)), ("densenet121", (32, 32)),
                                        ("auto", (5, 47, 47)), ("auto", (64, 64))])
def test_models_give_one_logit(name, shape):
    net = build_model(name, shape, width=0.25)
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(3, 1, *shape))
    assert out.reshape(3, -1).shape == (3, 1)


def test_auto_follows_the_paper():
    assert resolve_model_name("auto", (5, 47, 47)) == "nodulex"
    assert resolve_model_name("auto", (224, 224), modality="X-ray") == "densenet121"
    assert resolve_model_name("auto", (224, 224), modality="MRI") == "mrnet2d"
    assert isinstance(build_model("auto", (64, 64)), MRNet2D)
    assert isinstance(build_model("auto", (5, 47, 47)), NoduleXNet)


def test_user_factory_and_its_errors():
    net = build_model("shift_fixtures:tiny_net", (4, 6, 6))
    assert net(torch.randn(2, 1, 4, 6, 6)).shape == (2, 1)
    for spec, message in [("shift_fixtures:not_a_module", "not a torch.nn.Module"),
                          ("no_such_module_xyz:f", "cannot import"), ("shift_fixtures:missing", "has no attribute"),
                          ("resnet", "choose auto"), ("nodulex", "3-D crops")]:
        with pytest.raises(InvalidArgumentError, match=message):
            build_model(spec, (8, 64) if spec == "nodulex" else (4, 6, 6))
    with pytest.raises(InvalidArgumentError, match="at least 63"):
        build_model("mrnet2d", (32, 32))


def test_presets():
    assert PRESETS["paper"]["epochs"] == 60 and PRESETS["paper"]["batch_size"] == 50 and PRESETS["paper"]["lr"] == 1e-4
    cfg = make_config("paper")
    assert cfg.monitor == "val_auc" and cfg.monitor_mode == "max"
    with pytest.raises(InvalidArgumentError, match="preset"):
        make_config("gpu")
    with pytest.raises(InvalidArgumentError, match="lr"):
        make_config("cpu", lr=-1)


def test_classifier_fit_save_load_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 3, 8, 8)).astype(np.float32)
    y = np.arange(24) % 2
    x[y == 1, 1, 2:6, 2:6] += 3.0
    cfg = make_config("cpu", model="shift_fixtures:tiny_net", epochs=2, batch_size=8, seed=1)
    model = ShiftClassifier(cfg, (3, 8, 8)).fit(x[:16], y[:16], x[16:], y[16:])
    assert model.best_epoch in (1, 2) and len(model.history) == 2 and "val_auc" in model.history[0]
    model.save(tmp_path / "m")
    with pytest.raises(SchemaMismatchError, match="repeat it to run it: --model shift_fixtures:tiny_net"):
        ShiftClassifier.load(tmp_path / "m")       # a folder alone never chooses code to import
    back = ShiftClassifier.load(tmp_path / "m", model="shift_fixtures:tiny_net")
    assert np.allclose(back.decision_function(x), model.decision_function(x))
    assert back.config == model.config and back.sample_shape == (3, 8, 8)
    with pytest.raises(SchemaMismatchError, match="expects"):
        back.predict_proba(np.zeros((2, 3, 9, 9), np.float32))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"kind": "tumor_classifier"}')
    (tmp_path / "other" / "model.safetensors").write_bytes(b"")
    with pytest.raises(SchemaMismatchError, match="not a mridomain.shift.model config"):
        ShiftClassifier.load(tmp_path / "other")
