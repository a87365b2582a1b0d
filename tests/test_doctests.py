"""The ``>>>`` examples in the public entry points' docstrings run and hold."""
from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "mridomain.statistics",
    "mridomain.files",
    "mridomain.data.splits",
    "mridomain.data.schema",
    "mridomain.sim.physics",
    "mridomain.engine.engine",
    "mridomain.lazy",
    "mridomain.config",
    "mridomain.data.intensity",
    "mridomain.iap.model",
    "mridomain.arguments",
    "mridomain.iap.labels",
    "mridomain.iap.config",
    "mridomain.iap.evaluation",
    "mridomain.synth.contribution",
    "mridomain.shift.protocol",
    "mridomain.shift.stats",
    "mridomain.shift.study",
    "mridomain.shift.manifest",
    "mridomain.shift.attribution",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no >>> example"
    assert result.failed == 0
