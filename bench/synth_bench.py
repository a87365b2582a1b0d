"""Seq2Seq training-step speed on the CPU: the cpu preset's steps before and after, in one run.

Each variant runs in its own subprocess (a fresh torch, ``OMP_WAIT_POLICY=PASSIVE`` as ``mridomain synth``
sets it) one full training step after another, as ``SynthTask.training_step`` does: the generator's forward
and backward (X'_{i->j}, the self-reconstruction and, when its weight is not 0, the cycle), then, when the
adversarial weight is not 0, the discriminator's, with Adam, on slices of simulated brains at the demo's
2 mm. Printed per variant: median wall and CPU seconds per step, steps/s, and the ratios to the first
variant measured in the same run (on a shared machine wall time follows the load; CPU time less so).

    python bench/synth_bench.py [--steps 6] [--compare presets|terms|policy|bins|context|precision|batch]

``presets`` (default):
  issue-25 start   the cpu preset when issue 25 was filed: one ConvLSTM layer, whole 100 x 84 slices
  1800-step        the cpu preset of the first issue-25 demo: no ConvLSTM, 64 x 64 crops, all loss terms
  now              the cpu preset now (``make_config("cpu")``)
  now+bf16         the same under ``torch.autocast("cpu", torch.bfloat16)``: whether bfloat16 pays here
  now+chlast       the same with every 2-D kernel (plain and mixed HyperConv kernels) in channels_last
  demo, paper      the brain demo's generator of the previous release: the cpu preset without instance norm
  demo, fullres    the brain demo's generator now: the ``cpu-fullres`` preset (full resolution, source code,
                   16 intensity bumps per input channel; one crop per step since the preset took it)
``terms``: the 1800-step preset without the adversarial term, without the cycle, without both.
``policy``: OpenMP's default (spinning) wait policy against PASSIVE, on the ``now`` step.
``bins``: the ``cpu-fullres`` step without its intensity bumps (the previous release's demo), with them.
``context``: the ``cpu-fullres`` step without and with the context branch (``context_pool`` 4 and 8).
``precision``: the ``cpu-fullres`` step in float32 and under bf16 autocast (the bench autocasts the whole
step, losses included; the engine's ``cpu_amp`` autocasts the modules' forward and leaves the losses in
float32; the preset's ``auto`` picks bf16 only where the CPU computes it natively, the bench forces it).
``bins``, ``context`` and ``precision`` time the ``cpu-fullres`` step at four crops per step, the preset's
batch when they were measured. ``batch``: the ``cpu-fullres`` step at four crops (the previous preset) and at
one (the preset now), each in float32 and under bf16 autocast: the demo now takes four times the steps.
The batch is built by ``SynthTask.make_batch`` inside the timed step (about 1 ms of a 300 ms step).
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
import torch.nn.functional as F
from mridomain.sim.brain.simulate import make_subject
from mridomain.synth.config import make_config
from mridomain.synth.data import Subject, SynthData, normalize_volume
from mridomain.synth.network import HyperConv
from mridomain.synth.training import SynthTask

steps, over = int(sys.argv[1]), json.loads(sys.argv[2])
bf16 = bool(over.pop("_bf16", False))
chlast = bool(over.pop("_channels_last", False))
whole_slices = bool(over.pop("_whole_slices", False))
cfg = make_config(over.pop("_preset", "cpu"), silence=(0, 0), **over)
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
if chlast:
    for m in (m for mod in mods.values() for m in mod.modules()):
        if isinstance(m, torch.nn.Conv2d):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)

    def _forward(self, x, code):
        weight, bias = self.kernel(code)
        return F.conv2d(x, weight.contiguous(memory_format=torch.channels_last), bias, stride=self.stride,
                        padding=self.padding)
    HyperConv.forward = _forward
optim = task.build_optimizers(mods)


class Ctx:               # the engine's StepContext as SynthTask.training_step uses it, on the CPU
    modules, device = mods, torch.device("cpu")

    def backward(self, loss):
        loss.backward()

    def step(self, name):
        optim[name].step()
        optim[name].zero_grad()

    def zero_grad(self, name):
        optim[name].zero_grad()


ctx, times = Ctx(), []
for step in range(steps + 1):          # step 0 warms up (allocations, oneDNN kernel choice)
    t, c = time.perf_counter(), os.times()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        task.training_step(task.make_batch(0, step), ctx)
    c2 = os.times()
    if step:
        times.append((time.perf_counter() - t, (c2.user + c2.system) - (c.user + c.system)))
print(json.dumps({"wall": float(np.median([w for w, _ in times])), "cpu": float(np.median([c for _, c in times])),
                  "slice": list(subs[0].shape[1:]), "training_size": list(task.spatial),
                  "threads": torch.get_num_threads()}))
"""

