"""Calibrated probabilities: per-head temperature scaling fitted on the validation split.

A network trained to low cross-entropy is usually over-confident: its top probability is higher
than its accuracy. Temperature scaling (Guo et al., ICML 2017) divides each head's logits by one
scalar T_k fitted to minimize the validation negative log-likelihood; it changes no argmax, only how
sure the answer says it is. The run stores the temperatures (``calibration.json``) with the expected
calibration error (ECE, 15 equal-width confidence bins) before and after on the validation split.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mridomain.errors import SchemaMismatchError
from mridomain.files import dump_json, read_json
from mridomain.iap.labels import IGNORE_INDEX

__all__ = ["fit_temperature", "choose_temperature", "expected_calibration_error", "reliability_table", "softmax_t",
           "CALIBRATION_JSON", "read_temperatures", "write_calibration", "plot_reliability"]

CALIBRATION_JSON = "calibration.json"


def softmax_t(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` in float64."""
    from scipy.special import softmax

    return softmax(np.asarray(logits, np.float64) / temperature, axis=1)


def _nll(logits: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    from scipy.special import logsumexp

    z = logits / temperature
    return float(np.mean(logsumexp(z, axis=1) - z[np.arange(len(z)), targets]))


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """T > 0 minimizing the mean NLL of ``softmax(logits / T)`` on the labelled rows (targets
    IGNORE_INDEX are left out); 1.0 when nothing is labelled."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, np.float64)
    targets = np.asarray(targets)
    m = targets != IGNORE_INDEX
    if not m.any():
        return 1.0
    lg, t = logits[m], targets[m].astype(np.int64)
    res = minimize_scalar(lambda log_t: _nll(lg, t, float(np.exp(log_t))), bounds=(np.log(0.05), np.log(20.0)),
                          method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def choose_temperature(logits: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """The temperature a head uses, with the evidence: the NLL-optimal T (:func:`fit_temperature`)
    unless it raises the expected calibration error on the same rows, which can happen on a small
    split of few, confident slices; then T = 1 (raw softmax) and ``kept_raw`` says so."""
    fitted = fit_temperature(logits, targets)
    before = expected_calibration_error(softmax_t(logits), targets)
    after = expected_calibration_error(softmax_t(logits, fitted), targets)
    kept_raw = bool(np.isfinite(before) and np.isfinite(after) and after > before)
    return {"temperature": 1.0 if kept_raw else fitted, "fitted_temperature": fitted, "kept_raw": kept_raw,
            "n": int((np.asarray(targets) != IGNORE_INDEX).sum()), "ece_before": before,
            "ece_after": before if kept_raw else after, "ece_fitted": after}


def reliability_table(probs: np.ndarray, targets: np.ndarray, n_bins: int = 15) -> pd.DataFrame:
    """Per confidence bin (equal width on [0, 1]): count, mean confidence, accuracy."""
    targets = np.asarray(targets)
    m = targets != IGNORE_INDEX
    p = np.asarray(probs, np.float64)[m]
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    correct = pred == targets[m]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        sel = which == b
        rows.append({"bin": b, "low": edges[b], "high": edges[b + 1], "count": int(sel.sum()),
                     "confidence": float(conf[sel].mean()) if sel.any() else float("nan"),
                     "accuracy": float(correct[sel].mean()) if sel.any() else float("nan")})
    return pd.DataFrame(rows)


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, n_bins: int = 15) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over ``n_bins`` equal-width confidence bins
    on [0, 1] (NaN if unlabelled).

    Not torchmetrics' ``multiclass_calibration_error``: it agrees to 1e-7 except that it puts a
    confidence of exactly 1.0 (a saturated softmax, common for confident wrong answers) in a bin of
    its own instead of the last one, which changed the verdict of tests/test_iap_trust.py's
    saturated example (ECE 0.3 % here, 1.7 % there)."""
    t = reliability_table(probs, targets, n_bins)
    n = t["count"].sum()
    if n == 0:
        return float("nan")
    used = t[t["count"] > 0]
    return float((used["count"] * (used["accuracy"] - used["confidence"]).abs()).sum() / n)


def read_temperatures(run: str | Path) -> dict[str, float]:
    """Per-head temperatures of a run ({} for a run without calibration)."""
    path = Path(run) / CALIBRATION_JSON
    if not path.exists():
        return {}
    data = read_json(path)
    temps = data.get("temperatures", {}) if isinstance(data, dict) else None
    if not isinstance(temps, dict):
        raise SchemaMismatchError(f"{path}: 'temperatures' is not a mapping of head -> temperature")
    out = {}
    for head, value in temps.items():
        # a temperature that is not a positive finite number would silently turn the calibrated
        # probabilities into raw or NaN ones: the file is damaged, say so
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise SchemaMismatchError(f"{path}: temperature of head {head!r} is {value!r}; it must be a positive "
                                      "finite number (run `mridomain calibrate` again)")
        out[str(head)] = float(value)
    return out


def write_calibration(run: str | Path, summary: dict[str, Any]) -> Path:
    """Save the per-head temperatures (``calibration.json``) into the run folder."""
    path = Path(run) / CALIBRATION_JSON
    dump_json({"version": 1, **summary}, path)
    return path


def plot_reliability(tables: dict[str, tuple[pd.DataFrame, pd.DataFrame]], path: str | Path,
                     title: str = "") -> None:
    """Reliability diagrams, one panel per head: accuracy against confidence before and after
    temperature scaling (the diagonal is perfect calibration; marker area ~ slices per bin)."""
    from mridomain.report import figure_grid

    if not tables:
        return
    fig, axes = figure_grid(len(tables), 4, 3.4, 3.2)
    for ax, (name, (before, after)) in zip(axes, tables.items()):
        ax.plot([0, 1], [0, 1], color="#999", linewidth=1)
        for table, label, style in ((before, "raw", "--"), (after, "calibrated", "-")):
            used = table[table["count"] > 0]
            line, = ax.plot(used["confidence"], used["accuracy"], style, linewidth=1, label=label)
            # marker area ~ slices in the bin: a bin of two slices is a coin toss, not a finding
            ax.scatter(used["confidence"], used["accuracy"], s=6 + 60 * used["count"] / max(used["count"].max(), 1),
                       color=line.get_color(), alpha=0.7)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="confidence", ylabel="accuracy", title=name)
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
