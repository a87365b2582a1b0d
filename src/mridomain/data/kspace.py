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

**Two sources: the magnitude and its square.** A stored image is a magnitude (one channel's, or
the root-sum-of-squares of several), and the square root smears the acquired window's edge:
wherever the complex image's phase varies (the fat-water shift at TE, off-resonance), the
magnitude's spectrum spreads past the window, and zero-filled 340-, 350- and 360-sample
acquisitions on a 512 grid look alike in its profile (docs/iap.md). The *square* of the magnitude is
the sum of |channel|^2, products of window-limited images: its spectrum is the autocorrelation of
the (filtered) acquired spectrum, with a hard end at |k| = the window's width (folded back into the
grid where that passes N / 2) and a roll-off before it that the window sets. The view profiles both,
as ``sources`` says: ``["magnitude", "squared_magnitude"]`` (the default), 4 rows; a stored spec
without ``sources`` (caches and runs written before it existed) profiles the magnitude alone, 2
rows, exactly as it always did.

A folded magnitude spectrum is the same for a slice and its left-right (or up-down) mirror, so the
view carries nothing about patient position and needs no change under mirror augmentation.

Storage: a preprocessed slice with a view is one float array of ``H + R`` rows: the resized,
normalized image (``H`` x ``W``), then the ``R`` profiles (two per source) as rows of ``W`` bins. Every consumer
of preprocessed slices (the cache, ``predict``'s input reader, the outliers of outlier exposure)
passes that array through unchanged; :func:`split_view` cuts it into the network's two named
inputs, ``image`` (N, 1, H, W) and ``kspace`` (N, R, W), right before the network.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.fft

from mridomain.errors import InvalidArgumentError

__all__ = ["KSPACE_VIEW_KIND", "VIEW_SOURCES", "kspace_view_spec", "kspace_profiles", "view_rows", "append_view",
           "split_view", "swap_axes"]

KSPACE_VIEW_KIND = "folded_log_power_profiles"
#: rows each source adds below the image: its |kx| profile, then its |ky| profile
N_PROFILES = 2
#: the images a view can profile, in their row order: the stored magnitude and its square
VIEW_SOURCES = ("magnitude", "squared_magnitude")
#: what a stored spec without ``sources`` profiles (every view written before sources existed)
LEGACY_SOURCES = ("magnitude",)


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
    # a stored spec (it has its kind) without sources predates them: it profiled the magnitude alone
    sources = given.get("sources", LEGACY_SOURCES if "kind" in given else VIEW_SOURCES)
    if (isinstance(sources, str) or not sources or len(set(sources)) != len(sources)
            or any(s not in VIEW_SOURCES for s in sources)):
        raise InvalidArgumentError(f"k-space view sources {sources!r}: choose one or more distinct of "
                                   f"{', '.join(VIEW_SOURCES)}")
    sources = [s for s in VIEW_SOURCES if s in sources]
    suffix = {"magnitude": "", "squared_magnitude": "_squared"}
    spec = {"kind": KSPACE_VIEW_KIND, "bins": int(given.get("bins", bins)),
            "cycles_per_bin": float(given.get("cycles_per_bin", 2.0)),
            "floor": float(given.get("floor", 1e-10)),
            "image_rows": int(given.get("image_rows", image_rows if image_rows is not None else bins)),
            "sources": sources,
            "profiles": [f"abs_{axis}{suffix[s]}" for s in sources for axis in ("kx", "ky")],
            "computed_on": "native pixels, before resize and intensity normalization",
            "layout": f"appended below the image as {N_PROFILES * len(sources)} rows of `bins` values"}
    if spec["bins"] != int(bins):
        raise InvalidArgumentError(f"k-space view of {spec['bins']} bins: must equal the slice width {bins}")
    if not spec["cycles_per_bin"] > 0 or not 0 < spec["floor"] < 1:
        raise InvalidArgumentError(f"k-space view {given}: cycles_per_bin must be > 0 and floor in (0, 1)")
    return spec


def _sources(spec: dict[str, Any]) -> list[str]:
    return list(spec.get("sources", LEGACY_SOURCES))


def view_rows(spec: dict[str, Any] | None) -> int:
    """Rows a view adds below each image (0 without one): two per source."""
    return N_PROFILES * len(_sources(spec)) if spec else 0


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
    """(2 x sources, bins) float32: for each of ``spec["sources"]`` (the native slice, then its
    square), log10 power of its 2-D FFT over |kx| and over |ky| (see the module docstring), each
    relative to its maximum and floored at ``spec["floor"]``.

    A real slice's spectrum is Hermitian (P(-ky, -kx) = P(ky, kx)), so the half spectrum of
    ``rfft2`` (kx >= 0) holds all of it: the column sum at -kx equals the one at +kx, and in each
    row every kx column but kx = 0 and the Nyquist column stands for two. The profiles are those
    of the full ``fft2`` (to rounding) at under half its cost; this FFT is most of ``predict``'s
    preprocessing.
    """
    x = np.asarray(img, dtype=np.float64)
    if x.ndim != 2:
        raise InvalidArgumentError(f"k-space view: expected a 2-D slice, got shape {x.shape}")
    rows = [_axis_profiles(x * x if source == "squared_magnitude" else x, spec) for source in _sources(spec)]
    return np.concatenate(rows).astype(np.float32)


def _axis_profiles(x: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """(2, bins) float64: the |kx| and |ky| log power profiles of one float64 image."""
    bins, width, floor = int(spec["bins"]), float(spec["cycles_per_bin"]), float(spec["floor"])
    nx = x.shape[1]
    # scipy's pocketfft runs this transform in about half numpy's time, to the same float32 view
    # (all 179,200 values of 200 demo slices' views identical); one thread: predict parallelizes
    # over slices, not inside one
    spectrum = scipy.fft.rfft2(x, workers=1)
    power = spectrum.real ** 2
    power += spectrum.imag ** 2                                     # (ny, nx // 2 + 1): kx >= 0
    half = power.shape[1]
    columns = power.sum(axis=0)
    over_kx = np.concatenate([columns, columns[1:nx - half + 1][::-1]])     # fft order: kx >= 0, then kx < 0
    twice = np.full(half, 2.0)
    twice[0] = 1.0
    if nx % 2 == 0:
        twice[-1] = 1.0                                             # the Nyquist column is its own mirror
    over_ky = power @ twice
    return np.stack([_binned_log_profile(over_kx, bins, width, floor),
                     _binned_log_profile(over_ky, bins, width, floor)])


def swap_axes(view: np.ndarray) -> np.ndarray:
    """A view (..., 2 x sources, bins) as the slice rotated by 90 degrees would give it: each
    source's |kx| and |ky| profiles trade places."""
    v = np.asarray(view)
    return v.reshape(*v.shape[:-2], -1, N_PROFILES, v.shape[-1])[..., ::-1, :].reshape(v.shape)


def append_view(image: np.ndarray, view: np.ndarray) -> np.ndarray:
    """One preprocessed slice (H, W) and its view (R, W) -> the stored (H + R, W) array."""
    return np.concatenate([np.asarray(image, np.float32), np.asarray(view, np.float32)], axis=0)


def split_view(slices: Any, spec: dict[str, Any] | None) -> tuple[Any, Any]:
    """Stored slices (N, H + R, W) -> (images (N, H, W), views (N, R, W)); without a view,
    (slices, None). Works on numpy arrays and torch tensors alike (basic slicing only)."""
    rows = view_rows(spec)
    if not rows:
        return slices, None
    if slices.shape[-1] != int(spec["bins"]) or slices.shape[-2] != int(spec["image_rows"]) + rows:
        raise InvalidArgumentError(f"slices of shape {tuple(slices.shape)} do not hold a k-space view of "
                                   f"{spec['bins']} bins below {spec['image_rows']} image rows (were they "
                                   "preprocessed with the run's preprocess.json?)")
    return slices[..., :-rows, :], slices[..., -rows:, :]
