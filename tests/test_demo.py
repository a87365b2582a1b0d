"""The demo pipeline end to end, at toy size: every stage runs and hands its output to the next."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from mridomain.data.schema import IAP_NAMES
from mridomain.iap.demo import run_demo


@pytest.mark.slow
def test_demo_runs_end_to_end_and_reports_every_iap(tmp_path):
    result = run_demo(tmp_path / "demo", patients=10, slices=4, epochs=1, workers=1, seed=3)
    out = result.out
    for stage in ("simulate", "index", "prepare", "train", "evaluate"):
        assert stage in result.timings
    report = json.loads((out / "eval_test" / "report.json").read_text())
    assert {row["iap"] for row in report["rows"]} == set(IAP_NAMES)
    for name in IAP_NAMES:
        assert name in result.table1_markdown
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) > 0
    # the manifest is the simulator's ground truth; the index must read the same manufacturers back
    manifest = pd.read_parquet(out / "archive" / "manifest.parquet")
    index = pd.read_parquet(out / "index.parquet")
    assert sorted(index["manufacturer"]) == sorted(manifest["manufacturer"])
    assert (out / "predictions.png").stat().st_size > 0
    # a finished demo records its parameters; --full --reuse reads them back instead of redoing steps 1-5
    assert json.loads((out / "demo.json").read_text()) == {"patients": 10, "seed": 3, "slices": 4, "epochs": 1}


def test_reuse_needs_full_and_a_finished_demo(tmp_path):
    from mridomain.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="use it with --full"):
        run_demo(tmp_path, reuse=True)
    with pytest.raises(InvalidArgumentError, match="no finished demo to reuse"):
        run_demo(tmp_path, full=True, reuse=True)
    assert not any(tmp_path.iterdir())      # refused before any work
