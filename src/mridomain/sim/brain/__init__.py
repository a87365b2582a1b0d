"""mridomain.sim.brain: a multi-sequence brain MRI simulator (T1, T1Gd, T2, FLAIR) on real anatomy.

MNI152 2009a tissue maps from nilearn's wheel, per-subject deformations, a glioma-like lesion, and
signal equations (spoiled GRE, Gd-shortened T1, spin echo, CSF-nulling inversion recovery) with
Rician noise, written in the BraTS folder layout. See docs/synth.md.
"""
from mridomain.sim.brain.anatomy import (BRATS_LABELS, TRUTH_LABELS, BrainTemplate, LesionSpec, SubjectAnatomy,
                                         load_template, make_anatomy, sample_lesion)
from mridomain.sim.brain.nifti import write_like_image, write_nifti
from mridomain.sim.brain.physics import (BRAIN_TISSUES, PROTOCOLS, SequenceProtocol, csf_null_ti,
                                         inversion_recovery_signal, sequence_signal, spin_echo_signal,
                                         tissue_values)
from mridomain.sim.brain.simulate import (BrainSimulation, BrainSubject, make_subject, render_subject,
                                          simulate_brains, subject_id, write_subject)

__all__ = [
    "simulate_brains", "BrainSimulation", "BrainSubject", "make_subject", "render_subject", "write_subject",
    "subject_id", "make_anatomy", "SubjectAnatomy", "LesionSpec", "sample_lesion", "load_template",
    "BrainTemplate", "TRUTH_LABELS", "BRATS_LABELS", "BRAIN_TISSUES", "PROTOCOLS", "SequenceProtocol",
    "tissue_values", "sequence_signal", "spin_echo_signal", "inversion_recovery_signal", "csf_null_ti",
    "write_nifti", "write_like_image",
]
