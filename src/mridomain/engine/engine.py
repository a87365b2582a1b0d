"""The one training engine of mridomain, on Lightning Fabric.

A system describes *what* to train as a :class:`TrainTask` (its networks, optimizers, batches, one
training step and a validation pass); the :class:`Engine` does the rest the same way for all of
them: seeding, device placement, mixed precision and channels_last on CUDA, DDP across processes
and machines, the epoch loop with progress bars, the per-epoch CSV log and learning curve,
best-checkpoint selection on a validation metric, early stopping, and exactly resumable,
all-or-nothing checkpoints (safetensors + versioned JSON: nothing is ever unpickled).

Multi-GPU and multi-node runs need no code change: launched with ``torchrun`` the engine reads the
world size from the environment and trains with Fabric's DDP strategy (NCCL on GPUs, gloo on
CPUs). Each rank sees ``1 / world_size`` of every global batch (:func:`epoch_batches`), and DDP
averages the gradients, so N processes take the same steps as one process over the whole batch.
BatchNorm layers become SyncBatchNorm on GPUs; on CPUs (gloo) each rank normalizes its own part.
"""
from __future__ import annotations

import abc
import contextlib
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from mridomain.progress import progress_bar

from mridomain.engine.checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, finite, load_optimizer,
                                         load_rng_state, load_weights, resolve_folder,
                                         save_optimizer, save_rng_state, save_weights, weights_file,
                                         write_folder_atomic, write_json_atomic)
from mridomain.engine.settings import TrainSettings
from mridomain.files import atomic_write, read_versioned_json
from mridomain.errors import EmptyInputError, InvalidArgumentError, SchemaMismatchError

__all__ = ["Engine", "TrainTask", "StepContext", "FitResult", "epoch_batches", "resolve_device",
           "distributed_environment", "training_precision", "cpu_has_native_bf16", "LAST"]

#: the resumable checkpoint folder inside a run folder
LAST = "last"


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


def distributed_environment() -> tuple[int, int] | None:
    """(processes per node, nodes) when launched by torchrun with more than one process, else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    return local, max(1, world // max(local, 1))


def epoch_batches(indices: np.ndarray | int, batch_size: int, seed: int, epoch: int, shuffle: bool = True,
                  rank: int = 0, world_size: int = 1) -> list[np.ndarray]:
    """This rank's part of every global batch of one epoch.

    The epoch's order is a pure function of (seed, epoch), so a resumed run sees the same batches as
    an uninterrupted one. Each global batch of ``batch_size`` is cut into ``world_size`` contiguous
    parts of (nearly) equal size and rank r takes part r; a last global batch with fewer items than
    ranks is dropped (every rank must take the same number of steps).

    >>> [b.tolist() for b in epoch_batches(5, batch_size=2, seed=0, epoch=0, shuffle=False)]
    [[0, 1], [2, 3], [4]]
    >>> [b.tolist() for b in epoch_batches(5, 2, 0, 0, shuffle=False, rank=1, world_size=2)]  # the odd one out is dropped
    [[1], [3]]
    """
    idx = np.arange(indices) if isinstance(indices, (int, np.integer)) else np.asarray(indices, dtype=np.int64)
    if batch_size < 1:
        raise InvalidArgumentError(f"batch_size {batch_size}: must be at least 1")
    if shuffle:
        idx = np.random.default_rng([seed, epoch]).permutation(idx)
    out = []
    for start in range(0, len(idx), batch_size):
        batch = idx[start:start + batch_size]
        if world_size > 1:
            if len(batch) < world_size:
                continue
            batch = np.array_split(batch, world_size)[rank]
        out.append(batch)
    return out


class StepContext:
    """What a task's ``training_step`` and ``validate`` get from the engine."""

    def __init__(self, fabric: Any, modules: dict[str, torch.nn.Module],
                 optimizers: dict[str, torch.optim.Optimizer], settings: TrainSettings):
        self.fabric = fabric
        self.modules = modules
        self.optimizers = optimizers
        self.settings = settings
        self.epoch = 0

    @property
    def device(self) -> torch.device:
        """The torch device this rank trains on."""
        return self.fabric.device

    @property
    def rank(self) -> int:
        """This process's rank (0 without DDP)."""
        return self.fabric.global_rank

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes files."""
        return self.fabric.is_global_zero

    def unwrapped(self, name: str) -> torch.nn.Module:
        """The plain module (no DDP / Fabric wrapper), e.g. for inference in ``validate``."""
        m = self.modules[name]
        return m.module if hasattr(m, "module") and hasattr(m, "_forward_module") else m

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate (mixed-precision loss scaling and DDP gradient averaging included)."""
        self.fabric.backward(loss)

    def step(self, name: str) -> None:
        """Apply and clear the gradients of one optimizer."""
        opt = self.optimizers[name]
        opt.step()
        opt.zero_grad(set_to_none=True)

    def zero_grad(self, name: str | None = None) -> None:
        """Zero the gradients of the optimizer ``name``, or of all of them."""
        for key, opt in self.optimizers.items():
            if name is None or key == name:
                opt.zero_grad(set_to_none=True)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """Move a batch tensor to the device (channels_last for 4-D images on CUDA when configured)."""
        x = x.to(self.device, non_blocking=True)
        if x.ndim == 4 and self.device.type == "cuda" and self.settings.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for forward passes outside the wrapped modules' own forward."""
        return self.fabric.autocast()


