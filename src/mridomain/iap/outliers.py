"""Images that are not the training domain, made without downloads: the outliers of outlier exposure.

Outlier exposure (Hendrycks, Mazeika & Dietterich, ICLR 2019) teaches a detector what "not the
training domain" looks like from auxiliary outliers; a detector so trained generalizes to outliers
of other kinds than those it saw. A run's domain has one body part in one orientation from a few
vendors, so its outliers are what a user may feed it instead:

- ``brain``: slices of the brain simulator (:mod:`mridomain.sim.brain`; T1, T1Gd, T2, FLAIR), axial,
  sagittal and coronal: another body part and other contrasts;
- ``upside_down`` / ``rotated``: training slices turned 180 degrees about the horizontal axis or by 90 degrees
  (another orientation; a left-right mirror is *not* an outlier: it is the other patient position);
- ``zoomed``: a small crop of a training slice blown up (another field of view and anatomy scale);
- ``inverted``: a training slice's intensities turned upside down (another contrast);
- ``smooth_noise`` / ``ellipses``: non-anatomical pictures (smooth random fields, random ellipses).

Every outlier is preprocessed exactly as the run's training slices (its ``preprocess.json``).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from mridomain.iap.cache import preprocess_slices

__all__ = ["OUTLIER_KINDS", "transformed_outliers", "synthetic_outliers", "brain_outliers"]

OUTLIER_KINDS = ("brain", "upside_down", "rotated", "zoomed", "inverted", "smooth_noise", "ellipses")
_TRANSFORMS = ("upside_down", "rotated", "zoomed", "inverted")


def transformed_outliers(images: np.ndarray, preprocess: dict[str, Any], rng: np.random.Generator
                         ) -> tuple[np.ndarray, list[str]]:
    """One outlier per given (preprocessed) slice, of a transform drawn at random: (slices, kinds).

    With a k-space view below the slices, an outlier keeps its source slice's view (rows swapped
    when rotated): the native pixels it would be computed on are gone, and a view computed on
    the 224-pixel slice would mark every transformed outlier by its small grid, a shortcut the
    domain model would learn instead of the anatomy's orientation."""
    from mridomain.data.kspace import append_view, split_view, swap_axes

    out, kinds = [], []
    spec = preprocess.get("kspace_view")
    images, views = split_view(np.asarray(images, np.float32), spec)
    image_preprocess = {k: v for k, v in preprocess.items() if k != "kspace_view"}
    for i, img in enumerate(images):
        kind = _TRANSFORMS[int(rng.integers(len(_TRANSFORMS)))]
        if kind == "upside_down":
            x = img[::-1]
        elif kind == "rotated":
            x = np.rot90(img, k=1 if rng.random() < 0.5 else 3)
        elif kind == "zoomed":
            h, w = img.shape
            f = rng.uniform(0.25, 0.45)
            ch, cw = max(8, int(h * f)), max(8, int(w * f))
            # a crop where the image has signal: centred on a random bright pixel
            ys, xs = np.nonzero(img > np.quantile(img, 0.7))
            k = int(rng.integers(len(ys))) if len(ys) else 0
            cy = int(np.clip(ys[k] if len(ys) else h // 2, ch // 2, h - ch // 2))
            cx = int(np.clip(xs[k] if len(xs) else w // 2, cw // 2, w - cw // 2))
            x = img[cy - ch // 2: cy + ch // 2, cx - cw // 2: cx + cw // 2]
        else:
            x = img.max() - img
        y = preprocess_slices(np.ascontiguousarray(x)[None], image_preprocess)[0]
        if views is not None:
            y = append_view(y, swap_axes(views[i]) if kind == "rotated" else views[i])
        out.append(y)
        kinds.append(kind)
    return np.stack(out), kinds


def synthetic_outliers(n: int, preprocess: dict[str, Any], rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """``n`` non-anatomical pictures, half smooth random fields, half random ellipses."""
    from scipy.ndimage import gaussian_filter

    size = 128
    yy, xx = np.mgrid[:size, :size] / size
    out, kinds = [], []
    for i in range(n):
        if i % 2 == 0:
            x = gaussian_filter(rng.normal(size=(size, size)), sigma=rng.uniform(1.0, 12.0))
            x = np.abs(x) if rng.random() < 0.5 else x - x.min()
            kinds.append("smooth_noise")
        else:
            x = np.zeros((size, size))
            for _ in range(int(rng.integers(1, 6))):
                cy, cx, ry, rx = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.4), rng.uniform(0.05, 0.4)
                x += rng.uniform(0.2, 1.0) * ((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) <= 1)
            x += rng.normal(0, rng.uniform(0.0, 0.05), x.shape)
            x = np.clip(x, 0, None)
            kinds.append("ellipses")
        out.append(preprocess_slices(x.astype(np.float32)[None], preprocess)[0])
    return np.stack(out), kinds


def brain_outliers(n_subjects: int, per_volume: int, preprocess: dict[str, Any], seed: int = 0
                   ) -> tuple[np.ndarray, list[str]]:
    """Slices of ``n_subjects`` simulated brains: every sequence, axial, sagittal and coronal,
    ``per_volume`` slices from the middle of each, as (slices, kinds)."""
    raw = _brain_slices(n_subjects, per_volume, seed)
    out = [preprocess_slices(sl[None], preprocess)[0] for sl in raw]
    return np.stack(out), ["brain"] * len(out)


@lru_cache(maxsize=4)
def _brain_slices(n_subjects: int, per_volume: int, seed: int) -> tuple[np.ndarray, ...]:
    """The raw slices of :func:`brain_outliers` (simulating a brain takes seconds: kept per process)."""
    from mridomain.sim.brain import make_subject

    out = []
    for i in range(n_subjects):
        subject = make_subject(seed + 7919, i, voxel_mm=2.0)
        for volume in subject.images.values():
            for axis in range(3):
                n = volume.shape[axis]
                for k in np.linspace(n * 0.3, n * 0.7, per_volume).astype(int):
                    sl = np.take(volume, k, axis=axis)
                    if sl.max() > 0:
                        out.append(np.ascontiguousarray(np.rot90(sl), dtype=np.float32))
    return tuple(out)
