"""Which runtime executes a run's network: PyTorch, or ONNX Runtime on the run's ``model.onnx``.

A *network* here is a callable ``network(inputs) -> (outputs, features)`` on one batch: ``inputs``
is the tuple of row-aligned float32 arrays the predictor builds for the model (today one, the
preprocessed slices (N, H, W); a network with more views takes more), ``outputs`` are the raw
(N, sum C_k + M) outputs and ``features`` the (N, D) penultimate features, both float32.
:class:`TorchNetwork` and :class:`OnnxNetwork` are the two; :func:`open_network` picks one for an
engine name, and :class:`mridomain.iap.IAPRun` calls it, so ``predict``, ``route``, ``compare``
and the Python API all choose their engine in this one place.

``train`` writes ``model.onnx`` with :func:`export_onnx` and accepts it only after
:func:`check_export` has compared ONNX Runtime's outputs with PyTorch's on the validation split.
The file's input names are the model's (``IAPNet.input_names`` where the network defines them),
its batch axis is dynamic and every other axis is the one the export saw, which is what the run's
``preprocess.json`` makes of every input. ``model.onnx.json`` records the names, the check and the
SHA-256 of the weights it was exported from, so an ONNX file left behind by other weights is never
used in their place.

The legacy TorchScript exporter (``dynamo=False``) is used: the dynamo exporter needs
``onnxscript`` on top of ``onnx``, and for this convolutional network the two give the same graph
operators; the legacy one traces in about 3 s and needs only ``onnx``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mridomain.errors import InvalidArgumentError, MridomainError, SchemaMismatchError
from mridomain.iap.model import network_outputs

__all__ = ["ENGINES", "ONNX_FILE", "ONNX_INT8_FILE", "EngineUnavailableError", "ExportCheckError",
           "ExportUnsupportedError",
           "TorchNetwork", "OnnxNetwork", "open_network", "export_onnx", "check_export", "export_run",
           "quantize_run", "onnx_missing", "input_names"]

#: engine names: auto = ONNX Runtime where the run has a usable model.onnx, else PyTorch (said so)
ENGINES = ("auto", "onnx", "onnx-int8", "torch")
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
OUTPUT_NAMES = ("outputs", "features")
#: ONNX Runtime must give PyTorch's outputs and features to this (absolute and relative) tolerance
TOLERANCE = 1e-4
OPSET = 17
_INSTALL = "pip install 'mridomain[onnx]'"


class EngineUnavailableError(MridomainError):
    """The engine asked for cannot run here (onnxruntime missing, no usable model.onnx)."""


class ExportCheckError(MridomainError):
    """ONNX Runtime's outputs differ from PyTorch's beyond :data:`TOLERANCE`."""


class ExportUnsupportedError(MridomainError):
    """The exporter cannot express this network in ONNX (an operator or shape it does not support)."""


def onnx_missing(need_export: bool = False) -> str | None:
    """What is missing for ONNX inference (or, with ``need_export``, export too); None when nothing."""
    wanted = ("onnxruntime",) + (("onnx",) if need_export else ())
    missing = [m for m in wanted if importlib.util.find_spec(m) is None]
    return " and ".join(missing) + f" not installed ({_INSTALL})" if missing else None


def input_names(model: torch.nn.Module, n_inputs: int) -> tuple[str, ...]:
    """The model's names for its ``n_inputs`` inputs: ``model.input_names`` where it defines them,
    else ``image`` for the first and ``input<k>`` for the rest."""
    names = tuple(getattr(model, "input_names", ()) or ())
    if len(names) >= n_inputs:
        return names[:n_inputs]
    return ("image",) + tuple(f"input{k}" for k in range(1, n_inputs))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Exported(torch.nn.Module):
    """What the ONNX file computes: the network's raw outputs (mirror-averaged when the run sets
    ``mirror_tta``) and its penultimate features, from one backbone pass (``forward_batches`` needs
    both)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return network_outputs(self.model, *inputs)


