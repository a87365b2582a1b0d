"""In-memory re-simulation for domain-shift attribution: same phantoms, one acquisition factor changed."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pydicom
import pytest

from mridomain.errors import InvalidArgumentError
from mridomain.sim.breast import FACTORS, acquire_series, make_protocol, patient_phantom, replace_factors, simulate
from mridomain.sim.breast.protocols import Protocol

GE = dict(manufacturer="GE", model="SIGNA HDx", field_strength=1.5, scan_options="FAST_GEMS\\SAT_GEMS\\PFP\\FS",
          acq_freq=48, acq_phase=40, recon_matrix=64, fov=340.0, slice_thickness=2.0, tr=5.2, te=2.4)
SIEMENS = dict(manufacturer="SIEMENS", model="Skyra", field_strength=3.0, scan_options="PFP\\SFS",
               acq_freq=64, acq_phase=56, recon_matrix=64, fov=330.0, slice_thickness=1.1, tr=3.7,
               te=1.45, patient_position="HFP", contrast_agent="GADAVIST")


def test_factors_partition_every_protocol_field_exactly_once():
    listed = [f for fields in FACTORS.values() for f in fields]
    assert sorted(listed) == sorted(f.name for f in dataclasses.fields(Protocol))
    assert len(listed) == len(set(listed))


def test_replace_factors_copies_only_the_named_group():
    a, b = make_protocol(**GE), make_protocol(**SIEMENS)
    c = replace_factors(a, b, "timing")
    assert (c.tr, c.te, c.flip_angle) == (b.tr, b.te, b.flip_angle)
    assert c.recon == a.recon and c.field_strength == a.field_strength and c.model == a.model
    d = replace_factors(a, b, ["recon", "coil"])
    assert d.recon == b.recon and d.coil_channels == b.coil_channels and d.tr == a.tr
    with pytest.raises(InvalidArgumentError, match="unknown acquisition factor"):
        replace_factors(a, b, "vendor")


def test_phantom_depends_on_seed_and_index_only():
    a, b = patient_phantom(4, 2), patient_phantom(4, 2)
    assert a.tumor.diameter_mm == b.tumor.diameter_mm and a.texture_thr == b.texture_thr
    assert patient_phantom(4, 3).torso_w != a.torso_w


def test_anatomies_give_the_cohort_only_that_many_bodies_and_reach_the_workers():
    from mridomain.sim.breast import load_preset, phantom_parameters
    from mridomain.sim.breast.simulate import _exam, draw_cohort

    data = load_preset("dbc")
    own, protocols, _ = draw_cohort(7, 6, data)
    two, _, _ = draw_cohort(7, 6, data, anatomies=2)
    params = [phantom_parameters(ph) for ph in two]
    assert params[0] == params[2] == params[4] and params[1] == params[3] == params[5]
    assert params[0] != params[1]
    assert params[:2] == [phantom_parameters(ph) for ph in own[:2]]   # the first bodies are the patients' own
    assert params[2] != phantom_parameters(own[2])
    # the worker renders the same body as the cohort drawn in the parent, texture included
    worker_ph, _, _ = _exam(7, 4, protocols[4], 1, anatomies=2)
    assert phantom_parameters(worker_ph) == params[0] and worker_ph.patient_index == two[0].patient_index == 0
    with pytest.raises(InvalidArgumentError, match="anatomies must be >= 1"):
        patient_phantom(7, 0, anatomies=0)


def test_acquire_series_gives_a_contiguous_tumour_slab_with_its_box():
    ph = patient_phantom(1, 0)
    s = acquire_series(ph, make_protocol(**GE), slices=5)
    assert s.volume.shape == (5, 64, 64) and s.volume.dtype == np.float32
    assert np.allclose(np.diff(s.z_mm), 2.0)                 # contiguous: spacing = thickness
    assert abs(float(np.mean(s.z_mm)) - float(ph.tumor.center[2])) < 1e-6
    z0, z1, r0, r1, c0, c1 = s.tumor_box
    assert 0 <= z0 <= 2 <= z1 <= 4 and r0 <= r1 and c0 <= c1  # the centre slice holds the lesion


def test_switching_one_factor_changes_only_what_it_should():
    ph = patient_phantom(1, 0)
    si, ge = make_protocol(**SIEMENS), make_protocol(**GE)
    base = acquire_series(ph, si, slices=3).volume
    # header-only fields leave the pixels identical: the noise stream and FOV do not move
    np.testing.assert_array_equal(base, acquire_series(ph, replace_factors(si, ge, "header"), slices=3).volume)
    for factor in ("recon", "coil", "field_strength", "timing", "fat_suppression"):
        other = acquire_series(ph, replace_factors(si, ge, factor), slices=3).volume
        assert not np.array_equal(base, other), factor


def test_shared_renders_give_the_same_pixels_for_every_factor():
    """One patient imaged with each factor switched, sharing one renders dict (as the shift
    attribution does), equals imaging each condition on its own, bit for bit; the geometry factors
    (matrix, all) render their own grid and the others reuse the patient's."""
    ph = patient_phantom(1, 0)
    si, ge = make_protocol(**SIEMENS), make_protocol(**GE)
    renders: dict = {}
    conditions = [si] + [replace_factors(si, ge, f) for f in FACTORS] + [replace_factors(si, ge, list(FACTORS))]
    for p in conditions:
        shared = acquire_series(patient_phantom(1, 0), p, slices=3, renders=renders)
        alone = acquire_series(ph, p, slices=3)
        np.testing.assert_array_equal(shared.volume, alone.volume)
        assert shared.tumor_box == alone.tumor_box
    grids = {(k[0], k[1], k[2]) for k in renders}
    assert len(renders) == 3 * len(grids) and 2 <= len(grids) < len(conditions)