class TrainTask(abc.ABC):
    """What the engine trains: one subclass per system (IAP network, tumor classifier, ...).

    Everything random must follow from the seed and the epoch (use :func:`epoch_batches` and
    ``np.random.default_rng([seed, epoch, batch])``), so a resumed run repeats an uninterrupted one.
    """

    @abc.abstractmethod
    def build_modules(self) -> dict[str, torch.nn.Module]:
        """Named networks, built after the engine seeded torch."""

    @abc.abstractmethod
    def build_optimizers(self, modules: dict[str, torch.nn.Module]) -> dict[str, torch.optim.Optimizer]:
        """Named optimizers over the (already device-placed) modules' parameters."""

    def learning_rates(self, epoch: int) -> dict[str, float] | None:
        """Per-optimizer learning rate of 0-based ``epoch`` (a pure function: resume needs no
        scheduler state); None leaves the rates as they are."""
        return None

    @abc.abstractmethod
    def train_batches(self, epoch: int, rank: int, world_size: int) -> Iterable[Any]:
        """This rank's batches of one epoch."""

    @abc.abstractmethod
    def training_step(self, batch: Any, ctx: StepContext) -> dict[str, float]:
        """Losses of one batch; calls ``ctx.backward`` and ``ctx.step`` itself. The optional key
        ``batch_size`` weights this step in the epoch means and is not logged."""

    @abc.abstractmethod
    def validate(self, ctx: StepContext) -> dict[str, float]:
        """Validation metrics; must contain the settings' ``monitor``."""

    def save_metadata(self, out: Path) -> None:  # noqa: B027 (optional hook: doing nothing is the default)
        """Write what makes the run folder self-describing (config, schema) before epoch 1."""

    def plot(self, metrics: pd.DataFrame, out: Path) -> None:  # noqa: B027 (optional hook)
        """Extra figures from the metrics table (the learning curve is drawn by the engine)."""

    def progress_postfix(self, row: dict[str, Any]) -> dict[str, str]:
        """What the epoch progress bar shows besides the losses."""
        return {}


