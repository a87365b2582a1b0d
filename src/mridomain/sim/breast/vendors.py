"""Scanner- and vendor-specific behaviour: coils, field maps, reconstruction and stored values.

Each behaviour is a documented property of real systems (FIELD.md section 4): breast coils with
different channel counts and geometries (receive shading, g-factor), B1+ inhomogeneity growing with
B0, vendor k-space filters, interpolation, intensity normalisation and stored bit depth.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from mridomain.errors import InvalidArgumentError

#: DICOM Manufacturer strings as real scanners write them.
MANUFACTURER_DICOM = {"GE": "GE MEDICAL SYSTEMS", "SIEMENS": "SIEMENS"}


@dataclass(frozen=True)
class ReconStyle:
    """How a vendor turns k-space into stored pixel values."""

    filter: str               # "fermi" | "hamming" | "none"  k-space apodisation
    filter_radius: float      # Fermi: transition radius as a fraction of k_max
    filter_width: float       # Fermi: transition width (fraction of k_max); Hamming: strength 0..1
    shading_correction: float  # fraction of receive-coil shading removed (SCIC / Prescan Normalize)
    bits_stored: int          # 16 for GE, 12 for Siemens
    target_max: float         # stored value the vendor's autoscaling aims the bright tissue at


#: Vendor defaults. GE reconstructs with a Fermi apodisation and stores 16-bit values scaled by the
#: prescan receive gain; Siemens applies no raw filter by default, normalises intensity with the
#: body-coil reference ("Prescan Normalize") and stores 12-bit values.
VENDOR_RECON: dict[str, ReconStyle] = {
    "GE": ReconStyle("fermi", 0.90, 0.05, 0.35, 16, 1800.0),
    "SIEMENS": ReconStyle("none", 1.0, 0.0, 0.75, 12, 1100.0),
}

#: Largest gain the intensity correction applies (a smooth soft cap, g / sqrt(1 + (g / max)^2)).
#: The correction map comes from a low-resolution reference (body coil vs array, prescan); where
#: the breast array barely receives (posterior thorax, 2-5 % of the breasts' sensitivity) the map
#: cannot restore the signal, and real fat-saturated series keep the posterior body and the air
#: darker than the breasts. No vendor publishes its limit: 2 is an assumption (docs/simulator.md).
SHADING_GAIN_MAX = 2.0

#: Breast-coil channel counts per scanner model (typical product coils of each generation).
COIL_CHANNELS: dict[str, int] = {
    "Signa HDxt": 8, "SIGNA HDx": 8, "SIGNA EXCITE": 4, "Optima MR450w": 16,
    "Avanto": 7, "Skyra": 16, "TrioTim": 7, "Trio": 7,
}


def coil_positions(model: str, n_channels: int, breast_cx: float, chest_y: float) -> np.ndarray:
    """Element centres (x, y) of a bilateral breast coil: elements ring each breast cup.

    The ring radius and angular offset depend on the model so each scanner shades differently.
    """
    h = zlib.crc32(model.encode()) % 997 / 997.0  # stable across processes, unlike hash()
    phase = {"Signa HDxt": 0.1, "SIGNA HDx": 0.1, "SIGNA EXCITE": 0.4, "Optima MR450w": 0.25,
             "Avanto": 0.7, "Skyra": 0.55, "TrioTim": 0.7, "Trio": 0.7}.get(model, h)
    per_side = max(n_channels // 2, 1)
    pos = []
    for s in (-1, 1):
        ang = np.pi * (np.arange(per_side) / per_side) + phase
        r = 95.0 + 10 * phase
        for a in ang:
            pos.append((s * breast_cx + r * np.cos(a + (0 if s > 0 else np.pi)),
                        chest_y - 50 - 0.8 * r * np.sin(a)))
    if n_channels % 2:
        pos.append((0.0, chest_y + 40))  # a posterior/sternal element on odd-channel coils
    return np.asarray(pos, dtype=np.float32)


def coil_sensitivities(X, Y, positions: np.ndarray, depth_mm: float = 70.0) -> np.ndarray:
    """Magnitude sensitivity of each element (C, *X.shape): a near-field dipole-like fall-off."""
    d2 = (X[None] - positions[:, 0, None, None]) ** 2 + (Y[None] - positions[:, 1, None, None]) ** 2
    return (1.0 / (1.0 + d2 / depth_mm ** 2) ** 1.5).astype(np.float32)


def sense_gfactor(sens: np.ndarray, reduction: int, axis: int = -1) -> np.ndarray:
    """SENSE g-factor map for undersampling by ``reduction`` along ``axis`` (Pruessmann 1999).

    g = sqrt([(S^H S)^-1]_ii [S^H S]_ii) with S the (channels x R) sensitivities of the R pixels that
    alias onto each other; computed exactly here for real-valued coil maps.
    """
    if reduction <= 1:
        return np.ones(sens.shape[1:], dtype=np.float32)
    n = sens.shape[axis]
    shift = n // reduction
    stack = np.stack([np.roll(sens, -k * shift, axis=axis) for k in range(reduction)], axis=-1)
    # stack: (C, H, W, R) -> per pixel (C, R)
    s = np.moveaxis(stack, 0, -2)  # (H, W, C, R)
    shs = np.einsum("...cr,...cq->...rq", s, s) + 1e-6 * np.eye(reduction)
    inv = np.linalg.inv(shs)
    g = np.sqrt(np.clip(inv[..., 0, 0] * shs[..., 0, 0], 1, None))
    return g.astype(np.float32)


def rss(sens: np.ndarray) -> np.ndarray:
    """Root-sum-of-squares combined sensitivity: the receive shading of a multi-channel image."""
    return np.sqrt((sens ** 2).sum(axis=0)).astype(np.float32)


def b1_map(X, Y, b0: float, coef: np.ndarray, breast_cx: float) -> np.ndarray:
    """Relative transmit field B1+/B1nominal. At 3 T dielectric effects make it drop across the body
    (a left-right gradient between the breasts of 20-40 % in bilateral breast MRI); at 1.5 T it
    stays within a few percent.
    """
    strength = 0.04 if b0 < 2 else 0.18
    u = X / (2 * breast_cx)
    v = (Y + 60) / 150
    lr = strength * (1.0 + 0.25 * coef[0])
    b1 = 1.0 - lr * (u + 0.5) * (1 if coef[0] >= 0 else -1) + 0.5 * strength * 0.3 * coef[1] * v \
        - strength * 0.3 * (1 + 0.2 * coef[2]) * (u * u + v * v)
    return np.clip(b1, 0.4, 1.3).astype(np.float32)


def b0_offset_ppm(X, Y, z: float, coef: np.ndarray, suscept_ppm: float, chest_y) -> np.ndarray:
    """Off-resonance (ppm) after shimming: residual low-order shim terms plus the susceptibility
    gradient that grows towards the breast tip and skin (tissue-air interface)."""
    u, v, w = X / 150, Y / 150, z / 100
    poly = coef[0] + coef[1] * u + coef[2] * v + coef[3] * w + coef[4] * u * u + coef[5] * v * v \
        + coef[6] * u * v
    tip = np.clip((chest_y - Y) / 150, 0, 1.2) ** 2
    return (poly + suscept_ppm * tip).astype(np.float32)


def kspace_filter(shape: tuple[int, int], style: ReconStyle) -> np.ndarray | None:
    """Radial k-space apodisation for an acquired (phase, freq) k-space grid, centred layout."""
    if style.filter == "none":
        return None
    ny, nx = shape
    ky = np.linspace(-1, 1, ny, endpoint=False, dtype=np.float32)[:, None]
    kx = np.linspace(-1, 1, nx, endpoint=False, dtype=np.float32)[None, :]
    kr = np.sqrt(kx * kx + ky * ky)
    if style.filter == "fermi":
        return (1.0 / (1.0 + np.exp((kr - style.filter_radius) / style.filter_width))).astype(np.float32)
    if style.filter == "hamming":
        a = style.filter_width
        return (1 - a + a * np.cos(np.pi * np.clip(kr, 0, 1))).astype(np.float32)
    raise InvalidArgumentError(f"unknown k-space filter {style.filter!r}")


def smooth_zoom(small: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a smooth map computed on a coarse grid."""
    zy, zx = shape[0] / small.shape[0], shape[1] / small.shape[1]
    return ndimage.zoom(small, (zy, zx), order=1, mode="nearest").astype(np.float32)
