"""Checkpoints that load without executing code and are written all-or-nothing.

Tensors (weights, optimizer moments, RNG states) are safetensors; everything else (optimizer
hyper-parameters, epoch counters, configs, schemas) is JSON. Nothing is ever unpickled, so a
checkpoint from an untrusted source cannot run code when it is loaded.

Every file and checkpoint folder is written all-or-nothing (:mod:`mridomain.files`): a process
killed at any moment leaves either the previous checkpoint or the new one, never a mix of both.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mridomain.errors import EmptyInputError, SchemaMismatchError
from mridomain.files import (atomic_write, dump_json, read_json, resolve_folder, write_folder_atomic,  # noqa: F401
                             write_json_atomic)

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "weights_file", "dump_json", "save_weights", "load_weights",
           "read_tensors", "save_optimizer", "load_optimizer", "save_rng_state", "load_rng_state",
           "write_json_atomic", "read_json", "write_folder_atomic", "resolve_folder"]

CHECKPOINT_FORMAT = "mridomain-checkpoint"
CHECKPOINT_VERSION = 1


def weights_file(name: str) -> str:
    """File name of a module's weights: ``model`` -> ``model.safetensors``."""
    return f"{name}.safetensors"


# ---- tensors --------------------------------------------------------------------------------------

def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; missing or damaged files are one-line errors."""
    path = Path(path)
    if not path.exists():
        raise EmptyInputError(path, "checkpoint file missing")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        msg = " ".join(str(err).split())[:200]
        raise SchemaMismatchError(f"{path}: damaged safetensors file ({msg})") from None
    # a NaN or infinity in any stored array is damage (or a diverged fit): refused at load, never
    # carried into scores that are silently NaN
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise SchemaMismatchError(f"{path}: tensor {name} holds NaN or infinite values "
                                      "(damaged or diverged checkpoint)")
    return tensors


def _state_to_cpu(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def save_weights(module: torch.nn.Module, path: str | Path) -> Path:
    """A module's state dict as safetensors, written all-or-nothing."""
    state = _state_to_cpu(module)
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    return Path(path)


def load_weights(module: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Load safetensors weights, refusing tensors whose names or shapes do not fit the module and
    weights that hold NaN or infinity (a damaged or diverged checkpoint)."""
    path = Path(path)
    state = read_tensors(path)
    own = module.state_dict()
    bad = [k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape)]
    extra = [k for k in state if k not in own]
    if bad or extra:
        first = (bad + extra)[0]
        got = tuple(state[first].shape) if first in state else "absent"
        want = tuple(own[first].shape) if first in own else "absent"
        raise SchemaMismatchError(f"{path}: weights do not fit the model built from the run's config "
                                  f"({len(bad) + len(extra)} tensors differ, e.g. {first}: {got} vs {want})")
    module.load_state_dict(state)
    return module


def save_optimizer(optimizer: torch.optim.Optimizer, folder: str | Path, name: str = "optimizer") -> None:
    """Optimizer state as ``<name>.safetensors`` (tensors) + ``<name>.json`` (groups, scalars)."""
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
    atomic_write(folder / f"{name}.safetensors", lambda tmp: save_file(tensors, str(tmp)))
    write_json_atomic(folder / f"{name}.json", {"param_groups": sd["param_groups"], "scalars": scalars})


def load_optimizer(optimizer: torch.optim.Optimizer, folder: str | Path, name: str = "optimizer") -> None:
    """Restore an optimizer's state saved by :func:`save_optimizer` (resume); a one-line error when it does not fit."""
    folder = Path(folder)
    tensors = read_tensors(folder / f"{name}.safetensors")
    extra = read_json(folder / f"{name}.json")
    state: dict[int, dict[str, Any]] = {}
    try:
        for key, val in tensors.items():
            idx, field = key.split(".", 1)
            state.setdefault(int(idx), {})[field] = val
        for idx, d in extra["scalars"].items():
            state.setdefault(int(idx), {}).update(d)
        groups = extra["param_groups"]
        for g in groups:
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (KeyError, ValueError, TypeError) as err:
        raise SchemaMismatchError(f"{folder / name}: optimizer state does not fit "
                                  f"({type(err).__name__}: {err})") from None


def save_rng_state(path: str | Path) -> None:
    """torch's CPU (and CUDA) generator states, so dropout and augmentation resume exactly."""
    tensors = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


def load_rng_state(path: str | Path) -> None:
    """Restore torch's CPU (and, on the same GPU count, CUDA) generator states saved by :func:`save_rng_state`."""
    tensors = read_tensors(path)
    torch.set_rng_state(tensors["cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def finite(value: float) -> float | None:
    """JSON has no infinity: store None for an unset best metric."""
    return value if math.isfinite(value) else None
