"""Training of the IAP network on a slice cache (paper Sec. 4.2), seeded and resumable."""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from mridomain.errors import EmptyInputError, SchemaMismatchError
from mridomain.iap.cache import cache_iaps, open_cache, split_indices
from mridomain.iap.checkpoint import (WEIGHTS, load_optimizer, load_weights, read_run, save_optimizer,
                                      save_run_metadata, save_weights)
from mridomain.iap.config import IAPConfig, get_preset, learning_rate
from mridomain.iap.inference import autocast, resolve_device
from mridomain.iap.labels import IGNORE_INDEX, LabelEncoder
from mridomain.iap.model import IAPNet, build_model, iap_loss


class MemmapBatches(Dataset):
    """Whole batches straight from the memmapped cache: one fancy index per batch, no per-item decode.

    Each item is a batch; ``set_epoch`` draws that epoch's permutation from (seed, epoch), so an
    interrupted and resumed run sees the same batches as an uninterrupted one.
    """

    def __init__(self, images: np.ndarray, indices: np.ndarray, cat: np.ndarray, cont: np.ndarray,
                 batch_size: int, shuffle: bool, seed: int = 0, augment: bool = False,
                 mirror: tuple[int, np.ndarray] | None = None):
        self.images, self.indices = images, np.asarray(indices, dtype=np.int64)
        self.cat, self.cont = cat, cont
        self.batch_size, self.shuffle, self.seed, self.augment = batch_size, shuffle, seed, augment
        #: (column of cat, class -> class of the mirrored image) for left-right mirroring, see
        #: :func:`mirror_relabeling`; None = no mirroring
        self.mirror = mirror
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
        idx = self.indices
        if self.shuffle:
            idx = np.random.default_rng([self.seed, epoch]).permutation(idx)
        self._batches = [idx[i:i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        self._epoch = epoch

    def __len__(self) -> int:
        return len(self._batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = np.sort(self._batches[i])          # sorted reads are sequential on the memmap
        x = np.asarray(self.images[b], dtype=np.float32)
        cat = self.cat[b]
        if self.augment or self.mirror is not None:
            rng = np.random.default_rng([self.seed, self._epoch, i])
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
        return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(cat), torch.from_numpy(self.cont[b])


#: What a left-right mirror of the stored image turns each patient position into: prone or supine,
#: head first and feet first see the patient from opposite ends, so their stored images are mirrors.
MIRRORED_POSITION = {"HFP": "FFP", "FFP": "HFP", "HFS": "FFS", "FFS": "HFS"}


def mirror_relabeling(encoder: LabelEncoder, iap: str = "patient_position") -> tuple[int, np.ndarray] | None:
    """(column of ``iap`` among the categorical targets, class index -> class index after a
    left-right mirror), or None when the encoder has no such head.

    A class whose mirror is not in the vocabulary (decubitus positions, "other", a position seen
    only one way round) maps to IGNORE_INDEX: the mirrored slice then teaches the other IAPs only.
    """
    for column, head in enumerate(encoder.categorical):
        if head.name == iap:
            index = {c: k for k, c in enumerate(head.classes)}
            relabel = [index.get(MIRRORED_POSITION.get(c, ""), IGNORE_INDEX) for c in head.classes]
            return column, np.array(relabel, dtype=np.int64)
    return None


@dataclass
class TrainResult:
    """What :func:`train` leaves behind."""

    run: Path
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    seconds: float
    metrics: pd.DataFrame = field(repr=False)

    def summary(self) -> str:
        return (f"trained {self.epochs_run} epochs in {self.seconds:.0f} s; best validation loss "
                f"{self.best_val_loss:.4f} at epoch {self.best_epoch}; run folder {self.run}")


def _input_stats(images: np.ndarray, indices: np.ndarray, seed: int) -> tuple[float, float]:
    """Mean / std of the training images (a sample of up to 512 slices) for input standardization."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(indices, size=min(512, len(indices)), replace=False))
    x = np.asarray(images[pick], dtype=np.float64)
    sd = float(x.std())
    return float(x.mean()), sd if sd > 1e-8 else 1.0


@torch.no_grad()
def validate(model: IAPNet, loader: DataLoader, encoder: LabelEncoder, config: IAPConfig,
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
    for x, cat, cont in loader:
        x = x.to(device, non_blocking=True)
        if config.channels_last and device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, config.amp):
            out = model(x)
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


def _plot_learning_curve(metrics: pd.DataFrame, path: Path, encoder: LabelEncoder) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(metrics["epoch"], metrics["train_loss"], label="train")
    axes[0].plot(metrics["epoch"], metrics["val_loss"], label="validation")
    axes[0].set(xlabel="epoch", ylabel="loss (eq. 1)", title="Loss")
    axes[0].legend()
    for h in encoder.categorical:
        col = f"val_acc_{h.name}"
        if col in metrics:
            axes[1].plot(metrics["epoch"], 100 * metrics[col], label=h.name)
    axes[1].set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="Validation accuracy", ylim=(0, 101))
    if encoder.categorical:
        axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _select_iaps(iaps: list[dict[str, Any]], config: IAPConfig) -> list[dict[str, Any]]:
    if config.iaps is None:
        return iaps
    names = {s["name"] for s in iaps}
    unknown = [n for n in config.iaps if n not in names]
    if unknown:
        raise SchemaMismatchError(f"config.iaps: {unknown} not in the cache's IAPs {sorted(names)}")
    return [s for s in iaps if s["name"] in set(config.iaps)]


def train(cache: Any, out: str | Path, preset: str | IAPConfig = "cpu", epochs: int | None = None,
          resume: bool = False, seed: int | None = 0, device: str | None = None, progress: bool = True,
          **overrides: Any) -> TrainResult:
    """Train the multi-task IAP network on a slice cache and write a run folder.

    Args:
        cache: cache folder (or an open ``SliceCache``) from ``mridomain prepare``.
        out: run folder to write (model.safetensors, config.json, labels.json, preprocess.json,
            metrics.csv, learning_curve.png, last/ for resume).
        preset: "paper" | "cpu" or an :class:`IAPConfig`.
        epochs: total number of epochs (overrides the preset; with ``resume``, train up to it).
        resume: continue from ``out/last`` (weights, optimizer, epoch); refused when the cache's
            IAP schema differs from the run's.
        seed: seed of initialization and batch order (None keeps the config's).
        device: "cpu" | "cuda" (default: cuda when available).
        progress: show tqdm bars.
        **overrides: any :class:`IAPConfig` field, e.g. ``batch_size=64``.
    """
    t_start = time.perf_counter()
    cache = open_cache(cache)
    cache_path = str(getattr(cache, "path", "cache"))
    out = Path(out)
    all_iaps = cache_iaps(cache)
    start_epoch, best_loss, best_epoch, stale = 0, math.inf, 0, 0

    if resume:
        if not (out / "last" / "state.json").exists():
            raise EmptyInputError(out, "nothing to resume (no last/state.json)")
        config, encoder, preprocess = read_run(out)
        encoder.check_schema(_select_iaps(all_iaps, config), where=f"{cache_path}/meta.json",
                             mine=f"{out}/labels.json")
        if epochs is not None:
            config.epochs = int(epochs)
        if device is not None:
            config.device = device
        state = json.loads((out / "last" / "state.json").read_text())
        start_epoch, best_loss = int(state["epoch"]), float(state["best_val_loss"])
        best_epoch, stale = int(state["best_epoch"]), int(state.get("stale", 0))
    else:
        config = get_preset(preset)
        upd: dict[str, Any] = dict(overrides)
        if epochs is not None:
            upd["epochs"] = int(epochs)
        if seed is not None:
            upd["seed"] = int(seed)
        if device is not None:
            upd["device"] = device
        config = config.updated(**upd)
        iaps = _select_iaps(all_iaps, config)
        as_cont = set(config.iaps_as_continuous) | set(config.continuous_iaps)
        encoder = LabelEncoder.fit(cache.table, iaps, as_continuous=as_cont & {s["name"] for s in iaps})
        preprocess = {"size": list(cache.meta.get("size", list(cache.images.shape[1:]))),
                      "normalization": cache.meta.get("normalization", {"method": "max255"}),
                      "source_cache": str(Path(cache_path).resolve())}

    dev = resolve_device(config.device)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    train_idx, val_idx = split_indices(cache, "train"), split_indices(cache, "val")
    if len(train_idx) == 0:
        raise EmptyInputError(cache_path, "no slices in the train split")
    if len(val_idx) == 0:
        warnings.warn(f"{cache_path}: no validation split; the best checkpoint is chosen on training loss")
        val_idx = train_idx
    cat, cont = encoder.encode(cache.table)

    if resume:
        model = build_model(config, encoder)
        load_weights(model, out / "last" / WEIGHTS)
    else:
        mean, std = _input_stats(cache.images, train_idx, config.seed)
        model = build_model(config, encoder, in_mean=mean, in_std=std)
    model.to(dev)
    if config.channels_last and dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if resume:
        load_optimizer(optimizer, out / "last")
    use_amp = config.amp and dev.type == "cuda"
    fp16 = use_amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=fp16)

    train_ds = MemmapBatches(cache.images, train_idx, cat, cont, config.batch_size, shuffle=True,
                             seed=config.seed, augment=config.augment,
                             mirror=mirror_relabeling(encoder) if config.mirror_augment else None)
    val_ds = MemmapBatches(cache.images, val_idx, cat, cont, config.eval_batch_size, shuffle=False)
    loader_kw = dict(batch_size=None, num_workers=config.num_workers, pin_memory=dev.type == "cuda")
    val_loader = DataLoader(val_ds, **loader_kw)

    out.mkdir(parents=True, exist_ok=True)
    (out / "last").mkdir(exist_ok=True)
    if not resume:
        save_run_metadata(out, config, encoder, preprocess)
        for stale_file in (out / "metrics.csv",):
            stale_file.unlink(missing_ok=True)
    else:
        config.to_json(out / "config.json")
    metrics_path = out / "metrics.csv"
    rows: list[dict[str, Any]] = pd.read_csv(metrics_path).to_dict("records") if (
        resume and metrics_path.exists()) else []
    rows = [r for r in rows if r["epoch"] <= start_epoch]

    bar = tqdm(range(start_epoch, config.epochs), desc="train", disable=not progress, unit="epoch",
               initial=start_epoch, total=config.epochs)
    for epoch in bar:
        model.train()
        train_ds.set_epoch(epoch)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, epoch)
        total, count = 0.0, 0
        for x, c, r in tqdm(DataLoader(train_ds, **loader_kw), desc=f"epoch {epoch + 1}", leave=False,
                            disable=not progress):
            x = x.to(dev, non_blocking=True)
            if config.channels_last and dev.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            c, r = c.to(dev), r.to(dev)
            optimizer.zero_grad(set_to_none=True)
            with autocast(dev, use_amp):
                outputs = model(x)
            loss, _ = iap_loss(outputs, c, r, encoder, config.lam, config.eta)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach()) * len(x)
            count += len(x)
        val_loss, val_metrics = validate(model, val_loader, encoder, config, dev)
        row = {"epoch": epoch + 1, "lr": learning_rate(config, epoch), "train_loss": total / max(count, 1), "val_loss": val_loss, **val_metrics}
        rows.append(row)
        pd.DataFrame(rows).to_csv(metrics_path, index=False)
        improved = val_loss < best_loss
        if improved:
            best_loss, best_epoch, stale = val_loss, epoch + 1, 0
            save_weights(model, out / WEIGHTS)
        else:
            stale += 1
        save_weights(model, out / "last" / WEIGHTS)
        save_optimizer(optimizer, out / "last")
        (out / "last" / "state.json").write_text(json.dumps(
            {"epoch": epoch + 1, "best_val_loss": best_loss, "best_epoch": best_epoch, "stale": stale}))
        accs = {k[8:][:6]: f"{100 * v:.0f}" for k, v in val_metrics.items() if k.startswith("val_acc_")}
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{val_loss:.3f}", **accs)
        if config.patience is not None and stale >= config.patience:
            break
    bar.close()
    metrics = pd.DataFrame(rows)
    if len(metrics):
        _plot_learning_curve(metrics, out / "learning_curve.png", encoder)
    return TrainResult(run=out, best_epoch=best_epoch, best_val_loss=best_loss,
                       epochs_run=len(metrics), seconds=time.perf_counter() - t_start, metrics=metrics)

