"""Self-describing run folders that load without executing code.

A run folder holds::

    model.safetensors     weights (and input standardization buffers) of the best-validation model
    config.json           IAPConfig
    labels.json           IAP schema, vocabularies, class counts, continuous standardization
    preprocess.json       the cache's intensity normalization and slice size (predict repeats them)
    metrics.csv           one row per epoch
    learning_curve.png
    last/model.safetensors, last/optimizer.safetensors, last/state.json   for ``resume``

Weights and the optimizer's tensors are safetensors, everything else JSON: nothing is unpickled,
so a checkpoint from an untrusted source cannot run code when loaded.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mridomain.errors import EmptyInputError, SchemaMismatchError
from mridomain.iap.config import IAPConfig
from mridomain.iap.labels import LabelEncoder
from mridomain.iap.model import IAPNet, build_model

WEIGHTS = "model.safetensors"


def _state_to_cpu(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Weights only, as safetensors."""
    save_file(_state_to_cpu(model), str(path), metadata={"format": "pt"})


def save_run_metadata(run: str | Path, config: IAPConfig, encoder: LabelEncoder,
                      preprocess: dict[str, Any]) -> None:
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    config.to_json(run / "config.json")
    encoder.to_json(run / "labels.json")
    (run / "preprocess.json").write_text(json.dumps(preprocess, indent=2))


def save_optimizer(optimizer: torch.optim.Optimizer, folder: str | Path) -> None:
    """Optimizer state as safetensors (tensors) + JSON (param groups, scalars): no pickle."""
    folder = Path(folder)
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"{idx}.{key}"] = val.detach().to("cpu").contiguous().clone()
            else:
                scalars.setdefault(str(idx), {})[key] = val
    save_file(tensors, str(folder / "optimizer.safetensors"))
    (folder / "optimizer.json").write_text(json.dumps({"param_groups": sd["param_groups"],
                                                        "scalars": scalars}, indent=2))


def load_optimizer(optimizer: torch.optim.Optimizer, folder: str | Path) -> None:
    folder = Path(folder)
    tensors = load_file(str(folder / "optimizer.safetensors"))
    extra = json.loads((folder / "optimizer.json").read_text())
    state: dict[int, dict[str, Any]] = {}
    for name, val in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = val
    for idx, d in extra["scalars"].items():
        state.setdefault(int(idx), {}).update(d)
    groups = extra["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def read_run(run: str | Path) -> tuple[IAPConfig, LabelEncoder, dict[str, Any]]:
    """config, label encoder and preprocessing of a run folder (JSON only)."""
    run = Path(run)
    for name in ("config.json", "labels.json", "preprocess.json"):
        if not (run / name).exists():
            raise EmptyInputError(run, f"not a run folder ({name} missing)")
    config = IAPConfig.from_json(run / "config.json")
    encoder = LabelEncoder.from_json(run / "labels.json")
    preprocess = json.loads((run / "preprocess.json").read_text())
    return config, encoder, preprocess


def load_weights(model: IAPNet, path: str | Path) -> IAPNet:
    """Load safetensors weights, refusing tensors whose names or shapes do not fit the model."""
    path = Path(path)
    if not path.exists():
        raise EmptyInputError(path, "checkpoint weights missing")
    state = load_file(str(path))
    own = model.state_dict()
    bad = [k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape)]
    extra = [k for k in state if k not in own]
    if bad or extra:
        first = (bad + extra)[0]
        got = tuple(state[first].shape) if first in state else "absent"
        want = tuple(own[first].shape) if first in own else "absent"
        raise SchemaMismatchError(f"{path}: weights do not fit the model built from labels.json/config.json "
                                  f"({len(bad) + len(extra)} tensors differ, e.g. {first}: {got} vs {want})")
    model.load_state_dict(state)
    return model


def load_model(run: str | Path, which: str = "best", device: str | torch.device = "cpu"
               ) -> tuple[IAPNet, IAPConfig, LabelEncoder, dict[str, Any]]:
    """Rebuild the network of a run folder from JSON and load its weights ("best" or "last")."""
    run = Path(run)
    config, encoder, preprocess = read_run(run)
    model = build_model(config, encoder)
    load_weights(model, run / WEIGHTS if which == "best" else run / "last" / WEIGHTS)
    model.to(device).eval()
    return model, config, encoder, preprocess
