"""A binary classifier of image arrays (2-D slices or 3-D crops) as an engine task.

The downstream models of the paper's routing experiment (tumor vs normal slices) and the scanner
domain-shift study (a diagnostic label from slices or crops) are the same kind of thing: a network,
arrays in memory with 0/1 labels, Adam, random flips, a validation metric that picks the best
epoch. :class:`BinaryArrayTask` is that thing once, for any network whose output is one logit.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from mridomain.engine.engine import StepContext, TrainTask, epoch_batches
from mridomain.errors import EmptyInputError, InvalidArgumentError

__all__ = ["BinaryArrayTask", "binary_metrics", "predict_logits"]


def binary_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Accuracy at 0.5, ROC AUC (NaN with one class present) and mean BCE of probabilities."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-7, 1 - 1e-7)
    auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")
    bce = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if len(y) else float("nan")
    return {"accuracy": float(np.mean((p >= 0.5) == (y >= 0.5))) if len(y) else float("nan"),
            "auc": auc, "loss": bce}


@torch.no_grad()
def predict_logits(net: torch.nn.Module, images: np.ndarray, prepare: Callable[[np.ndarray], torch.Tensor],
                   device: torch.device, batch_size: int = 128) -> np.ndarray:
    """One logit per image, in batches, with the network in eval mode."""
    net.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = prepare(np.asarray(images[start:start + batch_size])).to(device)
        out.append(net(x).reshape(len(x), -1)[:, 0].float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


class BinaryArrayTask(TrainTask):
    """Train ``net`` (one output logit) on arrays with 0/1 labels.

    Args:
        net: the network; built by the caller after seeding (``build`` may be a factory instead).
        images, labels: training arrays (N, ...) and (N,).
        val_images, val_labels: validation set; without one the best epoch is chosen on the
            (un-augmented) training set and the metrics say ``val_`` all the same.
        prepare: numpy batch -> float tensor (N, C, ...), e.g. standardize and add a channel.
        batch_size, lr, weight_decay: Adam settings.
        seed: batch order and flips follow (seed, epoch, batch).
        flip_axes: array axes (of one image, 0-based) randomly flipped per batch (augmentation).
    """

    def __init__(self, build: Callable[[], torch.nn.Module], images: np.ndarray, labels: Sequence[float],
                 prepare: Callable[[np.ndarray], torch.Tensor], *, val_images: np.ndarray | None = None,
                 val_labels: Sequence[float] | None = None, batch_size: int = 64, lr: float = 1e-3,
                 weight_decay: float = 0.0, seed: int = 0, flip_axes: Sequence[int] = (),
                 eval_batch_size: int = 128):
        self.build, self.images, self.prepare = build, images, prepare
        self.labels = np.asarray(labels, dtype=np.float32)
        if len(images) == 0 or len(images) != len(self.labels):
            raise EmptyInputError("<training images>", f"need images and labels of equal, non-zero length "
                                                       f"(got {len(images)} and {len(self.labels)})")
        if not np.isin(self.labels, (0.0, 1.0)).all():
            raise InvalidArgumentError("labels: a binary classifier needs 0/1 labels")
        has_val = val_images is not None and val_labels is not None and len(val_images) > 0
        self.val_images = val_images if has_val else images
        self.val_labels = np.asarray(val_labels if has_val else self.labels, dtype=np.float32)
        self.batch_size, self.lr, self.weight_decay, self.seed = batch_size, lr, weight_decay, seed
        self.flip_axes = tuple(int(a) for a in flip_axes)
        self.eval_batch_size = eval_batch_size

    def build_modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.build()}

    def build_optimizers(self, modules: dict[str, torch.nn.Module]) -> dict[str, torch.optim.Optimizer]:
        return {"adam": torch.optim.Adam(modules["model"].parameters(), lr=self.lr, weight_decay=self.weight_decay)}

    def train_batches(self, epoch: int, rank: int, world_size: int) -> Iterable[Any]:
        for i, idx in enumerate(epoch_batches(len(self.images), self.batch_size, self.seed, epoch, True,
                                              rank, world_size)):
            yield i, epoch, np.sort(idx)

    def training_step(self, batch: Any, ctx: StepContext) -> dict[str, float]:
        i, epoch, idx = batch
        if len(idx) < 2:   # BatchNorm cannot normalize a single sample
            return {}
        x = np.asarray(self.images[idx], dtype=np.float32)
        rng = np.random.default_rng([self.seed, epoch, i, ctx.rank])
        for axis in self.flip_axes:
            if rng.random() < 0.5:
                x = np.flip(x, axis=axis + 1)
        xt = ctx.to_device(self.prepare(np.ascontiguousarray(x)))
        y = torch.from_numpy(self.labels[idx]).to(ctx.device)
        logits = ctx.modules["model"](xt).reshape(len(idx), -1)[:, 0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
        ctx.backward(loss)
        ctx.step("adam")
        return {"loss": float(loss.detach()), "batch_size": len(idx)}

    def validate(self, ctx: StepContext) -> dict[str, float]:
        logits = predict_logits(ctx.unwrapped("model"), self.val_images, self.prepare, ctx.device,
                                self.eval_batch_size)
        metrics = binary_metrics(self.val_labels, 1.0 / (1.0 + np.exp(-logits)))
        return {f"val_{k}": v for k, v in metrics.items()}
