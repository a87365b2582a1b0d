"""How many training steps on one translation does the generator need before it makes edema bright?

    OMP_NUM_THREADS=1 python bench/synth_edema_steps.py DEMO_FOLDER OUT EPOCHS [SEQUENCES] [OVERRIDES] [PAIRS]

``DEMO_FOLDER`` is the output of ``mridomain synth demo`` (its ``brains/`` carry the simulator's tissue
truth). The bench trains the demo's generator (``cpu-fullres``, the demo's split and seed, no progress
bars) for ``EPOCHS`` epochs of the preset's steps (480 steps of one crop; 120 steps of four crops before
the preset took one crop per step) into ``OUT``, on ``SEQUENCES`` (comma-separated, default ``t2,flair``:
the two sequences alone, so that every step is T2 -> FLAIR or FLAIR -> T2; ``t1,t1ce,t2,flair``: the
demo's twelve translations). ``OVERRIDES`` is a JSON object of
:class:`~mridomain.synth.config.SynthConfig` fields (default ``{"silence": [0, 0]}``: nothing silenced;
``{"silence": [1, 3]}`` is the demo's). Then it translates T2 into FLAIR on 8 training subjects and on
the test subjects and prints, over the head slices, the mean signed error (bias) and the mean squared
error in the simulator's edema, and the mean squared error over the brain. ``PAIRS`` (e.g.
``t2>flair,flair>t2``) trains only those ordered pairs: each step's batch is redrawn, from the next
seeds of its own, until its pair is one of them, so that the four-sequence network can be trained on
the two-sequence probe's translations alone.

Each step trains one ordered pair of sequences, so the steps T2 -> FLAIR gets are the steps divided by
the number of ordered pairs: 2 for two sequences, 12 for the demo's four (or the number of ``PAIRS``).
"""
from __future__ import annotations

import json
import sys
import time

import pandas as pd
from synth_tissue_gap import tissue_rows     # bench/ is on sys.path when a bench script runs

from mridomain.synth.data import load_dataset
from mridomain.synth.demo import DEMO_FRACTIONS
from mridomain.synth.model import load_run
from mridomain.synth.training import SynthTask, train


def edema_errors(run, subjects, source: str = "t2", target: str = "flair") -> dict[str, float]:
    """Bias and MSE of ``source -> target`` in edema, and the MSE over the brain (head slices), from
    the per-tissue sums of ``synth_tissue_gap.tissue_rows`` without its oracle."""
    rows = pd.DataFrame(tissue_rows(run, None, subjects, target, source, oracle=False))
    edema = rows[rows.tissue == "edema"]
    return {"edema_bias": float(edema.sum_error.sum() / edema.voxels.sum()),
            "edema_mse": float(edema.sse_generator.sum() / edema.voxels.sum()),
            "brain_mse": float(rows.sse_generator.sum() / rows.voxels.sum())}


def only_pairs(pairs: set[tuple[int, int]]) -> None:
    """Make ``SynthTask.make_batch`` draw only the ordered (source, target) index pairs ``pairs``: a
    batch of another pair is redrawn from the step's next seeds (step x 10,000 + k), so the batches stay
    a pure function of (seed, epoch, step)."""
    draw = SynthTask.make_batch

    def make_batch(self, epoch: int, step: int, rank: int = 0, world_size: int = 1):
        for k in range(10_000):
            batch = draw(self, epoch, step * 10_000 + k, rank, world_size)
            if (batch["source"], batch["target"]) in pairs:
                return batch
        raise RuntimeError(f"no batch of the pairs {sorted(pairs)} in 10,000 draws")

    SynthTask.make_batch = make_batch


def main(folder: str, out: str, epochs: str, sequences: str = "t2,flair", overrides: str = "{}",
         pairs: str = "") -> None:
    seqs = tuple(sequences.split(","))
    if "t2" not in seqs or "flair" not in seqs:
        sys.exit("SEQUENCES must include t2 and flair")
    wanted = [tuple(p.split(">")) for p in pairs.split(",")] if pairs else []
    if any(len(p) != 2 or not set(p) <= set(seqs) for p in wanted):
        sys.exit(f"PAIRS must be source>target pairs of {','.join(seqs)}, got {pairs!r}")
    if wanted:
        only_pairs({(seqs.index(a), seqs.index(b)) for a, b in wanted})
    over = {"silence": [0, 0], **json.loads(overrides)}
    data = load_dataset(f"{folder}/brains", seqs, progress=False)
    start = time.perf_counter()
    train(data, out, preset="cpu-fullres", epochs=int(epochs), seed=0, progress=False, fractions=DEMO_FRACTIONS,
          sequences=seqs, **over)
    seconds = time.perf_counter() - start
    run = load_run(out)
    n_pairs = len(wanted) or len(seqs) * (len(seqs) - 1)
    steps = int(epochs) * run.config.steps_per_epoch
    print(f"{sequences}, {over}{', pairs ' + pairs if pairs else ''}: {steps} steps, {steps // n_pairs} of them "
          f"T2 -> FLAIR; train {seconds:.0f} s")
    for split, ids in (("train", run.schema["splits"]["train"][:8]), ("test", run.schema["splits"]["test"])):
        r = edema_errors(run, data.subset(ids).subjects)
        print(f"  {split:>5} ({len(ids)} subjects): edema bias {r['edema_bias']:+.3f}, edema MSE "
              f"{r['edema_mse']:.4f}, brain MSE {r['brain_mse']:.4f}")


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5, 6, 7):
        sys.exit(__doc__)
    main(*sys.argv[1:])
