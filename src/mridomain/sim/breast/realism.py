"""Realism probes: measurements that compare simulated images with what real scanners produce.

Each probe is a small pure function so the tests, docs/make_sim_figures.py and users measure the
same thing the same way (docs/simulator.md, "Realism probes", lists each with its real reference):

- :func:`kspace_window_ratio`: the acquired-matrix fingerprint of a stored, zero-filled magnitude
  image (mean |FFT| beyond the acquired k-space window over the mean inside it);
- :func:`power_law_beta`: the exponent of the anatomical noise power spectrum P(f) = c / f^beta;
- :func:`left_right_asymmetry`: how different a slice is from its left-right mirror.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from mridomain.errors import ImageReadError, InvalidArgumentError


def acquired_window(acquisition_matrix: Sequence[int]) -> tuple[int, int]:
    """(vertical, horizontal) extent of the acquired k-space in a stored image's 2-D FFT.

    DICOM AcquisitionMatrix (0018,1310) is frequency rows \\ frequency columns \\ phase rows \\
    phase columns, two of them zero; "rows" counts samples along a row (horizontal), "columns"
    steps down a column (vertical). So horizontal = frequency rows or phase rows, vertical =
    phase columns or frequency columns, whichever is non-zero.
    """
    am = [int(v) for v in acquisition_matrix]
    if len(am) != 4:
        raise InvalidArgumentError(f"AcquisitionMatrix needs 4 values, got {acquisition_matrix!r}")
    horizontal = am[0] or am[2]
    vertical = am[3] or am[1]
    if horizontal <= 0 or vertical <= 0:
        raise InvalidArgumentError(f"AcquisitionMatrix {acquisition_matrix!r} has no non-zero value per axis")
    return vertical, horizontal


def kspace_window_ratio(image: np.ndarray, window: tuple[int, int]) -> float:
    """Mean |FFT| of a stored image beyond the centred acquired window over its mean inside it.

    ``window`` is (vertical, horizontal) in samples (see :func:`acquired_window`). A zero-filled
    reconstruction puts nothing beyond the window; what a stored magnitude image shows there
    comes from the magnitude / channel combination of noise, intensity correction and rounding.
    Real zero-filled magnitude images give 0.03-0.10 (docs/simulator.md, realism table).
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise InvalidArgumentError(f"kspace_window_ratio needs one 2-D image, got shape {img.shape}")
    n0, n1 = img.shape
    v, h = (int(w) for w in window)
    if not (0 < v <= n0 and 0 < h <= n1) or (v == n0 and h == n1):
        raise InvalidArgumentError(f"acquired window {window} does not fit inside image {img.shape} "
                                   "with samples left beyond it")
    spec = np.abs(np.fft.fftshift(np.fft.fft2(img)))
    inside = np.zeros(img.shape, dtype=bool)
    inside[n0 // 2 - v // 2:n0 // 2 - v // 2 + v, n1 // 2 - h // 2:n1 // 2 - h // 2 + h] = True
    return float(spec[~inside].mean() / spec[inside].mean())


def dicom_kspace_ratio(path: str | Path) -> float:
    """:func:`kspace_window_ratio` of a DICOM file's first frame, window from its AcquisitionMatrix."""
    import pydicom

    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
        am = ds.AcquisitionMatrix
    except AttributeError as err:
        raise ImageReadError(path, f"no AcquisitionMatrix or pixel data ({err})") from None
    except Exception as err:  # pydicom raises many types for unreadable files
        raise ImageReadError(path, f"not a readable DICOM image ({type(err).__name__}: {err})") from None
    if pixels.ndim == 3:
        pixels = pixels[0]
    return kspace_window_ratio(pixels, acquired_window(am))


def entry_kspace_ratio(entry: dict, patient: int, seed: int = 0,
                       geometry: tuple[int, int, int] | None = None) -> float | None:
    """:func:`kspace_window_ratio` of one simulated stored slice of preset scanner ``entry``.

    Patient ``patient`` of dataset ``seed``; the first protocol drawn for the entry (rng
    ``[11, patient]``) that zero-fills (acquired window smaller than the stored matrix); its
    central slice of simulate's default slab. None when the entry never zero-fills in 40 draws.
    ``geometry`` = (frequency samples, phase steps, stored matrix) replaces the drawn matrix: the
    ratio depends on how much of k-space lies beyond the window and how close to it, so a
    simulated chain is compared with a real file at that file's geometry."""
    from mridomain.sim.breast import acquisition as acq
    from mridomain.sim.breast.protocols import protocol_from_entry
    from mridomain.sim.breast.simulate import patient_phantom

    ph = patient_phantom(seed, patient)
    rng = np.random.default_rng([11, patient])
    for _ in range(40):
        p = protocol_from_entry(entry, rng, 2 * ph.torso_w)
        if (p.acq_freq, p.acq_phase) != (p.recon_matrix, p.recon_matrix):
            break
    else:
        return None
    if geometry is not None:
        import dataclasses

        p = dataclasses.replace(p, acq_freq=int(geometry[0]), acq_phase=int(geometry[1]), recon_matrix=int(geometry[2]))
    ctx = acq.exam_context(ph, p, np.random.default_rng([seed, patient, 1]))
    img, _ = acq.acquire_slice(ph, p, ctx, float(ph.default_slab(1, p.slice_thickness)[0]), 0)
    return kspace_window_ratio(acq.to_stored(img, p).astype(np.float64), (p.acq_freq, p.acq_phase))


def radial_power_spectrum(roi: np.ndarray, pixel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(f in cycles/mm, radially averaged power) of a square ROI after mean removal and a Hann window."""
    roi = np.asarray(roi, dtype=np.float64)
    if roi.ndim != 2 or roi.shape[0] != roi.shape[1]:
        raise InvalidArgumentError(f"radial_power_spectrum needs a square 2-D ROI, got {roi.shape}")
    n = roi.shape[0]
    w = np.hanning(n)
    win = np.outer(w, w)
    x = (roi - roi.mean()) * win
    p = np.abs(np.fft.fftshift(np.fft.fft2(x))) ** 2
    k = np.fft.fftshift(np.fft.fftfreq(n, d=pixel_mm))
    kr = np.sqrt(k[:, None] ** 2 + k[None, :] ** 2)
    df = 1.0 / (n * pixel_mm)
    bins = np.round(kr / df).astype(int)
    counts = np.bincount(bins.ravel())
    sums = np.bincount(bins.ravel(), weights=p.ravel())
    f = np.arange(len(counts)) * df
    keep = counts > 0
    return f[keep], sums[keep] / counts[keep]


def power_law_beta(rois: Sequence[np.ndarray], pixel_mm: float, f_range: tuple[float, float]) -> float:
    """Exponent beta of P(f) = c / f^beta fitted (least squares in log-log) to the mean radial
    power spectrum of ``rois`` over ``f_range`` cycles/mm (as for breast CT, Chen et al. 2012)."""
    if not len(rois):
        raise InvalidArgumentError("power_law_beta needs at least one ROI")
    spectra = [radial_power_spectrum(r, pixel_mm) for r in rois]
    f = spectra[0][0]
    if any(len(s[0]) != len(f) for s in spectra):
        raise InvalidArgumentError("power_law_beta: all ROIs must have the same size")
    p = np.mean([s[1] for s in spectra], axis=0)
    sel = (f >= f_range[0]) & (f <= f_range[1]) & (p > 0)
    if sel.sum() < 3:
        raise InvalidArgumentError(f"power_law_beta: fewer than 3 frequencies in {f_range} cycles/mm")
    slope = np.polyfit(np.log(f[sel]), np.log(p[sel]), 1)[0]
    return float(-slope)


def left_right_asymmetry(image: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Normalised difference between a slice and its left-right mirror: ||I - flip(I)|| / ||I||
    over ``mask`` (and its mirror). 0 for a mirror-symmetric slice."""
    img = np.asarray(image, dtype=np.float64)
    flipped = img[:, ::-1]
    sel = np.ones(img.shape, dtype=bool) if mask is None else (mask | mask[:, ::-1])
    denom = np.sqrt((img[sel] ** 2).sum())
    if denom == 0:
        raise InvalidArgumentError("left_right_asymmetry: the image is zero where it is measured")
    return float(np.sqrt(((img - flipped)[sel] ** 2).sum()) / denom)
