"""Render simulated brains through the four sequence protocols and write them in the BraTS layout.

``out/<subject>/<subject>_{t1,t1ce,t2,flair,seg}.nii.gz`` as BraTS, so a loader pointed at real BraTS
data reads these the same way; each subject folder adds ``<subject>_truth.nii.gz`` (dominant tissue
per voxel, :data:`~mridomain.sim.brain.anatomy.TRUTH_LABELS`), which real data does not have and
which the imaging-differentiation checks use. ``out/manifest.csv`` holds one row of ground truth per
subject.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mridomain.errors import InvalidArgumentError
from mridomain.sim.brain.anatomy import SubjectAnatomy, make_anatomy
from mridomain.sim.brain.nifti import write_nifti
from mridomain.sim.brain.physics import BRAIN_TISSUES, PROTOCOLS, sequence_signal, tissue_values

__all__ = ["BrainSubject", "BrainSimulation", "render_subject", "make_subject", "simulate_brains",
           "subject_id", "SNR_WM_3T"]

#: White-matter SNR of every sequence at 3 T, scaling linearly with B0 (FIELD.md section 4). An
#: assumption of a typical clinical brain scan (no published per-sequence value is claimed).
SNR_WM_3T = 30.0
#: Field strengths a subject is scanned at (BraTS pools 1.5 T and 3 T institutions), drawn uniformly.
FIELD_STRENGTHS = (1.5, 3.0)


def subject_id(i: int) -> str:
    return f"SimBraTS_{i:05d}"


@dataclass
class BrainSubject:
    """One simulated subject in memory. Images are (x, y, z) float32 arrays on ``affine``."""

    subject_id: str
    images: dict[str, np.ndarray]
    anatomy: SubjectAnatomy
    b0: float
    noise_sigma: dict[str, float]

    def manifest_row(self) -> dict:
        a = self.anatomy
        row = {"subject_id": self.subject_id, "field_strength": self.b0, "voxel_mm": a.voxel_mm,
               "shape": "x".join(str(s) for s in a.brain.shape), **a.params}
        if a.lesion is not None:
            les = a.lesion
            row.update({"lesion_x_mm": les.center_mm[0], "lesion_y_mm": les.center_mm[1],
                        "lesion_z_mm": les.center_mm[2], "r_core_mm": les.r_core, "r_rim_mm": les.r_rim,
                        "r_edema_mm": les.r_edema, "gd_mM": les.gd_mM})
        for t in BRAIN_TISSUES:
            row[f"{t}_ml"] = float(a.fractions[t].sum() * a.voxel_mm ** 3 / 1000.0)
        for name, s in self.noise_sigma.items():
            row[f"sigma_{name}"] = s
        return row


def render_subject(anatomy: SubjectAnatomy, b0: float, rng: np.random.Generator | None,
                   sequences: tuple[str, ...] = tuple(PROTOCOLS), snr_wm_3t: float = SNR_WM_3T
                   ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Partial-volume signal (sum over compartments of fraction x compartment signal), then Rician
    noise of sigma = white-matter signal / SNR; voxels outside the brain are zero (skull-stripped, as
    BraTS). ``rng=None`` gives the noiseless images."""
    values = tissue_values(b0)
    images, sigmas = {}, {}
    for name in sequences:
        if name not in PROTOCOLS:
            raise InvalidArgumentError(f"unknown brain sequence {name!r} (choose from {sorted(PROTOCOLS)})")
        proto = PROTOCOLS[name]
        signal = np.zeros(anatomy.brain.shape, np.float32)
        for tissue in BRAIN_TISSUES:
            frac = anatomy.fractions[tissue]
            if not frac.any():
                continue
            t1, t2, pd_ = values[tissue]
            gd = anatomy.gd_mM if tissue == "enhancing" else 0.0
            signal += frac * np.asarray(sequence_signal(proto, pd_, t1, t2, b0, gd_mM=gd), np.float32)
        t1w, t2w, pdw = values["wm"]
        sigma = float(sequence_signal(proto, pdw, t1w, t2w, b0)) / (snr_wm_3t * b0 / 3.0)
        if rng is not None:
            re = signal + rng.normal(0.0, sigma, signal.shape).astype(np.float32)
            im = rng.normal(0.0, sigma, signal.shape).astype(np.float32)
            signal = np.sqrt(re * re + im * im)
        signal[anatomy.brain < 0.05] = 0.0
        images[name], sigmas[name] = signal.astype(np.float32), sigma
    return images, sigmas


