"""From phantom to stored pixels: signal equation, fat suppression, DCE, coils, k-space, noise, recon.

:func:`acquire` is the reusable in-memory entry point: any TR/TE/flip angle/phase/matrix can be set
on the :class:`~mridomain.sim.breast.protocols.Protocol` (``dataclasses.replace``), so the same patient can
be imaged with several contrasts (synthesis work) or on two scanner domains (domain-shift work).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.fft as sfft

from mridomain.sim.breast import vendors
from mridomain.sim import physics
from mridomain.sim.breast.phantom import Phantom
from mridomain.sim.breast.protocols import Protocol

#: Reference acquisition for the SNR model: 1.5 T, 448 x 448 over 340 mm, 1.1 mm, readout 2.0 ms.
#: At this reference the fibroglandular signal-to-noise is ~25 before fat suppression losses.
SNR_REF = {"b0": 1.5, "dx": 340 / 448, "dy": 340 / 448, "dz": 1.1, "n_phase": 448, "tread": 2.0}
SIGMA_REF = 0.026 / 25.0
COARSE = 64  # grid for smooth maps (coils, g-factor)


def readout_ms(tr: float) -> float:
    """Readout duration of a fast spoiled GRE: ~55 % of what is left of TR after excitation/spoiling."""
    return max(0.55 * (tr - 1.2), 0.5)


def noise_sigma(p: Protocol) -> float:
    """Image-domain noise std of a fully sampled acquisition in signal units (before B0 scaling).

    SNR ~ B0 * voxel volume * sqrt(phase lines * partitions * readout time) (FIELD.md section 4).
    With a fixed 3D slab, partitions ~ 1/thickness, so SNR ~ dx dy sqrt(dz) sqrt(Np Tread); the B0
    factor is applied to the signal (magnetisation ~ B0) so this noise does not depend on B0.
    """
    dx, dy, dz = p.fov / p.acq_phase, p.fov / p.acq_freq, p.slice_thickness
    r = SNR_REF
    rel = (dx * dy) / (r["dx"] * r["dy"]) * np.sqrt(dz / r["dz"]) * \
        np.sqrt(p.acq_phase * readout_ms(p.tr) / (r["n_phase"] * r["tread"]))
    return float(SIGMA_REF / rel)


@dataclass
class ExamContext:
    """Per-exam quantities shared by every slice and phase of one patient on one protocol."""

    y_center: float
    gain: float
    coil_pos: np.ndarray
    shade_norm: float
    noise_key: int
    stage_s: dict = field(default_factory=dict)
    #: per-protocol maps that depend on the in-plane geometry only (B1+, B0 offsets, coil shading,
    #: g-factor, per-tissue steady-state signal), computed once per series instead of per slice
    cache: dict = field(default_factory=dict, repr=False)


def exam_context(ph: Phantom, p: Protocol, rng: np.random.Generator) -> ExamContext:
    """FOV placement, coil, receive gain and the noise stream key of one exam (one rng draw each)."""
    pmax = max(ph.breast_p)
    # the technologist centres the FOV so the breasts fit with a small anterior margin
    margin = float(rng.uniform(8, 25))
    y_center = -(pmax + margin) + p.fov / 2
    chest_y = float(ph.torso_surface_y(ph.breast_cx))
    pos = vendors.coil_positions(p.model, p.coil_channels, ph.breast_cx, chest_y)
    # shading normalisation: mean combined sensitivity over the breasts at the central slice
    xs = np.linspace(-ph.breast_cx - 40, ph.breast_cx + 40, 24, dtype=np.float32)
    ys = np.linspace(-pmax * 0.8, chest_y, 12, dtype=np.float32)
    Xc, Yc = np.meshgrid(xs, ys)
    shade_norm = float(vendors.rss(vendors.coil_sensitivities(Xc, Yc, pos)).mean())
    # receive gain from the prescan: aims the expected fat-suppressed parenchyma at the vendor's level
    t1, t2s, pd = physics.tissue_relaxation("fgt", p.b0)
    ref = float(physics.spgr_signal(pd, t1, t2s, p.tr, p.te, p.flip_angle)) * p.b0 / 1.5
    style = p.recon
    # every draw is made whatever the protocol, so two protocols of one patient share the FOV
    # margin and the noise stream (clean one-factor-at-a-time comparisons, mridomain.sim.breast.attribution)
    step_jitter = rng.normal(0, 0.35)
    scale_jitter = rng.uniform(0.9, 1.1)
    noise_key = int(rng.integers(0, 2 ** 62))
    if style.bits_stored >= 16:
        steps = np.round((np.log2(style.target_max / ref) + step_jitter) * 4) / 4
        gain = float(2.0 ** steps)
    else:
        gain = float(style.target_max / ref * scale_jitter)
    return ExamContext(y_center=y_center, gain=gain, coil_pos=pos, shade_norm=shade_norm,
                       noise_key=noise_key)


def pixel_grid(p: Protocol, ctx: ExamContext) -> tuple[np.ndarray, np.ndarray]:
    """Patient x, y (mm) of the pixel centres in the unmirrored (row = +x, column = +y) frame."""
    n = p.recon_matrix
    d = p.fov / n
    c = (np.arange(n, dtype=np.float32) - n / 2 + 0.5) * d
    return np.meshgrid(c, c + np.float32(ctx.y_center))


def _limited(cache: dict, key, build):
    """``cache[key]``, built on first use; a few protocols per exam at most are kept."""
    if key not in cache:
        if len(cache) >= 8:
            cache.pop(next(iter(cache)))
        cache[key] = build()
    return cache[key]


def _signal_maps(ph: Phantom, p: Protocol, X, Y, phase: int) -> dict:
    """The z-independent part of :func:`tissue_signal` on one pixel grid: B1+, the in-plane B0
    offset (its z term is linear and added per slice) and each tissue's spoiled-GRE signal at the
    local flip angle (post-contrast T1 for ``phase``)."""
    b1 = vendors.b1_map(X, Y, p.b0, ph.b1_coef, ph.breast_cx)
    chest_y = float(ph.torso_surface_y(ph.breast_cx))
    gamma_b0 = np.float32(physics.GAMMA_MHZ_PER_T * p.b0)
    df0 = vendors.b0_offset_ppm(X, Y, 0.0, ph.b0_coef, ph.b0_suscept_ppm, chest_y) * gamma_b0  # Hz
    alpha = np.float32(p.flip_angle) * b1
    ca, sa = np.cos(np.deg2rad(alpha)), np.sin(np.deg2rad(alpha))
    t_s = physics.phase_time_s(phase)
    r1 = physics.relaxivity(p.agent, p.b0) if np.isfinite(t_s) else 0.0
    signal = {}
    for name in physics.TISSUES:
        t1, t2s, pd = physics.tissue_relaxation(name, p.b0)
        kind = "blood" if name == "blood" else name
        conc = physics.concentration_mM(kind, t_s, ph.kinetics) if r1 else 0.0
        t1 = float(physics.t1_with_agent(t1, r1, conc))
        e1 = np.float32(np.exp(-p.tr / t1))
        signal[name] = np.float32(pd * np.exp(-p.te / t2s) * (1 - e1)) * sa / (1 - ca * e1)
    # the off-resonance phase at TE factorises into the in-plane map times a per-slice constant
    te_phase = np.exp(1j * (2 * np.pi * 1e-3 * p.te) * df0).astype(np.complex64)
    return {"b1": b1, "df0": df0, "signal": signal, "te_phase": te_phase, "gamma_b0": gamma_b0}


def tissue_signal(fr: np.ndarray, ph: Phantom, p: Protocol, X, Y, z: float, phase: int,
                  cache: dict | None = None) -> np.ndarray:
    """Complex transverse magnetisation per pixel (before receive coils).

    Water and fat: spoiled GRE steady state with the B1+-scaled flip angle, post-contrast T1 from
    the agent's relaxivity and each tissue's concentration curve, fat suppressed spectrally with a
    residual set by the method and the local B0 offset, fat precessing at -3.4 ppm (chemical shift
    phase at TE: partial-volume fat/water cancellation), magnetisation scaled by B0.
    ``cache`` (a dict kept per series, e.g. ``ExamContext.cache``) reuses the z-independent maps;
    it must only be shared between calls on the same pixel grid and phantom.
    """
    if cache is None:
        maps = _signal_maps(ph, p, X, Y, phase)
    else:
        maps = _limited(cache, ("signal", p, phase, X.shape, float(X[0, 0]), float(Y[0, 0])),
                        lambda: _signal_maps(ph, p, X, Y, phase))
    # B0 offset: the shim residual's z term is coef[3] * z / 100 ppm (vendors.b0_offset_ppm)
    dz_hz = float(ph.b0_coef[3]) * (z / 100) * float(maps["gamma_b0"])
    df = maps["df0"] + np.float32(dz_hz)
    water = np.zeros(X.shape, dtype=np.float32)
    fat = np.zeros(X.shape, dtype=np.float32)
    tmp = np.empty(X.shape, dtype=np.float32)
    for i, name in enumerate(physics.TISSUES):
        f = fr[i]
        if not f.any():
            continue
        np.multiply(f, maps["signal"][name], out=tmp)
        if physics.TISSUE_PROPS[name].fat:
            fat += tmp
        else:
            water += tmp
    fat *= physics.fat_residual(p.fatsat, df, maps["b1"])
    water *= 1 - physics.water_saturation(p.fatsat, df, p.b0)
    cs = np.exp(1j * np.float32(2 * np.pi * physics.fat_offset_hz(p.b0) * p.te * 1e-3))
    m = water + fat * np.complex64(cs)
    m *= maps["te_phase"] * np.complex64(np.exp(1j * 2 * np.pi * 1e-3 * p.te * dz_hz) * (p.b0 / 1.5))
    return m.astype(np.complex64, copy=False)


def _coarse_maps(p: Protocol, ctx: ExamContext, n: int):
    """Receive shading (normalised RSS at the coil ring's plane z = 0) and SENSE g-factor on a coarse
    grid, resized to n x n. Both depend on the in-plane geometry only: the z fall-off of the coupling
    is a scalar per slice (:func:`_coil_falloff`) and the g-factor does not change when every
    sensitivity is scaled by the same factor."""
    d = p.fov / COARSE
    c = (np.arange(COARSE, dtype=np.float32) - COARSE / 2 + 0.5) * d
    Xc, Yc = np.meshgrid(c, c + np.float32(ctx.y_center))
    sens = vendors.coil_sensitivities(Xc, Yc, ctx.coil_pos)
    shade = vendors.rss(sens) / np.float32(ctx.shade_norm)
    g = vendors.sense_gfactor(sens, p.acceleration, axis=-1) if p.acceleration > 1 else None
    shade = vendors.smooth_zoom(shade, (n, n))
    g = vendors.smooth_zoom(g, (n, n)) if g is not None else None
    corr = float(p.recon.shading_correction)
    # vendor intensity correction multiplies by shade ** -corr, softly capped per slice
    inv = np.power(np.maximum(shade, np.float32(1e-12)), np.float32(-corr)) if corr > 0 else None
    return shade, g, inv


def _coil_falloff(z: float) -> float:
    """Coupling of the coil ring (elements at z ~ 0) to a slice at z: slices away from it see less."""
    return float(np.float32(1) / np.float32(1 + (z / 120.0) ** 2))


def _kspace_window(p: Protocol) -> tuple[slice, slice, int]:
    """Rows (frequency, A-P) and columns (phase, L-R) of the acquired region in centred k-space."""
    n = p.recon_matrix
    nf, npe = p.acq_freq, p.acq_phase
    r0 = n // 2 - nf // 2
    c0 = n // 2 - npe // 2
    # partial Fourier: the early (negative) phase lines beyond the sampled fraction are skipped
    skip = int(round(npe * (1 - p.partial_fourier)))
    return slice(r0, r0 + nf), slice(c0 + skip, c0 + npe), skip


def acquire_slice(ph: Phantom, p: Protocol, ctx: ExamContext, z: float, slice_index: int,
                  phase: int = 0, noise: bool = True, complex_output: bool = False,
                  fractions: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One slice: (image in the stored orientation, tumour fraction in the stored orientation).

    Without ``complex_output`` the image is the vendor-scaled magnitude (float32, stored units);
    with it, the complex reconstruction before magnitude and scaling.
    """
    st = ctx.stage_s
    t0 = time.perf_counter()
    X, Y = _limited(ctx.cache, ("grid", p.recon_matrix, p.fov), lambda: pixel_grid(p, ctx))
    n = p.recon_matrix
    if fractions is None:
        fractions = ph.render(X, Y, z, p.slice_thickness, p.pixel_mm)
    t1 = time.perf_counter()
    m = tissue_signal(fractions, ph, p, X, Y, z, phase, cache=ctx.cache)
    shade0, g, inv_shade0 = _limited(ctx.cache, ("coil", p), lambda: _coarse_maps(p, ctx, n))
    falloff = _coil_falloff(z)
    # receive shading, partly removed later by the vendor's intensity correction
    m *= shade0 * np.float32(falloff)
    t2 = time.perf_counter()
    # only the acquired k-space window is needed: FFT the rows, keep the acquired phase columns,
    # then FFT those columns and keep the acquired frequency rows (indices of centred k-space
    # mapped to numpy's unshifted layout, so no fftshift copies)
    r_win, c_win, skip = _kspace_window(p)
    rows = (np.arange(r_win.start, r_win.stop) - n // 2) % n
    cols = (np.arange(c_win.start, c_win.stop) - n // 2) % n
    k1 = sfft.fft(m, axis=1, workers=1)[:, cols]
    acq = sfft.fft(k1, axis=0, workers=1)[rows]
    filt = _limited(ctx.cache, ("filter", p.acq_freq, p.acq_phase, p.recon),
                    lambda: vendors.kspace_filter((p.acq_freq, p.acq_phase), p.recon))
    if filt is not None:
        filt = filt[:, skip:]
    noise_img = None
    extra_power = None
    if noise:
        rng = np.random.default_rng([ctx.noise_key, phase, slice_index])
        sigma = noise_sigma(p)
        # numpy-convention FFT: image noise std = sigma_k sqrt(M) / N^2 for M fully sampled samples
        sigma_k = np.float32(sigma * n * n / np.sqrt(p.acq_freq * p.acq_phase) / np.sqrt(2))
        nk = _complex_noise(rng, acq.shape, sigma_k)
        if g is None:
            acq = acq + nk
            # unaccelerated scans combine channels by root-sum-of-squares; SENSE (below) unfolds
            # them into one complex image, whose magnitude stays Rician
            if not complex_output and p.coil_channels > 1:
                extra_power = _extra_channel_noise_power(p.coil_channels - 1, acq.shape, sigma_k, rng,
                                                         filt, rows, cols, n)
        else:
            # SENSE: noise amplified by g * sqrt(R) where the R-fold undersampling aliases
            noise_img = _window_ifft(nk * filt if filt is not None else nk, rows, cols, n)
            noise_img *= g * np.float32(np.sqrt(p.acceleration))
    img = _window_ifft(acq * filt if filt is not None else acq, rows, cols, n)
    if noise_img is not None:
        img += noise_img
    if extra_power is not None:
        # root-sum-of-squares channel combination: the magnitude of an N-channel array is
        # noncentral chi with 2N degrees of freedom (Constantinides et al., MRM 1997), so air and
        # lung carry a noise floor that rises with the channel count
        extra_power += img.real ** 2
        extra_power += img.imag ** 2
        img = np.sqrt(extra_power, out=extra_power)
    t3 = time.perf_counter()
    if inv_shade0 is not None:
        corr = float(p.recon.shading_correction)
        # a smooth, capped gain (vendors.SHADING_GAIN_MAX): the map is estimated from a
        # low-resolution reference and cannot lift regions the receive array barely sees
        graw = inv_shade0 * np.float32(falloff ** -corr)
        gmax = np.float32(vendors.SHADING_GAIN_MAX)
        img *= graw / np.sqrt(1 + (graw / gmax) ** 2)
    tumor = fractions[physics.TISSUES.index("tumor")] + fractions[physics.TISSUES.index("tumor_core")]
    if p.patient_position.startswith("HF"):
        # head-first prone: the stored image is mirrored left-right relative to feet-first prone
        img = img[:, ::-1]
        tumor = tumor[:, ::-1]
    if complex_output:
        out = img
    else:
        out = np.abs(img)
        out *= np.float32(ctx.gain)
    st["render"] = st.get("render", 0.0) + t1 - t0
    st["physics"] = st.get("physics", 0.0) + t2 - t1
    st["kspace+noise"] = st.get("kspace+noise", 0.0) + t3 - t2
    st["recon"] = st.get("recon", 0.0) + time.perf_counter() - t3
    return np.ascontiguousarray(out), np.ascontiguousarray(tumor)


def _window_ifft(win: np.ndarray, rows: np.ndarray, cols: np.ndarray, n: int) -> np.ndarray:
    """Zero-filled inverse 2D FFT of a k-space window placed at (rows, cols) of an n x n grid:
    the column transform runs on the acquired columns only (the others are all zero). Leading
    axes of ``win`` (e.g. coil channels) are transformed independently."""
    lead = win.shape[:-2]
    kc = np.zeros(lead + (n, len(cols)), dtype=np.complex64)
    kc[..., rows, :] = win
    part = sfft.ifft(kc, axis=-2, workers=1)
    full = np.zeros(lead + (n, n), dtype=np.complex64)
    full[..., cols] = part
    return sfft.ifft(full, axis=-1, workers=1, overwrite_x=True).astype(np.complex64, copy=False)


def _complex_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_k: np.float32) -> np.ndarray:
    """Circular complex Gaussian k-space noise, std ``sigma_k`` per component (one draw, real and
    imaginary parts interleaved)."""
    nk = rng.standard_normal(tuple(shape) + (2,), dtype=np.float32).view(np.complex64)[..., 0]
    nk *= sigma_k
    return nk


def _extra_channel_noise_power(n_extra: int, shape: tuple[int, int], sigma_k: np.float32,
                               rng: np.random.Generator, filt: np.ndarray | None, rows: np.ndarray,
                               cols: np.ndarray, n: int) -> np.ndarray:
    """Summed noise power of the ``n_extra`` channels beyond the first of a root-sum-of-squares
    combination, through the same k-space chain (sampling, partial Fourier, filter, zero-fill).

    With white, uncorrelated channel noise a unitary change of channel basis puts all the signal
    into one virtual channel, whose sensitivity is the RSS shading the signal already carries,
    and leaves the other N - 1 channels as pure noise of the same level, so at every pixel the
    combined magnitude sqrt(sum_i |s_i m + n_i|^2) has exactly the distribution of
    sqrt(|S m + n_1|^2 + sum_{j>=2} |n_j|^2) with S = sqrt(sum_i s_i^2).
    """
    power = np.zeros((n, n), dtype=np.float32)
    # channels in small batches: one array of every channel's zero-filled image would be large
    for start in range(0, n_extra, 4):
        k = min(4, n_extra - start)
        nk = _complex_noise(rng, (k,) + tuple(shape), sigma_k)
        if filt is not None:
            nk *= filt
        imgs = _window_ifft(nk, rows, cols, n)
        power += (imgs.real ** 2 + imgs.imag ** 2).sum(axis=0)
    return power


def acquire(ph: Phantom, p: Protocol, rng: np.random.Generator | None = None, phase: int = 0,
            n_slices: int = 16, z_positions: np.ndarray | None = None, noise: bool = True,
            complex_output: bool = False, ctx: ExamContext | None = None) -> np.ndarray:
    """Image a phantom with a protocol: (S, Rows, Columns) float32 in stored orientation and units.

    ``phase`` 0 is pre-contrast, k >= 1 the k-th post-contrast phase. Pass the same ``ctx`` (from
    :func:`exam_context`) to image several phases/contrasts of one exam with the same FOV and gain.
    """
    if ctx is None:
        ctx = exam_context(ph, p, rng if rng is not None else np.random.default_rng(0))
    if z_positions is None:
        z_positions = ph.default_slab(n_slices, p.slice_thickness)
    imgs = [acquire_slice(ph, p, ctx, float(z), i, phase, noise, complex_output)[0]
            for i, z in enumerate(z_positions)]
    return np.stack(imgs)


def to_stored(img: np.ndarray, p: Protocol) -> np.ndarray:
    """Round and clip to the vendor's stored range (uint16 holding BitsStored bits)."""
    top = 2 ** p.recon.bits_stored - 1
    return np.clip(np.rint(img), 0, top).astype(np.uint16)
