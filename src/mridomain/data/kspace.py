"""The k-space view of a slice: its 2-D spectrum's energy profiles, computed at native resolution.

Resizing a 512-pixel slice to 224 throws away the outer k-space where a zero-filled
reconstruction shows its acquired window: a stored magnitude image of a 384-sample acquisition
reconstructed on 512 pixels has almost no energy beyond |k| = 192 cycles per field of view (a mean
|FFT| ratio of 0.03-0.10 against the inside on real files, :func:`mridomain.sim.realism.kspace_window_ratio`).
That edge *is* the acquisition matrix, and it is gone after resizing. The view keeps it:

- the 2-D FFT of the native slice, as power |F|^2;
- summed over ky, as a function of |kx| (the horizontal profile), and over kx as a function of
  |ky| (the vertical one); +k and -k are folded together (a real image's spectrum is symmetric);
- binned in *absolute* frequency, ``cycles_per_bin`` cycles per field of view per bin, so the
  window edge lands on the same bin whatever the reconstruction size (384 samples -> |k| < 192 ->
  bin 96 at 2 cycles per bin), and the end of the reconstructed grid (N / 2) is visible too: bins
  past it have no samples and hold the floor;
- as log10 of the power over the profile's maximum (intensity scale drops out), floored at
  ``floor``.

A folded magnitude spectrum is the same for a slice and its left-right (or up-down) mirror, so the
view carries nothing about patient position and needs no change under mirror augmentation.

Storage: a preprocessed slice with a view is one float array of ``H + 2`` rows: the resized,
normalized image (``H`` x ``W``), then the two profiles as two rows of ``W`` bins. Every consumer
of preprocessed slices (the cache, ``predict``'s input reader, the outliers of outlier exposure)
passes that array through unchanged; :func:`split_view` cuts it into the network's two named
inputs, ``image`` (N, 1, H, W) and ``kspace`` (N, 2, W), right before the network.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from mridomain.errors import InvalidArgumentError

__all__ = ["KSPACE_VIEW_KIND", "kspace_view_spec", "kspace_profiles", "view_rows", "append_view", "split_view"]

KSPACE_VIEW_KIND = "folded_log_power_profiles"
#: rows the view adds below the image: the |kx| profile, then the |ky| profile
N_PROFILES = 2


def kspace_view_spec(view: bool | dict[str, Any] | None, bins: int, image_rows: int | None = None
                     ) -> dict[str, Any] | None:
    """The full parameter dict of a k-space view (as stored in meta.json / preprocess.json), or None.

    ``bins`` is the profile length: the width of the resized image, so the view packs as rows;
    ``image_rows`` the resized image's height (the view's rows start below it).
    """
    if view is None or view is False:
        return None
    given = dict(view) if isinstance(view, dict) else {}
    kind = given.get("kind", KSPACE_VIEW_KIND)
    if kind != KSPACE_VIEW_KIND:
        raise InvalidArgumentError(f"k-space view kind {kind!r}: this mridomain computes {KSPACE_VIEW_KIND!r}")
    spec = {"kind": KSPACE_VIEW_KIND, "bins": int(given.get("bins", bins)),
            "cycles_per_bin": float(given.get("cycles_per_bin", 2.0)),
            "floor": float(given.get("floor", 1e-10)),
            "image_rows": int(given.get("image_rows", image_rows if image_rows is not None else bins)),
            "profiles": ["abs_kx", "abs_ky"],
            "computed_on": "native pixels, before resize and intensity normalization",
            "layout": "appended below the image as 2 rows of `bins` values"}
    if spec["bins"] != int(bins):
        raise InvalidArgumentError(f"k-space view of {spec['bins']} bins: must equal the slice width {bins}")
    if not spec["cycles_per_bin"] > 0 or not 0 < spec["floor"] < 1:
        raise InvalidArgumentError(f"k-space view {given}: cycles_per_bin must be > 0 and floor in (0, 1)")
    return spec


def view_rows(spec: dict[str, Any] | None) -> int:
    """Rows a view adds below each image (0 without one)."""
    return N_PROFILES if spec else 0


def _binned_log_profile(profile: np.ndarray, bins: int, width: float, floor: float) -> np.ndarray:
    """log10 of the mean of an axis's power profile (in ``numpy.fft`` order) per |k| bin, relative to
    the profile's peak, floored; bins past the grid's end hold the floor."""
    n = len(profile)
    # |k| from fftfreq(n) * n, floating-point rounding included, exactly as caches were always
    # binned: a view must not change under runs that were trained on it
    b = np.floor(np.abs(np.fft.fftfreq(n) * n) / width).astype(np.int64)
    keep = b < bins
    total = np.bincount(b[keep], weights=profile[keep], minlength=bins)[:bins]
    count = np.bincount(b[keep], minlength=bins)[:bins]
    out = np.full(bins, np.log10(floor))
    measured = count > 0
    mean = np.zeros(bins)
    mean[measured] = total[measured] / count[measured]
    peak = mean.max()
    if peak > 0 and np.isfinite(peak):
        out[measured] = np.log10(np.maximum(mean[measured] / peak, floor))
    return out


def kspace_profiles(img: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """(2, bins) float32: log10 power of the native slice's 2-D FFT over |kx| and over |ky|
    (see the module docstring), each relative to its maximum and floored at ``spec["floor"]``.

    A real slice's spectrum is Hermitian (P(-ky, -kx) = P(ky, kx)), so the half spectrum of
    ``rfft2`` (kx >= 0) holds all of it: the column sum at -kx equals the one at +kx, and in each
    row every kx column but kx = 0 and the Nyquist column stands for two. The profiles are those
    of the full ``fft2`` (to rounding) at under half its cost; this FFT is most of ``predict``'s
    preprocessing.
    """
    x = np.asarray(img, dtype=np.float64)
    if x.ndim != 2:
        raise InvalidArgumentError(f"k-space view: expected a 2-D slice, got shape {x.shape}")
    bins, width, floor = int(spec["bins"]), float(spec["cycles_per_bin"]), float(spec["floor"])
    nx = x.shape[1]
    spectrum = np.fft.rfft2(x)
    power = spectrum.real ** 2 + spectrum.imag ** 2                  # (ny, nx // 2 + 1): kx >= 0
    half = power.shape[1]
    columns = power.sum(axis=0)
    over_kx = np.concatenate([columns, columns[1:nx - half + 1][::-1]])     # fft order: kx >= 0, then kx < 0
    twice = np.full(half, 2.0)
    twice[0] = 1.0
    if nx % 2 == 0:
        twice[-1] = 1.0                                             # the Nyquist column is its own mirror
    over_ky = power @ twice
    return np.stack([_binned_log_profile(over_kx, bins, width, floor),
                     _binned_log_profile(over_ky, bins, width, floor)]).astype(np.float32)


def append_view(image: np.ndarray, view: np.ndarray) -> np.ndarray:
    """One preprocessed slice (H, W) and its view (2, W) -> the stored (H + 2, W) array."""
    return np.concatenate([np.asarray(image, np.float32), np.asarray(view, np.float32)], axis=0)


def split_view(slices: Any, spec: dict[str, Any] | None) -> tuple[Any, Any]:
    """Stored slices (N, H + 2, W) -> (images (N, H, W), views (N, 2, W)); without a view,
    (slices, None). Works on numpy arrays and torch tensors alike (basic slicing only)."""
    rows = view_rows(spec)
    if not rows:
        return slices, None
    if slices.shape[-1] != int(spec["bins"]) or slices.shape[-2] != int(spec["image_rows"]) + rows:
        raise InvalidArgumentError(f"slices of shape {tuple(slices.shape)} do not hold a k-space view of "
                                   f"{spec['bins']} bins below {spec['image_rows']} image rows (were they "
                                   "preprocessed with the run's preprocess.json?)")
    return slices[..., :-rows, :], slices[..., -rows:, :]