def make_subject(seed: int, i: int, voxel_mm: float = 2.0, lesion: bool = True,
                 field_strengths: tuple[float, ...] = FIELD_STRENGTHS, noise: bool = True) -> BrainSubject:
    """Subject ``i`` of the dataset with ``seed``: anatomy, field strength, images (deterministic)."""
    rng = np.random.default_rng([seed, i, 7])
    anatomy = make_anatomy(rng, voxel_mm=voxel_mm, lesion=lesion)
    b0 = float(field_strengths[int(rng.integers(len(field_strengths)))])
    images, sigmas = render_subject(anatomy, b0, rng if noise else None)
    return BrainSubject(subject_id(i), images, anatomy, b0, sigmas)


@dataclass
class BrainSimulation:
    """What :func:`simulate_brains` wrote."""

    out: Path
    subjects: list[Path]
    manifest: pd.DataFrame
    seconds: float
    skipped: list = field(default_factory=list)

    def summary(self) -> str:
        m = self.manifest
        lines = [f"Simulated {len(self.subjects)} brains (BraTS layout) in {self.seconds:.1f} s -> {self.out}"]
        if len(m):
            lines.append(f"  grid {m['shape'].iloc[0]} at {m['voxel_mm'].iloc[0]:g} mm; field strength: "
                         + ", ".join(f"{k:g} T {v}" for k, v in m["field_strength"].value_counts().items()))
            if "r_rim_mm" in m:
                lines.append(f"  enhancing tumour {m['enhancing_ml'].mean():.1f} ml, edema "
                             f"{m['edema_ml'].mean():.1f} ml, necrosis {m['necrosis_ml'].mean():.1f} ml (means)")
        for s, why in self.skipped:
            lines.append(f"  skipped {s}: {why}")
        return "\n".join(lines)


def write_subject(subject: BrainSubject, out: Path) -> Path:
    """Write one subject's folder in the BraTS layout (plus its ``_truth`` map)."""
    folder = out / subject.subject_id
    folder.mkdir(parents=True, exist_ok=True)
    affine = subject.anatomy.affine
    for name, img in subject.images.items():
        write_nifti(folder / f"{subject.subject_id}_{name}.nii.gz", img, affine, dtype=np.float32)
    write_nifti(folder / f"{subject.subject_id}_seg.nii.gz", subject.anatomy.brats_segmentation(), affine,
                dtype=np.uint8)
    write_nifti(folder / f"{subject.subject_id}_truth.nii.gz", subject.anatomy.truth_labels(), affine,
                dtype=np.uint8)
    return folder


def simulate_brains(out: str | Path, n_subjects: int = 20, seed: int = 0, voxel_mm: float = 2.0,
                    lesion: bool = True, field_strengths: tuple[float, ...] = FIELD_STRENGTHS,
                    progress: bool = True) -> BrainSimulation:
    """Simulate ``n_subjects`` brains with T1, T1Gd, T2, FLAIR and write them in the BraTS layout.

    Python twin of ``mridomain synth brain``. Same seed, identical files.
    """
    if n_subjects < 1:
        raise InvalidArgumentError(f"n_subjects must be >= 1, got {n_subjects}")
    if not 0.5 <= voxel_mm <= 4.0:
        raise InvalidArgumentError(f"voxel_mm must be within 0.5..4 mm, got {voxel_mm}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows, folders, skipped = [], [], []
    for i in tqdm(range(n_subjects), desc="simulate brains", unit="subject", disable=not progress):
        subject = make_subject(seed, i, voxel_mm=voxel_mm, lesion=lesion, field_strengths=field_strengths)
        folders.append(write_subject(subject, out))
        rows.append(subject.manifest_row())
    manifest = pd.DataFrame(rows)
    manifest.to_csv(out / "manifest.csv", index=False)
    return BrainSimulation(out, folders, manifest, time.perf_counter() - t0, skipped)
