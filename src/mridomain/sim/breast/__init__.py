"""mridomain.sim.breast: physics-based multi-vendor breast MRI simulator that writes real DICOM.

``simulate(out, n_patients, seed, ...)`` writes a DBC-like archive; the building blocks are reusable
in memory: ``make_phantom`` (anatomy), ``sample_protocols`` / ``make_protocol`` (IAPs),
``acquire`` (physics + k-space + vendor recon -> pixels). See docs/simulator.md.
"""
from mridomain.sim.breast.acquisition import ExamContext, acquire, acquire_slice, exam_context, noise_sigma, to_stored
from mridomain.sim.breast.phantom import Phantom, make_phantom, phantom_parameters
from mridomain.sim.breast.protocols import Protocol, load_preset, make_protocol, sample_protocols, validate_preset
from mridomain.sim.breast.simulate import SimulationResult, patient_phantom, simulate
from mridomain.sim.breast.attribution import FACTORS, AcquiredSeries, acquire_series, replace_factors
from mridomain.sim.breast.realism import dicom_kspace_ratio, kspace_window_ratio, power_law_beta

__all__ = [
    "simulate", "SimulationResult", "make_phantom", "Phantom", "phantom_parameters", "patient_phantom",
    "Protocol", "make_protocol", "sample_protocols", "load_preset", "validate_preset",
    "acquire", "acquire_slice", "exam_context", "ExamContext", "noise_sigma", "to_stored",
    "FACTORS", "AcquiredSeries", "acquire_series", "replace_factors",
    "kspace_window_ratio", "dicom_kspace_ratio", "power_law_beta",
]
