"""Simulated breast exams of the multi-sequence protocol, written in the synthesis subject layout.

``<out>/<id>/<id>_<sequence>.nii.gz`` for the eight sequences of
:data:`~mridomain.sim.breast.multiseq.BREAST_SEQUENCES` (DCE and FatSatDCE as 4-D volumes of 6 time
points, DWI of 4 b-values; the others 3-D), ``<id>_seg.nii.gz`` (1 in the carcinoma) and
``<id>_cysts.nii.gz`` (1 in simple cysts), plus

* ``exams.csv``: one row per patient (seed, index, tumour, kinetics, cysts, response trait, pCR);
* ``labels.csv``: ``subject_id,pcr`` (the pre-treatment response label of ``mridomain synth downstream``);
* ``dataset.json``: the sequence set and the 4-D sequences, which ``mridomain synth train`` reads when
  no sequences are given (docs/synth.md, "Breast subject layout").

Every patient of this cohort has a carcinoma (a neoadjuvant-therapy cohort, as the paper's).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mridomain.errors import InvalidArgumentError, MridomainError
from mridomain.sim.breast.multiseq import (BREAST_SEQUENCES, FOUR_D, PHILIPS_INGENIA_3T, SEG_LABELS, ExamImages,
                                           MultiSequenceProtocol, render_exam)

__all__ = ["BreastExams", "simulate_breast_exams", "exam_phantom", "write_exam", "write_nifti_4d",
           "DATASET_FILE"]

#: the file that names a layout's sequences: ``mridomain.synth.data.LAYOUT_FILE``, which reads it (the
#: simulator sits below the synthesis system and cannot import it)
DATASET_FILE = "dataset.json"


def exam_phantom(seed: int, i: int):
    """Patient ``i`` of the cohort: the breast phantom of stream ``[seed, i, 0]`` with a carcinoma."""
    from mridomain.sim.breast.phantom import make_phantom

    return make_phantom(np.random.default_rng([seed, i, 0]), patient_index=i, seed=seed, tumor=True)


def subject_id(i: int) -> str:
    """The layout's id of patient ``i``: ``Breast_0007``."""
    return f"Breast_{i:04d}"


def write_nifti_4d(path: Path, volume: np.ndarray, affine: np.ndarray) -> Path:
    """Write a ``(T, S, H, W)`` volume (T = 1: a 3-D file) so that the synthesis loader reads it back
    voxel for voxel: NIfTI order ``(W, H, S[, T])``, the time axis last."""
    from mridomain.sim.brain.nifti import write_nifti

    v = np.asarray(volume, np.float32)
    data = np.transpose(v[0], (2, 1, 0)) if v.shape[0] == 1 else np.transpose(v, (3, 2, 1, 0))
    return write_nifti(path, data, affine, dtype=np.float32)


def write_exam(exam: ExamImages, folder: Path, sid: str) -> Path:
    """Write one exam into ``folder`` as ``<sid>_<sequence>.nii.gz`` per sequence, the carcinoma mask
    ``<sid>_seg.nii.gz`` and the cyst mask ``<sid>_cysts.nii.gz``; returns ``folder``."""
    from mridomain.sim.brain.nifti import write_like_image

    folder.mkdir(parents=True, exist_ok=True)
    for seq, vol in exam.images.items():
        write_nifti_4d(folder / f"{sid}_{seq}.nii.gz", vol, exam.affine)
    # _seg holds the carcinoma only (what the synthesis tools centre on); the cysts get a map of their own
    write_like_image(folder / f"{sid}_seg.nii.gz", (exam.seg == SEG_LABELS["tumor"]).astype(np.uint8),
                     exam.affine, dtype=np.uint8)
    write_like_image(folder / f"{sid}_cysts.nii.gz", (exam.seg == SEG_LABELS["cyst"]).astype(np.uint8),
                     exam.affine, dtype=np.uint8)
    return folder


def _exam_row(sid: str, seed: int, i: int, ph, exam: ExamImages) -> dict:
    from mridomain.sim.breast.phantom import phantom_parameters

    p = phantom_parameters(ph)
    return {"subject_id": sid, "seed": seed, "index": i, "pcr": int(exam.response.pcr),
            "response_u": round(exam.response.u, 4), "tumor_adc": round(exam.response.tumor_adc, 4),
            "cysts": len(exam.cysts), "cyst_voxels": int((exam.seg == 2).sum()),
            "tumor_voxels": int((exam.seg == 1).sum()),
            **{k: p[k] for k in ("density", "tumor_diameter_mm", "t_stage", "tumor_shape", "tumor_necrotic")},
            **{k: round(v, 4) for k, v in ph.kinetics.items()}}


