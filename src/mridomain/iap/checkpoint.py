"""Self-describing run folders that load without executing code.

A run folder holds::

    model.safetensors     weights (and input standardization buffers) of the best-validation model
    config.json           IAPConfig
    labels.json           IAP schema, vocabularies, class counts, continuous standardization
    preprocess.json       the cache's intensity normalization and slice size (predict repeats them)
    metrics.csv           one row per epoch
    learning_curve.png
    last/                 the engine's resumable checkpoint (mridomain.engine)

Weights and the optimizer's tensors are safetensors, everything else JSON: nothing is unpickled,
so a checkpoint from an untrusted source cannot run code when loaded. The tensor and JSON I/O is
:mod:`mridomain.engine.checkpoint`'s, shared by every model of the package.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mridomain.engine.checkpoint import load_weights, read_json, save_weights, weights_file, write_json_atomic
from mridomain.errors import EmptyInputError, SchemaMismatchError
from mridomain.iap.config import IAPConfig
from mridomain.iap.labels import LabelEncoder
from mridomain.iap.model import IAPNet, build_model

WEIGHTS = weights_file("model")

__all__ = ["WEIGHTS", "save_run_metadata", "read_run", "load_model", "save_weights", "load_weights"]


def save_run_metadata(run: str | Path, config: IAPConfig, encoder: LabelEncoder,
                      preprocess: dict[str, Any]) -> None:
    """Write the run's config, label schema and preprocessing next to its checkpoint."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    config.to_json(run / "config.json")
    encoder.to_json(run / "labels.json")
    write_json_atomic(run / "preprocess.json", preprocess)


def read_run(run: str | Path) -> tuple[IAPConfig, LabelEncoder, dict[str, Any]]:
    """config, label encoder and preprocessing of a run folder (JSON only)."""
    run = Path(run)
    for name in ("config.json", "labels.json", "preprocess.json"):
        if not (run / name).exists():
            raise EmptyInputError(run, f"not a run folder ({name} missing)")
    config = IAPConfig.from_json(run / "config.json")
    encoder = LabelEncoder.from_json(run / "labels.json")
    preprocess = check_preprocess(read_json(run / "preprocess.json"), run / "preprocess.json")
    return config, encoder, preprocess


def check_preprocess(preprocess: Any, where: str | Path) -> dict[str, Any]:
    """A run's preprocess.json, validated (one-line :class:`SchemaMismatchError` naming the file):
    ``size`` one or two positive whole numbers, ``normalization`` a method the cache knows."""
    from mridomain.data.cache import normalization_spec
    from mridomain.errors import MridomainError

    if not isinstance(preprocess, dict):
        raise SchemaMismatchError(f"{where}: expected a mapping of size and normalization, got "
                                  f"{type(preprocess).__name__}")
    size = preprocess.get("size")
    sizes = size if isinstance(size, list) else [size]
    if size is not None and (not 1 <= len(sizes) <= 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65536 for v in sizes)):
        raise SchemaMismatchError(f"{where}: size {size!r} is not one or two positive whole numbers")
    norm = preprocess.get("normalization")
    if norm is not None:
        if not isinstance(norm, (str, dict)):
            raise SchemaMismatchError(f"{where}: normalization {norm!r} is neither a name nor a mapping")
        try:
            normalization_spec(norm)
        except (MridomainError, TypeError, ValueError) as err:
            raise SchemaMismatchError(f"{where}: {err}") from None
    view = preprocess.get("kspace_view")
    if view is not None:
        from mridomain.data.kspace import kspace_view_spec

        height, width = (sizes[0], sizes[-1]) if size is not None else (224, 224)
        try:
            if not isinstance(view, dict):
                raise TypeError(f"kspace_view {view!r} is not a mapping")
            if kspace_view_spec(view, width, height)["image_rows"] != height:
                raise ValueError(f"kspace_view image_rows {view.get('image_rows')} != size {size}")
        except (MridomainError, TypeError, ValueError, KeyError) as err:
            raise SchemaMismatchError(f"{where}: {err}") from None
    return preprocess


def load_model(run: str | Path, which: str = "best", device: str | torch.device = "cpu"
               ) -> tuple[IAPNet, IAPConfig, LabelEncoder, dict[str, Any]]:
    """Rebuild the network of a run folder from JSON and load its weights ("best" or "last")."""
    run = Path(run)
    config, encoder, preprocess = read_run(run)
    model = build_model(config, encoder, preprocess=preprocess)
    load_weights(model, run / WEIGHTS if which == "best" else run / "last" / WEIGHTS)
    model.to(device).eval()
    return model, config, encoder, preprocess
