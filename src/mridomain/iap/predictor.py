"""The one predictor interface every consumer of IAP predictions goes through.

``predict``, ``evaluate``, ``route`` and ``compare`` all call :meth:`Predictor.forward` once per
batch of preprocessed slices and read what they need from its :class:`PredictorOutput`:
probabilities and logits of the categorical heads, the continuous values in their units, and the
penultimate features, all from one forward pass. :class:`mridomain.iap.IAPPredictor` implements it;
a stand-in for tests or another model only needs ``classes``, ``preprocess`` and ``forward``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from mridomain.errors import SchemaMismatchError

__all__ = ["Predictor", "PredictorOutput", "value_column", "UNKNOWN"]

#: the answer of an abstaining prediction on an image outside the training domain
UNKNOWN = "unknown"


def value_column(name: str, unit: str | None) -> str:
    """Column of a continuous IAP's predicted value: ``tr`` in ms -> ``tr_ms``."""
    return f"{name}_{unit}" if unit else name


@dataclass
class PredictorOutput:
    """Everything one forward pass over N slices gives.

    Attributes:
        probabilities: categorical IAP -> (N, C) probabilities in ``classes[iap]`` order (calibrated:
            softmax of logits / temperature where the run has temperatures).
        logits: categorical IAP -> (N, C) raw logits (energy scores need them).
        continuous: continuous IAP -> (N,) predicted value in its unit.
        features: (N, D) penultimate features (feature-space out-of-distribution scores).
        classes: categorical IAP -> vocabulary ("other" last: values unseen in training).
        units: continuous IAP -> unit (None when it has none).
        domain_score: (N,) distance to the run's training domain (None without a domain model).
        domain_threshold: score above which a slice is out of the training domain.
    """

    probabilities: dict[str, np.ndarray]
    logits: dict[str, np.ndarray]
    continuous: dict[str, np.ndarray]
    features: np.ndarray
    classes: dict[str, list[str]]
    units: dict[str, str | None] = field(default_factory=dict)
    domain_score: np.ndarray | None = None
    domain_threshold: float | None = None

    @property
    def in_domain(self) -> np.ndarray | None:
        """Per slice: inside the training domain (None without a domain model)."""
        if self.domain_score is None or self.domain_threshold is None:
            return None
        return np.asarray(self.domain_score) <= self.domain_threshold

    def __len__(self) -> int:
        return int(len(self.features))

    @property
    def categorical_iaps(self) -> list[str]:
        """Names of the categorical IAPs, in output order."""
        return list(self.probabilities)

    def predicted(self, iap: str) -> np.ndarray:
        """Most probable value of a categorical IAP per slice."""
        vocab = np.asarray(self.classes[iap], dtype=object)
        return vocab[np.argmax(self.probabilities[iap], axis=1)]

    def subset(self, rows: np.ndarray | slice) -> "PredictorOutput":
        """The output of some of the slices."""
        return PredictorOutput({k: v[rows] for k, v in self.probabilities.items()},
                               {k: v[rows] for k, v in self.logits.items()},
                               {k: v[rows] for k, v in self.continuous.items()}, self.features[rows],
                               self.classes, self.units,
                               None if self.domain_score is None else self.domain_score[rows], self.domain_threshold)

    def mean(self) -> "PredictorOutput":
        """One row: the slices' probabilities, values and features averaged (a series' answer)."""
        def avg(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {k: np.asarray(v, np.float64).mean(axis=0, keepdims=True) for k, v in d.items()}

        # a series is inside the domain when its typical slice is: the median slice score
        score = None if self.domain_score is None else np.median(self.domain_score, keepdims=True)
        return PredictorOutput(avg(self.probabilities), avg(self.logits), avg(self.continuous),
                               np.asarray(self.features, np.float64).mean(axis=0, keepdims=True),
                               self.classes, self.units, score, self.domain_threshold)

    @staticmethod
    def concat(parts: list["PredictorOutput"]) -> "PredictorOutput":
        """Several outputs joined in order into one (classes, units and threshold from the first); an
        empty list is an error."""
        if not parts:
            raise SchemaMismatchError("no predictor outputs to join")
        first = parts[0]

        def cat(key: str) -> dict[str, np.ndarray]:
            return {k: np.concatenate([getattr(p, key)[k] for p in parts]) for k in getattr(first, key)}

        score = None if first.domain_score is None else np.concatenate([p.domain_score for p in parts])
        return PredictorOutput(cat("probabilities"), cat("logits"), cat("continuous"),
                               np.concatenate([p.features for p in parts]), first.classes, first.units,
                               score, first.domain_threshold)

    def table(self, top_k: int = 1, abstain: bool = False, in_domain: np.ndarray | None = None) -> pd.DataFrame:
        """One row per slice: top-k values and probabilities of each categorical IAP
        (``<iap>``, ``<iap>_prob``, ``<iap>_top2``, ``<iap>_prob2``, ...), each continuous value
        (``tr_ms``), and ``domain_score`` / ``in_domain`` where the run has a domain model.
        ``in_domain`` replaces the image-only verdict (the verdict of all the evidence,
        :meth:`mridomain.iap.domain.DomainModel.judge`). With ``abstain`` the answers of
        out-of-domain rows are "unknown" (continuous: NaN)."""
        cols: dict[str, Any] = {}
        for iap, p in self.probabilities.items():
            vocab = np.asarray(self.classes[iap], dtype=object)
            order = np.argsort(-p, axis=1, kind="stable")[:, :top_k]
            for r in range(order.shape[1]):
                cols[iap if r == 0 else f"{iap}_top{r + 1}"] = vocab[order[:, r]]
                cols[f"{iap}_prob" if r == 0 else f"{iap}_prob{r + 1}"] = np.take_along_axis(
                    p, order[:, r:r + 1], axis=1)[:, 0].astype(float)
        for iap, v in self.continuous.items():
            cols[value_column(iap, self.units.get(iap))] = np.asarray(v, dtype=float)
        table = pd.DataFrame(cols, index=pd.RangeIndex(len(self)))
        inside = self.in_domain if in_domain is None else np.asarray(in_domain, bool)
        if self.domain_score is not None:
            table["domain_score"] = np.asarray(self.domain_score, dtype=float)
        if inside is not None:
            table["in_domain"] = inside
            if abstain and not inside.all():
                out = ~inside
                for iap in self.probabilities:
                    answer = [c for c in table.columns if c == iap or c.startswith(f"{iap}_top")]
                    table.loc[out, answer] = UNKNOWN
                for iap in self.continuous:
                    table.loc[out, value_column(iap, self.units.get(iap))] = np.nan
        return table


@runtime_checkable
class Predictor(Protocol):
    """What ``predict``, ``evaluate``, ``route`` and ``compare`` need of a model.

    ``preprocess`` says how raw slices become its inputs (``{"size": [H, W], "normalization":
    {...}}``, the run's preprocess.json); ``forward`` takes slices already preprocessed so.
    """

    @property
    def classes(self) -> dict[str, list[str]]:
        """Categorical IAP -> its vocabulary, in the order of its probability columns."""

    @property
    def preprocess(self) -> dict[str, Any]:
        """How raw slices become inputs: the run's preprocess.json (``size``, ``normalization``, ...)."""

    def forward(self, images: np.ndarray) -> PredictorOutput:
        """Probabilities, logits, continuous values and features of slices (N, H, W) preprocessed as
        :attr:`preprocess` says."""
