"""DCE breast MRI as a 4-D sequence for the ConvLSTM path (item 6c).

A DCE exam is read from DICOM like any archive (:func:`mridomain.io.scan_dicom_folder`; phases
ordered by TemporalPositionIdentifier), so the same adapter serves the breast simulator and
real data. Each patient becomes a subject with two sequences: ``pre`` (the pre-contrast phase, a 3-D
sequence) and ``dce`` (the post-contrast phases as time points of one 4-D sequence). All phases of a
patient share one intensity normalization, so enhancement stays visible as a rise over time.

Only the breast simulator's public entry point (:func:`mridomain.sim.breast.simulate`) and the DICOM it
writes are used; its internals are not.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import ndimage

from mridomain.errors import EmptyInputError, MridomainError
from mridomain.progress import progress_bar
from mridomain.data.intensity import PercentileScaling
from mridomain.synth.data import NORMALIZATION, Subject, SynthData

__all__ = ["DCE_SEQUENCES", "load_dce_dataset", "simulate_dce_dataset"]

DCE_SEQUENCES = ("pre", "dce")


def _phase_key(volume) -> tuple:
    tp = volume.fields.get("TemporalPositionIdentifier")
    return (int(tp) if tp not in (None, "") else 10 ** 6, volume.volume, volume.series_uid)


def load_dce_dataset(dicom_root: str | Path, size: tuple[int, int] = (64, 64), progress: bool = True) -> SynthData:
    """Every patient with at least two phases under ``dicom_root`` as a ``pre`` / ``dce`` subject.

    Series and their volumes come from :func:`mridomain.io.scan_dicom_folder` (a phase is a series
    of its own, or a volume of a multi-phase series), ordered by TemporalPositionIdentifier. Slices
    are resampled to ``size`` (linear interpolation). Unreadable files and patients with a single
    phase or phases of different shapes are reported in ``skipped``.
    """
    from mridomain.io import read_dicom_volume, scan_dicom_folder

    root = Path(dicom_root)
    if not root.is_dir():
        raise EmptyInputError(root, "DICOM folder does not exist")
    skipped: list[tuple[str, str]] = []
    exams: dict[tuple[str, str], list] = defaultdict(list)
    for vol in scan_dicom_folder(root, progress=progress, skipped=skipped):
        exams[(str(vol.fields.get("PatientID", "")), str(vol.fields.get("StudyInstanceUID", "")))].append(vol)
    subjects = []
    for (pid, _), phases in progress_bar(sorted(exams.items()), desc="load DCE", unit="patient", enabled=progress):
        phases.sort(key=_phase_key)
        if len(phases) < 2:
            skipped.append((pid, "one phase only: no 4-D sequence"))
            continue
        try:
            stacks = [read_dicom_volume(v).pixels for v in phases]
        except MridomainError as err:
            skipped.append((pid, str(err)))
            continue
        if len({p.shape for p in stacks}) != 1:
            skipped.append((pid, f"phases of different shapes {[p.shape for p in stacks]}"))
            continue
        stack = np.stack(stacks).astype(np.float32)          # (P, S, H, W)
        stack = ndimage.zoom(stack, (1, 1, size[0] / stack.shape[2], size[1] / stack.shape[3]), order=1)
        # magnitude images: 0 maps to 0, the high percentile of the non-zero voxels to 1
        bounds = PercentileScaling(low=0.0, high=NORMALIZATION["high"], foreground=True, keep_zero=True).bounds(stack)
        hi = bounds[1] if bounds is not None and bounds[1] > 0 else 1.0
        stack = PercentileScaling().apply(stack, (0.0, hi))
        subjects.append(Subject(pid, {"pre": stack[:1], "dce": stack[1:]}, affine=np.eye(4),
                                scale={"pre": (0.0, hi), "dce": (0.0, hi)}))
    if not subjects:
        raise EmptyInputError(root, "no DCE exam with two or more phases")
    return SynthData(DCE_SEQUENCES, subjects, skipped, root)


def simulate_dce_dataset(out: str | Path, n_patients: int = 4, phases: int = 3, slices: int = 4, seed: int = 0,
                         size: tuple[int, int] = (64, 64), progress: bool = True) -> SynthData:
    """Simulate DBC-like DCE exams with :func:`mridomain.sim.breast.simulate` and load them as 4-D data."""
    from mridomain.sim.breast import simulate

    result = simulate(out, n_patients=n_patients, seed=seed, slices=slices, phases=phases, progress=progress)
    return load_dce_dataset(result.dicom_root, size=size, progress=progress)
