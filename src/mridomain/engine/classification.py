"""A binary classifier of image arrays (2-D slices or 3-D crops) as an engine task.

The downstream models of the paper's routing experiment (tumor vs normal slices) and the scanner
domain-shift study (a diagnostic label from slices or crops) are the same kind of thing: a network,
arrays in memory with 0/1 labels, Adam, random flips, a validation metric that picks the best
epoch. :class:`BinaryArrayTask` is that thing once, for any network whose output is one logit, and
:class:`ArrayClassifier` the one estimator (fit / predict / save / load) around it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.special import expit
from pydantic import Field

from mridomain.engine.engine import StepContext, TrainTask, epoch_batches
from mridomain.engine.settings import TrainSettings
from mridomain.errors import EmptyInputError, InvalidArgumentError, SchemaMismatchError

__all__ = ["BinaryArrayTask", "binary_metrics", "predict_logits", "ArrayClassifier", "ClassifierSettings"]


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
        """One module, ``model``, from the classifier's architecture."""
        return {"model": self.build()}

    def build_optimizers(self, modules: dict[str, torch.nn.Module]) -> dict[str, torch.optim.Optimizer]:
        """Adam with the config's learning rate and weight decay."""
        return {"adam": torch.optim.Adam(modules["model"].parameters(), lr=self.lr, weight_decay=self.weight_decay)}

    def train_batches(self, epoch: int, rank: int, world_size: int) -> Iterable[Any]:
        """This rank's shuffled index batches of the training arrays for ``epoch``."""
        for i, idx in enumerate(epoch_batches(len(self.images), self.batch_size, self.seed, epoch, True,
                                              rank, world_size)):
            yield i, epoch, np.sort(idx)

    def training_step(self, batch: Any, ctx: StepContext) -> dict[str, float]:
        """One binary cross-entropy step on a batch of indices; ``{}`` for an empty batch."""
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
        """The validation arrays' binary metrics (:func:`binary_metrics`), as ``val_<metric>``."""
        logits = predict_logits(ctx.unwrapped("model"), self.val_images, self.prepare, ctx.device,
                                self.eval_batch_size)
        metrics = binary_metrics(self.val_labels, expit(logits))
        return {f"val_{k}": v for k, v in metrics.items()}


