"""Where, by tissue, is a synthesis run behind the simulator's pairwise oracle?

    OMP_NUM_THREADS=1 python bench/synth_tissue_gap.py DEMO_FOLDER [TARGETS] [SPLIT]

``DEMO_FOLDER`` is the output of ``mridomain synth demo`` (its ``run/`` and ``brains/``, which carry
the simulator's tissue truth); ``TARGETS`` a comma-separated list (default ``flair,t1ce,t2``);
``SPLIT`` ``test`` (default) or ``train``. For each target and each other sequence as the source,
the pairwise oracle of ``synth evaluate`` (``oracle.fit_oracle`` on that one source: a gradient-boosted
regressor of its 3 x 3 x 3 neighbourhoods, fitted on up to 12 of the run's training subjects, `oracle_training_subjects`) and the
generator translate the subjects; over the head slices that Table 1 scores, inside the brain, the
squared errors of both are summed per tissue of the simulator's truth. Printed per target and tissue:
voxels, both mean squared errors, the tissue's share of the generator's excess over the oracle, the
target's mean there and the generator's mean signed error (its bias). A tissue with most of the
excess and a large bias is what the generator has not learned that the oracle shows can be learned.
"""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from mridomain.sim.brain.anatomy import TRUTH_LABELS
from mridomain.synth.data import load_dataset
from mridomain.synth.evaluation import evaluation_subjects
from mridomain.synth.model import load_run
from mridomain.synth.oracle import fit_oracle, oracle_training_subjects

def tissue_rows(run, train, subjects, target: str, source: str, oracle: bool = True) -> list[dict]:
    """Per subject and tissue: voxels, the generator's and (with ``oracle``, fitted on ``train``) the
    oracle's squared-error sums, the target's sum and the generator's signed-error sum (head slices,
    inside the brain)."""
    fitted = fit_oracle(train, subjects, [source, target], progress=False, targets=[target]) if oracle else None
    names = {v: k for k, v in TRUTH_LABELS.items()}
    rows = []
    for sub in subjects:
        head = sub.head_slices()
        made = run.translate(sub, source, [target], slices=head)[target][0]
        truth = sub.volumes[target][0][head]
        labels = sub.truth[head]
        oracle_sq = fitted.maps[sub.subject_id][target][head] ** 2 if fitted else None
        for label in np.unique(labels[labels > 0]):
            k = labels == label
            err = made[k] - truth[k]
            rows.append({"target": target, "source": source, "subject": sub.subject_id,
                         "tissue": names[int(label)], "voxels": int(k.sum()),
                         "sse_generator": float((err ** 2).sum()),
                         **({"sse_oracle": float(oracle_sq[k].sum())} if fitted else {}),
                         "sum_target": float(truth[k].sum()), "sum_error": float(err.sum())})
    return rows


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Per target and tissue: MSEs, the share of the generator's excess, the target mean and the bias."""
    g = rows.groupby(["target", "tissue"])[["voxels", "sse_generator", "sse_oracle", "sum_target", "sum_error"]].sum()
    excess = g["sse_generator"] - g["sse_oracle"]
    return pd.DataFrame({
        "voxels": g["voxels"],
        "mse_generator": g["sse_generator"] / g["voxels"],
        "mse_oracle": g["sse_oracle"] / g["voxels"],
        "excess_share": excess / excess.groupby("target").transform("sum"),
        "target_mean": g["sum_target"] / g["voxels"],
        "generator_bias": g["sum_error"] / g["voxels"],
    })


def main(folder: str, targets: str = "flair,t1ce,t2", split: str = "test") -> None:
    run = load_run(f"{folder}/run")
    data = load_dataset(f"{folder}/brains", run.sequences, progress=False, normalization=run.normalization)
    subjects = evaluation_subjects(run, data, split).subjects
    train = oracle_training_subjects(data.subset(run.schema["splits"]["train"]).subjects, run.sequences)
    rows = [row for target in targets.split(",") for source in run.sequences if source != target
            for row in tissue_rows(run, train, subjects, target, source)]
    table = summarize(pd.DataFrame(rows))
    print(f"{len(subjects)} {split} subjects, oracle fitted on {len(train)} training subjects; "
          "every source of each target pooled")
    print(table.round(4).to_string())


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3, 4):
        sys.exit(__doc__)
    main(*sys.argv[1:])
