"""A left-right flip self-ensemble at test time for a synthesis run: does it change Table 1, C_d or M_d?

    OMP_NUM_THREADS=1 python bench/synth_flip_ensemble.py DEMO_FOLDER

``DEMO_FOLDER`` is the output of ``mridomain synth demo`` (its ``run/`` and ``brains/``). The test split
is evaluated twice in one process, without the oracle (it does not depend on the generator): as the
run translates, then with every translation the mean of the generator's output for the source and
the mirror of its output for the mirrored source (the simulated brain's physics has no left-right
direction). Prints, for each: mean PSNR / SSIM over the i != j pairs, the learned C_d order, the M_d
checks and PSNR / SSIM per target; the evaluation folders go to ``DEMO_FOLDER/flip_ensemble_*``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

import mridomain.synth.model as synth_model
from mridomain.synth.evaluation import evaluate
from mridomain.synth.model import load_run

_plain = synth_model.synthesize


def _flip_ensemble(generator, volume, source, targets, code_dim, device="cpu", batch_slices=16, slices=None):
    own = _plain(generator, volume, source, targets, code_dim, device, batch_slices, slices)
    mirrored = _plain(generator, np.ascontiguousarray(np.asarray(volume)[..., ::-1]), source, targets, code_dim,
                      device, batch_slices, slices)
    return {t: 0.5 * (own[t] + mirrored[t][..., ::-1]) for t in own}


def main(folder: Path) -> None:
    run = load_run(folder / "run")
    for name, translate in (("plain", _plain), ("flip ensemble", _flip_ensemble)):
        synth_model.synthesize = translate     # SynthRun.translate looks it up at call time
        start = time.perf_counter()
        ev = evaluate(run, folder / "brains", split="test", progress=False, html=False, oracle=False,
                      out=folder / f"flip_ensemble_{name.replace(' ', '_')}")
        pairs = ev.pairs
        print(f"\n{name}: {time.perf_counter() - start:.0f} s; mean PSNR {pairs['psnr'].mean():.2f} dB, "
              f"SSIM {pairs['ssim'].mean():.3f}")
        order = ev.contribution.sort_values("c_d", ascending=False)
        print("C_d: " + ", ".join(f"{s} {c:.3f}" for s, c in zip(order["sequence"], order["c_d"])))
        if ev.dmap_check is not None:
            print(ev.dmap_check[["map", "region", "auc", "auc_target_intensity"]].to_string(index=False))
        print(pairs.groupby("target")[["psnr", "ssim"]].mean().round(3).to_string())
    synth_model.synthesize = _plain


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
