"""Does a lesion set the intensity scale of a whole volume? The normal white matter's level under the
paper's percentile normalization and under the median normalization, subject by subject.

    OMP_NUM_THREADS=1 python bench/synth_normalization_probe.py BRAINS_FOLDER

``BRAINS_FOLDER`` holds simulated brains (``mridomain synth brain`` or a demo's ``brains/``): each
subject's ``_truth`` map says which voxels are white matter (label 3) and which are lesion (4-6).
Every volume is normalized both ways (:func:`mridomain.synth.data.normalize_volume`, the paper's 0.5 /
99.5 % head percentiles; :func:`~mridomain.synth.data.median_normalize` with the levels
:func:`~mridomain.synth.data.median_levels` fits on every subject of the folder). For each sequence
it prints the white matter's median level across subjects (mean, standard deviation, coefficient of
variation, range) and the share of head voxels each form clips at 1. The white matter is the same
tissue in every subject, so its spread across subjects is a scale that the volume's lesion, not its
anatomy, sets: a spread no other sequence can tell a generator.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from mridomain.io import read_nifti
from mridomain.sim.brain.anatomy import TRUTH_LABELS
from mridomain.synth.data import find_subject_files, median_levels, median_normalize, normalize_volume

SEQUENCES = ("t1", "t1ce", "t2", "flair")


def main(folder: str) -> None:
    root = Path(folder)
    subjects = sorted(p for p in root.iterdir() if p.is_dir() and (p / f"{p.name}_truth.nii.gz").exists())
    files = [find_subject_files(s, SEQUENCES) for s in subjects]
    levels = median_levels(files, SEQUENCES)
    rows = []
    for sub, paths in zip(subjects, files):
        truth = read_nifti(sub / f"{sub.name}_truth.nii.gz").pixels
        lesion = np.isin(truth, [TRUTH_LABELS[k] for k in ("edema", "enhancing", "necrosis")])
        row = {"subject": sub.name, "lesion_share": float(lesion.sum() / (truth > 0).sum())}
        for seq in SEQUENCES:
            x = read_nifti(paths[seq]).pixels.astype(np.float32)
            for name, vol in (("percentile", normalize_volume(x)[0]), ("median", median_normalize(x, levels[seq])[0])):
                row[f"{seq}|{name}|wm"] = float(np.median(vol[truth == TRUTH_LABELS["wm"]]))
                row[f"{seq}|{name}|clipped"] = float((vol[x != 0] >= 1.0).mean())
        rows.append(row)
    table = pd.DataFrame(rows)
    print(f"{len(table)} subjects of {root}; lesion share of the brain {table.lesion_share.min():.3f}-"
          f"{table.lesion_share.max():.3f}; median levels {levels}")
    print("| sequence | normalization | white matter level: mean | sd | CV | min | max | head voxels at 1 |")
    print("|---|---|---|---|---|---|---|---|")
    for seq in SEQUENCES:
        for name in ("percentile", "median"):
            wm = table[f"{seq}|{name}|wm"]
            print(f"| {seq} | {name} | {wm.mean():.3f} | {wm.std():.3f} | {wm.std() / wm.mean():.3f} | {wm.min():.3f} | "
                  f"{wm.max():.3f} | {100 * table[f'{seq}|{name}|clipped'].mean():.2f} % |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
