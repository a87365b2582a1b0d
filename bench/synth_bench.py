"""Seq2Seq training-step time: OpenMP's default (spinning) wait policy vs ``OMP_WAIT_POLICY=PASSIVE``.

The policy is read once, when torch loads, so each setting runs in its own subprocess; both run the
same cpu-preset generator and discriminator step (2.5-D, batch 4, 100 x 80 slices) back to back, and
the ratio is printed with the load average (on a shared machine the spinning threads of the default
policy fight the other jobs for the cores, which is why ``mridomain synth`` sets PASSIVE).

    python bench/synth_bench.py [--steps 6]
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
from mridomain.synth.config import make_config
from mridomain.synth.data import Subject, SynthData
from mridomain.synth.training import SynthTask
cfg = make_config("cpu", silence=(0, 0))
rng = np.random.default_rng(0)
subs = [Subject(f"s{k}", {s: rng.uniform(0, 1, (1, 12, 100, 80)).astype(np.float32) for s in cfg.sequences})
        for k in range(3)]
task = SynthTask(cfg, SynthData(cfg.sequences, subs[:2]), SynthData(cfg.sequences, subs[2:]), np.ones((2, 4), bool))
mods = task.build_modules()
opt = torch.optim.Adam(mods["generator"].parameters())
times = []
for step in range(int(sys.argv[1]) + 1):
    batch = task.make_batch(0, step)
    d = mods["discriminator_" + cfg.sequences[batch["target"]]]
    t = time.perf_counter(); c = os.times()
    total, _, _ = task.generator_losses(batch, mods["generator"], d, torch.device("cpu"))
    total.backward(); opt.step(); opt.zero_grad()
    c2 = os.times()
    if step:
        times.append((time.perf_counter() - t, (c2.user + c2.system) - (c.user + c.system)))
print(json.dumps({"wall": float(np.median([w for w, _ in times])), "cpu": float(np.median([c for _, c in times]))}))
"""


def _run(policy: str | None, steps: int) -> dict:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", STEP, str(steps)], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    load = os.getloadavg()
    default = _run(None, args.steps)
    passive = _run("PASSIVE", args.steps)
    print(f"load average {load[0]:.2f} (1 min), {os.cpu_count()} CPUs, torch threads default")
    print(f"default policy : {default['wall']:.3f} s/step wall, {default['cpu']:.3f} s CPU")
    print(f"PASSIVE policy : {passive['wall']:.3f} s/step wall, {passive['cpu']:.3f} s CPU")
    print(f"ratio default / PASSIVE: {default['wall'] / passive['wall']:.2f}x wall, "
          f"{default['cpu'] / passive['cpu']:.2f}x CPU")


if __name__ == "__main__":
    main()