@dataclass
class FitResult:
    """What :meth:`Engine.fit` leaves behind."""

    run: Path
    best_epoch: int
    best_metric: float
    epochs_run: int
    seconds: float
    metrics: pd.DataFrame = field(repr=False)
    monitor: str = "val_loss"
    precision: str = "32-true"      # Lightning Fabric's precision the run trained in (training_precision)

    def summary(self) -> str:
        """One line for the terminal: epochs run, best monitored value and where the run is."""
        mixed = "" if self.precision == "32-true" else f" ({self.precision})"
        return (f"trained {self.epochs_run} epochs in {self.seconds:.0f} s{mixed}; best {self.monitor} "
                f"{self.best_metric:.4f} at epoch {self.best_epoch}; run folder {self.run}")


def cpu_has_native_bf16() -> bool:
    """True where oneDNN runs bfloat16 convolutions and matrix products in hardware (Intel AMX tiles
    or AVX512-BF16). Without them it emulates bfloat16, which made a synthesis training step 8.7x
    slower than float32 (AMD EPYC, AVX2); with AMX it was 1.5x faster (docs/synth.md)."""
    probes = (getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return any(probe is not None and bool(probe()) for probe in probes)


def training_precision(settings: TrainSettings, device: torch.device) -> str:
    """Lightning Fabric's precision for these settings on ``device``: ``amp`` on CUDA (bf16 where
    supported, else fp16), ``cpu_amp`` on the CPU (``auto``: bf16 only with native bf16), else fp32."""
    if device.type == "cuda":
        if settings.amp:
            return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    elif device.type == "cpu":
        if settings.cpu_amp == "bf16" or (settings.cpu_amp == "auto" and cpu_has_native_bf16()):
            return "bf16-mixed"
    return "32-true"


def make_fabric(settings: TrainSettings) -> Any:
    """A launched Fabric for these settings (DDP when torchrun started several processes)."""
    from lightning_fabric import Fabric
    from lightning_fabric.strategies import DDPStrategy

    device = resolve_device(settings.device)
    devices, num_nodes, strategy = settings.devices, settings.num_nodes, settings.strategy
    env = distributed_environment()
    if env is not None:
        devices, num_nodes, strategy = env[0], env[1], "ddp"
    elif devices * num_nodes > 1:
        strategy = "ddp"
    if strategy == "ddp":
        strategy_obj: Any = DDPStrategy(find_unused_parameters=settings.find_unused_parameters,
                                        process_group_backend="nccl" if device.type == "cuda" else "gloo")
    else:
        strategy_obj = "auto"
    if device.type == "cuda" and strategy_obj == "auto" and device.index is not None:
        devices_arg: Any = [device.index]
    else:
        devices_arg = devices
    fabric = Fabric(accelerator=device.type, devices=devices_arg, num_nodes=num_nodes, strategy=strategy_obj,
                    precision=training_precision(settings, device))
    fabric.launch()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        _destroy_process_group_at_exit()
    return fabric


_teardown_registered = False


def _destroy_process_group_at_exit() -> None:
    """Destroy the torch.distributed process group when Python exits, while it is still whole.

    Lightning Fabric does this for NCCL only. A gloo group left alive keeps its C++ worker threads
    into interpreter finalization, where releasing their pending work needs a Python runtime that is
    already gone: the process aborts with "terminate called without an active exception" (SIGABRT),
    at random and more often on a loaded machine (pytorch/pytorch#190489). Destroying the group from
    an ``atexit`` handler joins those threads first. The group is kept until then, not destroyed after
    each fit: a second ``init_process_group`` in the same process restarts the store keys of the
    first and can read a peer's stale address (gloo "connectFullMesh failed ... Connection refused").
    """
    global _teardown_registered
    if _teardown_registered:
        return
    import atexit

    def destroy() -> None:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    atexit.register(destroy)
    _teardown_registered = True


class _Log:
    """The per-epoch metrics table: ``metrics.csv``, rewritten atomically after every epoch."""

    def __init__(self, path: Path, start_epoch: int, resume: bool):
        self.path = path
        rows: list[dict[str, Any]] = []
        if resume and path.exists():
            try:
                rows = pd.read_csv(path).to_dict("records")
            except (pd.errors.EmptyDataError, pd.errors.ParserError):
                rows = []
        self.rows = [r for r in rows if int(r.get("epoch", 0)) <= start_epoch]

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        frame = pd.DataFrame(self.rows)
        atomic_write(self.path, lambda tmp: frame.to_csv(tmp, index=False))

    @property
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def _metric_unit(name: str, values: pd.Series) -> str:
    """The axis a validation metric is drawn on: losses, squared errors, absolute errors and
    shares (accuracy, AUC: 0..1, drawn in %) never share one."""
    low = name.lower()
    if low.endswith("loss"):
        return "loss"
    if "mse" in low:
        return "MSE"
    if "mae" in low:
        return "MAE"
    if values.dropna().between(0, 1).all():
        return "%"
    return "value"


def plot_learning_curve(metrics: pd.DataFrame, path: Path, monitor: str = "val_loss") -> None:
    """Losses (train and validation) and the validation metrics over epochs, one panel per unit
    (loss, %, MSE, ...), every curve its own colour, legends beside the panels."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    columns = [c for c in metrics.columns
               if (c.endswith("loss") and c.startswith(("train_", "val_"))) or c.startswith("val_")]
    panels: dict[str, list[str]] = {}
    for c in columns:
        panels.setdefault(_metric_unit(c, metrics[c]), []).append(c)
    order = sorted(panels, key=["loss", "%", "MSE", "MAE", "value"].index)
    if not order:
        return
    fig = Figure(figsize=(8.5, 3.0 * len(order)), layout="constrained")
    axes = fig.subplots(len(order), 1, squeeze=False, sharex=True)[:, 0]
    for ax, unit in zip(axes, order):
        names = panels[unit]
        colours = colormaps["tab20" if len(names) > 10 else "tab10"].colors
        for k, c in enumerate(names):
            scale = 100 if unit == "%" else 1
            label = c if unit == "loss" else c[4:]
            ax.plot(metrics["epoch"], scale * metrics[c], label=label.replace("_", " "), color=colours[k % len(colours)],
                    linestyle="--" if c.startswith("val_") and unit == "loss" else "-",
                    linewidth=2.5 if c == monitor else 1.4, marker="o" if len(metrics) < 8 else None, markersize=3)
        ax.set_ylabel(unit)
        ax.set_title({"loss": "Loss", "%": "Validation accuracy / score (%)", "MSE": "Validation MSE",
                      "MAE": "Validation MAE"}.get(unit, "Validation metrics"), fontsize=10)
        if unit == "%":
            ax.set_ylim(0, 101)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
                  ncol=2 if len(names) > 8 else 1)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.savefig(path, dpi=90)


class Engine:
    """Trains a :class:`TrainTask` into a run folder.

    Run folder::

        <module>.safetensors     best weights of each module (by settings.monitor)
        metrics.csv              one row per epoch: epoch, lr, train_<loss>, validation metrics
        learning_curve.png
        last/                    resumable checkpoint (modules, optimizers, RNG, state.json)

    plus whatever the task's ``save_metadata`` writes (config.json, schema).

    ``resumable=False`` writes no ``last/`` (such a run cannot be resumed) and ``plots=False`` no
    figures: for studies of many short runs that resume run by run and keep the curves in their
    own tables (per-epoch checkpoints and a PNG cost about a fifth of a small cpu run).
    """

    def __init__(self, settings: TrainSettings, out: str | Path, progress: bool = True, resumable: bool = True,
                 plots: bool = True):
        if not isinstance(settings, TrainSettings):
            raise InvalidArgumentError(f"settings: expected a TrainSettings, got {type(settings).__name__}")
        self.settings = settings
        self.out = Path(out)
        self.progress = progress
        self.resumable = resumable
        self.plots = plots

    # -- checkpoint I/O -------------------------------------------------------------------------
    def _write_last(self, raw: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                    state: dict[str, Any]) -> None:
        def fill(tmp: Path) -> None:
            for name, module in raw.items():
                save_weights(module, tmp / weights_file(name))
            for name, opt in optimizers.items():
                save_optimizer(opt, tmp, name=f"optimizer_{name}")
            save_rng_state(tmp / "rng.safetensors")
            write_json_atomic(tmp / "state.json", state)

        write_folder_atomic(self.out / LAST, fill)

    def read_state(self) -> tuple[Path, dict[str, Any]]:
        """The run's resumable checkpoint folder and its state.json (one-line errors when absent)."""
        folder = resolve_folder(self.out / LAST)
        if folder is None:
            raise EmptyInputError(self.out, f"nothing to resume (no {LAST}/state.json)")
        state = read_versioned_json(folder / "state.json", CHECKPOINT_VERSION, expect=CHECKPOINT_FORMAT,
                                    what="state")
        return folder, state

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self, task: TrainTask, resume: bool = False) -> FitResult:
        """Train ``task`` for ``settings.epochs`` epochs (from the last checkpoint with ``resume``)."""
        t_start = time.perf_counter()
        s = self.settings
        start_epoch, best, best_epoch, stale = 0, math.inf if s.monitor_mode == "min" else -math.inf, 0, 0
        last_folder, state = None, {}
        if resume and not self.resumable:
            raise InvalidArgumentError("resume: this engine was made with resumable=False (it keeps no last/)")
        if resume:
            last_folder, state = self.read_state()
            start_epoch = int(state["epoch"])
            best = state["best_metric"] if state.get("best_metric") is not None else best
            best_epoch, stale = int(state.get("best_epoch", 0)), int(state.get("stale", 0))
            if state.get("monitor", s.monitor) != s.monitor:
                raise SchemaMismatchError(f"{last_folder}: checkpoint monitors {state.get('monitor')!r}, "
                                          f"the config {s.monitor!r}")

        fabric = make_fabric(s)
        precision = training_precision(s, fabric.device)
        fabric.seed_everything(s.seed, verbose=False)
        raw = task.build_modules()
        if not raw:
            raise InvalidArgumentError("TrainTask.build_modules returned no modules")
        if last_folder is not None:
            for name, module in raw.items():
                load_weights(module, last_folder / weights_file(name))
        device = fabric.device
        if device.type == "cuda":
            if s.channels_last:
                raw = {k: m.to(memory_format=torch.channels_last) for k, m in raw.items()}
            if fabric.world_size > 1:
                raw = {k: torch.nn.SyncBatchNorm.convert_sync_batchnorm(m) for k, m in raw.items()}
        wrapped = {name: fabric.setup_module(m) for name, m in raw.items()}
        optimizers = task.build_optimizers(wrapped)
        optimizers = {name: fabric.setup_optimizers(opt) for name, opt in optimizers.items()}
        if last_folder is not None:
            for name, opt in optimizers.items():
                load_optimizer(opt.optimizer if hasattr(opt, "optimizer") else opt, last_folder,
                               name=f"optimizer_{name}")
            load_rng_state(last_folder / "rng.safetensors")
        ctx = StepContext(fabric, wrapped, optimizers, s)

        main = fabric.is_global_zero
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            from mridomain.files import remove_stale_temporaries

            remove_stale_temporaries(self.out)           # what a killed earlier run left half-written
            remove_stale_temporaries(self.out / LAST)
            task.save_metadata(self.out)
            if not resume:  # a fresh run in an old folder: nothing of the old run may be resumed
                import shutil

                for stale_path in (self.out / LAST, self.out / f"{LAST}.old"):
                    shutil.rmtree(stale_path, ignore_errors=True)
                for stale_file in ["metrics.csv", *(weights_file(n) for n in raw)]:
                    (self.out / stale_file).unlink(missing_ok=True)
        fabric.barrier()
        log = _Log(self.out / "metrics.csv", start_epoch, resume)
        show = self.progress and main
        bar = progress_bar(range(start_epoch, s.epochs), desc="train", enabled=show, unit="epoch",
                   initial=start_epoch, total=s.epochs, dynamic_ncols=True)
        for epoch in bar:
            ctx.epoch = epoch
            for m in wrapped.values():
                m.train()
            rates = task.learning_rates(epoch) or {}
            for name, lr in rates.items():
                for group in optimizers[name].param_groups:
                    group["lr"] = lr
            sums: dict[str, float] = {}
            weight = 0.0
            batches = task.train_batches(epoch, fabric.global_rank, fabric.world_size)
            for batch in progress_bar(batches, desc=f"epoch {epoch + 1}", leave=False, enabled=show,
                              dynamic_ncols=True):
                logs = dict(task.training_step(batch, ctx))
                w = float(logs.pop("batch_size", 1.0))
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * w
                weight += w
            train = self._reduce_means(fabric, sums, weight)
            for m in wrapped.values():
                m.eval()
            val = task.validate(ctx)
            if fabric.world_size > 1:
                val = fabric.broadcast(val, src=0)
            if s.monitor not in val:
                raise SchemaMismatchError(f"monitor {s.monitor!r} is not among the validation metrics "
                                          f"{sorted(val)}")
            row: dict[str, Any] = {"epoch": epoch + 1}
            lrs = {name: opt.param_groups[0]["lr"] for name, opt in optimizers.items()}
            row.update({"lr": next(iter(lrs.values()))} if len(lrs) == 1 else
                       {f"lr_{name}": lr for name, lr in lrs.items()})
            row.update({f"train_{k}": v for k, v in train.items()})
            row.update(val)
            metric = float(val[s.monitor])
            improved = metric < best if s.monitor_mode == "min" else metric > best
            if improved:
                best, best_epoch, stale = metric, epoch + 1, 0
            else:
                stale += 1
            if main:
                log.append(row)
                if improved:
                    for name, module in raw.items():
                        save_weights(module, self.out / weights_file(name))
                if self.resumable:
                    self._write_last(raw, {n: (o.optimizer if hasattr(o, "optimizer") else o)
                                           for n, o in optimizers.items()},
                                     {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                                      "epoch": epoch + 1, "best_metric": finite(best), "best_epoch": best_epoch,
                                      "stale": stale, "monitor": s.monitor, "monitor_mode": s.monitor_mode,
                                      "modules": sorted(raw), "optimizers": sorted(optimizers),
                                      "world_size": fabric.world_size, "precision": precision})
            fabric.barrier()
            postfix = {k.replace("train_", ""): f"{v:.3f}" for k, v in row.items() if k.startswith("train_")}
            postfix[s.monitor] = f"{metric:.3f}"
            postfix.update(task.progress_postfix(row))
            bar.set_postfix(postfix)
            if s.patience is not None and stale >= s.patience:
                break
        bar.close()
        metrics = log.frame
        if main and len(metrics) and self.plots:
            plot_learning_curve(metrics, self.out / "learning_curve.png", s.monitor)
            task.plot(metrics, self.out)
        return FitResult(run=self.out, best_epoch=best_epoch, best_metric=float(best), epochs_run=len(metrics),
                         seconds=time.perf_counter() - t_start, metrics=metrics, monitor=s.monitor,
                         precision=precision)

    @staticmethod
    def _reduce_means(fabric: Any, sums: dict[str, float], weight: float) -> dict[str, float]:
        """Epoch means of the step logs over all ranks."""
        keys = sorted(sums)
        values = torch.tensor([sums[k] for k in keys] + [weight], dtype=torch.float64)
        if fabric.world_size > 1:
            values = fabric.all_reduce(values.to(fabric.device), reduce_op="sum").cpu()
        total = float(values[-1]) or 1.0
        return {k: float(values[i]) / total for i, k in enumerate(keys)}
