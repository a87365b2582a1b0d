"""The breast phantom's glandular texture: one periodic power-law Gaussian field per process.

Split out of :mod:`mridomain.sim.breast.phantom` (issue 22: no module over 800 lines); the phantom
imports these names, and the field is the same as before (same seed, same arithmetic).
"""
from __future__ import annotations

import numpy as np

#: texture field: a periodic 128^3 grid of 0.75 mm voxels (96 mm period), made once per process
TEXTURE_N = 128
TEXTURE_MM = 0.75
#: anatomical-noise exponent of a 2-D slice of the glandular field: breast CT axial 1.79 (Chen 2012);
#: a 3-D isotropic field with spectrum f^-(beta + 1) has slices with spectrum f^-beta
ANATOMICAL_BETA = 1.8


# ---- shared texture field -------------------------------------------------------------------------
_TEXTURE: dict = {}


def texture_field() -> np.ndarray:
    """(N, N, N, 2) float32: a periodic power-law Gaussian field (glandular texture, 3-D spectrum
    f^-(beta + 1), unit variance) and a smooth field normalised by its gradient (its zero sets are
    the Cooper-ligament sheets). Made once per process from a fixed seed (deterministic)."""
    if "f" in _TEXTURE:
        return _TEXTURE["f"]
    n = TEXTURE_N
    rng = np.random.default_rng(20121)
    k = np.fft.fftfreq(n, d=TEXTURE_MM).astype(np.float32)
    kr = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :n // 2 + 1] ** 2)
    kr[0, 0, 0] = 1.0
    white = np.fft.rfftn(rng.standard_normal((n, n, n), dtype=np.float32))
    amp = kr ** (-(ANATOMICAL_BETA + 1) / 2)
    amp[0, 0, 0] = 0.0
    g = np.fft.irfftn(white * amp, s=(n, n, n), axes=(0, 1, 2)).astype(np.float32)
    g /= g.std()
    # ligament field: Gaussian spectrum (~6 mm correlation), distance to its zero set ~ |h| / |grad h|
    smooth = np.exp(-0.5 * (kr * 2 * np.pi * 6.0) ** 2)
    smooth[0, 0, 0] = 0.0
    h = np.fft.irfftn(np.fft.rfftn(rng.standard_normal((n, n, n), dtype=np.float32)) * smooth,
                      s=(n, n, n), axes=(0, 1, 2)).astype(np.float32)
    grad = np.sqrt(sum(np.gradient(h, TEXTURE_MM, axis=a) ** 2 for a in range(3)))
    dist = np.abs(h) / (grad + 1e-6 * grad.mean())
    # sheet of ~0.6 mm thickness; partial volume over one texture voxel
    sheet = np.clip(1.0 - (dist - 0.3) / TEXTURE_MM, 0, 1).astype(np.float32) * 0.8
    _TEXTURE["f"] = np.ascontiguousarray(np.stack([g, sheet], axis=-1))
    return _TEXTURE["f"]


def _texture_lookup(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trilinear, periodic lookup of both texture channels at (3, M) voxel coordinates."""
    fld = texture_field()
    n = fld.shape[0]
    flat = fld.reshape(-1, 2)                            # both channels in one gather
    c0f = np.floor(coords)
    fr = (coords - c0f).astype(np.float32)
    c0 = c0f.astype(np.int32) % n
    c1 = (c0 + 1) % n
    zs = (c0[0] * (n * n), c1[0] * (n * n))
    ys = (c0[1] * n, c1[1] * n)
    xs = (c0[2], c1[2])
    wz = (1 - fr[0], fr[0])
    wy = (1 - fr[1], fr[1])
    wx = (1 - fr[2], fr[2])
    out = np.zeros((coords.shape[1], 2), dtype=np.float32)
    for a in (0, 1):
        for b in (0, 1):
            zy = zs[a] + ys[b]
            wzy = wz[a] * wy[b]
            for c in (0, 1):
                out += flat[zy + xs[c]] * (wzy * wx[c])[:, None]
    return out[:, 0], out[:, 1]
