"""Checkpoints that load without executing code and are written all-or-nothing.

Tensors (weights, optimizer moments, RNG states) are safetensors; everything else (optimizer
hyper-parameters, epoch counters, configs, schemas) is JSON. Nothing is ever unpickled, so a
checkpoint from an untrusted source cannot run code when it is loaded.

Every file is written to a temporary name in its folder, flushed to disk and renamed over the
old one (``os.replace`` is atomic on POSIX), and a checkpoint *folder* is written to a temporary
folder and swapped in by :func:`write_folder_atomic`: a process killed at any moment leaves either
the previous checkpoint or the new one, never a mix of both.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mridomain.errors import EmptyInputError, SchemaMismatchError

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "weights_file", "dump_json", "save_weights", "load_weights",
           "read_tensors", "save_optimizer", "load_optimizer", "save_rng_state", "load_rng_state",
           "write_json_atomic", "read_json", "write_folder_atomic", "resolve_folder"]

CHECKPOINT_FORMAT = "mridomain-checkpoint"
CHECKPOINT_VERSION = 1


def weights_file(name: str) -> str:
    """File name of a module's weights: ``model`` -> ``model.safetensors``."""
    return f"{name}.safetensors"


# ---- atomic files -------------------------------------------------------------------------------

def _atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dump_json(data: Any, path: str | Path | None = None) -> str:
    """Indented JSON text of ``data`` (numpy scalars as floats); also written all-or-nothing to
    ``path`` when given. The one JSON writer of run folders (configs, schemas, reports, states)."""
    text = json.dumps(data, indent=2, default=float)
    if path is not None:
        _atomic_write(path, lambda tmp: tmp.write_text(text))
    return text


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """:func:`dump_json` to ``path``; returns the path."""
    dump_json(data, path)
    return Path(path)


def read_json(path: str | Path) -> Any:
    """Parsed JSON; a missing, empty or malformed file is a one-line error naming it."""
    path = Path(path)
    if not path.exists():
        raise EmptyInputError(path, "file missing")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise SchemaMismatchError(f"{path}: unreadable ({type(err).__name__}: {err})") from None
    if not text.strip():
        raise SchemaMismatchError(f"{path}: empty file (a write was interrupted?)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise SchemaMismatchError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None


def write_folder_atomic(folder: str | Path, fill: Callable[[Path], None]) -> Path:
    """Write a folder all-or-nothing: ``fill(tmp)`` writes into a fresh temporary folder beside it,
    which then replaces ``folder``.

    The old folder is first renamed to ``<folder>.old`` and removed only after the new one is in
    place; :func:`resolve_folder` falls back to ``.old`` when a kill came between the two renames.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    old = folder.with_name(folder.name + ".old")
    try:
        fill(tmp)
        if old.exists() and folder.exists():
            shutil.rmtree(old)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return folder


def resolve_folder(folder: str | Path) -> Path | None:
    """The complete checkpoint folder written by :func:`write_folder_atomic`: ``folder``, else
    ``<folder>.old`` (a kill between the swap's two renames), else None."""
    folder = Path(folder)
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if (candidate / "state.json").exists():
            return candidate
    return None


# ---- tensors --------------------------------------------------------------------------------------

def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; missing or damaged files are one-line errors."""
    path = Path(path)
    if not path.exists():
        raise EmptyInputError(path, "checkpoint file missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        msg = " ".join(str(err).split())[:200]
        raise SchemaMismatchError(f"{path}: damaged safetensors file ({msg})") from None


def _state_to_cpu(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def save_weights(module: torch.nn.Module, path: str | Path) -> Path:
    """A module's state dict as safetensors, written all-or-nothing."""
    state = _state_to_cpu(module)
    _atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
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
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise SchemaMismatchError(f"{path}: tensor {name} holds NaN or infinite values "
                                      "(damaged or diverged checkpoint)")
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
    _atomic_write(folder / f"{name}.safetensors", lambda tmp: save_file(tensors, str(tmp)))
    write_json_atomic(folder / f"{name}.json", {"param_groups": sd["param_groups"], "scalars": scalars})


def load_optimizer(optimizer: torch.optim.Optimizer, folder: str | Path, name: str = "optimizer") -> None:
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
    _atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


def load_rng_state(path: str | Path) -> None:
    tensors = read_tensors(path)
    torch.set_rng_state(tensors["cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def finite(value: float) -> float | None:
    """JSON has no infinity: store None for an unset best metric."""
    return value if math.isfinite(value) else None
