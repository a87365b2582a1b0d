"""Tumor-vs-normal slice classifier: the downstream model of the paper's routing experiment (§5.2).

Positives are slices inside the tumor box, negatives slices >= 5 slices away (the slice cache's
``tumor`` column). The ``paper`` preset is MONAI's ResNet-18 with one input channel at 224 px
and the IAP model's training settings (Adam lr 1e-3, weight decay 1e-4, best-validation
checkpoint); the ``cpu`` preset is a four-block CNN at 64 px so the experiment runs on a laptop.
Weights are saved as safetensors next to a JSON config.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mridomain.errors import EmptyInputError, InvalidArgumentError, SchemaMismatchError

__all__ = ["TumorClassifierConfig", "TumorClassifier", "PRESETS"]


@dataclass
class TumorClassifierConfig:
    """Architecture and training settings (saved as config.json)."""

    arch: str = "small_cnn"        # small_cnn | resnet18
    size: int = 64                 # input height = width in pixels
    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    width: int = 16                # channels of the first small_cnn block
    mean: float = 0.0              # intensity standardization fitted on the training images
    std: float = 1.0
    augment: bool = True           # random left-right / up-down flips (tumors occur in both breasts)


PRESETS: dict[str, dict[str, Any]] = {
    # Paper §5.2: ResNet-18 "using the same training settings as before" (Sec. 4: Adam 1e-3,
    # wd 1e-4, batch 512, 100 epochs, 224x224).
    "paper": dict(arch="resnet18", size=224, epochs=100, batch_size=512),
    "cpu": dict(arch="small_cnn", size=64, epochs=15, batch_size=64),
}


def _build_net(cfg: TumorClassifierConfig):
    import torch.nn as nn

    if cfg.arch == "resnet18":
        from monai.networks.nets import resnet18

        return resnet18(spatial_dims=2, n_input_channels=1, num_classes=1)
    if cfg.arch == "small_cnn":
        w = cfg.width
        chans = [1, w, 2 * w, 4 * w, 4 * w]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(chans[-1], 1))
    raise InvalidArgumentError(f"tumor classifier arch {cfg.arch!r}: choose small_cnn or resnet18")


class TumorClassifier:
    """Binary slice classifier with ``fit`` / ``predict_proba`` / ``predict`` / ``save`` / ``load``."""

    def __init__(self, config: TumorClassifierConfig | None = None, preset: str | None = None,
                 device: str | None = None, **overrides: Any):
        if config is None:
            if preset and preset not in PRESETS:
                raise InvalidArgumentError(f"preset {preset!r}: choose {' or '.join(PRESETS)}")
            base = dict(PRESETS[preset]) if preset else {}
            base.update(overrides)
            config = TumorClassifierConfig(**base)
        self.config = config
        self.device = device
        self.net = None
        self.history: list[dict[str, float]] = []

    # ---------------------------------------------------------------------------- helpers
    def _device(self):
        from mridomain.iap.inference import resolve_device

        return resolve_device(self.device or None)

    def _prep(self, images: np.ndarray, idx: np.ndarray | None = None):
        import torch
        import torch.nn.functional as F

        arr = np.asarray(images[idx] if idx is not None else images, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[None]
        t = torch.from_numpy((arr - self.config.mean) / self.config.std)[:, None]
        if t.shape[-2:] != (self.config.size, self.config.size):
            t = F.interpolate(t, size=(self.config.size, self.config.size), mode="bilinear",
                              align_corners=False)
        return t

    # ------------------------------------------------------------------------------ train
    def fit(self, images: np.ndarray, labels: np.ndarray, val_images: np.ndarray | None = None,
            val_labels: np.ndarray | None = None, progress: bool = True) -> "TumorClassifier":
        """Train on (N,H,W) images with 0/1 labels; keeps the best-validation-accuracy weights
        when a validation set is given (the paper's checkpoint rule), else the last epoch's."""
        import torch
        from tqdm import tqdm

        labels = np.asarray(labels, dtype=np.float32)
        if len(images) == 0 or len(images) != len(labels):
            raise EmptyInputError(Path("<training images>"),
                                  f"need images and labels of equal, non-zero length (got {len(images)} and {len(labels)})")
        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        # Standardize with statistics of (a sample of) the training pixels so one model sees the
        # same intensity scale at train and test time, as the IAP model does.
        sample = np.asarray(images[rng.choice(len(images), min(len(images), 256), replace=False)], np.float32)
        cfg.mean, cfg.std = float(sample.mean()), float(sample.std() or 1.0)
        dev = self._device()
        self.net = _build_net(cfg).to(dev)
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        best_acc, best_state = -1.0, None
        n = len(images)
        bar = tqdm(range(cfg.epochs), desc=f"tumor classifier ({cfg.arch})", disable=not progress)
        for epoch in bar:
            self.net.train()
            order = rng.permutation(n)
            total = 0.0
            for start in range(0, n, cfg.batch_size):
                idx = np.sort(order[start:start + cfg.batch_size])
                if len(idx) < 2:  # BatchNorm needs more than one sample
                    continue
                x = self._prep(images, idx).to(dev)
                if cfg.augment:
                    if rng.random() < 0.5:
                        x = torch.flip(x, dims=[-1])
                    if rng.random() < 0.5:
                        x = torch.flip(x, dims=[-2])
                y = torch.from_numpy(labels[idx]).to(dev)
                opt.zero_grad()
                loss = loss_fn(self.net(x).squeeze(1), y)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            rec = {"epoch": epoch + 1, "train_loss": total / n}
            if val_images is not None and val_labels is not None and len(val_images):
                acc = float((self.predict(val_images) == np.asarray(val_labels)).mean())
                rec["val_accuracy"] = acc
                if acc > best_acc:
                    best_acc = acc
                    best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            self.history.append(rec)
            bar.set_postfix({k: round(v, 4) for k, v in rec.items() if k != "epoch"})
        if best_state is not None:
            self.net.load_state_dict(best_state)
        return self

    # ---------------------------------------------------------------------------- predict
    def predict_proba(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Tumor probability per image, shape (N,)."""
        import torch

        if self.net is None:
            raise SchemaMismatchError("TumorClassifier: predict called before fit or load")
        dev = self._device()
        self.net.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                idx = np.arange(start, min(start + batch_size, len(images)))
                out.append(torch.sigmoid(self.net(self._prep(images, idx).to(dev)).squeeze(1)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def predict(self, images: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """0/1 tumor label per image."""
        return (self.predict_proba(images) >= threshold).astype(np.int64)

    # ------------------------------------------------------------------------------- save
    def save(self, folder: str | Path) -> Path:
        """Write ``model.safetensors`` and ``config.json`` (plus ``history.json``)."""
        from safetensors.torch import save_file

        if self.net is None:
            raise SchemaMismatchError("TumorClassifier: nothing to save before fit")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps({"kind": "tumor_classifier", **asdict(self.config)}, indent=1))
        (folder / "history.json").write_text(json.dumps(self.history, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | None = None) -> "TumorClassifier":
        """Load a classifier written by :meth:`save`."""
        from safetensors.torch import load_file

        folder = Path(folder)
        cfg_path, w_path = folder / "config.json", folder / "model.safetensors"
        if not cfg_path.exists() or not w_path.exists():
            raise SchemaMismatchError(f"{folder}: not a tumor classifier folder (needs config.json and model.safetensors)")
        raw = json.loads(cfg_path.read_text())
        raw.pop("kind", None)
        try:
            cfg = TumorClassifierConfig(**raw)
        except TypeError as err:
            raise SchemaMismatchError(f"{cfg_path}: unexpected config ({err})") from None
        obj = cls(cfg, device=device)
        obj.net = _build_net(cfg)
        try:
            obj.net.load_state_dict(load_file(str(w_path)))
        except RuntimeError as err:
            raise SchemaMismatchError(f"{w_path}: weights do not fit the config ({str(err).splitlines()[0]})") from None
        obj.net.to(obj._device())
        return obj
