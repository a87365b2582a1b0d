"""What learning every translation at once costs the Seq2Seq generator in a short CPU run.

    OMP_NUM_THREADS=1 python bench/synth_sharing.py [STEPS] [SOURCE] [TARGET]     (1200 t1 t2)

Trains four models for STEPS steps each (batch 4, 64 x 64 crops of three adjacent slices, Adam at the
cpu preset's rate with its cosine schedule, L1) on 5 simulated brains at 2 mm, and prints the PSNR of
SOURCE -> TARGET on whole slices 30-55 (every 5th) of a sixth, held-out brain:

1. ``any-to-any``: the paper-shaped cpu-preset generator without instance normalization (the brain
   demo's before ``cpu-fullres``), through ``SynthTask``: every step draws one of the 12 (source,
   target) directions;
2. ``one direction``: the same generator and code, shown only SOURCE -> TARGET;
3. ``plain CNN``: four 3 x 3 convolutions (32 channels, LeakyReLU) at full resolution, SOURCE -> TARGET;
4. ``any-to-any, cpu-fullres``: the brain demo's generator now (full resolution, encoder told the
   source), trained on the 12 directions as 1. at its preset's rate.

Also printed: the CPU seconds of each. The simulator's pairwise oracle for the same direction is in
``synth evaluate``'s oracle_pairs.csv.
"""
import os
import sys

import numpy as np
import torch
from torch import nn

from mridomain.synth.config import make_config
from mridomain.synth.data import Subject, slice_stack
from mridomain.synth.model import from_model_range, synthesize, to_model_range
from mridomain.synth.network import build_generator, one_hot_code
from synth_convergence import any_to_any, bench_brains, rate, training_step   # the same brains and steps

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 1200
SOURCE = sys.argv[2] if len(sys.argv) > 2 else "t1"
TARGET = sys.argv[3] if len(sys.argv) > 3 else "t2"
SLICES = list(range(30, 60, 5))


def psnr(generated: np.ndarray, target: np.ndarray) -> float:
    return float(10 * np.log10(1 / ((generated - target) ** 2).mean()))


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def any_to_any_psnr(cfg, subs: list[Subject]) -> tuple[float, float]:
    task, mods, optim, ctx = any_to_any(cfg, subs)
    c0 = cpu_seconds()
    for s in range(STEPS):
        training_step(task, optim, ctx, cfg, s, STEPS)
    return evaluate_generator(mods["generator"], cfg, subs[5]), cpu_seconds() - c0


def evaluate_generator(gen, cfg, sub: Subject) -> float:
    i, j = cfg.sequences.index(SOURCE), cfg.sequences.index(TARGET)
    out = synthesize(gen, sub.volumes[SOURCE], i, {j: 1}, cfg.network.code_dim, "cpu", slices=SLICES)
    return psnr(out[j], sub.volumes[TARGET][:, SLICES])


def one_direction(model: nn.Module, cfg, subs: list[Subject]) -> tuple[float, float]:
    """Train ``model`` ((B, 3, H, W) -> (B, 3, H, W), model range) on SOURCE -> TARGET crops only."""
    rng = np.random.default_rng(0)
    optim = torch.optim.Adam(model.parameters(), cfg.lr, betas=tuple(cfg.betas))
    c0 = cpu_seconds()
    for s in range(STEPS):
        for group in optim.param_groups:
            group["lr"] = rate(cfg, s, STEPS)
        xs, ys = [], []
        for _ in range(cfg.batch_size):
            sub = subs[int(rng.integers(5))]
            src, tgt = sub.volumes[SOURCE][0], sub.volumes[TARGET][0]
            z = int(rng.integers(20, src.shape[0] - 20))
            r, c = (int(rng.integers(0, n - 64)) for n in src.shape[1:])
            xs.append(slice_stack(src[None], z, 3)[0, :, r:r + 64, c:c + 64])
            ys.append(slice_stack(tgt[None], z, 3)[0, :, r:r + 64, c:c + 64])
        x, y = (to_model_range(torch.from_numpy(np.stack(a))) for a in (xs, ys))
        loss = (model(x) - y).abs().mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
    return cpu_seconds() - c0


class OneCode(nn.Module):
    """The Seq2Seq generator with its target code fixed: (B, 3, H, W) in, (B, 3, H, W) out."""

    def __init__(self, gen, code):
        super().__init__()
        self.gen, self.code = gen, code

    def forward(self, x):
        return self.gen(x[:, None], self.code)[:, 0]


def main() -> None:
    cfg = make_config("cpu", silence=(0, 0), network={"norm": "none"})
    subs = bench_brains(cfg)
    rows = []
    a2a, sec = any_to_any_psnr(cfg, subs)
    rows.append(("any-to-any (12 directions)", a2a, sec))
    torch.manual_seed(0)
    gen = build_generator(cfg.network)
    sec = one_direction(OneCode(gen, one_hot_code(cfg.sequences.index(TARGET), cfg.network.code_dim)), cfg, subs)
    rows.append(("one direction, same generator", evaluate_generator(gen, cfg, subs[5]), sec))
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(32, 32, 3, padding=1),
                        nn.LeakyReLU(0.2), nn.Conv2d(32, 32, 3, padding=1), nn.LeakyReLU(0.2),
                        nn.Conv2d(32, 3, 3, padding=1))
    sec = one_direction(cnn, cfg, subs)
    with torch.no_grad():
        stacks = np.stack([slice_stack(subs[5].volumes[SOURCE], z, 3)[0] for z in SLICES])
        y = from_model_range(cnn(to_model_range(torch.from_numpy(stacks)))[:, 1]).clamp(0, 1).numpy()
    rows.append(("one direction, plain CNN", psnr(y, subs[5].volumes[TARGET][0, SLICES]), sec))
    full = make_config("cpu-fullres", silence=(0, 0))
    a2a, sec = any_to_any_psnr(full, subs)
    rows.append(("any-to-any, cpu-fullres", a2a, sec))
    print(f"{SOURCE} -> {TARGET}, {STEPS} steps of batch {cfg.batch_size}, held-out brain, load "
          f"{os.getloadavg()[0]:.1f}")
    for name, value, sec in rows:
        print(f"  {name:32s} PSNR {value:5.2f} dB   {sec:5.0f} CPU s")


if __name__ == "__main__":
    main()
