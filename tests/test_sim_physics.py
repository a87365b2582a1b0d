"""Physics of the simulator against hand-computed values and physical laws (small sizes, fast)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from mridomain.sim.breast import acquisition as acq
from mridomain.sim.breast import make_phantom, make_protocol
from mridomain.sim import physics
from mridomain.sim.physics import TISSUES


# ---- signal equation -----------------------------------------------------------------------------
def test_spgr_matches_hand_computed_values():
    # PD 1, T1 1000 ms, TR 5 ms, TE 0, 10 deg: E1 = 0.995012, sin(10)(1-E1)/(1-cos(10)E1) = 0.043080
    assert physics.spgr_signal(1.0, 1000.0, 1e12, 5.0, 0.0, 10.0) == pytest.approx(0.0430797, rel=1e-5)
    # fibroglandular at 1.5 T, Siemens-like TR 4.42 / TE 1.3, 10 deg, T2* 50 ms: 0.025329
    assert physics.spgr_signal(0.8, 1266.0, 50.0, 4.42, 1.3, 10.0) == pytest.approx(0.0253288, rel=1e-5)


def test_longer_tr_raises_long_t1_signal_more_than_short_t1():
    # at fixed flip, dS/dTR is larger for long T1 (far from saturation recovery): FGT vs fat
    s = {tr: (physics.spgr_signal(1, 1266, 1e9, tr, 0, 10), physics.spgr_signal(1, 296, 1e9, tr, 0, 10))
         for tr in (3.5, 7.4)}
    gain_fgt = s[7.4][0] / s[3.5][0]
    gain_fat = s[7.4][1] / s[3.5][1]
    assert gain_fgt > 1 and gain_fat > 1
    assert gain_fgt > gain_fat


def test_ernst_angle_maximises_signal():
    # arccos(exp(-5/1000)) = 5.7248 deg
    assert physics.ernst_angle(5.0, 1000.0) == pytest.approx(5.7248, abs=1e-3)
    e = physics.ernst_angle(5.0, 1000.0)
    peak = physics.spgr_signal(1, 1000, 1e9, 5, 0, e)
    for a in (e - 3, e + 3, 2 * e, 10.0):
        assert physics.spgr_signal(1, 1000, 1e9, 5, 0, a) < peak


def test_relaxation_interpolates_between_literature_points():
    t1_15 = physics.tissue_relaxation("fat", 1.5)[0]
    t1_30 = physics.tissue_relaxation("fat", 3.0)[0]
    assert (t1_15, t1_30) == (296.0, 367.0)  # FIELD.md table
    assert physics.tissue_relaxation("fat", 1.494)[0] == pytest.approx(296 + 71 * (-0.006 / 1.5))
    assert physics.relaxivity("GADAVIST", 1.5) == 5.2 and physics.relaxivity("MAGNEVIST", 3.0) == 3.7


def test_fat_offset_is_about_217_hz_at_15t():
    assert physics.fat_offset_hz(1.5) == pytest.approx(-3.4 * 42.577 * 1.5)
    assert -225 < physics.fat_offset_hz(1.5) < -210


def test_fat_saturation_residual_depends_on_method_b0_and_b1():
    on = physics.fat_residual("special", np.float32(0), np.float32(1))
    assert on == pytest.approx(physics.FATSAT_METHODS["special"]["min_residual"], abs=1e-6)
    assert physics.fat_residual("none", np.float32(0), np.float32(1)) == 1.0
    # off-resonance pushes fat out of the band; B1 error hurts CHESS but not adiabatic SPAIR
    assert physics.fat_residual("special", np.float32(200), np.float32(1)) > on
    assert physics.fat_residual("chess", np.float32(0), np.float32(0.7)) > physics.fat_residual(
        "chess", np.float32(0), np.float32(1))
    assert physics.fat_residual("spair", np.float32(0), np.float32(0.7)) == pytest.approx(
        physics.fat_residual("spair", np.float32(0), np.float32(1)))


def test_agent_shortens_t1():
    assert physics.t1_with_agent(1000.0, 4.0, 0.5) == pytest.approx(1 / (1 / 1000 + 4 * 0.5 / 1000))
    assert physics.concentration_mM("tumor", -np.inf, {"tumor_amp": 1, "tumor_kin": 2, "tumor_kout": 0.1}) == 0


# ---- image-level physics (one small phantom shared) ----------------------------------------------
@pytest.fixture(scope="module")
def phantom():
    return make_phantom(np.random.default_rng(5), density="heterogeneous", tumor=True, tumor_diameter_mm=25)


def small(**kw):
    base = dict(acq_freq=96, acq_phase=96, recon_matrix=128, fov=340.0, slice_thickness=1.5,
                scan_options="FAST_GEMS\\SAT_GEMS\\FS", tr=5.0, te=2.4, flip_angle=10.0)
    base.update(kw)
    return make_protocol(**base)


def one(ph, p, z=0.0, phase=0, noise=False, complex_output=False, key=1, ctx=None):
    ctx = ctx or acq.exam_context(ph, p, np.random.default_rng(0))
    ctx.noise_key = key
    return acq.acquire_slice(ph, p, ctx, z, 0, phase=phase, noise=noise, complex_output=complex_output)[0]


def test_fat_saturation_lowers_fat_signal(phantom):
    p_fs = small()
    p_no = small(scan_options="FAST_GEMS\\PFP")
    assert p_fs.fatsat == "special" and p_no.fatsat == "none"
    ctx = acq.exam_context(phantom, p_fs, np.random.default_rng(0))
    X, Y = acq.pixel_grid(p_fs, ctx)
    fr = phantom.render(X, Y, 0.0, p_fs.slice_thickness, p_fs.pixel_mm)
    fat_only = fr[TISSUES.index("fat")] > 0.99
    assert fat_only.sum() > 50
    a = np.abs(acq.tissue_signal(fr, phantom, p_fs, X, Y, 0.0, 0))
    b = np.abs(acq.tissue_signal(fr, phantom, p_no, X, Y, 0.0, 0))
    assert a[fat_only].mean() < 0.3 * b[fat_only].mean()


def test_kspace_truncation_limits_resolution(phantom):
    """Before noise, the reconstructed spectrum is zero outside the acquired matrix."""
    p = small(acq_freq=64, acq_phase=48, recon_matrix=128, scan_options="FAST_GEMS\\SAT_GEMS\\FS")
    p = dataclasses.replace(p, recon=dataclasses.replace(p.recon, shading_correction=0.0))
    img = one(phantom, p, complex_output=True)
    spec = np.abs(np.fft.fftshift(np.fft.fft2(img))) ** 2
    n = 128
    ky = np.arange(n)[:, None] - n // 2
    kx = np.arange(n)[None, :] - n // 2
    inside = (ky >= -32) & (ky < 32) & (kx >= -24) & (kx < 24)
    assert spec[~inside].sum() < 1e-9 * spec.sum()
    assert spec[inside].sum() > 0


def _snr(ph, p):
    ctx = acq.exam_context(ph, p, np.random.default_rng(0))
    X, Y = acq.pixel_grid(p, ctx)
    fr = ph.render(X, Y, 0.0, p.slice_thickness, p.pixel_mm)
    muscle = fr[TISSUES.index("muscle")] > 0.99
    clean = np.abs(one(ph, p, complex_output=True, ctx=ctx))
    noisy = [one(ph, p, complex_output=True, noise=True, key=k, ctx=ctx) for k in (1, 2)]
    sigma = np.std((noisy[0] - noisy[1]).real) / np.sqrt(2)
    return clean[muscle].mean() / sigma, muscle.sum()


def test_3t_has_higher_snr_than_15t_at_equal_voxel(phantom):
    snr15, n15 = _snr(phantom, small(field_strength=1.5))
    snr30, n30 = _snr(phantom, small(field_strength=3.0))
    assert n15 > 20 and n30 > 20
    assert snr30 > 1.3 * snr15


def test_snr_grows_with_voxel_volume(phantom):
    thin, _ = _snr(phantom, small(slice_thickness=1.0))
    thick, _ = _snr(phantom, small(slice_thickness=2.5))
    assert thick > thin


def test_acceleration_amplifies_noise_by_g_factor():
    from mridomain.sim.breast.vendors import coil_positions, coil_sensitivities, sense_gfactor
    c = np.linspace(-170, 170, 48, dtype=np.float32)
    X, Y = np.meshgrid(c, c)
    sens = coil_sensitivities(X, Y, coil_positions("Signa HDxt", 8, 95, 20))
    g = sense_gfactor(sens, 2)
    assert g.min() >= 1.0 - 1e-5 and g.max() > 1.05
    assert np.allclose(sense_gfactor(sens, 1), 1.0)


def test_rss_coil_combination_gives_noncentral_chi_noise_floor(phantom):
    """Magnitude images are root-sum-of-squares channel combinations: in air the noise is chi with
    2N degrees of freedom, whose mean sigma * sqrt(2) * Gamma(N + 1/2) / Gamma(N) rises with the
    channel count (Constantinides et al., MRM 1997); N = 1 is the Rayleigh floor 1.2533 sigma."""
    floors = {}
    for n_ch in (1, 8):
        # a wide FOV leaves air around the body to measure the floor in
        p = small(manufacturer="SIEMENS", scan_options="FS", coil_channels=n_ch, fov=440.0, acq_freq=128,
                  acq_phase=128)
        p = dataclasses.replace(p, recon=dataclasses.replace(p.recon, shading_correction=0.0))
        assert p.acceleration == 1 and p.partial_fourier == 1.0 and p.recon.filter == "none"
        ctx = acq.exam_context(phantom, p, np.random.default_rng(0))
        clean = np.abs(one(phantom, p, complex_output=True, ctx=ctx))
        noisy = [one(phantom, p, complex_output=True, noise=True, key=k, ctx=ctx) for k in (1, 2)]
        sigma = np.std((noisy[0] - noisy[1]).real) / np.sqrt(2)     # per component, one channel
        # air: where even the ringing tails of the noise-free image stay well below the noise
        air = clean < 0.3 * sigma
        assert air.sum() > 300
        floors[n_ch] = np.mean([one(phantom, p, noise=True, key=k, ctx=ctx)[air].mean()
                                for k in range(3, 9)]) / ctx.gain / sigma
        expected = math.sqrt(2) * math.exp(math.lgamma(n_ch + 0.5) - math.lgamma(n_ch))
        assert floors[n_ch] == pytest.approx(expected, rel=0.04)
    assert floors[8] > 2 * floors[1]
