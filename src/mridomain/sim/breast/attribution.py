"""Re-imaging the same patients with one acquisition factor changed (domain-shift attribution).

The phantom of patient ``i`` is a deterministic function of ``(seed, i)``
(:func:`mridomain.sim.patient_phantom`) and never of the protocol; the exam's random draws (FOV
margin, receive-gain jitter, noise stream) come from ``(seed, i)`` too, in a fixed order whatever
the protocol. So re-simulating a test set with one factor switched to another domain's value
changes exactly that factor::

    from mridomain.sim.breast import patient_phantom, sample_protocols, replace_factors, acquire_series
    ph = patient_phantom(seed, i)
    ge, siemens = ...                                  # two Protocols (e.g. sample_protocols)
    base = acquire_series(ph, siemens, slices=5)       # volume (5, H, W) + tumour box
    swapped = acquire_series(ph, replace_factors(siemens, ge, "recon"), slices=5)

``FACTORS`` groups every :class:`~mridomain.sim.breast.protocols.Protocol` field into one named
acquisition factor (each field in exactly one group).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from mridomain.errors import InvalidArgumentError
from mridomain.sim.breast import acquisition as acq
from mridomain.sim.breast.phantom import Phantom
from mridomain.sim.breast.protocols import Protocol

#: Protocol fields by acquisition factor. "recon": vendor reconstruction (k-space filter, intensity
#: correction, scaling, bit depth) and the vendor's partial-Fourier fraction; "coil": receive array
#: (model -> element geometry, channel count) and parallel imaging; "field_strength"; "timing":
#: TR / TE / flip angle; "matrix": acquisition and reconstruction matrix, FOV, slice thickness;
#: "fat_suppression": the method; "contrast_agent": the label and what was injected (post-contrast
#: phases only); "position": HFP / FFP (mirroring); "header": header-only text (no pixel effect).
FACTORS: dict[str, tuple[str, ...]] = {
    "recon": ("recon", "partial_fourier"),
    "coil": ("model", "coil_channels", "acceleration"),
    "field_strength": ("field_strength",),
    "timing": ("tr", "te", "flip_angle"),
    "matrix": ("acq_freq", "acq_phase", "recon_matrix", "fov", "slice_thickness"),
    "fat_suppression": ("fatsat",),
    "contrast_agent": ("contrast_agent", "agent"),
    "position": ("patient_position",),
    "header": ("manufacturer", "scan_options", "series_description", "site"),
}


def replace_factors(protocol: Protocol, source: Protocol, factors: str | list[str] | tuple[str, ...]) -> Protocol:
    """A copy of ``protocol`` with the fields of the named factor(s) taken from ``source``."""
    names = [factors] if isinstance(factors, str) else list(factors)
    unknown = [f for f in names if f not in FACTORS]
    if unknown:
        raise InvalidArgumentError(f"unknown acquisition factor(s) {unknown}; use {sorted(FACTORS)}")
    fields = {f: getattr(source, f) for name in names for f in FACTORS[name]}
    return dataclasses.replace(protocol, **fields)


@dataclass
class AcquiredSeries:
    """One acquired series in memory, as :func:`mridomain.sim.breast.simulate` would store it.

    ``volume``: (S, H, W) float32 stored pixel values (rounded and clipped like the DICOM), slices
    in written order (ascending along the slice normal). ``tumor_box``: 0-based inclusive
    (start_slice, end_slice, start_row, end_row, start_col, end_col) of tumour fraction > 0.5, or
    None. ``z_mm``: slice centres in written order."""

    volume: np.ndarray
    tumor_box: tuple[int, int, int, int, int, int] | None
    z_mm: np.ndarray
    protocol: Protocol


def acquire_series(ph: Phantom, p: Protocol, slices: int = 5, slab: str = "tumor", phase: int = 0,
                   noise: bool = True, renders: dict | None = None) -> AcquiredSeries:
    """Image phantom ``ph`` with protocol ``p`` without writing DICOM.

    Uses the same exam draws as :func:`mridomain.sim.breast.simulate` for this patient (``ph.seed``,
    ``ph.patient_index``), so with the protocol simulate drew, the volume equals the written pixels.
    ``slab="tumor"``: ``slices`` contiguous slices centred on the lesion; "spread": simulate's default.
    ``renders``: a dict shared between calls on the same phantom (e.g. one patient imaged with one
    factor switched at a time): the tissue fractions of a slice depend only on the pixel grid, the
    slice position and thickness, never on the rest of the protocol, so a slice already rendered on
    the same grid is reused (the pixels are identical; tested), which halves the cost of a factor
    that leaves the geometry alone.
    """
    if slices < 1:
        raise InvalidArgumentError(f"slices must be >= 1 (got {slices})")
    ctx = acq.exam_context(ph, p, np.random.default_rng([ph.seed, ph.patient_index, 1]))
    z = ph.slab(slices, p.slice_thickness, mode=slab)
    z_written = z[::-1].copy() if p.patient_position.startswith("HF") else z
    vol, boxes = [], []
    for k, zk in enumerate(z_written):
        fractions = None
        if renders is not None:
            key = (p.recon_matrix, p.fov, ctx.y_center, float(zk), p.slice_thickness, p.pixel_mm)
            if key not in renders:
                X, Y = acq.pixel_grid(p, ctx)
                renders[key] = ph.render(X, Y, float(zk), p.slice_thickness, p.pixel_mm)
            fractions = renders[key]
        img, tumor = acq.acquire_slice(ph, p, ctx, float(zk), k, phase=phase, noise=noise, fractions=fractions)
        vol.append(acq.to_stored(img, p).astype(np.float32))
        mask = tumor > 0.5
        if mask.any():
            rows = np.flatnonzero(mask.any(axis=1))
            cols = np.flatnonzero(mask.any(axis=0))
            boxes.append((k, rows[0], rows[-1], cols[0], cols[-1]))
    box = None
    if boxes:
        a = np.array(boxes)
        box = (int(a[:, 0].min()), int(a[:, 0].max()), int(a[:, 1].min()), int(a[:, 2].max()),
               int(a[:, 3].min()), int(a[:, 4].max()))
    return AcquiredSeries(volume=np.stack(vol), tumor_box=box, z_mm=z_written, protocol=p)

