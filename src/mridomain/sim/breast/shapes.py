"""Small geometric helpers of the breast phantom: soft (anti-aliased) shapes and the lesion's outline.

Split out of :mod:`mridomain.sim.breast.phantom` (issue 22); the phantom imports these names.
"""
from __future__ import annotations

import numpy as np

# ---- small geometric helpers --------------------------------------------------------------------
def _soft(sd, pix: float) -> np.ndarray:
    """Area fraction inside a surface of signed distance ``sd`` (mm), one-pixel ramp."""
    return np.clip(0.5 - sd / np.float32(pix), 0, 1).astype(np.float32)


def _soft_level(level, radius, pix, inset: float = 0.0):
    d = (np.sqrt(np.maximum(level, 0)) - 1.0) * radius + inset
    return np.clip(0.5 - d / pix, 0, 1).astype(np.float32)


def _band(depth, d0: float, d1, pix: float) -> np.ndarray:
    """Fraction of a pixel between depths d0 and d1 (mm below the skin)."""
    return np.clip(np.clip((depth - d0) / pix + 0.5, 0, 1) - np.clip((depth - d1) / pix + 0.5, 0, 1),
                   0, 1).astype(np.float32)


def _ellipse(X, Y, cx, cy, rx, ry, pix) -> np.ndarray:
    lv = ((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2
    return _soft_level(lv, min(rx, ry), pix)


def _smin(a, b, k: float):
    """Polynomial smooth minimum: the union of two shapes with a fillet of radius ~k (mm)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0, 1)
    return b * (1 - h) + a * h - k * h * (1 - h)


def _box(x: np.ndarray, y: np.ndarray, xlo, xhi, ylo, yhi) -> tuple[slice, slice] | None:
    """Row and column slices of the pixels with xlo < x < xhi and ylo < y < yhi (1-D grids)."""
    cols = np.nonzero((x > xlo) & (x < xhi))[0]
    rows = np.nonzero((y > ylo) & (y < yhi))[0]
    if not len(cols) or not len(rows):
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def tumor_fraction(tm, X, Y, z: float, pix: float) -> tuple[np.ndarray, np.ndarray]:
    """In-plane area fraction of the lesion ``tm`` (a phantom :class:`~mridomain.sim.breast.phantom.Tumor`)
    and of its necrotic core at height z."""
    dx, dy, dz = X - tm.center[0], Y - tm.center[1], np.float32(z - tm.center[2])
    r = np.sqrt(dx * dx + dy * dy + dz * dz) + 1e-6
    u = np.stack([dx / r, dy / r, np.broadcast_to(dz / r, r.shape)], axis=-1)
    rad = np.ones_like(r)
    cosang = u @ tm.lobe_dirs.T  # (..., K) lobulation: smooth radial modulation
    rad += (tm.lobe_amp * np.cos(tm.lobe_freq * cosang * np.pi + tm.lobe_phase)).sum(axis=-1)
    if len(tm.spike_dirs):
        c = np.clip(u @ tm.spike_dirs.T, 0, 1)
        rad += (tm.spike_len * c ** 300).sum(axis=-1)  # narrow needles (angular width ~0.06 rad)
    rad *= tm.radius
    frac = np.clip(0.5 + (rad - r) / pix, 0, 1).astype(np.float32)
    core = np.zeros_like(frac)
    if tm.necrotic:
        core = np.clip(0.5 + (0.45 * tm.radius - r) / pix, 0, 1).astype(np.float32)
    return frac, core


def _unit(rng, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)
