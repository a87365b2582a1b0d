"""DCE breast MRI as a 4-D sequence for the ConvLSTM path (item 6c).

A DCE exam is read from DICOM like any archive (one series per phase; phases ordered by
TemporalPositionIdentifier, then SeriesNumber), so the same adapter serves the breast simulator and
real data. Each patient becomes a subject with two sequences: ``pre`` (the pre-contrast phase, a 3-D
sequence) and ``dce`` (the post-contrast phases as time points of one 4-D sequence). All phases of a
patient share one intensity normalization, so enhancement stays visible as a rise over time.

Only the breast simulator's public entry point (:func:`mridomain.sim.simulate`) and the DICOM it
writes are used; its internals are not.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import ndimage

from mridomain.errors import EmptyInputError, MridomainError
from mridomain.synth.data import NORMALIZATION, Subject, SynthData

__all__ = ["DCE_SEQUENCES", "load_dce_dataset", "simulate_dce_dataset"]

DCE_SEQUENCES = ("pre", "dce")


def _series_folders(root: Path) -> list[Path]:
    return sorted({p.parent for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")})


def load_dce_dataset(dicom_root: str | Path, size: tuple[int, int] = (64, 64), progress: bool = True) -> SynthData:
    """Every patient with at least two phases under ``dicom_root`` as a ``pre`` / ``dce`` subject.

    Slices are resampled to ``size`` (linear interpolation). A series that cannot be read is
    skipped and reported; patients with one phase only are reported too.
    """
    from tqdm.auto import tqdm

    from mridomain.io import read_dicom_series, read_header_fields

    root = Path(dicom_root)
    if not root.is_dir():
        raise EmptyInputError(root, "DICOM folder does not exist")
    exams: dict[tuple[str, str], list[tuple[int, int, Path]]] = defaultdict(list)
    skipped: list[tuple[str, str]] = []
    for folder in _series_folders(root):
        first = next(p for p in sorted(folder.iterdir()) if p.is_file())
        try:
            h = read_header_fields(first, extra=("TemporalPositionIdentifier", "SeriesNumber"))
        except MridomainError as err:
            skipped.append((str(folder), str(err)))
            continue
        key = (str(h.get("PatientID", folder.parent.name)), str(h.get("StudyInstanceUID", folder.parent)))
        exams[key].append((int(h.get("TemporalPositionIdentifier") or 0), int(h.get("SeriesNumber") or 0), folder))
    subjects = []
    for (pid, _), series in tqdm(sorted(exams.items()), desc="load DCE", unit="patient", disable=not progress):
        series.sort()
        if len(series) < 2:
            skipped.append((pid, "one phase only: no 4-D sequence"))
            continue
        try:
            phases = [read_dicom_series(folder).pixels for _, _, folder in series]
        except MridomainError as err:
            skipped.append((pid, str(err)))
            continue
        if len({p.shape for p in phases}) != 1:
            skipped.append((pid, f"phases of different shapes {[p.shape for p in phases]}"))
            continue
        stack = np.stack(phases).astype(np.float32)          # (P, S, H, W)
        zoom = (1, 1, size[0] / stack.shape[2], size[1] / stack.shape[3])
        stack = ndimage.zoom(stack, zoom, order=1)
        inside = stack[stack > 0]
        hi = float(np.percentile(inside, NORMALIZATION["high"])) if inside.size else 1.0
        stack = np.clip(stack / (hi or 1.0), 0, 1).astype(np.float32)
        subjects.append(Subject(pid, {"pre": stack[:1], "dce": stack[1:]}, affine=np.eye(4),
                                scale={"pre": (0.0, hi), "dce": (0.0, hi)}))
    if not subjects:
        raise EmptyInputError(root, "no DCE exam with two or more phases")
    return SynthData(DCE_SEQUENCES, subjects, skipped, root)


def simulate_dce_dataset(out: str | Path, n_patients: int = 4, phases: int = 3, slices: int = 4, seed: int = 0,
                         size: tuple[int, int] = (64, 64), progress: bool = True) -> SynthData:
    """Simulate DBC-like DCE exams with :func:`mridomain.sim.simulate` and load them as 4-D data."""
    from mridomain.sim import simulate

    result = simulate(out, n_patients=n_patients, seed=seed, slices=slices, phases=phases, progress=progress)
    return load_dce_dataset(result.dicom_root, size=size, progress=progress)
