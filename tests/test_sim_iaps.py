"""Each IAP reaches the pixels through physics or vendor behaviour, and only where it physically should."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mridomain.sim.breast import acquisition as acq
from mridomain.sim.breast import make_phantom, make_protocol
from mridomain.sim.breast.vendors import VENDOR_RECON


@pytest.fixture(scope="module")
def ph():
    return make_phantom(np.random.default_rng(11), density="scattered", tumor=True, tumor_diameter_mm=20)


BASE = dict(manufacturer="GE", model="Signa HDxt", field_strength=1.5,
            scan_options="FAST_GEMS\\SAT_GEMS\\PFP\\FS", patient_position="FFP",
            contrast_agent="MAGNEVIST", acq_freq=96, acq_phase=96, recon_matrix=128,
            slice_thickness=1.5, flip_angle=10.0, fov=340.0, tr=5.5, te=2.4)


def image(ph, phase=0, noise=False, key=1, **kw):
    args = dict(BASE)
    args.update(kw)
    if args["manufacturer"] != BASE["manufacturer"]:
        args["recon"] = VENDOR_RECON[args["manufacturer"]]
    p = make_protocol(**args)
    ctx = acq.exam_context(ph, p, np.random.default_rng(0))
    ctx.noise_key = key
    z = float(ph.tumor.center[2])
    return acq.acquire_slice(ph, p, ctx, z, 0, phase=phase, noise=noise)[0]


def noise_rms(ph, **kw):
    """RMS difference between two noise realisations of the same acquisition."""
    return float(np.sqrt(np.mean((image(ph, noise=True, key=1, **kw) - image(ph, noise=True, key=2, **kw)) ** 2)))


def differs(a, b, ph, **kw):
    """Systematic difference, measured as the RMS of the noise-free difference vs the noise RMS."""
    if a.shape != b.shape:
        return True
    d = float(np.sqrt(np.mean((a - b) ** 2)))
    return d > 0.25 * noise_rms(ph, **kw)


@pytest.mark.parametrize("name, value", [
    ("manufacturer", "SIEMENS"),          # vendor recon: filter, intensity correction, scaling
    ("model", "Optima MR450w"),           # coil: 16 channels, another geometry -> shading
    ("scan_options", "FAST_GEMS\\PFP"),  # no fat suppression
    ("field_strength", 3.0),              # T1, B0 scaling, B1+, chemical shift
    ("acq_phase", 64),                    # acquisition matrix: k-space extent
    ("slice_thickness", 2.5),             # partial volume along z, SNR
    ("flip_angle", 12.0),                 # T1 weighting
    ("fov", 380.0),                       # pixel spacing -> anatomy size in pixels
    ("tr", 7.2),                          # T1 weighting, readout time
    ("te", 1.3),                          # T2* decay, fat/water phase
])
def test_each_iap_changes_pixels_beyond_noise(ph, name, value):
    kw = {"model": "Skyra"} if name == "manufacturer" else {}
    if name == "model":
        kw = {"coil_channels": 16}
    a = image(ph)
    b = image(ph, **{name: value}, **kw)
    assert differs(a, b, ph), f"{name}={value!r} left no trace above the noise"


def test_patient_position_mirrors_the_stored_image(ph):
    a = image(ph, patient_position="FFP")
    b = image(ph, patient_position="HFP")
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a[:, ::-1], b)  # exactly a left-right mirror
    # the heart sits on the patient's left, so the mirror is not a symmetry of the anatomy
    assert differs(a, a[:, ::-1], ph)


def test_contrast_agent_is_invisible_before_contrast_and_visible_after(ph):
    """Physics: no agent is in the body on the pre-contrast phase, so its label cannot reach pixels."""
    for other in ("GADAVIST", "MULTIHANCE"):
        np.testing.assert_array_equal(image(ph, contrast_agent="MAGNEVIST"),
                                      image(ph, contrast_agent=other))
        assert differs(image(ph, phase=1, contrast_agent="MAGNEVIST"),
                       image(ph, phase=1, contrast_agent=other), ph)


def test_header_only_scan_options_leave_no_trace(ph):
    """MP_GEMS (multiphase) and FAST_GEMS are bookkeeping flags: identical pre-contrast pixels."""
    a = image(ph, scan_options="FAST_GEMS\\SAT_GEMS\\PFP\\FS")
    np.testing.assert_array_equal(a, image(ph, scan_options="FAST_GEMS\\SAT_GEMS\\MP_GEMS\\PFP\\FS"))
    np.testing.assert_array_equal(a, image(ph, scan_options="SAT_GEMS\\PFP\\FS"))


def test_partial_fourier_and_acceleration_leave_traces(ph):
    a = image(ph, scan_options="FAST_GEMS\\SAT_GEMS\\FS")
    assert differs(a, image(ph, scan_options="FAST_GEMS\\SAT_GEMS\\PFP\\FS"), ph)
    n1 = noise_rms(ph, scan_options="FAST_GEMS\\SAT_GEMS\\PFP\\FS")
    n2 = noise_rms(ph, scan_options="FAST_GEMS\\SAT_GEMS\\ACC_GEMS\\PFP\\FS")
    assert n2 > 1.2 * n1  # g * sqrt(R) noise amplification


def test_post_contrast_tumour_enhances(ph):
    p = make_protocol(**BASE)
    ctx = acq.exam_context(ph, p, np.random.default_rng(0))
    z = float(ph.tumor.center[2])
    pre, tum = acq.acquire_slice(ph, p, ctx, z, 0, phase=0, noise=False)
    post, _ = acq.acquire_slice(ph, p, ctx, z, 0, phase=1, noise=False)
    core = tum > 0.9
    assert core.sum() > 5
    assert post[core].mean() > 1.5 * pre[core].mean()


def test_acquire_free_sequence_parameters(ph):
    """The in-memory API images one patient with any contrast (synthesis / domain-shift work)."""
    p = make_protocol(**BASE)
    t1w = acq.acquire(ph, p, np.random.default_rng(0), n_slices=2, noise=False)
    pdw = acq.acquire(ph, dataclasses.replace(p, flip_angle=3.0), np.random.default_rng(0), n_slices=2,
                      noise=False)
    assert t1w.shape == pdw.shape == (2, 128, 128)
    assert not np.allclose(t1w, pdw)
