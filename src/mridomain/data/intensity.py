"""Percentile intensity scaling: the one implementation the IAP cache, the synthesis data and the
DCE pairs share.

MRI intensities have no absolute scale, so each image (or volume) is clipped to two of its own
percentiles and mapped to [0, 1]. Two choices differ between uses and are fields, so a run can
record exactly what was done (``to_dict`` / ``from_dict``): whether the percentiles are taken over
the non-zero voxels only (``foreground``: skull-stripped or masked volumes, whose zero background
would otherwise be most of the sample) and whether the lower end is kept at or below 0
(``keep_zero``: that background then stays exactly 0).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mridomain.errors import InvalidArgumentError

__all__ = ["PercentileScaling"]


@dataclass(frozen=True)
class PercentileScaling:
    """Clip to the [``low``, ``high``] percentiles and scale to [0, 1], float32 out.

    >>> scale = PercentileScaling(low=0.0, high=100.0)
    >>> scale(np.array([2.0, 4.0, 6.0]))
    array([0. , 0.5, 1. ], dtype=float32)
    >>> PercentileScaling(foreground=True, keep_zero=True, low=0, high=100).bounds(np.array([0.0, 5.0, 10.0]))
    (0.0, 10.0)
    >>> PercentileScaling.from_dict(PercentileScaling(low=0.5).to_dict())
    PercentileScaling(low=0.5, high=99.5, foreground=False, keep_zero=False)
    """

    low: float = 1.0
    high: float = 99.5
    foreground: bool = False
    keep_zero: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.low) < float(self.high) <= 100.0:
            raise InvalidArgumentError(f"percentile scaling: need 0 <= low < high <= 100, got low {self.low}, "
                                       f"high {self.high}")

    def bounds(self, image: np.ndarray) -> tuple[float, float] | None:
        """The intensities that map to 0 and 1 (None when there is nothing to take them from)."""
        x = np.asarray(image, dtype=np.float32)
        sample = x[x != 0] if self.foreground else x
        if sample.size == 0:
            return None
        lo, hi = (float(v) for v in np.percentile(sample, [self.low, self.high]))
        if self.keep_zero:
            lo = min(lo, 0.0)
        return lo, hi

    def apply(self, image: np.ndarray, bounds: tuple[float, float] | None) -> np.ndarray:
        """``image`` scaled by given bounds (another image's, or :meth:`bounds`); a degenerate range
        (``hi <= lo``, or no bounds) gives zeros."""
        x = np.asarray(image, dtype=np.float32)
        if bounds is None or not bounds[1] > bounds[0]:
            return np.zeros_like(x)
        lo, hi = bounds
        return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.apply(image, self.bounds(image))

    def to_dict(self) -> dict[str, Any]:
        """The settings as stored in a cache's or run's JSON (``method: percentile``)."""
        return {"method": "percentile", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PercentileScaling":
        """The scaling a stored dict describes (the ``kind`` / ``method`` key is ignored)."""
        fields = {k: data[k] for k in ("low", "high", "foreground", "keep_zero") if k in data}
        return cls(**fields)