def _simulate_one(task: dict) -> dict:
    """Worker: render and write patient ``i`` (module level: pickled)."""
    sid = subject_id(task["i"])
    try:
        ph = exam_phantom(task["seed"], task["i"])
        exam = render_exam(ph, task["protocol"], size=task["size"], pixel_mm=task["pixel_mm"], slices=task["slices"])
        write_exam(exam, Path(task["out"]) / sid, sid)
        return {"i": task["i"], "row": _exam_row(sid, task["seed"], task["i"], ph, exam), "error": None}
    except (MridomainError, OSError, ValueError) as err:
        return {"i": task["i"], "row": None, "error": f"{type(err).__name__}: {err}"}


@dataclass
class BreastExams:
    """What :func:`simulate_breast_exams` wrote: the folder, one row per patient (``exams.csv``), the
    seconds it took and the patients skipped, each with why."""

    out: Path
    exams: pd.DataFrame
    seconds: float
    skipped: list = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for the terminal: exams written, pCR count, patients with a cyst or a visible
        tumour in the slab, and each skipped patient with why."""
        e = self.exams
        lines = [f"Simulated {len(e)} breast exams ({len(BREAST_SEQUENCES)} sequences each) in {self.seconds:.1f} s "
                 f"-> {self.out}",
                 f"  pCR {int(e['pcr'].sum())}/{len(e)}; patients with a cyst in the slab "
                 f"{int((e['cyst_voxels'] > 0).sum())}; tumour visible in {int((e['tumor_voxels'] > 0).sum())}"]
        lines += [f"  skipped {s}: {why}" for s, why in self.skipped]
        return "\n".join(lines)


def simulate_breast_exams(out: str | Path, n_patients: int = 20, seed: int = 0,
                          protocol: MultiSequenceProtocol = PHILIPS_INGENIA_3T, size: tuple[int, int] = (64, 96),
                          pixel_mm: float = 3.5, slices: int = 4, workers: int | None = None,
                          progress: bool = True) -> BreastExams:
    """Simulate ``n_patients`` multi-sequence breast exams and write the subject layout (Python twin of
    ``mridomain synth breast``). Same seed, identical files, whatever ``workers``; a patient that
    fails is reported in ``skipped`` and the others are written."""
    from mridomain.parallel import parallel_map

    if n_patients < 1:
        raise InvalidArgumentError(f"n_patients must be >= 1, got {n_patients}")
    if slices < 1 or min(size) < 8:
        raise InvalidArgumentError(f"need at least one slice of at least 8 x 8 pixels, got {slices} x {size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tasks = [{"seed": seed, "i": i, "protocol": protocol, "size": tuple(size), "pixel_mm": pixel_mm,
              "slices": slices, "out": str(out)} for i in range(n_patients)]
    results = sorted(parallel_map(_simulate_one, tasks, workers=workers, total=n_patients, batch_size=1,
                                  progress=progress, desc="simulate breast exams", unit="patient"),
                     key=lambda r: r["i"])
    rows = [r["row"] for r in results if r["row"] is not None]
    skipped = [(subject_id(r["i"]), r["error"]) for r in results if r["error"]]
    exams = pd.DataFrame(rows)
    exams.to_csv(out / "exams.csv", index=False)
    if len(exams):
        exams[["subject_id", "pcr"]].to_csv(out / "labels.csv", index=False)
    (out / DATASET_FILE).write_text(json.dumps({
        "dataset": "breast", "sequences": list(BREAST_SEQUENCES), "four_d": {s: None for s in FOUR_D},
        "protocol": protocol.to_dict(), "seed": seed, "size": list(size), "pixel_mm": pixel_mm, "slices": slices,
        # the ConvLSTM links the time points of the 4-D sequences; the cpu preset turns it off for 3-D data
        "config": {"network": {"lstm_layers": 1}}}, indent=1))
    return BreastExams(out, exams, time.perf_counter() - t0, skipped)

