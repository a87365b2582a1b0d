"""Is an image inside the training domain of a run? A feature-space model stored in the run folder.

A network answers confidently on images unlike anything it was trained on (a Toshiba head scan
comes out "SIEMENS 99.9 %"). Its penultimate features say more: the Mahalanobis distance of an
image's features to the training features, under one Ledoit-Wolf covariance (Lee et al., NeurIPS
2018), is small for images like the training ones and large for others. The run stores the mean and
precision of the training features (``domain.safetensors``) and a threshold calibrated on held-out
in-domain slices (``domain.json``), so ``predict`` and ``route`` give every row a score and a verdict.

The threshold is a distribution-free upper confidence bound of a high quantile of the calibration
scores: the smallest order statistic that is at least the ``quantile`` (0.99) of in-domain scores
with 95 % confidence. With a small calibration set that order statistic does not exist (fewer than
~300 slices for 0.99), and the threshold is widened beyond the largest calibration score by half
the spread between it and the median; ``domain.json`` says so, and so does every report.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd

from mridomain.config import Settings
from mridomain.errors import SchemaMismatchError
from mridomain.files import dump_json, read_json

__all__ = ["MahalanobisScorer", "DomainModel", "combiner_inputs", "combine", "DomainRule", "quantile_upper_bound", "domain_verdict",
           "reason_counts", "DOMAIN_JSON", "DOMAIN_TENSORS", "SMALL_CALIBRATION_SLICES",
           "SMALL_CALIBRATION_PATIENTS", "HEADER_IAPS", "VERDICT_COLUMNS"]

DOMAIN_JSON, DOMAIN_TENSORS = "domain.json", "domain.safetensors"
#: below these a calibration set is called small and the threshold widened
SMALL_CALIBRATION_SLICES, SMALL_CALIBRATION_PATIENTS = 300, 30


#: the IAPs whose header values decide the verdict by default: what a scanner and a protocol are
HEADER_IAPS = ("manufacturer", "scanner_model", "patient_position", "acquisition_matrix", "flip_angle", "tr", "te")
#: the columns every verdict adds to a row (``predict``, ``route`` and ``compare`` alike)
VERDICT_COLUMNS = ("in_domain", "domain_reason", "header_unseen")


class DomainRule(Settings):
    """How the evidence of an input's header enters its in-domain verdict.

    A header value the training set never had (a vendor, a scanner model, a patient position, a
    matrix outside the training vocabulary; TR / TE / flip angle beyond ``tolerance`` of the
    training values) is evidence no image score can outweigh: the model was never shown such an
    acquisition. ``header_miss`` says what it does to the verdict: "out" (the default) makes the
    input out of domain; "warn" keeps the image verdict and only names the value. Inputs without
    a header (NIfTI, pictures, stripped DICOM) are judged on their image evidence alone.
    """

    header_iaps: tuple[str, ...] = HEADER_IAPS
    header_miss: Literal["out", "warn"] = "out"
    #: relative tolerance on numeric values (TR, TE, flip angle): 2 %, as the paper's TR/TE accuracy
    tolerance: float = 0.02


def domain_verdict(image_in: np.ndarray | None, header_unseen: Sequence[str | None],
                   rule: DomainRule) -> pd.DataFrame:
    """The one in-domain verdict of ``predict``, ``route`` and ``compare``, row by row.

    ``image_in``: per row, the image evidence (score at or below the threshold; None: the run has
    no image model, every row counts as in). ``header_unseen``: per row, the header values outside
    the training domain joined by "; " ("" none, None: no header). Returns ``in_domain``,
    ``domain_reason`` ("" in; "image", "header" or "image+header" out; "header (warn)" in with a
    warning under ``header_miss="warn"``) and ``header_unseen``.
    """
    n = len(header_unseen)
    image_ok = np.ones(n, bool) if image_in is None else np.asarray(image_in, bool)
    if len(image_ok) != n:
        raise SchemaMismatchError(f"domain verdict: {len(image_ok)} image verdicts for {n} header rows")
    header = np.array([bool(h) for h in header_unseen])
    header_out = header & (rule.header_miss == "out")
    reason = np.where(~image_ok & header_out, "image+header",
                      np.where(~image_ok, "image", np.where(header_out, "header",
                                                            np.where(header, "header (warn)", ""))))
    return pd.DataFrame({"in_domain": image_ok & ~header_out, "domain_reason": reason,
                         "header_unseen": ["" if h is None else str(h) for h in header_unseen]})


def reason_counts(verdicts: pd.DataFrame) -> dict[str, int]:
    """{reason: rows} of a verdict table, "in" for rows without a reason, most frequent first."""
    if "domain_reason" not in verdicts.columns:
        return {}
    reasons = verdicts["domain_reason"].fillna("").replace("", "in")
    return {str(k): int(v) for k, v in reasons.value_counts().items()}


def _as_number(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def combiner_inputs(feats: np.ndarray, logits: dict[str, np.ndarray] | None, blocks: Sequence[tuple[str, int, int]],
                    means: Sequence[np.ndarray], precisions: Sequence[np.ndarray]) -> np.ndarray:
    """(N, B + 1): log Mahalanobis distance of each feature block, and the heads' mean energy
    (-logsumexp of the logits; Liu et al. 2020), the evidence an outlier-exposed combiner weighs."""
    from scipy.special import logsumexp

    feats = np.asarray(feats, np.float64)
    cols = []
    for (_, start, stop), mean, precision in zip(blocks, means, precisions):
        d = feats[:, start:stop] - mean
        cols.append(np.log(np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, precision, d), 0.0)) + 1e-6))
    if not logits:
        raise SchemaMismatchError("domain model: the outlier-exposed score needs the heads' logits")
    cols.append(np.mean([-logsumexp(np.asarray(v, np.float64), axis=1) for v in logits.values()], axis=0))
    return np.stack(cols, axis=1)


def _log_odds(inputs: np.ndarray, combiner: dict[str, Any]) -> np.ndarray:
    z = (np.asarray(inputs, np.float64) - np.asarray(combiner["center"])) / np.asarray(combiner["scale"])
    return z @ np.asarray(combiner["weights"], np.float64) + float(combiner["bias"])


def _components(inputs: np.ndarray, combiner: dict[str, Any]) -> np.ndarray:
    """(N, 1 + B): the logistic log-odds and each block's log distance."""
    inputs = np.asarray(inputs, np.float64)
    n_blocks = inputs.shape[1] - 1
    return np.column_stack([_log_odds(inputs, combiner), inputs[:, :n_blocks]])


