"""Tumor-vs-normal slice classifier: the downstream model of the paper's routing experiment (§5.2).

Positives are slices inside the tumor box, negatives slices >= 5 slices away (the slice cache's
``tumor`` column). The ``paper`` preset is MONAI's ResNet-18 with one input channel at 224 px
and the IAP model's training settings (Adam lr 1e-3, weight decay 1e-4, best-validation
checkpoint); the ``cpu`` preset is a four-block CNN at 64 px so the experiment runs on a laptop.
Weights are saved as safetensors next to a JSON config.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from mridomain.engine.settings import TrainSettings, validated
from mridomain.errors import InvalidArgumentError, SchemaMismatchError

__all__ = ["TumorClassifierConfig", "TumorClassifier", "PRESETS"]


class TumorClassifierConfig(TrainSettings):
    """Architecture and training settings (saved as config.json)."""

    arch: Literal["small_cnn", "resnet18"] = "small_cnn"
    size: int = Field(64, ge=8)    # input height = width in pixels
    epochs: int = Field(15, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    width: int = Field(16, ge=1)   # channels of the first small_cnn block
    mean: float = 0.0              # intensity standardization fitted on the training images
    std: float = Field(1.0, gt=0)
    augment: bool = True           # random left-right / up-down flips (tumors occur in both breasts)
    amp: bool = False
    channels_last: bool = False
    monitor: str = "val_accuracy"  # the paper keeps the best-validation-accuracy weights
    monitor_mode: Literal["min", "max"] = "max"


PRESETS: dict[str, dict[str, Any]] = {
    # Paper §5.2: ResNet-18 "using the same training settings as before" (Sec. 4: Adam 1e-3,
    # wd 1e-4, batch 512, 100 epochs, 224x224).
    "paper": dict(arch="resnet18", size=224, epochs=100, batch_size=512, amp=True, channels_last=True),
    "cpu": dict(arch="small_cnn", size=64, epochs=15, batch_size=64),
}


def _build_net(cfg: TumorClassifierConfig):
    import torch.nn as nn

    if cfg.arch == "resnet18":
        from monai.networks.nets import resnet18

        return resnet18(spatial_dims=2, n_input_channels=1, num_classes=1)
    w = cfg.width
    chans = [1, w, 2 * w, 4 * w, 4 * w]
    layers: list[nn.Module] = []
    for cin, cout in zip(chans[:-1], chans[1:]):
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                   nn.ReLU(inplace=True), nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(chans[-1], 1))


class TumorClassifier:
    """Binary slice classifier with ``fit`` / ``predict_proba`` / ``predict`` / ``save`` / ``load``.

    Training is :class:`mridomain.engine.classification.BinaryArrayTask` on the shared engine.
    """

    def __init__(self, config: TumorClassifierConfig | None = None, preset: str | None = None,
                 device: str | None = None, **overrides: Any):
        if config is None:
            if preset and preset not in PRESETS:
                raise InvalidArgumentError(f"preset {preset!r}: choose {' or '.join(PRESETS)}")
            base = dict(PRESETS[preset]) if preset else {}
            base.update(overrides)
            if device is not None:
                base["device"] = device
            config = validated(TumorClassifierConfig, base, "TumorClassifierConfig")
        self.config = config
        self.device = device if device is not None else config.device
        self.net = None
        self.history: list[dict[str, float]] = []

    # ---------------------------------------------------------------------------- helpers
    def _device(self):
        from mridomain.engine import resolve_device

        return resolve_device(self.device or None)

    def _prepare(self, batch: np.ndarray):
        """(N, H, W) raw slices -> standardized (N, 1, size, size) tensor."""
        import torch
        import torch.nn.functional as F

        arr = np.asarray(batch, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[None]
        t = torch.from_numpy((arr - self.config.mean) / self.config.std)[:, None]
        if t.shape[-2:] != (self.config.size, self.config.size):
            t = F.interpolate(t, size=(self.config.size, self.config.size), mode="bilinear",
                              align_corners=False)
        return t

    # ------------------------------------------------------------------------------ train
    def fit(self, images: np.ndarray, labels: np.ndarray, val_images: np.ndarray | None = None,
            val_labels: np.ndarray | None = None, progress: bool = True,
            out: str | Path | None = None) -> "TumorClassifier":
        """Train on (N,H,W) images with 0/1 labels through the shared engine; keeps the
        best-validation-accuracy weights (the paper's checkpoint rule). Without a validation set
        the best epoch is chosen on the training images. ``out``: keep the engine's run folder
        there (metrics.csv, learning curve, resumable checkpoint); default a temporary one."""
        from mridomain.engine import Engine
        from mridomain.engine.classification import BinaryArrayTask

        cfg = self.config
        n = len(images)
        if n:
            # Standardize with statistics of (a sample of) the training pixels so one model sees
            # the same intensity scale at train and test time, as the IAP model does.
            rng = np.random.default_rng(cfg.seed)
            sample = np.asarray(images[rng.choice(n, min(n, 256), replace=False)], np.float32)
            cfg.mean, cfg.std = float(sample.mean()), float(sample.std() or 1.0)
        task = BinaryArrayTask(lambda: _build_net(cfg), images, labels, self._prepare, val_images=val_images,
                               val_labels=val_labels, batch_size=cfg.batch_size, lr=cfg.lr,
                               weight_decay=cfg.weight_decay, seed=cfg.seed,
                               flip_axes=(0, 1) if cfg.augment else ())
        run = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="tumor_clf_"))
        try:
            fit = Engine(cfg, run, progress=progress).fit(task)
            from mridomain.engine import load_weights

            self.net = load_weights(_build_net(cfg), run / "model.safetensors").to(self._device())
            self.history = fit.metrics.to_dict("records")
        finally:
            if out is None:
                shutil.rmtree(run, ignore_errors=True)
        return self

    # ---------------------------------------------------------------------------- predict
    def predict_proba(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Tumor probability per image, shape (N,)."""
        from mridomain.engine.classification import predict_logits

        if self.net is None:
            raise SchemaMismatchError("TumorClassifier: predict called before fit or load")
        logits = predict_logits(self.net, images, self._prepare, self._device(), batch_size)
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)

    def predict(self, images: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """0/1 tumor label per image."""
        return (self.predict_proba(images) >= threshold).astype(np.int64)

    # ------------------------------------------------------------------------------- save
    def save(self, folder: str | Path) -> Path:
        """Write ``model.safetensors`` and ``config.json`` (plus ``history.json``)."""
        from mridomain.engine import dump_json, save_weights

        if self.net is None:
            raise SchemaMismatchError("TumorClassifier: nothing to save before fit")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_weights(self.net, folder / "model.safetensors")
        dump_json({"kind": "tumor_classifier", **self.config.to_dict()}, folder / "config.json")
        dump_json(self.history, folder / "history.json")
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | None = None) -> "TumorClassifier":
        """Load a classifier written by :meth:`save`."""
        from mridomain.engine import load_weights, read_json

        folder = Path(folder)
        cfg_path, w_path = folder / "config.json", folder / "model.safetensors"
        if not cfg_path.exists() or not w_path.exists():
            raise SchemaMismatchError(f"{folder}: not a tumor classifier folder (needs config.json and model.safetensors)")
        raw = read_json(cfg_path)
        if not isinstance(raw, dict) or raw.pop("kind", None) != "tumor_classifier":
            raise SchemaMismatchError(f"{cfg_path}: not a tumor classifier config")
        cfg = TumorClassifierConfig.from_dict(raw, where=str(cfg_path))
        obj = cls(cfg, device=device)
        obj.net = load_weights(_build_net(cfg), w_path).to(obj._device())
        return obj
