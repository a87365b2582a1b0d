"""Configs are pydantic models: a bad value is a one-line error naming the field, before anything is written."""
from __future__ import annotations

import json

import pytest

from mridomain.iap.tumor_classifier import TumorClassifier
from mridomain.errors import InvalidArgumentError, SchemaMismatchError
from mridomain.iap import train
from mridomain.iap.config import IAPConfig, get_preset

from test_iap_utils import make_cache


@pytest.mark.parametrize("field, value", [("lr_schedule", "cosin"), ("eval_batch_size", 0), ("backbone", "vgg"),
                                          ("lr", -1.0), ("epochs", 0), ("strategy", "fsdp")])
def test_bad_training_value_refused_before_the_run_folder_exists(tmp_path, field, value):
    cache = make_cache(tmp_path / "cache", n=16, size=16)
    with pytest.raises(InvalidArgumentError) as err:
        train(cache, tmp_path / "run", progress=False, **{field: value})
    assert f"field {field!r}" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


def test_unknown_field_and_damaged_config_json(tmp_path):
    with pytest.raises(InvalidArgumentError, match="field 'learning_rate': unknown field"):
        get_preset("cpu").updated(learning_rate=1e-3)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**get_preset("cpu").to_dict(), "lr_schedule": "warmup"}))
    with pytest.raises(SchemaMismatchError, match=r"config.json: field 'lr_schedule'"):
        IAPConfig.from_json(path)
    path.write_text("")
    with pytest.raises(SchemaMismatchError, match="empty file"):
        IAPConfig.from_json(path)


def test_config_round_trips_and_old_run_configs_still_load(tmp_path):
    cfg = get_preset("cpu")
    assert IAPConfig.from_json(cfg.to_json()) == cfg
    old = {k: v for k, v in cfg.to_dict().items()            # a config.json written before the engine
           if k not in ("devices", "num_nodes", "strategy", "monitor", "monitor_mode", "find_unused_parameters")}
    assert IAPConfig.from_dict(old) == cfg


def test_tumor_classifier_config_is_validated():
    with pytest.raises(InvalidArgumentError, match="field 'arch'"):
        TumorClassifier(arch="vgg")
    with pytest.raises(InvalidArgumentError, match="field 'batch_size'"):
        TumorClassifier(preset="cpu", batch_size=1)
