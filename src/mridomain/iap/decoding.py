"""Consistent joint answers: the most probable combination of hierarchical IAPs that can exist.

The heads of the network are trained independently, so their top answers can contradict each other
(a file came out manufacturer "GE" with scanner model "TrioTim", a Siemens magnet). Scanner model
implies manufacturer, scan options are vendor-specific, each model has its field strength, and a
site's protocol on one scanner sets its flip angle (DBC's flip angle is read at 99.65 % top-1 in the
paper because it follows the scanner and protocol; docs/simulator.md): the allowed combinations
are the ones seen in training (``combinations.json`` in the run) or a table a user supplies. The joint answer maximizes the sum of the heads' log-probabilities over those
combinations, and is reported next to the per-head answers, never instead of them.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from mridomain.errors import SchemaMismatchError
from mridomain.files import dump_json, read_json

if TYPE_CHECKING:
    from mridomain.iap.predictor import PredictorOutput

__all__ = ["HIERARCHY", "COMBINATIONS_JSON", "training_combinations", "joint_decode", "read_combinations",
           "load_combination_table"]

#: the IAPs whose values constrain each other (scanner -> vendor, options, field strength; its
#: protocol -> flip angle)
HIERARCHY = ("manufacturer", "scanner_model", "scan_options", "field_strength", "flip_angle")
COMBINATIONS_JSON = "combinations.json"


def training_combinations(table: pd.DataFrame, heads: Sequence[str]) -> pd.DataFrame:
    """Distinct combinations of ``heads`` among the rows (values as category strings) with counts;
    rows missing any of them are left out."""
    from mridomain.iap.labels import category_string, is_missing

    heads = [h for h in heads if h in table.columns]
    if not heads:
        return pd.DataFrame()
    rows = table[heads]
    keep = ~rows.map(is_missing).any(axis=1)
    combos = rows[keep].map(category_string)
    return combos.value_counts().rename("count").reset_index()


def write_combinations(run: str | Path, combos: pd.DataFrame) -> None:
    """Save the IAP combinations seen in training (``combinations.json``) into the run folder."""
    dump_json({"version": 1, "heads": [c for c in combos.columns if c != "count"],
               "combinations": combos.to_dict("records")}, Path(run) / COMBINATIONS_JSON)


def read_combinations(run: str | Path) -> pd.DataFrame | None:
    """The IAP combinations seen in training, from the run folder (None when absent)."""
    path = Path(run) / COMBINATIONS_JSON
    if not path.exists():
        return None
    data = read_json(path)
    try:
        return pd.DataFrame(data["combinations"], columns=[*data["heads"], "count"]).astype({"count": int})
    except (KeyError, TypeError, ValueError) as err:
        raise SchemaMismatchError(f"{path}: malformed combinations ({type(err).__name__}: {err})") from None


def load_combination_table(path: str | Path) -> pd.DataFrame:
    """A user's table of allowed combinations (CSV or parquet; one column per IAP, one row per
    allowed combination)."""
    path = Path(path)
    if not path.exists():
        raise SchemaMismatchError(f"{path}: combinations table not found")
    table = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path, dtype=str)
    if table.empty:
        raise SchemaMismatchError(f"{path}: the combinations table has no rows")
    return table.astype(str)


def joint_decode(output: "PredictorOutput", combos: pd.DataFrame) -> pd.DataFrame:
    """Per slice: ``joint_<iap>`` of the allowed combination with the highest summed log-probability,
    ``joint_log_prob``, and ``joint_agrees`` (the per-head answers form that combination)."""
    heads = [c for c in combos.columns if c != "count" and c in output.probabilities]
    if not heads or combos.empty:
        return pd.DataFrame(index=pd.RangeIndex(len(output)))
    n = len(output)
    score = np.zeros((n, len(combos)))
    allowed = np.ones(len(combos), dtype=bool)
    for h in heads:
        vocab = {v: i for i, v in enumerate(output.classes[h])}
        idx = np.array([vocab.get(str(v), -1) for v in combos[h]])
        allowed &= idx >= 0            # a combination with a value the run cannot predict never wins
        logp = np.log(np.clip(output.probabilities[h], 1e-12, 1.0))
        score += logp[:, np.maximum(idx, 0)]
    if not allowed.any():
        raise SchemaMismatchError(f"no allowed combination of {heads} uses values the run knows")
    score[:, ~allowed] = -np.inf
    best = np.argmax(score, axis=1)
    out = pd.DataFrame({f"joint_{h}": combos[h].to_numpy()[best].astype(object) for h in heads})
    out["joint_log_prob"] = score[np.arange(n), best]
    agrees = np.ones(n, dtype=bool)
    for h in heads:
        agrees &= output.predicted(h).astype(str) == out[f"joint_{h}"].astype(str).to_numpy()
    out["joint_agrees"] = agrees
    return out