#: earlier cpu presets' fields, pinned so that "before" stays measurable after the preset changes
PRESET_1800 = {"network": {"code_dim": 8, "bank_dim": 4, "enc_channels": (12, 24, 48), "dec_channels": (24, 12),
                           "n_res_enc": 3, "n_res_dec": 3, "lstm_layers": 0, "disc_channels": 16, "disc_layers": 2},
               "crop": (64, 64), "lambda_adv": 1.0, "lambda_cyc": 10.0, "batch_size": 4}
ISSUE25_START = {**PRESET_1800, "network": {**PRESET_1800["network"], "lstm_layers": 1}, "_whole_slices": True}
PRESETS = {"issue-25 start": ISSUE25_START, "1800-step": PRESET_1800, "now": {}, "now+bf16": {"_bf16": True},
           "now+chlast": {"_channels_last": True}, "demo, paper": {"network": {"norm": "none"}},
           "demo, fullres": {"_preset": "cpu-fullres"}}
TERMS = {"1800-step": PRESET_1800, "no adversarial": {**PRESET_1800, "lambda_adv": 0.0},
         "no cycle": {**PRESET_1800, "lambda_cyc": 0.0},
         "neither": {**PRESET_1800, "lambda_adv": 0.0, "lambda_cyc": 0.0}}
#: the fullres comparisons below were measured when the preset took four crops per step: pinned there
FULLRES_4 = {"_preset": "cpu-fullres", "batch_size": 4}
BINS = {"fullres, 0 bins": {**FULLRES_4, "network": {"intensity_bins": 0}},
        "fullres, 16 bins": FULLRES_4}
CONTEXT = {"fullres": {**FULLRES_4, "network": {"context_pool": 0}},
           "context pool 4": {**FULLRES_4, "network": {"context_pool": 4}},
           "context pool 8": {**FULLRES_4, "network": {"context_pool": 8}}}
PRECISION = {"fullres, float32": FULLRES_4,
             "fullres, bf16": {**FULLRES_4, "_bf16": True}}
BATCH = {"4 crops, fp32": FULLRES_4, "1 crop, fp32": {"_preset": "cpu-fullres"},
         "4 crops, bf16": {**FULLRES_4, "_bf16": True}, "1 crop, bf16": {"_preset": "cpu-fullres", "_bf16": True}}
#: the --compare choices that time a set of configs (``policy`` times one config two ways)
COMPARISONS = {"presets": PRESETS, "terms": TERMS, "bins": BINS, "context": CONTEXT, "precision": PRECISION,
               "batch": BATCH}


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
    ap.add_argument("--compare", choices=(*COMPARISONS, "policy"), default="presets")
    args = ap.parse_args()
    load = os.getloadavg()
    if args.compare in COMPARISONS:
        results = {name: _run(over, args.steps) for name, over in COMPARISONS[args.compare].items()}
    else:
        results = {"default policy": _run({}, args.steps, None), "PASSIVE": _run({}, args.steps, "PASSIVE")}
    end = os.getloadavg()
    from mridomain.engine import cpu_has_native_bf16

    native = "native bf16 (AMX or AVX512-BF16)" if cpu_has_native_bf16() else "no native bf16"
    print(f"load average {load[0]:.2f} at the start, {end[0]:.2f} at the end (1 min); {os.cpu_count()} CPUs, {native}; "
          f"{args.steps} timed steps per variant (median); torch threads "
          f"{next(iter(results.values()))['threads']}")
    base = next(iter(results.values()))
    for name, r in results.items():
        print(f"{name:>14}: input {'x'.join(map(str, r['training_size']))} (slices {'x'.join(map(str, r['slice']))}), "
              f"{r['wall']:.3f} s/step wall ({1 / r['wall']:.2f} steps/s), {r['cpu']:.3f} s CPU/step; "
              f"vs {next(iter(results))}: {base['wall'] / r['wall']:.2f}x wall, {base['cpu'] / r['cpu']:.2f}x CPU")


if __name__ == "__main__":
    main()
