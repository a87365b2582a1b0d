"""One model of the study (M_j) as an estimator: ``fit`` / ``predict_proba`` / ``save`` / ``load``.

Training is :class:`mridomain.engine.classification.BinaryArrayTask` on the shared engine, with
the best epoch chosen on the validation AUC (the paper's "model selection on Val_j"). Each image
is z-scored on its own before it reaches the network (§3.2), so a model sees the same kind of input
whatever the scanner's intensity scale. A saved model folder holds ``model.safetensors`` and
``config.json`` (the :class:`ShiftConfig`, the sample shape and the label schema): it loads without
the data it was trained on, and a folder of another kind is refused with a one-line error.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mridomain.engine.classification import ArrayClassifier
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


class ShiftClassifier(ArrayClassifier):
    """A binary classifier of 2-D images or 3-D crops for the domain-shift study (the shared
    :class:`mridomain.engine.classification.ArrayClassifier`, best epoch by validation AUC).

    Args:
        config: the :class:`ShiftConfig` (architecture, optimizer, epochs, seed, device).
        sample_shape: shape of one sample, (H, W) or (D, H, W).
        modality: MRI / CT / X-ray (``model="auto"`` picks DenseNet-121 for X-ray).
    """

    kind = MODEL_KIND
    config_class = ShiftConfig
    # a study resumes run by run and keeps the curves itself: no per-epoch checkpoint, no PNG
    engine_options = {"resumable": False, "plots": False}

    def __init__(self, config: ShiftConfig, sample_shape: Sequence[int], modality: str | None = None):
        super().__init__(config)
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.modality = modality

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

    def prepare(self, batch: np.ndarray):
        """Each image z-scored on its own (the paper's §3.2 normalisation)."""
        return zscore_batch(batch)

    def flip_axes(self) -> tuple[int, ...]:
        """The sample axes the cpu preset's augmentation may flip: in-plane only."""
        return (0, 1) if len(self.sample_shape) == 2 else (1, 2)      # in-plane flips only

    def check(self, images: np.ndarray, where: str) -> None:
        """A one-line :class:`SchemaMismatchError` naming ``where`` when the images' sample shape is
        not the one the model was built for."""
        if tuple(images.shape[1:]) != self.sample_shape:
            raise SchemaMismatchError(f"{where}: images of shape {tuple(images.shape[1:])}, the model expects "
                                      f"{self.sample_shape}")

    def metadata(self) -> dict[str, Any]:
        """What :meth:`save` writes beside the weights to rebuild the model (sample shape, modality,
        label names)."""
        return {"sample_shape": list(self.sample_shape), "modality": self.modality, "labels": LABELS}

    @classmethod
    def load(cls, folder, device: str | None = None, model: str | None = None) -> "ShiftClassifier":
        """A model written by :meth:`save`. A folder whose config names a model outside the
        registry is refused before anything is imported, unless ``model`` repeats that name (the
        user's own ``package.module:callable``, named on this invocation)."""
        from pathlib import Path

        from mridomain.files import read_json
        from mridomain.shift.models import check_model_source

        meta_path = Path(folder) / "config.json"
        if meta_path.exists():
            meta = read_json(meta_path)
            config = meta.get("config") if isinstance(meta, dict) else None
            named = config.get("model") if isinstance(config, dict) else None
            if named is not None and not isinstance(named, str):
                raise SchemaMismatchError(f"{meta_path}: model {named!r} is not a name")
            check_model_source(named, model, str(meta_path))
        return super().load(folder, device)

    @classmethod
    def from_metadata(cls, config: ShiftConfig, meta: dict[str, Any], where: str) -> "ShiftClassifier":
        """The classifier :meth:`metadata` describes (one-line error naming ``where`` for a bad
        sample shape)."""
        shape = meta.get("sample_shape")
        if not isinstance(shape, list) or len(shape) not in (2, 3):
            raise SchemaMismatchError(f"{where}: bad sample_shape {shape!r}")
        return cls(config, shape, meta.get("modality"))
