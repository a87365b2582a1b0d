"""Render simulated brains through the four sequence protocols and write them in the BraTS layout.

``out/<subject>/<subject>_{t1,t1ce,t2,flair,seg}.nii.gz`` as BraTS, so a loader pointed at real BraTS
data reads these the same way; each subject folder adds ``<subject>_truth.nii.gz`` (dominant tissue
per voxel, :data:`~mridomain.sim.brain.anatomy.TRUTH_LABELS`), which real data does not have and
which the imaging-differentiation checks use. ``out/manifest.csv`` holds one row of ground truth per
subject, and ``out/labels.csv`` (subject_id, strong_enhancement) the binary trait a downstream
classifier predicts (:data:`~mridomain.sim.brain.anatomy.GD_TRAIT_THRESHOLD_MM`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mridomain.errors import InvalidArgumentError, MridomainError
from mridomain.sim.brain.anatomy import SubjectAnatomy, make_anatomy
from mridomain.sim.brain.nifti import write_nifti
from mridomain.sim.brain.physics import BRAIN_TISSUES, PROTOCOLS, sequence_signal, tissue_values

__all__ = ["BrainSubject", "BrainSimulation", "render_subject", "make_subject", "simulate_brains",
           "subject_id", "SNR_WM_3T"]

#: White-matter SNR of every sequence for a 1 mm isotropic voxel at 3 T (an assumption of a typical
#: clinical brain scan; no published per-sequence value is claimed). FIELD.md section 4: SNR grows
#: about linearly with B0 and with voxel volume V, and with the square root of the number of samples;
#: at a fixed field of view the samples fall as 1/V, so SNR scales as B0 * sqrt(V).
SNR_WM_3T = 30.0
#: Field strengths a subject is scanned at (BraTS pools 1.5 T and 3 T institutions), drawn uniformly.
FIELD_STRENGTHS = (1.5, 3.0)


def subject_id(i: int) -> str:
    """The BraTS-style id of subject ``i``: ``SimBraTS_00007``."""
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
        """The subject's row of ``manifest.csv``: field strength, grid, anatomy parameters, the lesion's
        place, radii and gadolinium (when it has one), each tissue's volume (ml) and each sequence's noise sigma."""
        a = self.anatomy
        row = {"subject_id": self.subject_id, "field_strength": self.b0, "voxel_mm": a.voxel_mm,
               "shape": "x".join(str(s) for s in a.brain.shape), **a.params}
        if a.lesion is not None:
            les = a.lesion
            row.update({"lesion_x_mm": les.center_mm[0], "lesion_y_mm": les.center_mm[1],
                        "lesion_z_mm": les.center_mm[2], "r_core_mm": les.r_core, "r_rim_mm": les.r_rim,
                        "r_edema_mm": les.r_edema, "gd_mM": les.gd_mM,
                        "strong_enhancement": int(les.strong_enhancement)})
        for t in BRAIN_TISSUES:
            row[f"{t}_ml"] = float(a.fractions[t].sum() * a.voxel_mm ** 3 / 1000.0)
        for name, s in self.noise_sigma.items():
            row[f"sigma_{name}"] = s
        return row


def render_subject(anatomy: SubjectAnatomy, b0: float, rng: np.random.Generator | None,
                   sequences: tuple[str, ...] = tuple(PROTOCOLS), snr_wm_3t: float = SNR_WM_3T
                   ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Partial-volume signal (sum over compartments of fraction x compartment signal), then Rician
    noise of sigma = white-matter signal / SNR, SNR = ``snr_wm_3t`` x (B0 / 3 T) x (voxel / 1 mm)^1.5;
    voxels outside the brain are zero (skull-stripped, as BraTS). ``rng=None``: noiseless images."""
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
        snr = snr_wm_3t * (b0 / 3.0) * anatomy.voxel_mm ** 1.5
        sigma = float(sequence_signal(proto, pdw, t1w, t2w, b0)) / snr
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
        """A few lines for the terminal: subjects written, grid and field strengths, mean tumour compartment
        volumes (with lesions) and each skipped subject with why."""
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


def _simulate_one(task: dict) -> dict:
    """Worker of :func:`simulate_brains`: simulate and write subject ``i`` (module level: pickled)."""
    try:
        subject = make_subject(task["seed"], task["i"], voxel_mm=task["voxel_mm"], lesion=task["lesion"],
                               field_strengths=task["field_strengths"])
        write_subject(subject, Path(task["out"]))
        # seed and index re-render the subject (noise-free with make_subject(..., noise=False))
        row = {**subject.manifest_row(), "seed": task["seed"], "index": task["i"]}
        return {"i": task["i"], "row": row, "error": None}
    except (MridomainError, OSError, ValueError) as err:
        return {"i": task["i"], "row": None, "error": f"{type(err).__name__}: {err}"}


def simulate_brains(out: str | Path, n_subjects: int = 20, seed: int = 0, voxel_mm: float = 2.0,
                    lesion: bool = True, field_strengths: tuple[float, ...] = FIELD_STRENGTHS,
                    workers: int | None = None, progress: bool = True) -> BrainSimulation:
    """Simulate ``n_subjects`` brains with T1, T1Gd, T2, FLAIR and write them in the BraTS layout.

    Python twin of ``mridomain synth brain``. Same seed, identical files, whatever ``workers``
    (processes of :func:`mridomain.parallel.parallel_map`; None: all cores). A subject that fails
    is reported in ``skipped`` and the others are written.
    """
    from mridomain.parallel import parallel_map

    if n_subjects < 1:
        raise InvalidArgumentError(f"n_subjects must be >= 1, got {n_subjects}")
    if not 0.5 <= voxel_mm <= 4.0:
        raise InvalidArgumentError(f"voxel_mm must be within 0.5..4 mm, got {voxel_mm}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tasks = [{"seed": seed, "i": i, "voxel_mm": voxel_mm, "lesion": lesion, "field_strengths": tuple(field_strengths),
              "out": str(out)} for i in range(n_subjects)]
    results = sorted(parallel_map(_simulate_one, tasks, workers=workers, total=n_subjects, batch_size=1,
                                  progress=progress, desc="simulate brains", unit="subject"), key=lambda r: r["i"])
    rows = [r["row"] for r in results if r["row"] is not None]
    folders = [out / r["row"]["subject_id"] for r in results if r["row"] is not None]
    skipped = [(subject_id(r["i"]), r["error"]) for r in results if r["error"]]
    manifest = pd.DataFrame(rows)
    manifest.to_csv(out / "manifest.csv", index=False)
    if "strong_enhancement" in manifest:   # the downstream label (mridomain synth downstream --labels)
        manifest[["subject_id", "strong_enhancement"]].to_csv(out / "labels.csv", index=False)
    return BrainSimulation(out, folders, manifest, time.perf_counter() - t0, skipped)
