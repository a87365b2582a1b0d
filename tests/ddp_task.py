"""A tiny engine task for the DDP tests; run as a script by torchrun (see test_engine.py).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_task.py OUT EPOCHS [--resume]
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from mridomain.engine import Engine, TrainSettings, TrainTask, epoch_batches

N, BATCH = 32, 8


def data() -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(N, 1, 8, 8)).astype(np.float32)
    y = (x[:, 0, :4].mean(axis=(1, 2)) > 0).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(y)


class TinySettings(TrainSettings):
    lr: float = 0.1


class TinyTask(TrainTask):
    """No BatchNorm: on CPU (gloo) each rank would normalize its own half of the batch."""

    def __init__(self, settings: TinySettings):
        self.s = settings
        self.x, self.y = data()

    def build_modules(self):
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                  torch.nn.Linear(4 * 6 * 6, 1))
        return {"model": net}

    def build_optimizers(self, modules):
        return {"sgd": torch.optim.SGD(modules["model"].parameters(), lr=self.s.lr, momentum=0.9)}

    def train_batches(self, epoch, rank, world_size):
        return epoch_batches(N, BATCH, self.s.seed, epoch, True, rank, world_size)

    def training_step(self, idx, ctx):
        idx = torch.from_numpy(idx)
        out = ctx.modules["model"](ctx.to_device(self.x[idx]))[:, 0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out, self.y[idx].to(ctx.device))
        ctx.backward(loss)
        ctx.step("sgd")
        return {"loss": float(loss.detach()), "batch_size": len(idx)}

    def validate(self, ctx):
        with torch.no_grad():
            out = ctx.unwrapped("model")(self.x.to(ctx.device))[:, 0]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out, self.y.to(ctx.device))
        return {"val_loss": float(loss)}


def fit(out: str, epochs: int, resume: bool = False, **settings):
    s = TinySettings(epochs=epochs, seed=3, device="cpu", **settings)
    return Engine(s, out, progress=False).fit(TinyTask(s), resume=resume)


if __name__ == "__main__":
    fit(sys.argv[1], int(sys.argv[2]), resume="--resume" in sys.argv)
