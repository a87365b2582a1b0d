"""Training of the IAP network on a slice cache (paper Sec. 4.2), seeded and resumable."""
from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from mridomain.data.kspace import split_view
from mridomain.engine import Engine, StepContext, TrainTask, epoch_batches
from mridomain.errors import EmptyInputError, SchemaMismatchError
from mridomain.iap.cache import cache_iaps, open_cache, split_indices
from mridomain.iap.checkpoint import read_run, save_run_metadata
from mridomain.iap.config import IAPConfig, get_preset, learning_rate
from mridomain.iap.inference import autocast
from mridomain.iap.labels import IGNORE_INDEX, LabelEncoder, mirror_relabeling
from mridomain.iap.model import IAPNet, build_model, iap_loss, reads_kspace


class MemmapBatches(Dataset):
    """Whole batches straight from the memmapped cache: one fancy index per batch, no per-item decode.

    Each item is a batch (image (B, 1, H, W), kspace (B, R, bins) or (B, 0) without a view, cat,
    cont); ``set_epoch`` draws that epoch's permutation from (seed, epoch), so an interrupted and
    resumed run sees the same batches as an uninterrupted one. With ``kspace_view`` (the cache's
    view spec) the view rows below each image are cut off into the kspace tensor before any flip,
    so flips touch the image only (a folded magnitude spectrum is the same for a mirrored image).
    """

    def __init__(self, images: np.ndarray, indices: np.ndarray, cat: np.ndarray, cont: np.ndarray,
                 batch_size: int, shuffle: bool, seed: int = 0, augment: bool = False,
                 mirror: tuple[int, np.ndarray] | None = None, rank: int = 0, world_size: int = 1,
                 kspace_view: dict[str, Any] | None = None):
        self.images, self.indices = images, np.asarray(indices, dtype=np.int64)
        self.cat, self.cont = cat, cont
        self.batch_size, self.shuffle, self.seed, self.augment = batch_size, shuffle, seed, augment
        self.rank, self.world_size = rank, world_size
        #: (column of cat, class -> class of the mirrored image) for left-right mirroring, see
        #: :func:`mirror_relabeling`; None = no mirroring
        self.mirror = mirror
        self.kspace_view = kspace_view
        self.set_epoch(0)

    def __getstate__(self) -> dict[str, Any]:
        # Pickling a memmap copies the whole array; under spawn/forkserver workers reopen the file.
        state = dict(self.__dict__)
        if isinstance(self.images, np.memmap) and getattr(self.images, "filename", None):
            state["images"] = ("__memmap__", str(self.images.filename))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        img = state.get("images")
        if isinstance(img, tuple) and img and img[0] == "__memmap__":
            state["images"] = np.load(img[1], mmap_mode="r")
        self.__dict__.update(state)

    def set_epoch(self, epoch: int) -> None:
        """Make this rank's batches those of ``epoch`` (:func:`~mridomain.engine.epoch_batches`: a pure
        function of the seed and the epoch, so a resumed run sees the same batches)."""
        self._batches = epoch_batches(self.indices, self.batch_size, self.seed, epoch, self.shuffle,
                                      self.rank, self.world_size)
        self._epoch = epoch

    def __len__(self) -> int:
        return len(self._batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        b = np.sort(self._batches[i])          # sorted reads are sequential on the memmap
        x, view = split_view(np.asarray(self.images[b], dtype=np.float32), self.kspace_view)
        x = np.ascontiguousarray(x)
        view = np.zeros((len(b), 0), np.float32) if view is None else np.ascontiguousarray(view)
        cat = self.cat[b]
        if self.augment or self.mirror is not None:
            # this rank's share of global batch i draws its own stream (rank 0 of one process = the
            # stream of an undistributed run)
            rng = np.random.default_rng([self.seed, self._epoch, i] + ([self.rank] if self.rank else []))
        if self.augment:
            # Not in the paper (off by default): up-down flips, which leave every IAP unchanged.
            flip = rng.random(len(b)) < 0.5
            x[flip] = x[flip, ::-1, :]
        if self.mirror is not None:
            column, relabel = self.mirror
            flip = rng.random(len(b)) < 0.5
            x[flip] = x[flip, :, ::-1]
            cat = cat.copy()
            known = flip & (cat[:, column] != IGNORE_INDEX)
            cat[known, column] = relabel[cat[known, column]]
        return (torch.from_numpy(x).unsqueeze(1), torch.from_numpy(view), torch.from_numpy(cat),
                torch.from_numpy(self.cont[b]))


@dataclass
class TrainResult:
    """What :func:`train` leaves behind."""

    run: Path
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    seconds: float
    metrics: pd.DataFrame = field(repr=False)
    onnx: str = ""          # what became of model.onnx (exported and checked, or why not)

    def summary(self) -> str:
        """One line for the terminal: epochs run, best validation loss and where the run is; then what
        became of model.onnx."""
        return (f"trained {self.epochs_run} epochs in {self.seconds:.0f} s; best validation loss "
                f"{self.best_val_loss:.4f} at epoch {self.best_epoch}; run folder {self.run}"
                + (f"\n{self.onnx}" if self.onnx else ""))


def _input_stats(images: np.ndarray, indices: np.ndarray, seed: int,
                 kspace_view: dict[str, Any] | None = None) -> tuple[float, float]:
    """Mean / std of the training images (a sample of up to 512 slices, without their k-space
    view) for input standardization."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(indices, size=min(512, len(indices)), replace=False))
    x = np.asarray(split_view(np.asarray(images[pick]), kspace_view)[0], dtype=np.float64)
    sd = float(x.std())
    return float(x.mean()), sd if sd > 1e-8 else 1.0


@torch.no_grad()
def validate(model: IAPNet, loader: Iterable, encoder: LabelEncoder, config: IAPConfig,
             device: torch.device) -> tuple[float, dict[str, float]]:
    """Validation loss (eq. 1, slice-weighted per term) and per-IAP accuracy / MSE in units."""
    model.eval()
    n_cat = len(encoder.categorical)
    correct = np.zeros(n_cat)
    n_lab = np.zeros(n_cat)
    sq = np.zeros(len(encoder.continuous))
    n_cont = np.zeros(len(encoder.continuous))
    ce_sum = np.zeros(n_cat)
    z_sq = np.zeros(len(encoder.continuous))
    std = np.array([h.std for h in encoder.continuous])
    for x, view, cat, cont in loader:
        x = x.to(device, non_blocking=True)
        if config.channels_last and device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, config.amp):
            out = model(x, _kspace_input(model, view, device))
        out = out.float().cpu()
        for j, h in enumerate(encoder.categorical):
            t = cat[:, j]
            m = t != IGNORE_INDEX
            if m.any():
                logits = out[m][:, encoder.slices[h.name]]
                ce_sum[j] += float(torch.nn.functional.cross_entropy(logits, t[m], reduction="sum"))
                correct[j] += float((logits.argmax(1) == t[m]).sum())
                n_lab[j] += float(m.sum())
        for j, h in enumerate(encoder.continuous):
            t = cont[:, j]
            m = torch.isfinite(t)
            if m.any():
                d = out[m][:, encoder.slices[h.name].start] - t[m]
                z_sq[j] += float((d ** 2).sum())
                sq[j] += float(((d.double() * std[j]) ** 2).sum())
                n_cont[j] += float(m.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        loss = config.lam * np.nansum(np.where(n_lab > 0, ce_sum / np.maximum(n_lab, 1), 0.0)) + \
            config.eta * np.nansum(np.where(n_cont > 0, z_sq / np.maximum(n_cont, 1), 0.0))
        metrics = {f"val_acc_{h.name}": (correct[j] / n_lab[j] if n_lab[j] else float("nan"))
                   for j, h in enumerate(encoder.categorical)}
        metrics.update({f"val_mse_{h.name}": (sq[j] / n_cont[j] if n_cont[j] else float("nan"))
                        for j, h in enumerate(encoder.continuous)})
    return float(loss), metrics


def _kspace_input(model: torch.nn.Module, view: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """The batch's k-space view for a network (unwrapped) that reads one (None otherwise)."""
    if view.ndim < 3 or not reads_kspace(model):
        return None
    return view.to(device, non_blocking=True)


def _select_iaps(iaps: list[dict[str, Any]], config: IAPConfig) -> list[dict[str, Any]]:
    if config.iaps is None:
        return iaps
    names = {s["name"] for s in iaps}
    unknown = [n for n in config.iaps if n not in names]
    if unknown:
        raise SchemaMismatchError(f"config.iaps: {unknown} not in the cache's IAPs {sorted(names)}")
    return [s for s in iaps if s["name"] in set(config.iaps)]


class IAPTask(TrainTask):
    """The multi-task IAP network on a slice cache, as the engine trains it."""

    def __init__(self, cache: Any, config: IAPConfig, encoder: LabelEncoder, preprocess: dict[str, Any],
                 resume: bool = False):
        self.cache, self.config, self.encoder, self.preprocess = cache, config, encoder, preprocess
        self.resume = resume
        cache_path = str(getattr(cache, "path", "cache"))
        self.train_idx, self.val_idx = split_indices(cache, "train"), split_indices(cache, "val")
        if len(self.train_idx) == 0:
            raise EmptyInputError(cache_path, "no slices in the train split")
        if len(self.val_idx) == 0:
            warnings.warn(f"{cache_path}: no validation split; the best checkpoint is chosen on training loss", stacklevel=2)
            self.val_idx = self.train_idx
        self.cat, self.cont = encoder.encode(cache.table)
        self.mirror = mirror_relabeling(encoder) if config.mirror_augment else None
        #: the k-space view stored below each cache image (cut off before the network; read by it
        #: only with config.kspace_view)
        self.kspace_view = preprocess.get("kspace_view")

    def build_modules(self) -> dict[str, torch.nn.Module]:
        """The IAP network (``model``), its input standardized by the training images' mean / std; on
        resume the checkpoint restores those buffers, so they start as 0 / 1."""
        mean, std = ((0.0, 1.0) if self.resume else
                     _input_stats(self.cache.images, self.train_idx, self.config.seed, self.kspace_view))
        return {"model": build_model(self.config, self.encoder, in_mean=mean, in_std=std,
                                     preprocess=self.preprocess)}

    def build_optimizers(self, modules: dict[str, torch.nn.Module]) -> dict[str, torch.optim.Optimizer]:
        """Adam over the network's parameters with the config's ``lr`` and ``weight_decay``."""
        return {"adam": torch.optim.Adam(modules["model"].parameters(), lr=self.config.lr,
                                         weight_decay=self.config.weight_decay)}

    def learning_rates(self, epoch: int) -> dict[str, float]:
        """Adam's rate for ``epoch`` from the config's schedule (:func:`~mridomain.iap.config.learning_rate`)."""
        return {"adam": learning_rate(self.config, epoch)}

    def _loader(self, dataset: MemmapBatches, device_type: str) -> DataLoader:
        return DataLoader(dataset, batch_size=None, num_workers=self.config.num_workers,
                          pin_memory=device_type == "cuda")

    def train_batches(self, epoch: int, rank: int, world_size: int) -> Iterable[Any]:
        """This rank's shuffled batches of the train split for ``epoch`` (with the config's up-down flips
        and left-right mirroring when on), through a DataLoader."""
        c = self.config
        ds = MemmapBatches(self.cache.images, self.train_idx, self.cat, self.cont, c.batch_size, shuffle=True,
                           seed=c.seed, augment=c.augment, mirror=self.mirror, rank=rank, world_size=world_size,
                           kspace_view=self.kspace_view)
        ds.set_epoch(epoch)
        return self._loader(ds, "cuda" if torch.cuda.is_available() else "cpu")

    def training_step(self, batch: Any, ctx: StepContext) -> dict[str, float]:
        """Eq. (1) loss of one batch (:func:`~mridomain.iap.model.iap_loss`) and one Adam step."""
        x, view, c, r = batch
        x, c, r = ctx.to_device(x), c.to(ctx.device), r.to(ctx.device)
        outputs = ctx.modules["model"](x, _kspace_input(ctx.unwrapped("model"), view, ctx.device))
        loss, _ = iap_loss(outputs, c, r, self.encoder, self.config.lam, self.config.eta)
        ctx.backward(loss)
        ctx.step("adam")
        return {"loss": float(loss.detach()), "batch_size": len(x)}

    def validate(self, ctx: StepContext) -> dict[str, float]:
        """Validation loss and per-IAP accuracy / MSE over the validation split (the train split when the
        cache has none)."""
        ds = MemmapBatches(self.cache.images, self.val_idx, self.cat, self.cont, self.config.eval_batch_size,
                           shuffle=False, kspace_view=self.kspace_view)
        loss, metrics = validate(ctx.unwrapped("model"), self._loader(ds, ctx.device.type), self.encoder,
                                 self.config, ctx.device)
        return {"val_loss": loss, **metrics}

    def save_metadata(self, out: Path) -> None:
        """Write config, label schema and preprocessing into the run folder; a resumed run rewrites only
        config.json."""
        if self.resume:
            self.config.to_json(out / "config.json")
        else:
            save_run_metadata(out, self.config, self.encoder, self.preprocess)

    def progress_postfix(self, row: dict[str, Any]) -> dict[str, str]:
        """Each IAP's validation accuracy in percent, keyed by the first 6 letters of its name."""
        return {k[8:][:6]: f"{100 * v:.0f}" for k, v in row.items() if k.startswith("val_acc_")}


def train(cache: Any, out: str | Path, preset: str | IAPConfig = "cpu", epochs: int | None = None,
          resume: bool = False, seed: int | None = 0, device: str | None = None, progress: bool = True,
          calibrate: bool = True, **overrides: Any) -> TrainResult:
    """Train the multi-task IAP network on a slice cache and write a run folder.

    The loop, checkpoints, logs and DDP are :class:`mridomain.engine.Engine`'s; this function
    builds the label encoder and preprocessing record from the cache and hands an :class:`IAPTask`
    to the engine. Launched with ``torchrun --nproc_per_node N``, it trains on N processes.
    After training, :func:`mridomain.iap.trust.calibrate` stores temperatures, the training
    domain and the seen IAP combinations in the run folder (unless ``calibrate=False``), and the
    network is exported to
    ``model.onnx`` (:func:`mridomain.iap.runtime.export_run`), accepted only when ONNX Runtime
    gives PyTorch's outputs to 1e-4 on the validation split (else
    :class:`~mridomain.iap.runtime.ExportCheckError`). Without onnx / onnxruntime installed, or
    for a network the exporter cannot express, the export is skipped with a one-line warning.

    Args:
        cache: cache folder (or an open ``SliceCache``) from ``mridomain prepare``.
        out: run folder to write (model.safetensors, config.json, labels.json, preprocess.json,
            metrics.csv, learning_curve.png, last/ for resume).
        preset: "paper" | "cpu" or an :class:`IAPConfig`.
        epochs: total number of epochs (overrides the preset; with ``resume``, train up to it).
        resume: continue from ``out/last`` (weights, optimizer, RNG, epoch); refused when the cache's
            IAP schema differs from the run's.
        seed: seed of initialization and batch order (None keeps the config's).
        device: "cpu" | "cuda" (default: cuda when available).
        progress: show tqdm bars.
        calibrate: run the trust calibration after training. False skips its forward passes (for
            quick experiments: top-1 does not depend on it); the run then answers with the raw
            softmax and no domain verdict until ``mridomain calibrate RUN`` adds them.
        **overrides: any :class:`IAPConfig` field, e.g. ``batch_size=64``.
    """
    t_start = time.perf_counter()
    cache = open_cache(cache)
    cache_path = str(getattr(cache, "path", "cache"))
    out = Path(out)
    all_iaps = cache_iaps(cache)
    if resume:
        config, encoder, preprocess = read_run(out)
        encoder.check_schema(_select_iaps(all_iaps, config), where=f"{cache_path}/meta.json",
                             mine=f"{out}/labels.json")
        upd: dict[str, Any] = {}
        if epochs is not None:
            upd["epochs"] = int(epochs)
        if device is not None:
            upd["device"] = device
        config = config.updated(**upd)
    else:
        upd = dict(overrides)
        if epochs is not None:
            upd["epochs"] = int(epochs)
        if seed is not None:
            upd["seed"] = int(seed)
        if device is not None:
            upd["device"] = device
        config = get_preset(preset).updated(**upd)
        iaps = _select_iaps(all_iaps, config)
        as_cont = set(config.iaps_as_continuous) | set(config.continuous_iaps)
        encoder = LabelEncoder.fit(cache.table, iaps, as_continuous=as_cont & {s["name"] for s in iaps})
        preprocess = {"size": list(cache.meta.get("size", list(cache.images.shape[1:]))),
                      "normalization": cache.meta.get("normalization", {"method": "max255"}),
                      "source_cache": str(Path(cache_path).resolve())}
        if cache.meta.get("kspace_view"):
            # recorded even for a network that does not read it: predict must build the same
            # stored layout (image rows + view rows) the cache has
            preprocess["kspace_view"] = cache.meta["kspace_view"]
        if config.kspace_view is None:
            config = config.updated(kspace_view=bool(preprocess.get("kspace_view")))
    task = IAPTask(cache, config, encoder, preprocess, resume=resume)
    fit = Engine(config, out, progress=progress).fit(task, resume=resume)
    onnx_note = ""
    if int(os.environ.get("RANK", "0")) == 0:    # under torchrun, rank 0 alone writes the run folder
        if calibrate:
            from mridomain.iap.trust import calibrate as calibrate_run

            calibrate_run(out, cache, progress=progress)
        onnx_note = _export_onnx(out, cache)
    return TrainResult(run=out, best_epoch=fit.best_epoch, best_val_loss=fit.best_metric,
                       epochs_run=fit.epochs_run, seconds=time.perf_counter() - t_start, metrics=fit.metrics,
                       onnx=onnx_note)


def _export_onnx(run: Path, cache: Any) -> str:
    """model.onnx for the run, checked on the validation split; without the export packages a
    one-line warning, and the run is complete without it (predict then runs on PyTorch)."""
    from mridomain.iap.runtime import ONNX_FILE, ExportUnsupportedError, export_run, onnx_missing

    missing = onnx_missing(need_export=True)
    if missing is not None:
        note = f"{run / ONNX_FILE} not written: {missing}"
        warnings.warn(note, stacklevel=3)
        return note
    try:
        record = export_run(run, cache)
    except ExportUnsupportedError as err:
        # the network is trained and saved; only the faster engine is missing (predict says so).
        # A wrong export (ExportCheckError) is not caught: it must stop the run loudly.
        note = f"{run / ONNX_FILE} not written: {err}"
        warnings.warn(note, stacklevel=3)
        return note
    check = record["check"]
    return (f"exported {run / ONNX_FILE}: ONNX Runtime matches PyTorch on the {check['split']} split "
            f"({check['checked_rows']} slices; largest difference {check['max_abs_diff_outputs']:.1e} in outputs, "
            f"{check['max_abs_diff_features']:.1e} in features)")
