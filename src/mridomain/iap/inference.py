"""Batched forward passes over memmapped or in-memory slices (shared by train, evaluate, predict)."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Sequence

import numpy as np
from scipy.special import softmax
import torch
from mridomain.progress import progress_bar

from mridomain.data.kspace import split_view
from mridomain.engine import resolve_device  # noqa: F401 - part of this module's API (tests, callers)
from mridomain.iap.labels import LabelEncoder
from mridomain.iap.predictor import PredictorOutput


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when asked (fp16 where bf16 is unsupported); a no-op on CPU."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def batches(n: int, batch_size: int) -> Iterable[slice]:
    """Consecutive index slices covering ``n`` items, at most ``batch_size`` each."""
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def network_inputs(images: np.ndarray | Sequence[np.ndarray], rows: np.ndarray | slice,
                   kspace_view: dict | None = None, with_kspace: bool = False) -> tuple[np.ndarray, ...]:
    """The inputs the network takes for ``rows``, a float32 array each, in the order of its
    ``input_names``: the preprocessed slices (N, H, W) and, for a network that reads one, the
    k-space view (N, R, bins) stored below each slice (``kspace_view``: the run's preprocess.json
    entry, :func:`mridomain.data.kspace.split_view`). ``images`` may also be a tuple of row-aligned
    sources, given as they are."""
    if isinstance(images, (tuple, list)):
        return tuple(np.asarray(s[rows], dtype=np.float32) for s in images)
    image, view = split_view(np.asarray(images[rows], dtype=np.float32), kspace_view)
    return (image, view) if with_kspace and view is not None else (image,)


def forward_batches(network: Callable[[tuple[np.ndarray, ...]], tuple[np.ndarray, np.ndarray]],
                    images: np.ndarray | Sequence[np.ndarray], indices: np.ndarray | None = None,
                    batch_size: int = 256, progress: bool = False, desc: str = "predict",
                    kspace_view: dict | None = None, with_kspace: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(network outputs (N, sum C_k + M), penultimate features (N, D)) for ``images[indices]``,
    both from one pass of the backbone, as float32. ``network`` is an engine's batch callable
    (:mod:`mridomain.iap.runtime`: PyTorch or ONNX Runtime).

    ``kspace_view`` (the run's preprocess.json entry) says the slices carry a k-space view below
    the image: it is cut off (:func:`mridomain.data.kspace.split_view`) and given to the network
    as its ``kspace`` input when the network reads it (``with_kspace``).

    Indices are visited in sorted order so a memmap is read sequentially; results come back in
    the order of ``indices``.
    """
    first = images[0] if isinstance(images, (tuple, list)) else images
    idx = np.arange(len(first)) if indices is None else np.asarray(indices, dtype=np.int64)
    order = np.argsort(idx, kind="stable")
    sorted_idx = idx[order]
    outs, feats = [], []
    for sl in progress_bar(list(batches(len(sorted_idx), batch_size)), desc=desc, enabled=progress, leave=False):
        y, f = network(network_inputs(images, sorted_idx[sl], kspace_view, with_kspace))
        outs.append(y)
        feats.append(f)
    if not outs:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    out, feat = np.concatenate(outs), np.concatenate(feats)
    result_out, result_feat = np.empty_like(out), np.empty_like(feat)
    result_out[order], result_feat[order] = out, feat
    return result_out, result_feat


def split_outputs(outputs: np.ndarray, features: np.ndarray, encoder: LabelEncoder,
                  temperatures: dict[str, float] | None = None) -> PredictorOutput:
    """Raw network outputs -> per-head raw logits and (temperature-scaled) probabilities,
    continuous values in their units."""
    temperatures = temperatures or {}
    logits, probs, cont_z = {}, {}, []
    for h in encoder.heads:
        s = encoder.slices[h.name]
        if h.kind == "categorical":
            logits[h.name] = outputs[:, s].astype(np.float64)
            probs[h.name] = softmax(logits[h.name] / temperatures.get(h.name, 1.0), axis=1)
        else:
            cont_z.append(outputs[:, s.start])
    continuous = {}
    if cont_z:
        units = encoder.to_units(np.stack(cont_z, axis=1))
        continuous = {h.name: units[:, j] for j, h in enumerate(encoder.continuous)}
    return PredictorOutput(probabilities=probs, logits=logits, continuous=continuous, features=features,
                           classes={h.name: list(h.classes) for h in encoder.categorical},
                           units={h.name: h.unit for h in encoder.continuous})
