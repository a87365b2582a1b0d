"""Validation PSNR per training step of the Seq2Seq cpu preset with chosen overrides (which loss terms
pay in a short CPU run).

Trains on 5 simulated brains at 2 mm (no silencing) and prints, every quarter of the run, the last
batch's reconstruction loss, the validation PSNR over the 12 translations of one held-out brain (whole
slices 30-55, every 5th) and the CPU seconds used so far. The rate follows the preset's schedule over the
run's steps. The generator and discriminator steps are ``SynthTask.training_step``'s.

    OMP_NUM_THREADS=1 python bench/synth_convergence.py STEPS '{"lambda_adv": 0}' NAME
"""
import json
import os
import sys

import numpy as np
import torch
from lightning_fabric import Fabric

from mridomain.engine import StepContext
from mridomain.sim.brain.simulate import make_subject
from mridomain.synth.config import make_config
from mridomain.synth.data import Subject, SynthData, normalize_volume
from mridomain.synth.model import synthesize
from mridomain.synth.training import SynthTask


def bench_brains(cfg) -> list[Subject]:
    """Six simulated brains at 2 mm, normalized as training sees them: five to train, one held out."""
    subs = []
    for k in range(6):
        b = make_subject(0, k, voxel_mm=2.0)
        subs.append(Subject(f"s{k}", {s: normalize_volume(b.images[s])[0][None].astype(np.float32)
                                      for s in cfg.sequences}))
    return subs


def any_to_any(cfg, subs: list[Subject]):
    """``(task, modules, optimizers, step context)`` of the generator trained on every translation of the
    first five brains (the engine's own step context, on the CPU without DDP)."""
    task = SynthTask(cfg, SynthData(cfg.sequences, subs[:5]), SynthData(cfg.sequences, subs[5:]),
                     np.ones((5, len(cfg.sequences)), bool))
    torch.manual_seed(0)
    mods = task.build_modules()
    optim = task.build_optimizers(mods)
    return task, mods, optim, StepContext(Fabric(accelerator="cpu", devices=1), mods, optim, cfg)


def rate(cfg, step: int, steps: int) -> float:
    """The preset's learning rate at ``step`` of a ``steps``-step run."""
    progress = step / steps
    return cfg.lr * (cfg.lr_min_factor + (1 - cfg.lr_min_factor) * 0.5 * (1 + np.cos(np.pi * progress))) \
        if cfg.lr_schedule == "cosine" else cfg.lr


def training_step(task, optim, ctx, cfg, step: int, steps: int) -> dict:
    """One step of ``SynthTask.training_step`` at the scheduled rate; its logs."""
    for opt in optim.values():
        for group in opt.param_groups:
            group["lr"] = rate(cfg, step, steps)
    return task.training_step(task.make_batch(0, step), ctx)


def main() -> None:
    steps, over, name = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
    cfg = make_config("cpu", silence=(0, 0), **over)
    subs = bench_brains(cfg)
    task, mods, optim, ctx = any_to_any(cfg, subs)
    val, zs = subs[5], list(range(30, 60, 5))

    def val_psnr() -> float:
        psnrs = []
        for i in range(len(cfg.sequences)):
            out = synthesize(mods["generator"], val.volumes[cfg.sequences[i]], i,
                             {j: 1 for j in range(len(cfg.sequences)) if j != i}, cfg.network.code_dim, "cpu",
                             slices=zs)
            psnrs += [10 * np.log10(1 / ((y - val.volumes[cfg.sequences[j]][:, zs]) ** 2).mean())
                      for j, y in out.items()]
        mods["generator"].train()
        return float(np.mean(psnrs))

    c0 = os.times()
    for s in range(steps):
        logs = training_step(task, optim, ctx, cfg, s, steps)
        if (s + 1) % max(1, steps // 4) == 0:
            c = os.times()
            print(f"{name} step {s + 1} rec {logs['rec_loss']:.3f} val_psnr {val_psnr():.2f} "
                  f"cpu {c.user + c.system - c0.user - c0.system:.0f}s load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
