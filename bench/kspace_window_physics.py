"""Why a zero-filled acquisition's window edge is invisible in its stored magnitude spectrum.

    OMP_NUM_THREADS=1 python bench/kspace_window_physics.py [PATIENTS]

Simulates the middle slice of PATIENTS (default 4) breast phantoms on a GE protocol acquired at
340 X 340 and zero-filled to 512 pixels (the demo's most common zero-filled case), and prints, for each
stage of the reconstruction, the step of the |kx| power profile across the acquired window's edge
(|k| = 170 cycles per FOV): the mean log10 power over 10 bins outside it minus the mean over 10 bins
inside, in decades. A large negative step is an edge a reader of the spectrum can find.

Stages: the complex image (band-limited by construction), its real part, the magnitude of the real
part, a phase-free image (the noise-free magnitude cut back to the acquired window, so real and
band-limited, then its magnitude as a scanner would store it), the noise-free magnitude (what a vendor stores, before noise), the stored
noisy magnitude, and that magnitude weighted by a smooth mask of high-signal tissue (air and dark
voxels, where the noise is rectified, left out). Squaring doubles a spectrum's support: the magnitude
sqrt(Re^2 + Im^2) of an image whose phase varies (fat-water chemical shift at TE, off-resonance) has
power out to twice the acquired window, noise or no noise, mask or no mask.
"""
import sys

import numpy as np
from scipy import ndimage

from mridomain.sim.breast import acquisition as acq
from mridomain.sim.breast import protocols
from mridomain.sim.breast.simulate import patient_phantom

EDGE = 170          # half of the 340-sample window
BAND = 10           # bins each side of the edge


def log_power_over_kx(x: np.ndarray) -> np.ndarray:
    """log10 of the power of the 2-D FFT summed over ky, per integer |kx| (cycles per FOV), peak 0."""
    power = np.abs(np.fft.fft2(x)) ** 2
    k = np.abs(np.fft.fftfreq(x.shape[1]) * x.shape[1]).astype(int)
    mean = np.bincount(k, weights=power.sum(axis=0)) / np.bincount(k)
    return np.log10(mean / mean.max())


def edge_step(x: np.ndarray) -> float:
    """Mean log power just outside the window's edge minus just inside, in decades."""
    p = log_power_over_kx(x)
    return float(p[EDGE + 2:EDGE + 2 + BAND].mean() - p[EDGE - 2 - BAND:EDGE - 2].mean())


def phase_free(x: np.ndarray) -> np.ndarray:
    """A real image band-limited to the acquired window: ``x``'s spectrum with |kx| or |ky| >= EDGE zeroed."""
    k = np.abs(np.fft.fftfreq(x.shape[0]) * x.shape[0])
    keep = (k[:, None] < EDGE) & (k[None, :] < EDGE)
    return np.fft.ifft2(np.fft.fft2(x) * keep).real


def tissue_weighted(x: np.ndarray) -> np.ndarray:
    """x weighted by a smooth mask of its high-signal tissue: above a fifth of the 99th percentile,
    eroded by 10 pixels, blurred by 3 (mean removed inside the mask)."""
    smooth = ndimage.gaussian_filter(x, 2)
    mask = ndimage.binary_erosion(smooth > 0.2 * np.percentile(smooth, 99), iterations=10)
    w = ndimage.gaussian_filter(mask.astype(float), 3)
    return (x - (x * w).sum() / w.sum()) * w


def main() -> None:
    n_patients = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    p = protocols.make_protocol(acq_freq=340, acq_phase=340, recon_matrix=512, fov=340.0,
                                scan_options="FAST_GEMS\\SAT_GEMS\\FS", coil_channels=8)
    rows = {k: [] for k in ("complex image", "its real part", "|real part|", "phase-free image, magnitude",
                            "magnitude, noise-free", "stored magnitude, noisy",
                            "stored magnitude, tissue-weighted")}
    for i in range(n_patients):
        ph = patient_phantom(0, i)
        ctx = acq.exam_context(ph, p, np.random.default_rng([0, i, 1]))
        z = float(ph.slab(3, p.slice_thickness)[1])
        clean, _ = acq.acquire_slice(ph, p, ctx, z, 1, noise=False, complex_output=True)
        noisy, _ = acq.acquire_slice(ph, p, ctx, z, 1, noise=True)
        stored = acq.to_stored(noisy, p).astype(np.float64)
        for key, x in zip(rows, (clean, clean.real, np.abs(clean.real), np.abs(phase_free(np.abs(clean))),
                                 np.abs(clean), stored,
                                 tissue_weighted(stored))):
            rows[key].append(edge_step(x))
    print(f"GE {p.acq_freq} X {p.acq_phase} zero-filled to {p.recon_matrix}, {p.recon.filter} filter, "
          f"TE {p.te} ms at {p.field_strength} T; step of the |kx| profile at |k| = {EDGE}, decades "
          f"(mean over {n_patients} patients, min..max)")
    for key, v in rows.items():
        print(f"  {key:36s} {np.mean(v):7.2f}   ({min(v):.2f} .. {max(v):.2f})")


if __name__ == "__main__":
    main()
