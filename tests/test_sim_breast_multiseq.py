"""The breast multi-sequence protocol: each contrast's physics, measured on rendered images, and the
NIfTI subject layout read back by the synthesis loader."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mridomain.sim.breast.exams import exam_phantom, simulate_breast_exams
from mridomain.sim.breast.multiseq import (B_VALUES, BREAST_SEQUENCES, DCE_PHASES, PCR_RATE, RESPONDER_ADC_GAP,
                                           draw_cysts, draw_response, fit_adc, render_exam, wash_maps)


@pytest.fixture(scope="module")
def exam():
    ph = exam_phantom(3, 1)
    # two cysts forced into this patient (the prevalence draw would give one in three patients)
    return render_exam(ph, cysts=draw_cysts(ph, count=2), slices=3)


def _pure(exam, tissue, level=0.9):
    """Voxels made (almost) only of ``tissue``."""
    return exam.fractions[exam.tissues.index(tissue)] > level


def _mean(exam, seq, tissue, t=0):
    sel = _pure(exam, tissue)
    assert sel.sum() >= 5, f"too few pure {tissue} voxels ({sel.sum()}) for a measurement"
    return float(exam.images[seq][t][sel].mean())


def test_every_sequence_rendered_with_its_time_axis(exam):
    assert tuple(exam.images) == BREAST_SEQUENCES
    t = {s: v.shape[0] for s, v in exam.images.items()}
    assert t == {"t1": 1, "fatsatt1": 1, "t2": 1, "dce": DCE_PHASES, "fatsatdce": DCE_PHASES, "washin": 1,
                 "washout": 1, "dwi": len(B_VALUES)}
    assert len({v.shape[1:] for v in exam.images.values()}) == 1


def test_fat_nulled_on_fat_saturation_only(exam):
    # fat is the brightest soft tissue on the non-saturated T1 (short T1) and nulled by SPAIR
    assert _mean(exam, "t1", "fat") > 2 * _mean(exam, "t1", "fgt")
    assert _mean(exam, "fatsatt1", "fat") < 0.25 * _mean(exam, "fatsatt1", "fgt")
    for t in range(DCE_PHASES):
        assert _mean(exam, "fatsatdce", "fat", t) < 0.25 * _mean(exam, "fatsatdce", "fgt", t)
    # water tissue is untouched by the spectral pulse (same signal up to noise)
    assert _mean(exam, "fatsatt1", "fgt") == pytest.approx(_mean(exam, "t1", "fgt"), rel=0.1)


def test_cysts_bright_on_t2_and_dark_on_t1(exam):
    cyst = _mean(exam, "t2", "cyst")
    for other in ("fgt", "muscle", "fat"):
        assert cyst > 1.5 * _mean(exam, "t2", other), other
    assert _mean(exam, "t1", "cyst") < _mean(exam, "t1", "fgt")   # long T1: darker on T1


def test_adc_ordering_from_log_linear_fit():
    """ADC measured from the simulated DWI (log-linear fit over b = 0, 150, 800, 1500) orders
    malignant < glandular < cyst, on noise-free and on noisy images (voxel medians)."""
    ph = exam_phantom(3, 1)
    for noise in (False, True):
        ex = render_exam(ph, cysts=draw_cysts(ph, count=2), slices=3, noise=noise)
        adc = fit_adc(ex.images["dwi"])
        med = {t: float(np.median(adc[_pure(ex, t)])) for t in ("tumor", "fgt", "cyst")}
        assert med["tumor"] < med["fgt"] < med["cyst"], (noise, med)
        if not noise:   # without noise the fit returns the tissue's ADC (pure voxels, mono-exponential)
            assert med["fgt"] == pytest.approx(1.81, rel=0.02)
            assert med["cyst"] == pytest.approx(2.5, rel=0.02)
            assert med["tumor"] == pytest.approx(ex.response.tumor_adc, rel=0.02)


def test_wash_maps_follow_the_dce(exam):
    washin, washout = exam.images["washin"][0], exam.images["washout"][0]
    d = exam.images["fatsatdce"]
    np.testing.assert_allclose(washin, np.clip(d[1] - d[0], 0, None))
    np.testing.assert_allclose(washout, np.clip(d[1] - d[-1], 0, None))
    # tumours wash in faster than glandular tissue (FIELD.md kinetics), fat barely enhances
    assert _mean(exam, "washin", "tumor", 0) > 3 * _mean(exam, "washin", "fgt", 0)
    assert _mean(exam, "washin", "tumor", 0) > 3 * _mean(exam, "washin", "fat", 0)


def test_washout_where_the_kinetics_wash_out():
    """A wash-out (type III) lesion is bright on wash-out; a persistent (type I) one is not."""
    found = {}
    for i in range(40):
        ph = exam_phantom(0, i)
        kind = "out" if ph.kinetics["tumor_kout"] > 0.08 else "persistent" if ph.kinetics["tumor_kout"] < 0 else None
        if kind and kind not in found:
            ex = render_exam(ph, cysts=[], slices=1, noise=False)
            sel = ex.seg == 1
            if sel.sum() >= 3:
                found[kind] = float(ex.images["washout"][0][sel].mean() / ex.images["washin"][0][sel].mean())
        if len(found) == 2:
            break
    assert found["out"] > 0.1 > found["persistent"], found
    np.testing.assert_allclose(wash_maps(np.ones((6, 1, 2, 2)))[0], 0)


def test_response_trait_population():
    """pCR share near the cited 22 % and responders' tumour ADC below non-responders' by about the
    cited gap (1,000 patients: the trait is drawn from its own stream, no rendering)."""
    traits = [draw_response(exam_phantom(5, i)) for i in range(1000)]
    pcr = np.array([t.pcr for t in traits])
    adc = np.array([t.tumor_adc for t in traits])
    assert abs(pcr.mean() - PCR_RATE) < 0.05
    gap = adc[~pcr].mean() - adc[pcr].mean()
    assert 0.5 * RESPONDER_ADC_GAP < gap < 1.6 * RESPONDER_ADC_GAP


def test_layout_round_trip(tmp_path):
    """Written NIfTI (4-D for DCE, FatSatDCE, DWI) read back by the synthesis loader voxel for voxel
    up to its normalization, with dataset.json naming the sequences."""
    from mridomain.sim.breast.exams import exam_phantom as phantom_of
    from mridomain.synth.data import layout_description, load_dataset, normalize_volume

    res = simulate_breast_exams(tmp_path / "exams", n_patients=2, seed=4, slices=2, size=(32, 48), pixel_mm=7.0,
                                workers=1, progress=False)
    assert res.skipped == []
    seqs, cfg = layout_description(tmp_path / "exams")
    assert seqs == BREAST_SEQUENCES and cfg["network"]["lstm_layers"] >= 1
    assert json.loads((tmp_path / "exams" / "dataset.json").read_text())["protocol"]["model"] == "Ingenia"
    data = load_dataset(tmp_path / "exams", seqs, progress=False)
    assert len(data) == 2 and data.timepoints["dce"] == 6 and data.timepoints["dwi"] == 4
    sub = data.by_id("Breast_0001")
    ex = render_exam(phantom_of(4, 1), slices=2, size=(32, 48), pixel_mm=7.0)
    for s in BREAST_SEQUENCES:
        want, _ = normalize_volume(ex.images[s])
        np.testing.assert_allclose(sub.volumes[s], want, atol=1e-5, err_msg=s)
    assert sub.seg is not None and (sub.seg == (ex.seg == 1)).all()
    from mridomain.synth.data import _read_stack

    cysts, _ = _read_stack(tmp_path / "exams" / "Breast_0001" / "Breast_0001_cysts.nii.gz")
    assert (cysts == (ex.seg == 2)).all()
    labels = (tmp_path / "exams" / "labels.csv").read_text().splitlines()
    assert labels[0] == "subject_id,pcr" and len(labels) == 3
