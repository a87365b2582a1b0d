"""What makes a run's answers trustworthy, fitted after training and stored in the run folder:
per-head temperatures (:mod:`mridomain.iap.calibration`), the training domain in feature space with
its outlier-exposed score (:mod:`mridomain.iap.domain`, :mod:`mridomain.iap.outliers`) and the IAP
combinations seen in training (:mod:`mridomain.iap.decoding`). ``train`` calls :func:`calibrate`
at the end of every run; ``mridomain calibrate RUN`` adds it to older runs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mridomain.iap.calibration import choose_temperature, write_calibration

__all__ = ["calibrate"]


def calibrate(run: str | Path, cache: Any = None, max_reference: int = 2000, quantile: float = 0.99,
              progress: bool = True, outlier_exposure: bool = True, brain_subjects: int = 1,
              max_transformed: int = 1000) -> dict[str, Any]:
    """Fit what makes a run's answers trustworthy, from its cache, and store it in the run folder:

    - ``calibration.json``: per-head temperatures fitted on the validation split (else train), with
      the expected calibration error before and after on that split; a head whose fitted
      temperature raises that error keeps T = 1 (``kept_raw``, the fitted value beside it);
    - ``domain.safetensors`` / ``domain.json``: the training domain in feature space
      (:class:`~mridomain.iap.domain.DomainModel`), with the training vocabularies and TR/TE
      ranges that header values are checked against. With ``outlier_exposure`` (the default): a
      Mahalanobis model per feature block and an energy score, weighed by a logistic model
      trained against outliers made from the cache, the brain simulator (``brain_subjects``)
      and synthetic pictures (:mod:`mridomain.iap.outliers`; one transformed outlier for each of up
      to ``max_transformed`` in-domain slices), its threshold the ``quantile`` of
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
    from mridomain.iap.run import IAPRun

    run = Path(run)
    predictor = IAPRun.load(run)
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
        rates = _expose(domain, predictor, cache, ref_idx, ref, cal_idx, cal, quantile, brain_subjects, progress,
                        max_transformed)
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
            quantile: float, brain_subjects: int, progress: bool, max_transformed: int = 1000
            ) -> dict[str, dict[str, float]]:
    """Fit ``domain``'s outlier-exposed image score in place (see :func:`calibrate`); returns the
    share of cross-fitted in-domain slices kept per manufacturer and scanner model (every vendor
    and scanner of the run should be kept, not only the majority)."""
    from mridomain.iap.domain import fit_exposed, quantile_upper_bound
    from mridomain.iap.model import feature_blocks, reads_kspace
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
    # one transformed outlier per in-domain slice of up to max_transformed, 200 synthetic pictures,
    # simulated brains
    source = np.sort(rng.choice(len(pool_idx), min(len(pool_idx), max_transformed), replace=False))
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
    blocks = feature_blocks(config.backbone, config.width, config.texture_stats,
                            reads_kspace(predictor.model))
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