class TorchNetwork:
    """The PyTorch network as a batch callable (the reference engine)."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, device: torch.device, amp: bool = False,
                 channels_last: bool = False):
        self.model, self.device, self.amp, self.channels_last = model.eval(), device, amp, channels_last

    @torch.no_grad()
    def __call__(self, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        from mridomain.iap.inference import autocast

        tensors = [torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device) for x in inputs]
        if self.channels_last and self.device.type == "cuda":
            tensors = [t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t for t in tensors]
        with autocast(self.device, self.amp):
            outputs, features = network_outputs(self.model, *tensors)
        return outputs.float().cpu().numpy(), features.float().cpu().numpy()


class OnnxNetwork:
    """An ONNX Runtime session on a run's exported network, as a batch callable.

    It uses as many threads as PyTorch does here (``torch.get_num_threads()``, which follows
    ``OMP_NUM_THREADS``), so the two engines are compared on the same cores."""

    def __init__(self, path: str | Path, name: str = "onnx", threads: int | None = None):
        import onnxruntime as ort

        self.path, self.name = Path(path), name
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types for damaged files
            raise SchemaMismatchError(f"{self.path}: not a loadable ONNX model "
                                      f"({(str(err).splitlines() or [''])[0][:200]})") from None
        self.inputs = [(i.name, i.shape) for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        if tuple(self.outputs) != OUTPUT_NAMES:
            raise SchemaMismatchError(f"{self.path}: outputs {self.outputs}, expected {list(OUTPUT_NAMES)}")

    @property
    def input_names(self) -> list[str]:
        """The ONNX model's input names, in the order the session lists them."""
        return [n for n, _ in self.inputs]

    def __call__(self, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if len(inputs) != len(self.inputs):
            raise SchemaMismatchError(f"{self.path}: the network takes {len(self.inputs)} inputs "
                                      f"({', '.join(self.input_names)}), the predictor built {len(inputs)}")
        feed = {}
        for (name, shape), x in zip(self.inputs, inputs):
            x = np.ascontiguousarray(x, dtype=np.float32)
            fixed = [(k, d) for k, d in enumerate(shape) if isinstance(d, int)]
            if x.ndim != len(shape) or any(x.shape[k] != d for k, d in fixed):
                raise SchemaMismatchError(f"{self.path}: input {name} has shape {list(shape)}, got {list(x.shape)} "
                                          "(preprocess.json and model.onnx disagree: re-export the run)")
            feed[name] = x
        outputs, features = self.session.run(list(OUTPUT_NAMES), feed)
        return outputs, features


def _record_path(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.name + ".json")


def _usable_onnx(run: Path, file: str, mirror_tta: bool | None = None) -> tuple[Path | None, str]:
    """(the run's ONNX file, "") when it exists and was exported from the run's current weights
    (and, when ``mirror_tta`` is given, with that setting: the network it stands in for), else
    (None, why not)."""
    from mridomain.iap.checkpoint import WEIGHTS

    path = run / file
    if not path.exists():
        why = (f"{path} not found (trained without onnx/onnxruntime, or before ONNX export existed; "
               f"mridomain.iap.runtime.export_run(RUN, CACHE) writes it)")
        if file == ONNX_INT8_FILE:
            why = f"{path} not found (mridomain.iap.runtime.quantize_run(RUN) writes it)"
        return None, why
    record = _record_path(path)
    try:
        recorded = json.loads(record.read_text())
    except (OSError, ValueError):
        return None, f"{record} missing or unreadable: which weights {path.name} came from is unknown"
    if (run / WEIGHTS).exists() and recorded.get("weights_sha256") != _sha256(run / WEIGHTS):
        return None, f"{path} was exported from other weights than {run / WEIGHTS} (re-export the run)"
    exported = bool(recorded.get("mirror_tta", False))
    if mirror_tta is not None and exported != mirror_tta:
        return None, (f"{path} was exported with mirror_tta={exported}, the run's network has "
                      f"mirror_tta={mirror_tta} (re-export the run)")
    return path, ""


def open_network(model: torch.nn.Module, run: Path | None, engine: str, device: torch.device,
                 amp: bool = False, channels_last: bool = False) -> tuple[Any, str]:
    """(network, one line saying which engine runs and, under ``auto``, why) for a loaded run.

    ``torch``: PyTorch. ``onnx`` / ``onnx-int8``: ONNX Runtime on ``model.onnx`` /
    ``model.int8.onnx``; an :class:`EngineUnavailableError` (one line) when onnxruntime or the file
    is missing. ``auto``: ``onnx`` where it can run (CPU device, onnxruntime installed, the run's
    model.onnx exported from its current weights), else PyTorch, and the line says why.
    """
    if engine not in ENGINES:
        raise InvalidArgumentError(f"engine {engine!r}: choose from {', '.join(ENGINES)}")
    torch_net = TorchNetwork(model, device, amp, channels_last)
    if engine == "torch":
        return torch_net, "engine: torch (PyTorch)"
    file = ONNX_INT8_FILE if engine == "onnx-int8" else ONNX_FILE
    why = onnx_missing()
    path = None
    if why is None and device.type != "cpu":
        why = f"the run is on {device.type}, and ONNX inference here runs on the CPU"
    if why is None and run is None:
        why = "the network is not from a run folder (no model.onnx)"
    if why is None:
        path, why = _usable_onnx(Path(run), file, bool(getattr(model, "mirror_tta", False)))
    if path is None:
        if engine != "auto":
            raise EngineUnavailableError(f"--engine {engine}: {why}")
        return torch_net, f"engine: torch (PyTorch fallback: {why})"
    network = OnnxNetwork(path, name=engine if engine != "auto" else "onnx")
    import onnxruntime as ort

    return network, f"engine: {network.name} (ONNX Runtime {ort.__version__}, {path.name})"


def export_onnx(model: torch.nn.Module, example: Sequence[np.ndarray], path: str | Path,
                weights: str | Path | None = None) -> dict[str, Any]:
    """Write ``model`` (its raw outputs and penultimate features) as ONNX to ``path``, for inputs
    like ``example`` (the tuple of arrays the predictor builds for it) with a dynamic batch axis.
    Returns the record written beside it (``<path>.json``); the file is not yet checked
    (:func:`check_export`)."""
    path = Path(path)
    names = input_names(model, len(example))
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(x[:2], dtype=np.float32)) for x in example)
    axes = {n: {0: "batch"} for n in (*names, *OUTPUT_NAMES)}
    # the wrapper must be in eval mode too: the legacy exporter traces batch norm in the mode of
    # the module it is given, and a training-mode trace gives batch statistics (outputs off by 0.4)
    wrapper = _Exported(model.cpu()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # the exporter's deprecation and tracer notes
        torch.onnx.export(wrapper, tensors, str(path), input_names=list(names), output_names=list(OUTPUT_NAMES),
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    record = {"inputs": [{"name": n, "shape": ["batch", *x.shape[1:]]} for n, x in zip(names, example)],
              "outputs": list(OUTPUT_NAMES), "opset": OPSET, "exporter": "torch.onnx.export(dynamo=False)",
              "torch": torch.__version__,
              "weights_sha256": _sha256(Path(weights)) if weights is not None else None,
              "mirror_tta": bool(getattr(model, "mirror_tta", False))}
    _record_path(path).write_text(json.dumps(record, indent=1))
    return record


def check_export(model: torch.nn.Module, path: str | Path, inputs: Sequence[np.ndarray], where: str,
                 batch_size: int = 128) -> dict[str, float]:
    """Compare ONNX Runtime on ``path`` with PyTorch on every row of ``inputs``: raise
    :class:`ExportCheckError` naming the worst difference when outputs or features differ by more
    than ``TOLERANCE * (1 + |torch value|)``; else return the largest differences."""
    torch_net = TorchNetwork(model.cpu(), torch.device("cpu"))
    onnx_net = OnnxNetwork(path)
    worst = {"outputs": 0.0, "features": 0.0}
    n = len(inputs[0])
    for start in range(0, n, batch_size):
        batch = [x[start:start + batch_size] for x in inputs]
        for key, ref, got in zip(("outputs", "features"), torch_net(batch), onnx_net(batch)):
            excess = np.abs(got - ref) - TOLERANCE * (1.0 + np.abs(ref))
            worst[key] = max(worst[key], float(np.abs(got - ref).max(initial=0.0)))
            if (excess > 0).any():
                raise ExportCheckError(f"{path}: ONNX Runtime's {key} differ from PyTorch's by up to "
                                       f"{float(np.abs(got - ref).max()):.3g} on {where} (tolerance {TOLERANCE:g} "
                                       "absolute + relative); the export is not used")
    return {f"max_abs_diff_{k}": v for k, v in worst.items()} | {"checked_rows": n}


def export_run(run: str | Path, cache: Any, split: str = "val", progress: bool = False) -> dict[str, Any]:
    """Export a run folder's network to ``model.onnx`` and check it on the cache's ``split``
    (the validation split; the train split where there is none). The file is moved into the run
    only once the check passes, so a failed check leaves no ONNX file to be used."""
    from mridomain.iap.cache import open_cache, split_indices
    from mridomain.iap.checkpoint import WEIGHTS, load_model
    from mridomain.iap.model import reads_kspace
    from mridomain.iap.inference import network_inputs

    run = Path(run)
    cache = open_cache(cache)
    model = load_model(run, device="cpu")[0]
    rows = split_indices(cache, split)
    if len(rows) == 0:
        split, rows = "train", split_indices(cache, "train")
    inputs = network_inputs(cache.images, np.sort(rows), cache.meta.get("kspace_view"),
                            reads_kspace(model))
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=run)
    os.close(fd)
    tmp = Path(tmp)
    try:
        try:
            record = export_onnx(model, inputs, tmp, weights=run / WEIGHTS)
        except Exception as err:  # noqa: BLE001 - the exporter raises many types for what it cannot express
            first = (str(err).splitlines() or [""])[0]
            raise ExportUnsupportedError(f"{run}: the ONNX exporter cannot export this network "
                                         f"({type(err).__name__}: {first[:160]})") from None
        where = f"the {split} split of {getattr(cache, 'path', 'the cache')} ({len(rows)} slices)"
        record["check"] = {"split": split, "tolerance": TOLERANCE, **check_export(model, tmp, inputs, where)}
        os.replace(tmp, run / ONNX_FILE)
        _record_path(run / ONNX_FILE).write_text(json.dumps(record, indent=1))
    finally:
        tmp.unlink(missing_ok=True)
        _record_path(tmp).unlink(missing_ok=True)
    return record


def quantize_run(run: str | Path) -> Path:
    """Dynamic int8 quantization of a run's ``model.onnx`` (weights int8, activations quantized
    per batch at run time) to ``model.int8.onnx``; its accuracy is not checked here
    (``bench/predict_bench.py`` reports the change per IAP)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    run = Path(run)
    source, why = _usable_onnx(run, ONNX_FILE)
    if source is None:
        raise EngineUnavailableError(f"int8 quantization: {why}")
    target = run / ONNX_INT8_FILE
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    record = json.loads(_record_path(source).read_text())
    record.update(quantized_from=ONNX_FILE, quantization="dynamic int8 (onnxruntime.quantization)")
    record.pop("check", None)
    _record_path(target).write_text(json.dumps(record, indent=1))
    return target