class ClassifierSettings(TrainSettings):
    """What every :class:`ArrayClassifier` config has: Adam settings and flip augmentation."""

    batch_size: int = Field(64, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    augment: bool = Field(True, description="random flips of training images (see ArrayClassifier.flip_axes)")


class ArrayClassifier:
    """A one-logit classifier of image arrays as a scikit-learn-like estimator: ``fit`` /
    ``decision_function`` / ``predict_proba`` / ``predict`` / ``save`` / ``load``.

    The one implementation behind the routing experiment's tumor classifier and the domain-shift
    study's models. Training is :class:`BinaryArrayTask` on the shared engine (best epoch by the
    config's ``monitor``); a saved folder holds ``model.safetensors`` and a ``config.json`` with the
    estimator's ``kind``, its config and :meth:`metadata`, so it loads without the training data and
    another kind of folder is refused with a one-line error.

    Subclasses set ``kind`` and ``config_class`` and implement :meth:`architecture` and
    :meth:`prepare`; they may override :meth:`flip_axes`, :meth:`check`, :meth:`before_fit`,
    :meth:`metadata` / :meth:`from_metadata` and ``engine_options``.
    """

    kind: ClassVar[str] = "mridomain.classifier"
    #: kinds of folders an earlier mridomain wrote with the config fields at the top level
    legacy_kinds: ClassVar[tuple[str, ...]] = ()
    config_class: ClassVar[type[ClassifierSettings]] = ClassifierSettings
    #: keyword arguments of the Engine (e.g. no per-epoch checkpoint for studies of many short runs)
    engine_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: ClassifierSettings):
        self.config = config
        self.net: torch.nn.Module | None = None
        self.history: list[dict[str, Any]] = []
        self.best_epoch = 0

    # -- hooks --------------------------------------------------------------------------------
    def architecture(self) -> torch.nn.Module:
        """The network, randomly initialized from torch's current seed."""
        raise NotImplementedError

    def prepare(self, batch: np.ndarray) -> torch.Tensor:
        """A numpy batch of raw samples -> the network's input tensor."""
        raise NotImplementedError

    def build(self) -> torch.nn.Module:
        """The network training starts from (by default :meth:`architecture`)."""
        return self.architecture()

    def flip_axes(self) -> tuple[int, ...]:
        """Axes of one sample that augmentation may flip."""
        return (0, 1)

    def check(self, images: np.ndarray, where: str) -> None:
        """Refuse images the model cannot take (one-line :class:`SchemaMismatchError`)."""

    def before_fit(self, images: np.ndarray) -> None:
        """Fit what the inputs need from the training images (e.g. intensity statistics)."""

    def metadata(self) -> dict[str, Any]:
        """What ``config.json`` keeps besides the config (a sample shape, a label schema)."""
        return {}

    @classmethod
    def from_metadata(cls, config: Any, meta: dict[str, Any], where: str) -> "ArrayClassifier":
        """A classifier rebuilt from its saved ``config.json`` metadata (weights loaded separately)."""
        return cls(config)

    def _device(self) -> torch.device:
        from mridomain.engine.engine import resolve_device

        return resolve_device(self.config.device)

    # -- estimator ------------------------------------------------------------------------------
    def fit(self, images: np.ndarray, labels: Sequence[float], val_images: np.ndarray | None = None,
            val_labels: Sequence[float] | None = None, out: str | Path | None = None,
            progress: bool = True) -> "ArrayClassifier":
        """Train on ``images`` with 0/1 ``labels`` and keep the best epoch's weights (by the
        config's ``monitor`` on the validation set; without one, on the training images).
        ``out``: keep the engine's run folder there; default a temporary folder, removed after."""
        import shutil
        import tempfile

        from mridomain.engine.checkpoint import load_weights
        from mridomain.engine.engine import Engine

        x = np.asarray(images) if not isinstance(images, np.memmap) else images
        self.check(x, "fit")
        if val_images is not None and len(val_images):
            self.check(np.asarray(val_images), "fit (validation)")
        self.before_fit(x)
        cfg = self.config
        task = BinaryArrayTask(self.build, x, labels, self.prepare, val_images=val_images, val_labels=val_labels,
                               batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay, seed=cfg.seed,
                               flip_axes=self.flip_axes() if cfg.augment else ())
        run = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="mridomain_clf_"))
        try:
            fit = Engine(cfg, run, progress=progress, **self.engine_options).fit(task)
            weights = run / "model.safetensors"
            if not weights.exists():
                raise SchemaMismatchError(f"{run}: no epoch had a finite {cfg.monitor} (does the validation "
                                          "set hold both labels?)")
            self.net = load_weights(self.architecture(), weights).to(self._device())
            self.history = fit.metrics.to_dict("records")
            self.best_epoch = fit.best_epoch
        finally:
            if out is None:
                shutil.rmtree(run, ignore_errors=True)
        return self

    def _fitted(self) -> torch.nn.Module:
        if self.net is None:
            raise SchemaMismatchError(f"{type(self).__name__}: predict called before fit or load")
        return self.net

    def decision_function(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """One logit per sample (AUC needs only the order, which the logit keeps exactly)."""
        net = self._fitted()
        x = np.asarray(images)
        self.check(x, "predict")
        return predict_logits(net, x, self.prepare, self._device(), batch_size).astype(np.float64)

    def predict_proba(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """P(label 1) per sample, shape (N,)."""
        return expit(self.decision_function(images, batch_size)).astype(np.float32)

    def predict(self, images: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """0/1 label per sample."""
        return (self.predict_proba(images) >= threshold).astype(np.int64)

    def save(self, folder: str | Path) -> Path:
        """Write ``model.safetensors``, ``config.json`` and ``history.json``."""
        from mridomain.engine.checkpoint import save_weights
        from mridomain.files import dump_json

        net = self._fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_weights(net, folder / "model.safetensors")
        dump_json({"kind": self.kind, "version": 1, "config": self.config.to_dict(), "best_epoch": self.best_epoch,
                   **self.metadata()}, folder / "config.json")
        dump_json(self.history, folder / "history.json")
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | None = None) -> "ArrayClassifier":
        """A model written by :meth:`save` (one-line errors for another kind of folder)."""
        from mridomain.engine.checkpoint import load_weights
        from mridomain.files import read_json, read_versioned_json

        folder = Path(folder)
        meta_path, weights = folder / "config.json", folder / "model.safetensors"
        if not meta_path.exists() or not weights.exists():
            raise SchemaMismatchError(f"{folder}: not a {cls.kind} folder (needs config.json and model.safetensors)")
        meta = read_versioned_json(meta_path, 1, what="model config")
        found = meta.get("kind")
        if found in cls.legacy_kinds:
            meta = {"kind": cls.kind, "config": {k: v for k, v in meta.items() if k != "kind"}}
        elif found != cls.kind:
            raise SchemaMismatchError(f"{meta_path}: not a {cls.kind} config (kind {found!r})")
        cfg = cls.config_class.from_dict(meta.get("config"), where=str(meta_path))
        if device is not None:
            cfg = cfg.updated(device=device)
        obj = cls.from_metadata(cfg, meta, str(meta_path))
        obj.best_epoch = int(meta.get("best_epoch", 0))
        history = folder / "history.json"
        obj.history = read_json(history) if history.exists() else []
        obj.net = load_weights(obj.architecture(), weights).to(obj._device())
        return obj
