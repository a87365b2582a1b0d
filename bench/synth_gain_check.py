"""How much of a synthesis run's error into one target is a single intensity scale per volume?

    OMP_NUM_THREADS=1 python bench/synth_gain_check.py DEMO_FOLDER [TARGET]

``DEMO_FOLDER`` is the output of ``mridomain synth demo`` (its ``run/`` and ``brains/``); ``TARGET``
defaults to ``t1ce``. For each test subject and each other sequence as the source, prints the PSNR
of the translation into the target over the head slices (Table 1's PSNR, data range 1), then
``synth evaluate``'s ``psnr_gain_matched`` and its gain (``contribution.gain_matched_psnr``: the
one gain that best matches the target in least squares, and the PSNR of gain x translation). Every
volume is read as the run normalized it. With the paper's 0.5 / 99.5 % head percentiles (min-max
after clipping), a target whose upper percentile is set by something the sources do not show (T1Gd's
enhancement) has a scale no generator can know; a gain far from 1 that recovers many dB is that. A
run with the median normalization (``normalization="median"``) should show gains near 1.
"""
from __future__ import annotations

import sys

from mridomain.synth.contribution import gain_matched_psnr, image_metrics
from mridomain.synth.data import load_dataset
from mridomain.synth.evaluation import evaluation_subjects
from mridomain.synth.model import load_run


def main(folder: str, target: str = "t1ce") -> None:
    run = load_run(f"{folder}/run")
    data = load_dataset(f"{folder}/brains", run.sequences, progress=False, normalization=run.normalization)
    data = evaluation_subjects(run, data, "test")
    sources = [s for s in run.sequences if s != target]
    print(f"into {target}: PSNR as generated -> with the best gain (the gain), per test subject")
    print("| subject | " + " | ".join(sources) + " |\n|---|" + "---|" * len(sources))
    for subject in data.subjects:
        head = subject.head_slices()          # the slices Table 1 scores, as evaluate picks them
        truth = subject.volumes[target][0][head]
        cells = []
        for source in sources:
            made = run.translate(subject, source, [target], slices=head)[target][0]
            before = image_metrics(made, truth)["psnr"]
            gain, after = gain_matched_psnr(made, truth)
            cells.append(f"{before:.1f} -> {after:.1f} ({gain:.2f})")
        print(f"| {subject.subject_id} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    main(*sys.argv[1:])