def test_acquire_series_equals_what_simulate_writes(tmp_path):
    preset = tmp_path / "one.yaml"
    preset.write_text(
        "name: one\nscanners:\n  - manufacturer: GE\n    model: SIGNA HDx\n    field_strength: 1.5\n"
        "    scan_options: 'FAST_GEMS\\SAT_GEMS\\PFP\\FS'\n    patient_position: HFP\n"
        "    contrast_agent: MAGNEVIST\n    acquisition_matrix: '48 X 40'\n    recon_matrix: 64\n"
        "    slice_thickness: 2\n    flip_angle: 10\n    fov: 340\n    tr: 5.2\n    te: 2.4\n")
    res = simulate(tmp_path / "out", n_patients=1, seed=5, slices=5, preset=preset, workers=1,
                   progress=False, slab="tumor")
    row = res.manifest.iloc[0]
    files = sorted((res.out / row["folder"]).glob("*.dcm"))
    written = np.stack([pydicom.dcmread(f).pixel_array for f in files]).astype(np.float32)
    assert float(pydicom.dcmread(files[0]).SpacingBetweenSlices) == pytest.approx(2.0)
    p = make_protocol(manufacturer="GE", model="SIGNA HDx", field_strength=1.5,
                      scan_options="FAST_GEMS\\SAT_GEMS\\PFP\\FS", patient_position="HFP",
                      contrast_agent="MAGNEVIST", acq_freq=48, acq_phase=40, recon_matrix=64,
                      slice_thickness=2.0, flip_angle=10.0, fov=340.0, tr=float(row["tr"]), te=float(row["te"]))
    s = acquire_series(patient_phantom(5, 0), p, slices=5)
    np.testing.assert_array_equal(s.volume, written)
    box = pd.read_csv(res.annotations_csv).iloc[0]
    assert (box["Start Slice"] - 1, box["End Slice"] - 1) == s.tumor_box[:2]
    assert (box["Start Row"] - 1, box["End Row"] - 1, box["Start Column"] - 1, box["End Column"] - 1) == s.tumor_box[2:]
