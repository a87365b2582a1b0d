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
    (torchmetrics' multiclass calibration error, L1 norm); rows labelled IGNORE_INDEX are left out,
    NaN when none is labelled."""
    import torch
    from torchmetrics.functional.classification import multiclass_calibration_error

    targets = np.asarray(targets)
    labelled = targets != IGNORE_INDEX
    if not labelled.any():
        return float("nan")
    p = torch.as_tensor(np.asarray(probs, np.float64)[labelled])
    return float(multiclass_calibration_error(p, torch.as_tensor(targets[labelled]), num_classes=p.shape[1],
                                              n_bins=n_bins, norm="l1"))


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


def calibrate(run: str | Path, cache: Any = None, max_reference: int = 2000, quantile: float = 0.99,
              progress: bool = True, outlier_exposure: bool = True, brain_subjects: int = 1) -> dict[str, Any]:
    """Fit what makes a run's answers trustworthy, from its cache, and store it in the run folder:

    - ``calibration.json``: per-head temperatures fitted on the validation split (else train), with
      the expected calibration error before and after on that split; a head whose fitted
      temperature raises that error keeps T = 1 (``kept_raw``, the fitted value beside it);
    - ``domain.safetensors`` / ``domain.json``: the training domain in feature space
      (:class:`~mridomain.iap.domain.DomainModel`), with the training vocabularies and TR/TE
      ranges that header values are checked against. With ``outlier_exposure`` (the default): a
      Mahalanobis model per feature block and an energy score, weighed by a logistic model
      trained against outliers made from the cache, the brain simulator (``brain_subjects``)
      and synthetic pictures (:mod:`mridomain.iap.outliers`), its threshold the ``quantile`` of
      cross-fitted in-domain scores of up to ``max_reference`` training and validation slices
      (:func:`~mridomain.iap.domain.fit_exposed`), with the expected false-out rate; without:
      one Mahalanobis distance, thresholded on the validation slices;
    - ``combinations.json``: the combinations of the hierarchical IAPs seen in training.

    ``train`` calls it at the end of every run; call it on a run trained before it existed.
    Returns the calibration summary.
    """
    from mridomain.iap.cache import open_cache, split_indices
    from mridomain.iap.decoding import HIERARCHY, training_combinations, write_combinations
    from mridomain.iap.domain import DomainModel
    from mridomain.iap.labels import OTHER
    from mridomain.iap.prediction import IAPPredictor

    run = Path(run)
    predictor = IAPPredictor.load(run)
    predictor.temperatures, predictor.domain = {}, None      # fit on the raw network
    encoder = predictor.encoder
    cache = open_cache(cache if cache is not None else predictor.preprocess.get("source_cache"))
    train_idx, cal_idx = split_indices(cache, "train"), split_indices(cache, "val")
    cal_split = "val"
    if len(cal_idx) == 0:
        cal_idx, cal_split = train_idx, "train"
    rng = np.random.default_rng(0)
    ref_idx = np.sort(rng.choice(train_idx, min(len(train_idx), max_reference), replace=False))
    cal_idx = np.sort(rng.choice(cal_idx, min(len(cal_idx), max_reference), replace=False))
    cal = predictor.forward(cache.images, indices=cal_idx, progress=progress, desc=f"calibrate ({cal_split})")
    cal_table = cache.table.iloc[cal_idx].reset_index(drop=True)
    targets, _ = encoder.encode(cal_table)
    heads: dict[str, Any] = {}
    temperatures: dict[str, float] = {}
    for j, h in enumerate(encoder.categorical):
        t = targets[:, j]
        heads[h.name] = choose_temperature(cal.logits[h.name], t)
        temperatures[h.name] = heads[h.name]["temperature"]
    summary = {"split": cal_split, "n_slices": int(len(cal_idx)), "temperatures": temperatures, "heads": heads}
    write_calibration(run, summary)

    ref = predictor.forward(cache.images, indices=ref_idx, progress=progress, desc="domain reference")
    train_table = cache.table.iloc[train_idx]
    truth = encoder.truth_units(train_table)
    ranges = {h.name: (float(np.nanmin(truth[:, j])), float(np.nanmax(truth[:, j])))
              for j, h in enumerate(encoder.continuous) if np.isfinite(truth[:, j]).any()}
    vocabularies = {h.name: [c for c in h.classes if c != OTHER] for h in encoder.categorical}
    n_patients = int(cal_table["patient_id"].nunique()) if "patient_id" in cal_table else len(cal_idx)
    domain = DomainModel.fit(ref.features, cal.features, n_patients, cal_split, quantile, ranges, vocabularies)
    rates: dict[str, Any] = {}
    if outlier_exposure:
        rates = _expose(domain, predictor, cache, ref_idx, ref, cal_idx, cal, quantile, brain_subjects, progress)
    domain.save(run)
    summary["domain"] = {"threshold": domain.threshold, "note": domain.note,
                         "expected_false_out": domain.expected_false_out, "outliers": domain.outliers,
                         "in_domain_calibration": float((domain.score(cal.features, cal.logits)
                                                         <= domain.threshold).mean())}
    if rates:
        summary["domain"]["in_domain_by"] = rates
    combos = training_combinations(train_table, [h for h in HIERARCHY if h in encoder.slices])
    if not combos.empty:
        write_combinations(run, combos)
    return summary


def _expose(domain: Any, predictor: Any, cache: Any, ref_idx: np.ndarray, ref: Any, cal_idx: np.ndarray, cal: Any,
            quantile: float, brain_subjects: int, progress: bool) -> dict[str, dict[str, float]]:
    """Fit ``domain``'s outlier-exposed image score in place (see :func:`calibrate`); returns the
    share of cross-fitted in-domain slices kept per manufacturer and scanner model (every vendor
    and scanner of the run should be kept, not only the majority)."""
    from mridomain.iap.domain import fit_exposed, quantile_upper_bound
    from mridomain.iap.model import feature_blocks
    from mridomain.iap.outliers import brain_outliers, synthetic_outliers, transformed_outliers
    from mridomain.iap.predictor import PredictorOutput

    pool_idx = np.unique(np.r_[ref_idx, cal_idx])
    pos = {int(i): k for k, i in enumerate(np.r_[ref_idx, cal_idx])}
    both = PredictorOutput.concat([ref, cal])
    inside = both.subset(np.array([pos[int(i)] for i in pool_idx]))
    table = cache.table.iloc[pool_idx].reset_index(drop=True)
    groups = pool_idx.astype(str)        # without patient IDs, each slice is its own group
    if "patient_id" in table and table["patient_id"].nunique() >= 2:
        groups = table["patient_id"].astype(str).to_numpy()
    rng = np.random.default_rng(0)
    # one transformed outlier per in-domain slice of up to 1000, 200 synthetic pictures, simulated brains
    source = np.sort(rng.choice(len(pool_idx), min(len(pool_idx), 1000), replace=False))
    parts, kinds, out_groups = [], [], []
    images, k = transformed_outliers(np.asarray(cache.images[pool_idx[source]]), predictor.preprocess, rng)
    parts.append(images), kinds.extend(k), out_groups.extend(groups[source])
    images, k = synthetic_outliers(200, predictor.preprocess, rng)
    parts.append(images), kinds.extend(k), out_groups.extend(["synthetic"] * len(k))
    if brain_subjects > 0:
        images, k = brain_outliers(brain_subjects, 6, predictor.preprocess)
        parts.append(images), kinds.extend(k), out_groups.extend(["brain"] * len(k))
    outliers = predictor.forward(np.concatenate(parts), progress=progress, desc="domain outliers")
    config = predictor.config
    blocks = feature_blocks(config.backbone, config.width, config.texture_stats)
    fit = fit_exposed(inside.features, inside.logits, groups, outliers.features, outliers.logits,
                      np.asarray(out_groups), blocks)
    threshold, widened = quantile_upper_bound(fit.in_scores, quantile)
    domain.blocks, domain.block_means, domain.block_precisions = blocks, fit.block_means, fit.block_precisions
    domain.combiner, domain.threshold, domain.widened = fit.combiner, threshold, widened
    domain.n_calibration_slices = int(len(pool_idx))
    domain.n_calibration_patients = int(len(np.unique(groups)))
    domain.calibration_split = "cross-fitted train + val"
    domain.expected_false_out = float(np.mean(fit.in_scores > threshold))
    domain.outliers = {str(k): int(v) for k, v in zip(*np.unique(kinds, return_counts=True))}
    kept = pd.Series(fit.in_scores <= threshold)
    return {col: {str(k): float(v) for k, v in kept.groupby(table[col].astype(str)).mean().items()}
            for col in ("manufacturer", "scanner_model") if col in table}
