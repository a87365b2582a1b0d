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
from typing import Any

import numpy as np

from mridomain.errors import SchemaMismatchError
from mridomain.files import dump_json, read_json

__all__ = ["MahalanobisScorer", "DomainModel", "quantile_upper_bound", "DOMAIN_JSON", "DOMAIN_TENSORS",
           "SMALL_CALIBRATION_SLICES", "SMALL_CALIBRATION_PATIENTS"]

DOMAIN_JSON, DOMAIN_TENSORS = "domain.json", "domain.safetensors"
#: below these a calibration set is called small and the threshold widened
SMALL_CALIBRATION_SLICES, SMALL_CALIBRATION_PATIENTS = 300, 30


class MahalanobisScorer:
    """Mahalanobis distance to reference features under one shared Ledoit-Wolf covariance."""

    def fit(self, feats: np.ndarray) -> "MahalanobisScorer":
        from sklearn.covariance import LedoitWolf

        feats = np.asarray(feats, np.float64)
        if feats.ndim != 2 or len(feats) < 3:
            raise SchemaMismatchError(f"domain model: need at least 3 reference feature rows, got shape {feats.shape}")
        cov = LedoitWolf().fit(feats)
        self.mean, self.precision = cov.location_, cov.precision_
        return self

    def score(self, feats: np.ndarray) -> np.ndarray:
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
    """The training domain of a run in feature space, with a calibrated threshold."""

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

    @property
    def small(self) -> bool:
        return (self.n_calibration_slices < SMALL_CALIBRATION_SLICES
                or self.n_calibration_patients < SMALL_CALIBRATION_PATIENTS)

    @property
    def note(self) -> str:
        text = (f"in-domain threshold {self.threshold:.4g}: the {100 * self.quantile:g}th percentile of "
                f"{self.n_calibration_slices} {self.calibration_split} slices ({self.n_calibration_patients} "
                "patients), bounded with 95% confidence")
        if self.small:
            text += (f"; a small calibration set (fewer than {SMALL_CALIBRATION_SLICES} slices or "
                     f"{SMALL_CALIBRATION_PATIENTS} patients)")
        if self.widened:
            text += "; too few slices for that bound, so widened beyond the largest calibration score"
        return text

    @classmethod
    def fit(cls, reference: np.ndarray, calibration: np.ndarray, n_calibration_patients: int,
            calibration_split: str = "val", quantile: float = 0.99, ranges: dict | None = None,
            vocabularies: dict | None = None) -> "DomainModel":
        scorer = MahalanobisScorer().fit(reference)
        threshold, widened = quantile_upper_bound(scorer.score(calibration), quantile)
        return cls(scorer.mean, scorer.precision, threshold, quantile, int(len(reference)),
                   int(len(calibration)), int(n_calibration_patients), calibration_split, widened,
                   dict(ranges or {}), dict(vocabularies or {}))

    def score(self, feats: np.ndarray) -> np.ndarray:
        scorer = MahalanobisScorer()
        scorer.mean, scorer.precision = self.mean, self.precision
        return scorer.score(feats)

    def header_outside(self, truth: dict[str, Any]) -> list[str]:
        """The header values a run never saw in training: "manufacturer=TOSHIBA not in the
        training vocabulary", "tr=4000 outside the training range 3.2-6.1"."""
        out = []
        for iap, value in truth.items():
            if iap in self.vocabularies and str(value) not in self.vocabularies[iap]:
                out.append(f"{iap}={value} not in the training vocabulary")
            elif iap in self.ranges:
                lo, hi = self.ranges[iap]
                v = float(value)
                if v < lo * 0.98 or v > hi * 1.02:
                    out.append(f"{iap}={v:g} outside the training range {lo:g}-{hi:g}")
        return out

    # -- persistence --------------------------------------------------------------------------
    def save(self, run: str | Path) -> None:
        from safetensors.numpy import save_file

        from mridomain.files import atomic_write

        run = Path(run)
        tensors = {"mean": self.mean.astype(np.float32), "precision": self.precision.astype(np.float32)}
        atomic_write(run / DOMAIN_TENSORS, lambda tmp: save_file(tensors, str(tmp)))
        meta = {k: v for k, v in asdict(self).items() if k not in ("mean", "precision")}
        meta["ranges"] = {k: list(v) for k, v in self.ranges.items()}
        dump_json({"version": 1, **meta, "note": self.note}, run / DOMAIN_JSON)

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
            return cls(mean=tensors["mean"].double().numpy(), precision=tensors["precision"].double().numpy(),
                       threshold=float(meta["threshold"]), quantile=float(meta["quantile"]),
                       n_reference=int(meta["n_reference"]), n_calibration_slices=int(meta["n_calibration_slices"]),
                       n_calibration_patients=int(meta["n_calibration_patients"]),
                       calibration_split=str(meta["calibration_split"]), widened=bool(meta["widened"]),
                       ranges={k: (float(v[0]), float(v[1])) for k, v in meta.get("ranges", {}).items()},
                       vocabularies={k: list(v) for k, v in meta.get("vocabularies", {}).items()})
        except (KeyError, TypeError, ValueError) as err:
            raise SchemaMismatchError(f"{run / DOMAIN_JSON}: malformed domain model ({type(err).__name__}: {err})") from None
