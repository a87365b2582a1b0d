"""The IAP run folder as one object (:class:`IAPRun`): weights, config, labels, preprocessing,
temperatures, domain model and combinations are read here and nowhere else."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mridomain.data.inputs import read_inputs
from mridomain.engine import resolve_device
from mridomain.errors import EmptyInputError, MridomainError, SchemaMismatchError
from mridomain.iap.cache import preprocess_slices
from mridomain.iap.calibration import read_temperatures
from mridomain.iap.checkpoint import WEIGHTS, load_model, save_run_metadata, save_weights
from mridomain.iap.model import reads_kspace
from mridomain.iap.config import IAPConfig, get_preset
from mridomain.iap.decoding import read_combinations
from mridomain.iap.domain import DomainModel
from mridomain.iap.inference import forward_batches, split_outputs
from mridomain.iap.runtime import ONNX_FILE, ONNX_INT8_FILE, open_network
from mridomain.iap.labels import LabelEncoder
from mridomain.iap.predictor import Predictor, PredictorOutput

__all__ = ["IAPRun", "NotFittedError", "as_predictor"]


class NotFittedError(MridomainError):
    """An IAPRun / IAPPredictor was used before ``fit`` or ``load``."""


class IAPRun:
    """A run folder as one object, loaded in one place: the network, its config, the label schema
    (``encoder``), the preprocessing, the per-head temperatures, the domain model and the
    combinations seen in training; ``forward`` / ``predict`` / ``predict_proba`` answer from it.
    :class:`~mridomain.iap.prediction.IAPPredictor` adds ``fit``.
    """

    def __init__(self, config: IAPConfig | None = None, preset: str = "cpu", device: str | None = None,
                 engine: str = "torch"):
        self.config = config if config is not None else get_preset(preset)
        self.device = resolve_device(device or self.config.device)
        self.model: torch.nn.Module | None = None
        #: the engine asked for (``mridomain.iap.runtime.ENGINES``) and the batch callable that runs
        #: the network; ``engine_note`` says in one line which engine runs and, under auto, why
        self.engine = engine
        self.network: Any = None
        self.engine_note = ""
        self.encoder: LabelEncoder | None = None
        self.preprocess: dict[str, Any] | None = None
        self.run: Path | None = None
        #: per-head temperatures (calibration.json); {} = raw softmax
        self.temperatures: dict[str, float] = {}
        #: the training domain in feature space (domain.json); None = no in-domain verdicts
        self.domain: DomainModel | None = None
        #: combinations of hierarchical IAPs seen in training (combinations.json)
        self.combinations: pd.DataFrame | None = None

    # -- persistence --
    def _load(self, run: Path) -> None:
        self.model, self.config, self.encoder, self.preprocess = load_model(run, device=self.device)
        self.run = Path(run)
        self.network, self.engine_note = open_network(self.model, self.run, self.engine, self.device,
                                                      amp=self.config.amp, channels_last=self.config.channels_last)
        self.temperatures = read_temperatures(run)
        self.domain = DomainModel.load(run)
        self.combinations = read_combinations(run)

    @classmethod
    def load(cls, run: str | Path, device: str | None = None, engine: str = "torch") -> "IAPRun":
        """A predictor from a run folder (JSON + safetensors; nothing is unpickled).

        ``engine``: "torch" (PyTorch), "onnx" / "onnx-int8" (ONNX Runtime on the run's
        model.onnx / model.int8.onnx; a one-line error when it cannot run) or "auto" (ONNX Runtime
        where it can run, else PyTorch; ``engine_note`` says which and why)."""
        p = cls(device=device, engine=engine)
        p._load(Path(run))
        return p

    def save(self, folder: str | Path) -> Path:
        """Write a self-contained run folder (weights, config, labels, preprocessing)."""
        self._check()
        folder = Path(folder)
        save_run_metadata(folder, self.config, self.encoder, self.preprocess)
        save_weights(self.model, folder / WEIGHTS)
        if self.run is not None:
            for extra in ("metrics.csv", "learning_curve.png", "calibration.json", "domain.json",
                          "domain.safetensors", "combinations.json", ONNX_FILE, ONNX_FILE + ".json",
                          ONNX_INT8_FILE, ONNX_INT8_FILE + ".json"):
                if (self.run / extra).exists() and (self.run / extra).resolve() != (folder / extra).resolve():
                    shutil.copy(self.run / extra, folder / extra)
        return folder

    def _check(self) -> None:
        if self.model is None or self.encoder is None:
            raise NotFittedError("IAPPredictor: not fitted yet (call .fit(cache) or IAPPredictor.load(run))")

    # -- inference --
    def _images(self, images: Any, preprocessed: bool) -> np.ndarray:
        self._check()
        if isinstance(images, (str, Path)) or (isinstance(images, (list, tuple)) and images
                                                and isinstance(images[0], (str, Path))):
            paths = [images] if isinstance(images, (str, Path)) else list(images)
            return read_inputs(paths, self.preprocess, progress=False).images
        x = np.asarray(images, dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3:
            raise EmptyInputError("images", f"expected an array (N, H, W), got shape {x.shape}")
        return x if preprocessed else preprocess_slices(x, self.preprocess)

    def forward(self, images: np.ndarray, indices: np.ndarray | None = None, batch_size: int | None = None,
                progress: bool = False, desc: str = "predict") -> PredictorOutput:
        """One pass over preprocessed slices (N, H, W) (or ``images[indices]`` of a memmapped
        cache, read in sorted batches): probabilities, logits, continuous values and features."""
        self._check()
        outputs, features = forward_batches(self.network, images, indices,
                                            batch_size=batch_size or self.config.eval_batch_size,
                                            progress=progress, desc=desc,
                                            kspace_view=(self.preprocess or {}).get("kspace_view"),
                                            with_kspace=reads_kspace(self.model))
        out = split_outputs(outputs, features, self.encoder, self.temperatures)
        for name, values in {**out.probabilities, **out.continuous}.items():
            finite = np.isfinite(np.asarray(values, dtype=np.float64))
            if not finite.all():
                # inputs are normalized, so only the weights can do this (finite but huge ones
                # overflow): an answer of NaN must never pass for a prediction
                where = f"{self.run / WEIGHTS}" if self.run is not None else "the network"
                raise SchemaMismatchError(f"{where}: the {name} output is NaN or infinite for "
                                          f"{int((~finite).any(axis=-1).sum()) if finite.ndim > 1 else int((~finite).sum())}"
                                          f" of {len(finite)} slices (damaged weights?); restore or retrain the run")
        if self.domain is not None and len(features):
            out.domain_score = self.domain.score(features, out.logits)
            out.domain_threshold = self.domain.threshold
        return out

    def predict_proba(self, images: Any, preprocessed: bool = False) -> dict[str, np.ndarray]:
        """{categorical iap: probabilities (N, C_k) in ``classes`` order; continuous iap: value (N,) in its unit}."""
        out = self.forward(self._images(images, preprocessed))
        return {**out.probabilities, **out.continuous}

    def predict(self, images: Any, top_k: int = 1, preprocessed: bool = False) -> pd.DataFrame:
        """One row per slice: predicted value (+ probability, + top-k) of every IAP; TR/TE in ms."""
        return self.forward(self._images(images, preprocessed)).table(top_k)

    @property
    def classes(self) -> dict[str, list[str]]:
        """Class names per categorical IAP, in the network's output order."""
        self._check()
        return {h.name: list(h.classes) for h in self.encoder.categorical}

    def __repr__(self) -> str:
        state = f"run={self.run}" if self.model is not None else "not fitted"
        return f"{type(self).__name__}(backbone={self.config.backbone}, {state})"


def as_predictor(source: Any, engine: str = "torch") -> Predictor:
    """A run folder is loaded with :meth:`IAPRun.load` on ``engine``; a
    :class:`~mridomain.iap.predictor.Predictor` passes through (its engine is its own)."""
    if isinstance(source, (str, Path)):
        return IAPRun.load(Path(source), engine=engine)
    if isinstance(source, Predictor):
        return source
    raise SchemaMismatchError(f"{type(source).__name__} is not an IAP predictor (it needs classes, "
                              "preprocess and forward(images) -> PredictorOutput)")
