"""Seq2Seq training-step speed on the CPU: the cpu preset before and after issue 25, in one run.

Each variant runs in its own subprocess (a fresh torch, ``OMP_WAIT_POLICY=PASSIVE`` as ``mridomain synth``
sets it) one full training step after another: the generator's forward and backward (X'_{i->j}, the
self-reconstruction and the cycle), then the discriminator's, with Adam, on slices of simulated brains
at the demo's 2 mm. Printed per variant: median wall and CPU seconds per step, steps/s, and the ratios
to ``before`` measured in the same run (on a shared machine wall time follows the load; CPU time less so).

    python bench/synth_bench.py [--steps 6] [--compare presets|policy]

``presets`` (default):
  before        the cpu preset until issue 25: one ConvLSTM layer, whole 100 x 80 slices, batch 4
  after         the cpu preset now: no ConvLSTM (one time point), 64 x 64 crops, batch 4
  after+bf16    the same under ``torch.autocast("cpu", torch.bfloat16)``: whether bfloat16 pays here
``policy``: OpenMP's default (spinning) wait policy against PASSIVE, on the ``after`` step.
channels_last is not a variant: the HyperConv weight banks are 5-D tensors, which torch refuses to
convert, and the convolutions run on the mixed kernels, which would have to be converted every step.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

STEP = r"""
import json, os, sys, time
import numpy as np, torch
from mridomain.sim.brain.simulate import make_subject
from mridomain.synth.config import make_config
from mridomain.synth.data import Subject, SynthData, normalize_volume
from mridomain.synth.losses import lsgan_discriminator_loss
from mridomain.synth.training import SynthTask

steps, over = int(sys.argv[1]), json.loads(sys.argv[2])
bf16 = bool(over.pop("_bf16", False))
whole_slices = bool(over.pop("_whole_slices", False))
cfg = make_config("cpu", silence=(0, 0), **over)
if whole_slices:              # make_config drops None overrides, so crop=None goes through updated()
    cfg = cfg.updated(crop=None)
subs = []
for k in range(3):
    b = make_subject(0, k, voxel_mm=2.0)
    subs.append(Subject(f"s{k}", {s: normalize_volume(b.images[s])[0][None].astype(np.float32)
                                  for s in cfg.sequences}))
task = SynthTask(cfg, SynthData(cfg.sequences, subs[:2]), SynthData(cfg.sequences, subs[2:]),
                 np.ones((2, len(cfg.sequences)), bool))
torch.manual_seed(0)
mods = task.build_modules()
gen_opt = torch.optim.Adam(mods["generator"].parameters())
disc_opt = torch.optim.Adam([p for n, m in mods.items() if n != "generator" for p in m.parameters()])
cpu = torch.device("cpu")
times = []
for step in range(steps + 1):          # step 0 warms up (allocations, oneDNN kernel choice)
    batch = task.make_batch(0, step)
    disc = mods["discriminator_" + cfg.sequences[batch["target"]]]
    t, c = time.perf_counter(), os.times()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        total, _, fake = task.generator_losses(batch, mods["generator"], disc, cpu)
    total.backward()
    gen_opt.step(); gen_opt.zero_grad(); disc_opt.zero_grad()
    real = batch["real_target"].flatten(0, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        scores = disc(torch.cat([fake.detach().flatten(0, 1), real]))
        d_loss = lsgan_discriminator_loss(scores[len(real):], scores[:len(real)])
    d_loss.backward()
    disc_opt.step(); disc_opt.zero_grad()
    c2 = os.times()
    if step:
        times.append((time.perf_counter() - t, (c2.user + c2.system) - (c.user + c.system)))
print(json.dumps({"wall": float(np.median([w for w, _ in times])), "cpu": float(np.median([c for _, c in times])),
                  "slice": list(subs[0].shape[1:]), "training_size": list(task.spatial)}))
"""

#: the cpu preset's fields before issue 25, pinned so that "before" stays measurable
BEFORE = {"network": {"lstm_layers": 1}, "_whole_slices": True}
PRESETS = {"before": BEFORE, "after": {}, "after+bf16": {"_bf16": True}}


def _run(overrides: dict, steps: int, policy: str | None = "PASSIVE") -> dict:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", STEP, str(steps), json.dumps(overrides)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--compare", choices=("presets", "policy"), default="presets")
    args = ap.parse_args()
    load = os.getloadavg()
    if args.compare == "presets":
        results = {name: _run(over, args.steps) for name, over in PRESETS.items()}
    else:
        results = {"default policy": _run({}, args.steps, None), "PASSIVE": _run({}, args.steps, "PASSIVE")}
    end = os.getloadavg()
    print(f"load average {load[0]:.2f} at the start, {end[0]:.2f} at the end (1 min); {os.cpu_count()} CPUs; "
          f"{args.steps} timed steps per variant (median)")
    base = next(iter(results.values()))
    for name, r in results.items():
        print(f"{name:>14}: input {'x'.join(map(str, r['training_size']))} (slices {'x'.join(map(str, r['slice']))}), "
              f"{r['wall']:.3f} s/step wall ({1 / r['wall']:.2f} steps/s), {r['cpu']:.3f} s CPU/step; "
              f"vs {next(iter(results))}: {base['wall'] / r['wall']:.2f}x wall, {base['cpu'] / r['cpu']:.2f}x CPU")


if __name__ == "__main__":
    main()