def combine(inputs: np.ndarray, combiner: dict[str, Any]) -> np.ndarray:
    """The image score of rows of :func:`combiner_inputs`: the largest of the logistic log-odds of
    "out of domain" and the block distances, each standardized on cross-fitted in-domain rows.

    The logistic model weighs the evidence the outliers it was shown exercise, and may weigh a
    block those outliers never moved at zero; the block distances keep every block able to call
    an image out on its own, for outliers unlike any that were made."""
    if "component_center" not in combiner:
        return _log_odds(inputs, combiner)
    z = (_components(inputs, combiner) - np.asarray(combiner["component_center"])) / np.asarray(combiner["component_scale"])
    return z.max(axis=1)


class MahalanobisScorer:
    """Mahalanobis distance to reference features under one shared Ledoit-Wolf covariance."""

    def fit(self, feats: np.ndarray) -> "MahalanobisScorer":
        """Mean and (shrunk) precision of the in-domain features."""
        from sklearn.covariance import LedoitWolf

        feats = np.asarray(feats, np.float64)
        if feats.ndim != 2 or len(feats) < 3:
            raise SchemaMismatchError(f"domain model: need at least 3 reference feature rows, got shape {feats.shape}")
        cov = LedoitWolf().fit(feats)
        self.mean, self.precision = cov.location_, cov.precision_
        return self

    def score(self, feats: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row to the in-domain features."""
        d = np.asarray(feats, np.float64) - self.mean
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, self.precision, d), 0.0))


def quantile_upper_bound(scores: np.ndarray, quantile: float = 0.99, confidence: float = 0.95
                         ) -> tuple[float, bool]:
    """(threshold, widened): the smallest order statistic of ``scores`` that bounds their
    ``quantile`` from above with ``confidence`` (binomial order-statistic bound), else, when the
    sample is too small to have one, the maximum plus half its distance to the median."""
    from scipy.stats import binom

    s = np.sort(np.asarray(scores, np.float64))
    n = len(s)
    if n == 0:
        raise SchemaMismatchError("domain model: no calibration scores")
    # P(X_(k) >= q-quantile) = P(Bin(n, q) <= k - 1); the smallest k with that >= confidence
    k = int(np.searchsorted(binom.cdf(np.arange(n + 1), n, quantile), confidence)) + 1
    if k <= n:
        return float(s[k - 1]), False
    return float(s[-1] + 0.5 * (s[-1] - np.median(s))), True


@dataclass
class DomainModel:
    """The training domain of a run in feature space, with a calibrated threshold.

    Two image scores exist. Version 1 (``blocks`` empty): the Mahalanobis distance of the whole
    penultimate feature vector. Version 2 (``blocks``): a Mahalanobis distance per feature block
    (:func:`mridomain.iap.model.feature_blocks`: the pooled map and each stage's statistics) and
    the energy of the heads, combined by a logistic model fitted with outlier exposure, the score
    the largest of its log-odds and the block distances, each standardized (:func:`combine`;
    higher = more out of domain); its threshold is calibrated on cross-fitted in-domain scores
    (see :func:`mridomain.iap.trust.calibrate`).
    """

    mean: np.ndarray
    precision: np.ndarray
    threshold: float
    quantile: float
    n_reference: int
    n_calibration_slices: int
    n_calibration_patients: int
    calibration_split: str
    widened: bool
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)   # continuous IAP: training range
    vocabularies: dict[str, list[str]] = field(default_factory=dict)       # categorical IAP: training values
    rule: DomainRule = field(default_factory=DomainRule)
    blocks: list[tuple[str, int, int]] = field(default_factory=list)       # v2: (name, start, stop)
    block_means: list[np.ndarray] = field(default_factory=list)
    block_precisions: list[np.ndarray] = field(default_factory=list)
    combiner: dict[str, Any] = field(default_factory=dict)                 # v2: center, scale, weights, bias
    expected_false_out: float | None = None     # share of cross-fitted in-domain scores above the threshold
    outliers: dict[str, int] = field(default_factory=dict)                 # v2: outlier kind -> count

    @property
    def small(self) -> bool:
        """True when the calibration set is under 300 slices or 30 patients: its threshold is flagged as uncertain."""
        return (self.n_calibration_slices < SMALL_CALIBRATION_SLICES
                or self.n_calibration_patients < SMALL_CALIBRATION_PATIENTS)

    @property
    def note(self) -> str:
        """One sentence on how the threshold was set, for reports."""
        how = ("outlier-exposed per-block Mahalanobis + energy score" if self.blocks
               else "Mahalanobis distance of the penultimate features")
        text = (f"in-domain threshold {self.threshold:.4g} ({how}): the {100 * self.quantile:g}th percentile of "
                f"{self.n_calibration_slices} {self.calibration_split} slices ({self.n_calibration_patients} "
                "patients), bounded with 95% confidence")
        if self.expected_false_out is not None:
            text += f"; expected false-out rate {100 * self.expected_false_out:.1f}% of in-domain slices"
        if self.small:
            text += (f"; a small calibration set (fewer than {SMALL_CALIBRATION_SLICES} slices or "
                     f"{SMALL_CALIBRATION_PATIENTS} patients): too small to judge reliably")
        if self.widened:
            text += "; too few slices for that bound, so widened beyond the largest calibration score"
        return text

    @classmethod
    def fit(cls, reference: np.ndarray, calibration: np.ndarray, n_calibration_patients: int,
            calibration_split: str = "val", quantile: float = 0.99, ranges: dict | None = None,
            vocabularies: dict | None = None) -> "DomainModel":
        """Version 1: one Mahalanobis distance fitted on ``reference``, thresholded on ``calibration``."""
        scorer = MahalanobisScorer().fit(reference)
        threshold, widened = quantile_upper_bound(scorer.score(calibration), quantile)
        return cls(scorer.mean, scorer.precision, threshold, quantile, int(len(reference)),
                   int(len(calibration)), int(n_calibration_patients), calibration_split, widened,
                   dict(ranges or {}), dict(vocabularies or {}))

    def block_distances(self, feats: np.ndarray, logits: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """(N, B + 1) inputs of the v2 combiner: log Mahalanobis distance per block, then the energy."""
        return combiner_inputs(feats, logits, self.blocks, self.block_means, self.block_precisions)

    def score(self, feats: np.ndarray, logits: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Image score per slice, higher = further from the training domain (v2 needs ``logits``)."""
        if not self.blocks:
            scorer = MahalanobisScorer()
            scorer.mean, scorer.precision = self.mean, self.precision
            return scorer.score(feats)
        return combine(self.block_distances(feats, logits), self.combiner)

    def header_outside(self, truth: dict[str, Any], rule: DomainRule | None = None) -> list[str]:
        """The header values of the rule's IAPs a run never saw in training: "manufacturer=TOSHIBA
        not in the training vocabulary", "tr=4000 outside the training range 3.2-6.1". A numeric
        value of a categorical IAP (flip angle) within the rule's tolerance of a training value
        counts as seen."""
        rule = rule or self.rule
        tol = rule.tolerance
        out = []
        for iap, value in truth.items():
            if iap not in rule.header_iaps or value is None:
                continue
            if iap in self.vocabularies:
                vocab = self.vocabularies[iap]
                if str(value) in vocab:
                    continue
                v, known = _as_number(value), [_as_number(c) for c in vocab]
                if v is not None and known and all(k is not None for k in known) and any(
                        abs(v - k) <= tol * abs(k) for k in known):
                    continue
                out.append(f"{iap}={value} not in the training vocabulary")
            elif iap in self.ranges:
                lo, hi = self.ranges[iap]
                v = _as_number(value)
                if v is not None and (v < lo * (1 - tol) or v > hi * (1 + tol)):
                    out.append(f"{iap}={v:g} outside the training range {lo:g}-{hi:g}")
        return out

    def judge(self, scores: np.ndarray | None, truths: Sequence[dict[str, Any] | None],
              rule: DomainRule | None = None) -> pd.DataFrame:
        """:func:`domain_verdict` of rows with image scores (None: no image evidence) and header
        truths (``{iap: value}``; None or {} where the row has no header)."""
        rule = rule or self.rule
        unseen = [None if not t else "; ".join(self.header_outside(t, rule)) for t in truths]
        image_in = None if scores is None else np.asarray(scores) <= self.threshold
        return domain_verdict(image_in, unseen, rule)

    # -- persistence --------------------------------------------------------------------------
    def save(self, run: str | Path) -> None:
        """Write the domain model into the run folder: its statistics as safetensors, the rest as JSON."""
        from safetensors.numpy import save_file

        from mridomain.files import atomic_write

        run = Path(run)
        tensors = {"mean": self.mean.astype(np.float32), "precision": self.precision.astype(np.float32)}
        for k, (m, p) in enumerate(zip(self.block_means, self.block_precisions)):
            tensors[f"block{k}_mean"], tensors[f"block{k}_precision"] = m.astype(np.float32), p.astype(np.float32)
        atomic_write(run / DOMAIN_TENSORS, lambda tmp: save_file(tensors, str(tmp)))
        skip = ("mean", "precision", "block_means", "block_precisions")
        meta = {k: v for k, v in asdict(self).items() if k not in skip}
        meta["ranges"] = {k: list(v) for k, v in self.ranges.items()}
        meta["rule"] = self.rule.to_dict()
        meta["blocks"] = [list(b) for b in self.blocks]
        meta["combiner"] = {k: (np.asarray(v).tolist() if not isinstance(v, (str, float, int)) else v)
                            for k, v in self.combiner.items()}
        dump_json({"version": 2 if self.blocks else 1, **meta, "note": self.note}, run / DOMAIN_JSON)

    @classmethod
    def load(cls, run: str | Path) -> "DomainModel | None":
        """The run's domain model, or None for a run that has none (trained before it existed)."""
        from mridomain.engine.checkpoint import read_tensors

        run = Path(run)
        if not (run / DOMAIN_JSON).exists():
            return None
        meta = read_json(run / DOMAIN_JSON)
        tensors = read_tensors(run / DOMAIN_TENSORS)
        try:
            blocks = [(str(b[0]), int(b[1]), int(b[2])) for b in meta.get("blocks", [])]
            efo = meta.get("expected_false_out")
            return cls(mean=tensors["mean"].double().numpy(), precision=tensors["precision"].double().numpy(),
                       threshold=float(meta["threshold"]), quantile=float(meta["quantile"]),
                       n_reference=int(meta["n_reference"]), n_calibration_slices=int(meta["n_calibration_slices"]),
                       n_calibration_patients=int(meta["n_calibration_patients"]),
                       calibration_split=str(meta["calibration_split"]), widened=bool(meta["widened"]),
                       ranges={k: (float(v[0]), float(v[1])) for k, v in meta.get("ranges", {}).items()},
                       vocabularies={k: list(v) for k, v in meta.get("vocabularies", {}).items()},
                       rule=DomainRule.from_dict(meta.get("rule", {}), f"{run / DOMAIN_JSON}: rule"),
                       blocks=blocks,
                       block_means=[tensors[f"block{k}_mean"].double().numpy() for k in range(len(blocks))],
                       block_precisions=[tensors[f"block{k}_precision"].double().numpy() for k in range(len(blocks))],
                       combiner=dict(meta.get("combiner", {})),
                       expected_false_out=None if efo is None else float(efo),
                       outliers={str(k): int(v) for k, v in meta.get("outliers", {}).items()})
        except (KeyError, TypeError, ValueError) as err:
            raise SchemaMismatchError(f"{run / DOMAIN_JSON}: malformed domain model ({type(err).__name__}: {err})") from None


@dataclass
class ExposedFit:
    """What :func:`fit_exposed` returns: the block models fitted on all in-domain rows, the
    combiner, and the cross-fitted scores (each row scored by models that never saw its group)."""

    block_means: list[np.ndarray]
    block_precisions: list[np.ndarray]
    combiner: dict[str, Any]
    in_scores: np.ndarray
    out_scores: np.ndarray


def _block_models(feats: np.ndarray, blocks: Sequence[tuple[str, int, int]]) -> tuple[list, list]:
    means, precisions = [], []
    for _, start, stop in blocks:
        scorer = MahalanobisScorer().fit(feats[:, start:stop])
        means.append(scorer.mean)
        precisions.append(scorer.precision)
    return means, precisions


def fit_exposed(in_feats: np.ndarray, in_logits: dict[str, np.ndarray], in_groups: np.ndarray,
                out_feats: np.ndarray, out_logits: dict[str, np.ndarray], out_groups: np.ndarray,
                blocks: Sequence[tuple[str, int, int]], n_folds: int = 5, seed: int = 0) -> ExposedFit:
    """Outlier exposure on top of frozen features, cross-fitted by group (patient).

    The in-domain rows are split into ``n_folds`` folds of whole groups; each fold's rows, and the
    outliers of its groups (an outlier made from a slice shares its patient's group), are scored by
    per-block Mahalanobis models fitted on the other folds. A logistic model then learns from these
    out-of-sample inputs (:func:`combiner_inputs`) how to weigh the blocks and the energy to tell
    in-domain slices from outliers (balanced classes, L2 penalty: a handful of weights, nothing to
    overfit). The deployed block models are fitted on all in-domain rows; the cross-fitted
    in-domain scores are the honest sample its threshold is calibrated on.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    in_feats, out_feats = np.asarray(in_feats, np.float64), np.asarray(out_feats, np.float64)
    in_groups, out_groups = np.asarray(in_groups).astype(str), np.asarray(out_groups).astype(str)
    n_groups = len(np.unique(in_groups))
    if n_groups < 2:
        raise SchemaMismatchError(f"outlier exposure: need in-domain rows of at least 2 patients, got {n_groups}")
    folds = min(n_folds, n_groups)
    in_x = np.zeros((len(in_feats), len(blocks) + 1))
    out_x = np.zeros((len(out_feats), len(blocks) + 1))
    fold_of_group = {}
    for k, (_, test) in enumerate(GroupKFold(n_splits=folds).split(in_feats, groups=in_groups)):
        fold_of_group.update({g: k for g in np.unique(in_groups[test])})
    rng = np.random.default_rng(seed)
    # outliers of no in-domain group (synthetic, brain) are spread over the folds at random
    out_fold = np.array([fold_of_group.get(g, int(rng.integers(folds))) for g in out_groups])
    in_fold = np.array([fold_of_group[g] for g in in_groups])
    for k in range(folds):
        means, precisions = _block_models(in_feats[in_fold != k], blocks)
        in_x[in_fold == k] = combiner_inputs(in_feats[in_fold == k], {h: v[in_fold == k] for h, v in in_logits.items()},
                                             blocks, means, precisions)
        if (out_fold == k).any():
            out_x[out_fold == k] = combiner_inputs(out_feats[out_fold == k],
                                                   {h: v[out_fold == k] for h, v in out_logits.items()},
                                                   blocks, means, precisions)
    center, scale = in_x.mean(0), in_x.std(0) + 1e-9
    lr = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
    lr.fit((np.r_[in_x, out_x] - center) / scale, np.r_[np.zeros(len(in_x)), np.ones(len(out_x))])
    combiner = {"center": center.tolist(), "scale": scale.tolist(), "weights": lr.coef_[0].tolist(),
                "bias": float(lr.intercept_[0]), "inputs": [b[0] for b in blocks] + ["energy"]}
    components = _components(in_x, combiner)
    combiner["component_center"] = components.mean(0).tolist()
    combiner["component_scale"] = (components.std(0) + 1e-9).tolist()
    means, precisions = _block_models(in_feats, blocks)
    return ExposedFit(means, precisions, combiner, combine(in_x, combiner), combine(out_x, combiner))
