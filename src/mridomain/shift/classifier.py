"""One model of the study (M_j) as an estimator: ``fit`` / ``predict_proba`` / ``save`` / ``load``.

Training is :class:`mridomain.engine.classification.BinaryArrayTask` on the shared engine, with
the best epoch chosen on the validation AUC (the paper's "model selection on Val_j"). Each image
is z-scored on its own before it reaches the network (§3.2), so a model sees the same kind of input
whatever the scanner's intensity scale. A saved model folder holds ``model.safetensors`` and
``config.json`` (the :class:`ShiftConfig`, the sample shape and the label schema): it loads without
the data it was trained on, and a folder of another kind is refused with a one-line error.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mridomain.errors import SchemaMismatchError
from mridomain.shift.config import ShiftConfig

__all__ = ["ShiftClassifier", "zscore_batch", "MODEL_KIND"]

MODEL_KIND = "mridomain.shift.model"
LABELS = {"0": "negative", "1": "positive"}


def zscore_batch(batch: np.ndarray):
    """(N, *shape) raw samples -> (N, 1, *shape) float tensor, each sample z-scored on its own."""
    import torch

    from mridomain.data import normalize_intensity

    x = np.asarray(batch, dtype=np.float32)
    out = np.empty_like(x)
    for i in range(len(x)):
        out[i] = normalize_intensity(x[i], "zscore")
    return torch.from_numpy(out)[:, None]


class ShiftClassifier:
    """A binary classifier of 2-D images or 3-D crops for the domain-shift study.

    Args:
        config: the :class:`ShiftConfig` (architecture, optimizer, epochs, seed, device).
        sample_shape: shape of one sample, (H, W) or (D, H, W).
        modality: MRI / CT / X-ray (``model="auto"`` picks DenseNet-121 for X-ray).
    """

    def __init__(self, config: ShiftConfig, sample_shape: Sequence[int], modality: str | None = None):
        self.config = config
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.modality = modality
        self.net = None
        self.history: list[dict[str, Any]] = []
        self.best_epoch = 0

    def architecture(self):
        """The network, randomly initialized (from torch's current seed)."""
        from mridomain.shift.models import build_model

        return build_model(self.config.model, self.sample_shape, self.config.width, self.modality)

    def build(self):
        """A freshly initialized network (weights from ``config.pretrained`` when it names a file)."""
        net = self.architecture()
        if self.config.pretrained:
            from mridomain.engine import load_weights

            load_weights(net, self.config.pretrained)
        return net

    def _device(self):
        from mridomain.engine import resolve_device

        return resolve_device(self.config.device)

    def fit(self, images: np.ndarray, labels: Sequence[int], val_images: np.ndarray, val_labels: Sequence[int],
            out: str | Path | None = None, progress: bool = False) -> "ShiftClassifier":
        """Train on ``images`` (N, *sample_shape) and keep the epoch of best validation AUC.

        ``out``: keep the engine's run folder there (metrics.csv, learning curve, last/), else a
        temporary one is used and removed.
        """
        from mridomain.engine import Engine, load_weights
        from mridomain.engine.classification import BinaryArrayTask

        x = np.asarray(images)
        if tuple(x.shape[1:]) != self.sample_shape:
            raise SchemaMismatchError(f"fit: images of shape {tuple(x.shape[1:])}, the model expects {self.sample_shape}")
        cfg = self.config
        in_plane = (0, 1) if len(self.sample_shape) == 2 else (1, 2)
        task = BinaryArrayTask(self.build, x, labels, zscore_batch, val_images=val_images, val_labels=val_labels,
                               batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay, seed=cfg.seed,
                               flip_axes=in_plane if cfg.augment else ())
        run = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="shift_run_"))
        try:
            # a study resumes run by run and keeps the curves itself: no per-epoch checkpoint, no PNG
            fit = Engine(cfg, run, progress=progress, resumable=False, plots=False).fit(task)
            weights = run / "model.safetensors"
            if not weights.exists():
                raise SchemaMismatchError(f"{run}: no epoch had a finite validation AUC (does the validation "
                                          "set hold both labels?)")
            self.net = load_weights(self.build(), weights).to(self._device())
            self.history = fit.metrics.to_dict("records")
            self.best_epoch = fit.best_epoch
        finally:
            if out is None:
                shutil.rmtree(run, ignore_errors=True)
        return self

    def decision_function(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """One logit per sample (AUC only needs the order, which the logit keeps exactly)."""
        from mridomain.engine.classification import predict_logits

        if self.net is None:
            raise SchemaMismatchError("ShiftClassifier: predict called before fit or load")
        x = np.asarray(images)
        if tuple(x.shape[1:]) != self.sample_shape:
            raise SchemaMismatchError(f"predict: images of shape {tuple(x.shape[1:])}, the model expects "
                                      f"{self.sample_shape}")
        return predict_logits(self.net, x, zscore_batch, self._device(), batch_size).astype(np.float64)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """P(label 1) per sample, shape (N,)."""
        return 1.0 / (1.0 + np.exp(-self.decision_function(images)))

    def predict(self, images: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        return (self.predict_proba(images) >= threshold).astype(np.int64)

    def save(self, folder: str | Path) -> Path:
        """Write ``model.safetensors`` and ``config.json`` (config, sample shape, label schema)."""
        from mridomain.engine import dump_json, save_weights

        if self.net is None:
            raise SchemaMismatchError("ShiftClassifier: nothing to save before fit")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_weights(self.net, folder / "model.safetensors")
        dump_json({"kind": MODEL_KIND, "version": 1, "config": self.config.to_dict(),
                   "sample_shape": list(self.sample_shape), "modality": self.modality, "labels": LABELS,
                   "best_epoch": self.best_epoch}, folder / "config.json")
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | None = None) -> "ShiftClassifier":
        """A model written by :meth:`save` (one-line errors for another kind of folder)."""
        from mridomain.engine import load_weights, read_json

        folder = Path(folder)
        meta_path, weights = folder / "config.json", folder / "model.safetensors"
        if not meta_path.exists() or not weights.exists():
            raise SchemaMismatchError(f"{folder}: not a shift model folder (needs config.json and model.safetensors)")
        meta = read_json(meta_path)
        if not isinstance(meta, dict) or meta.get("kind") != MODEL_KIND:
            raise SchemaMismatchError(f"{meta_path}: not a shift model config (kind {meta.get('kind') if isinstance(meta, dict) else None!r})")
        if int(meta.get("version", 0)) > 1:
            raise SchemaMismatchError(f"{meta_path}: model version {meta.get('version')} is newer than this mridomain reads")
        cfg = ShiftConfig.from_dict(meta.get("config"), where=str(meta_path))
        if device is not None:
            cfg = cfg.updated(device=device)
        shape = meta.get("sample_shape")
        if not isinstance(shape, list) or len(shape) not in (2, 3):
            raise SchemaMismatchError(f"{meta_path}: bad sample_shape {shape!r}")
        obj = cls(cfg, shape, meta.get("modality"))
        obj.best_epoch = int(meta.get("best_epoch", 0))
        obj.net = load_weights(obj.architecture(), weights).to(obj._device())
        return obj
