"""Batched forward passes over memmapped or in-memory slices (shared by train, evaluate, predict)."""
from __future__ import annotations

import contextlib
from typing import Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from mridomain.errors import InvalidArgumentError
from mridomain.iap.labels import LabelEncoder


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> cuda when available, else cpu; a name torch does not know, or cuda on a machine
    without it, is an :class:`InvalidArgumentError`."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InvalidArgumentError(f"device {device!r}: not a torch device (cpu, cuda, cuda:0, ...)") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(f"device {device!r}: CUDA is not available on this machine")
    return dev


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when asked (fp16 where bf16 is unsupported); a no-op on CPU."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def batches(n: int, batch_size: int) -> Iterable[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


@torch.no_grad()
def forward_all(model: torch.nn.Module, images: np.ndarray, indices: np.ndarray | None = None,
                batch_size: int = 256, device: str | torch.device | None = "cpu", amp: bool = False,
                channels_last: bool = False, embed: bool = False, progress: bool = False,
                desc: str = "predict") -> np.ndarray:
    """Network outputs (or penultimate features with ``embed``) for ``images[indices]`` as float32.

    Indices are visited in sorted order so a memmap is read sequentially; results come back in
    the order of ``indices``.
    """
    device = resolve_device(device)
    model.eval()
    idx = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)
    order = np.argsort(idx, kind="stable")
    sorted_idx = idx[order]
    chunks = []
    for sl in tqdm(list(batches(len(sorted_idx), batch_size)), desc=desc, disable=not progress, leave=False):
        x = torch.from_numpy(np.asarray(images[sorted_idx[sl]], dtype=np.float32)).to(device)
        x = x.unsqueeze(1)
        if channels_last and device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            y = model.embed(x) if embed else model(x)
        chunks.append(y.float().cpu().numpy())
    out = np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)
    result = np.empty_like(out)
    result[order] = out
    return result


def softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def decode_outputs(outputs: np.ndarray, encoder: LabelEncoder) -> dict[str, np.ndarray]:
    """{categorical iap: probabilities (N, C_k); continuous iap: value in its unit (N,)}."""
    res: dict[str, np.ndarray] = {}
    cont_z = []
    for h in encoder.heads:
        s = encoder.slices[h.name]
        if h.kind == "categorical":
            res[h.name] = softmax(outputs[:, s].astype(np.float64))
        else:
            cont_z.append(outputs[:, s.start])
    if cont_z:
        units = encoder.to_units(np.stack(cont_z, axis=1))
        for j, h in enumerate(encoder.continuous):
            res[h.name] = units[:, j]
    return res
