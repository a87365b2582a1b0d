"""Table 3 of the Seq2Seq paper: brain-tumour segmentation trained on each sequence combination.

The paper trains nnU-Net (3-D full resolution) once per combination of BraTS sequences on one subject
split, scores the enhancing tumour (ET), tumour core (TC) and whole tumour (WT) with DSC and ASSD,
and compares every combination with the complete set by a one-sided paired t-test: T1Gd + FLAIR came
out no worse than all four (p > 0.05). :func:`run_subsets` repeats that on any folder in the BraTS
layout (the brain simulator's output or real BraTS): the same split and seed for every combination,
MONAI's DSC, HD95 and symmetric surface distance (ASSD), scipy's ``ttest_rel`` with ``alternative``.

Regions follow BraTS: WT = labels {1, 2, 4}, TC = {1, 4}, ET = {4} (BraTS 2023's ET label 3 is
read as 4). Presets: ``paper`` is MONAI's DynUNet in nnU-Net's 3-D configuration (kernels and
strides from the patch and spacing by nnU-Net's rule, instance norm, leaky ReLU, deep supervision,
SGD with Nesterov momentum 0.99, poly learning rate from 0.01, Dice + CE, 1000 epochs of 250 steps
of batch 2 on 128^3 patches, a third of the patches centred on tumour); ``cpu`` a small 2.5-D MONAI
UNet (three adjacent slices of every chosen sequence as channels) for 2 cores.
"""
from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from mridomain.engine.settings import TrainSettings
from mridomain.errors import EmptyInputError, InvalidArgumentError
from mridomain.synth.config import BRATS_SEQUENCES

__all__ = ["SegmentationConfig", "SEGMENTATION_PRESETS", "make_segmentation_config", "REGIONS", "METRICS",
           "default_combinations", "PAPER_COMBINATIONS", "parse_combinations", "combination_name",
           "brats_regions", "score_volume", "one_sided_paired_test", "compare_with_reference",
           "SubsetsResult", "run_subsets", "run_subsets_demo"]

#: BraTS evaluation regions: which segmentation labels each one holds
REGIONS: dict[str, tuple[int, ...]] = {"et": (4,), "tc": (1, 4), "wt": (1, 2, 4)}
#: metric -> whether a higher value is better (decides the one-sided test's direction)
METRICS: dict[str, bool] = {"dsc": True, "hd95": False, "assd": False}
#: Table 3's rows: T1Gd, FLAIR, T1 + T2, T1Gd + FLAIR and the complete set
PAPER_COMBINATIONS: tuple[tuple[str, ...], ...] = (("t1ce",), ("flair",), ("t1", "t2"), ("t1ce", "flair"),
                                                   BRATS_SEQUENCES)
#: network class index -> BraTS label (0 background, 1 necrosis, 2 edema, 4 enhancing)
CLASS_LABELS = (0, 1, 2, 4)


def default_combinations(sequences: Sequence[str] = BRATS_SEQUENCES) -> list[tuple[str, ...]]:
    """Every single sequence, every pair and the complete set (the complete set last: the reference)."""
    seqs = tuple(sequences)
    return [c for k in (1, 2) for c in itertools.combinations(seqs, k)] + [seqs]


def combination_name(combo: Sequence[str]) -> str:
    """A combination's name as tables and ``--combinations`` write it: ``("t1ce", "flair")`` ->
    ``t1ce+flair``."""
    return "+".join(combo)


def parse_combinations(items: Iterable[str] | None, sequences: Sequence[str] = BRATS_SEQUENCES
                       ) -> list[tuple[str, ...]]:
    """``["t1ce+flair", "t1", "all", "paper", "default"]`` -> combinations in the order of
    ``sequences``; the complete set is always added (the t-test's reference), last."""
    seqs = tuple(sequences)
    if not items:
        return default_combinations(seqs)
    out: list[tuple[str, ...]] = []
    for item in items:
        for part in str(item).split(","):
            name = part.strip().lower()
            if not name:
                continue
            if name == "paper":
                found = list(PAPER_COMBINATIONS)
            elif name == "default":
                found = default_combinations(seqs)
            elif name == "all":
                found = [seqs]
            else:
                chosen = [s.strip() for s in name.split("+") if s.strip()]
                bad = [s for s in chosen if s not in seqs]
                if bad or len(set(chosen)) != len(chosen):
                    raise InvalidArgumentError(f"combination {part!r}: sequences must be distinct names of "
                                               f"{list(seqs)} joined by '+' (or all, paper, default)")
                found = [tuple(s for s in seqs if s in chosen)]
            out += [c for c in found if c not in out]
    out = [c for c in out if c != seqs] + [seqs]
    return out


# -- configuration --------------------------------------------------------------------------------
class SegmentationConfig(TrainSettings):
    """One segmentation network per combination; everything but the input channels is shared."""

    network: Literal["unet2.5d", "dynunet3d"] = "unet2.5d"
    channels: tuple[int, ...] = (16, 32, 64, 128)   # UNet widths (cpu); DynUNet derives its own
    context: int = Field(3, ge=1)                    # 2.5-D: adjacent slices per sequence (odd)
    patch: tuple[int, ...] = (128, 128, 128)         # 3-D training patch (D, H, W)
    steps_per_epoch: int = Field(250, ge=1)
    batch_size: int = Field(2, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(1e-2, gt=0)
    poly_power: float = Field(0.9, ge=0)             # nnU-Net's lr = lr0 (1 - epoch/epochs)^0.9
    tumour_fraction: float = Field(1 / 3, ge=0, le=1)  # share of samples centred on tumour (nnU-Net: 1/3)
    deep_supervision: bool = True
    fractions: tuple[float, float, float] = (0.664, 0.074, 0.262)  # the synthesis split (830/93/328)
    val_subjects: int = Field(8, ge=1)
    monitor: str = "val_dice"
    monitor_mode: Literal["min", "max"] = "max"

    @model_validator(mode="after")
    def _consistent(self) -> "SegmentationConfig":
        if self.context % 2 != 1:
            raise ValueError(f"context {self.context}: must be odd (the slice and its neighbours)")
        if self.network == "dynunet3d" and len(self.patch) != 3:
            raise ValueError(f"patch {self.patch}: a 3-D network needs (D, H, W)")
        return self


SEGMENTATION_PRESETS: dict[str, dict[str, Any]] = {
    # nnU-Net 3d_fullres on BraTS (Isensee et al., Nature Methods 2021): 128^3 patch, batch 2,
    # 1000 epochs x 250 iterations, SGD (Nesterov 0.99) from 0.01 with poly decay, Dice + CE
    "paper": {},
    "cpu": {"network": "unet2.5d", "channels": (12, 24, 48, 96), "epochs": 10, "steps_per_epoch": 40,
            "batch_size": 8, "optimizer": "adam", "lr": 3e-3, "poly_power": 0.0, "tumour_fraction": 0.75,
            "deep_supervision": False, "fractions": (0.6, 0.1, 0.3), "val_subjects": 3},
}


def make_segmentation_config(preset: str = "cpu", **overrides: Any) -> SegmentationConfig:
    """The segmentation config of ``preset`` (``paper`` or ``cpu``) with ``overrides`` applied."""
    return SegmentationConfig.from_preset(SEGMENTATION_PRESETS, preset, overrides, what="segmentation config")


# -- labels and scores ------------------------------------------------------------------------------
def label_classes(seg: np.ndarray) -> np.ndarray:
    """BraTS labels -> class indices 0..3 (0, 1 NCR, 2 ED, 3 ET); BraTS 2023's ET label 3 counts as 4."""
    seg = np.asarray(seg)
    out = np.zeros(seg.shape, np.int64)
    out[seg == 1] = 1
    out[seg == 2] = 2
    out[(seg == 4) | (seg == 3)] = 3
    return out


def brats_regions(labels: np.ndarray) -> np.ndarray:
    """``(3, ...)`` booleans ET, TC, WT of a BraTS label map (labels 1, 2, 4)."""
    labels = np.asarray(labels)
    return np.stack([np.isin(labels, REGIONS[r]) for r in REGIONS])


def score_volume(pred_labels: np.ndarray, true_labels: np.ndarray, spacing: Sequence[float] | None = None
                 ) -> dict[str, dict[str, float]]:
    """``{region: {dsc, hd95, assd}}`` of one subject, with MONAI's DiceMetric, HausdorffDistanceMetric
    (95th percentile) and SurfaceDistanceMetric (symmetric: ASSD) on BraTS label maps, distances in mm.

    BraTS' convention for empty regions: both empty -> DSC 1, distances 0; one empty -> DSC 0 and the
    distances undefined (NaN, left out of means and tests and counted in the table).
    """
    import warnings

    import torch
    from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDistanceMetric

    p = torch.from_numpy(brats_regions(pred_labels)[None].astype(np.float32))
    t = torch.from_numpy(brats_regions(true_labels)[None].astype(np.float32))
    kw = {"spacing": list(spacing)} if spacing is not None else {}
    with warnings.catch_warnings():
        # MONAI warns of empty masks (handled below by BraTS' convention) and of an argument its
        # own metrics pass internally in 1.5
        warnings.simplefilter("ignore")
        dsc = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(p, t)[0].numpy()
        hd = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(p, t, **kw)[0].numpy()
        asd = SurfaceDistanceMetric(include_background=True, symmetric=True, reduction="none")(p, t, **kw)[0].numpy()
    out = {}
    for i, region in enumerate(REGIONS):
        has_p, has_t = bool(p[0, i].any()), bool(t[0, i].any())
        if not has_p and not has_t:
            out[region] = {"dsc": 1.0, "hd95": 0.0, "assd": 0.0}
        elif not (has_p and has_t):
            out[region] = {"dsc": 0.0, "hd95": float("nan"), "assd": float("nan")}
        else:
            out[region] = {"dsc": float(dsc[i]), "hd95": float(hd[i]), "assd": float(asd[i])}
    return out


def one_sided_paired_test(candidate: Sequence[float], reference: Sequence[float],
                          higher_is_better: bool) -> tuple[float, int]:
    """p-value of the one-sided paired t-test that ``candidate`` is WORSE than ``reference``
    (scipy.stats.ttest_rel; DSC: candidate < reference, distances: candidate > reference), and the
    number of pairs used (pairs with a NaN are left out). NaN with fewer than two pairs; 1.0 when
    every difference is zero (no evidence of any)."""
    from scipy.stats import ttest_rel

    a, b = np.asarray(candidate, np.float64), np.asarray(reference, np.float64)
    if a.shape != b.shape:
        raise InvalidArgumentError(f"paired test: {a.shape} candidate vs {b.shape} reference values")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 2:
        return float("nan"), int(len(a))
    if np.allclose(a, b):
        return 1.0, int(len(a))
    alternative = "less" if higher_is_better else "greater"
    return float(ttest_rel(a, b, alternative=alternative).pvalue), int(len(a))


def compare_with_reference(scores: pd.DataFrame, reference: str, alpha: float = 0.05) -> pd.DataFrame:
    """Table 3 from per-subject scores (columns combination, subject, region, dsc, hd95, assd): per
    combination and metric/region the mean, std, the one-sided p against ``reference`` on the same
    subjects, and ``*`` where p < ``alpha`` (the paper's mark of a significantly worse result)."""
    ref = scores[scores["combination"] == reference]
    rows = []
    for combo, part in scores.groupby("combination", sort=False):
        row: dict[str, Any] = {"combination": combo, "subjects": int(part["subject"].nunique())}
        for metric, higher in METRICS.items():
            for region in REGIONS:
                mine = part[part["region"] == region].set_index("subject")[metric]
                theirs = ref[ref["region"] == region].set_index("subject")[metric]
                common = mine.index.intersection(theirs.index)
                key = f"{metric}_{region}"
                row[f"{key}_mean"] = float(np.nanmean(mine)) if mine.notna().any() else float("nan")
                row[f"{key}_std"] = float(np.nanstd(mine)) if mine.notna().any() else float("nan")
                row[f"{key}_undefined"] = int(mine.isna().sum())
                if combo == reference:
                    row[f"{key}_p"], row[f"{key}_mark"] = float("nan"), ""
                else:
                    p, _ = one_sided_paired_test(mine.loc[common].to_numpy(), theirs.loc[common].to_numpy(), higher)
                    row[f"{key}_p"], row[f"{key}_mark"] = p, "*" if p < alpha else ""
        rows.append(row)
    return pd.DataFrame(rows)


def display_table(table: pd.DataFrame, sequences: Sequence[str] = BRATS_SEQUENCES) -> pd.DataFrame:
    """The paper's layout: a tick per sequence, then ``*mean ± std`` per metric and region."""
    rows = []
    for _, r in table.iterrows():
        chosen = str(r["combination"]).split("+")
        row = {s: ("x" if s in chosen else "") for s in sequences}
        for metric in METRICS:
            for region in REGIONS:
                key = f"{metric}_{region}"
                row[f"{metric.upper()} {region.upper()}"] = (f"{r[f'{key}_mark']}{r[f'{key}_mean']:.3f} ± "
                                                             f"{r[f'{key}_std']:.3f}")
        rows.append(row)
    return pd.DataFrame(rows)


# -- data ---------------------------------------------------------------------------------------------
@dataclass
class SegVolume:
    """One subject's chosen sequences ``(C, S, H, W)``, class labels ``(S, H, W)`` and voxel spacing."""

    subject_id: str
    image: np.ndarray
    classes: np.ndarray
    spacing: tuple[float, float, float]
    tumour_slices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    head_slices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _spacing(affine: np.ndarray | None) -> tuple[float, float, float]:
    """(S, H, W) voxel size in mm: read_nifti's ``pixels[s, h, w] = data[w, h, s]``."""
    if affine is None:
        return (1.0, 1.0, 1.0)
    norms = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    return (float(norms[2]), float(norms[1]), float(norms[0]))


def seg_volumes(subjects: Sequence[Any], combo: Sequence[str]) -> list[SegVolume]:
    """Each subject's :class:`SegVolume` for ``combo``: the first time point of each of its sequences
    stacked as channels, class labels, voxel spacing, the slices with tumour and the head slices."""
    out = []
    for sub in subjects:
        image = np.stack([np.asarray(sub.volumes[s][0], np.float32) for s in combo])
        classes = label_classes(sub.seg)
        tumour = np.flatnonzero((classes > 0).any(axis=(1, 2)))
        out.append(SegVolume(sub.subject_id, image, classes, _spacing(sub.affine), tumour, sub.head_slices()))
    return out


def _pad_to(x: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        pad = [(0, 0)] * (x.ndim - 2) + [(0, ph), (0, pw)]
        x = np.pad(x, pad)
    return x, (h, w)


def _context(image: np.ndarray, z: int, k: int) -> np.ndarray:
    """``(C * k, H, W)``: slice ``z`` and its neighbours of every channel (edges repeated)."""
    idx = np.clip(np.arange(z - k // 2, z + k // 2 + 1), 0, image.shape[1] - 1)
    return image[:, idx].reshape(-1, *image.shape[2:])


def nnunet_kernels_strides(patch: Sequence[int], spacing: Sequence[float]) -> tuple[list, list]:
    """DynUNet kernels and strides by nnU-Net's rule (MONAI's DynUNet BraTS tutorial): halve an
    axis while it is at least 8 voxels and not more than twice as coarse as the finest axis."""
    sizes, spacings = list(patch), list(spacing)
    strides, kernels = [], []
    while True:
        ratio = [sp / min(spacings) for sp in spacings]
        stride = [2 if r <= 2 and s >= 8 else 1 for r, s in zip(ratio, sizes)]
        kernel = [3 if r <= 2 else 1 for r in ratio]
        if all(s == 1 for s in stride):
            break
        sizes = [i / j for i, j in zip(sizes, stride)]
        spacings = [i * j for i, j in zip(spacings, stride)]
        kernels.append(kernel)
        strides.append(stride)
        if len(strides) == 5:
            break
    strides.insert(0, len(spacings) * [1])
    kernels.append(len(spacings) * [3])
    return kernels, strides


def build_segmentation_network(cfg: SegmentationConfig, in_channels: int, spacing: Sequence[float]):
    """MONAI UNet (2.5-D, cpu) or DynUNet in nnU-Net's configuration (3-D, paper), 4 output classes."""
    if cfg.network == "unet2.5d":
        from monai.networks.nets import UNet

        return UNet(spatial_dims=2, in_channels=in_channels * cfg.context, out_channels=len(CLASS_LABELS),
                    channels=cfg.channels, strides=(2,) * (len(cfg.channels) - 1), num_res_units=1,
                    norm="instance")
    from monai.networks.nets import DynUNet

    kernels, strides = nnunet_kernels_strides(cfg.patch, spacing)
    return DynUNet(spatial_dims=3, in_channels=in_channels, out_channels=len(CLASS_LABELS), kernel_size=kernels,
                   strides=strides, upsample_kernel_size=strides[1:], norm_name="instance",
                   deep_supervision=cfg.deep_supervision, deep_supr_num=max(1, min(2, len(strides) - 2)),
                   res_block=False)


# -- the engine task ---------------------------------------------------------------------------------
def _import_engine():
    from mridomain.engine.engine import StepContext, TrainTask, epoch_batches

    return StepContext, TrainTask, epoch_batches


def _segmentation_task_class():
    import torch

    _, TrainTask, _ = _import_engine()

    class SegmentationTask(TrainTask):
        """Dice + CE training of one network on one combination; the best epoch by the mean of the
        validation subjects' ET / TC / WT Dice (the volumes predicted whole)."""

        def __init__(self, cfg: SegmentationConfig, train: list[SegVolume], val: list[SegVolume]):
            from monai.losses import DiceCELoss

            self.cfg, self.train, self.val = cfg, train, val
            self.in_channels = train[0].image.shape[0]
            self.loss = DiceCELoss(to_onehot_y=True, softmax=True)

        def build_modules(self):
            return {"model": build_segmentation_network(self.cfg, self.in_channels, self.train[0].spacing)}

        def build_optimizers(self, modules):
            params = modules["model"].parameters()
            if self.cfg.optimizer == "sgd":
                return {"opt": torch.optim.SGD(params, lr=self.cfg.lr, momentum=0.99, nesterov=True,
                                               weight_decay=3e-5)}
            return {"opt": torch.optim.Adam(params, lr=self.cfg.lr)}

        def learning_rates(self, epoch):
            return {"opt": self.cfg.lr * (1 - epoch / self.cfg.epochs) ** self.cfg.poly_power}

        def train_batches(self, epoch, rank, world_size):
            n = self.cfg.steps_per_epoch * self.cfg.batch_size
            for step, idx in enumerate(_import_engine()[2](n, self.cfg.batch_size, self.cfg.seed, epoch, False,
                                                          rank, world_size)):
                yield epoch, step, len(idx)

        def _sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
            vol = self.train[int(rng.integers(len(self.train)))]
            on_tumour = rng.random() < self.cfg.tumour_fraction and len(vol.tumour_slices)
            if self.cfg.network == "unet2.5d":
                pool = vol.tumour_slices if on_tumour else (vol.head_slices if len(vol.head_slices)
                                                            else np.arange(vol.image.shape[1]))
                z = int(pool[rng.integers(len(pool))])
                x, y = _context(vol.image, z, self.cfg.context), vol.classes[z][None]
                if rng.random() < 0.5:
                    x, y = x[..., ::-1], y[..., ::-1]
                return x, y
            return _random_patch(vol, self.cfg.patch, rng, bool(on_tumour))

        def training_step(self, batch, ctx):
            epoch, step, n = batch
            rng = np.random.default_rng([self.cfg.seed, epoch, step, ctx.rank])
            pairs = [self._sample(rng) for _ in range(n)]
            mult = 2 ** (len(self.cfg.channels) - 1) if self.cfg.network == "unet2.5d" else 1
            xs = np.stack([_pad_to(np.ascontiguousarray(p[0]), mult)[0] for p in pairs])
            ys = np.stack([_pad_to(np.ascontiguousarray(p[1]), mult)[0] for p in pairs])
            x = ctx.to_device(torch.from_numpy(xs))
            y = ctx.to_device(torch.from_numpy(ys.astype(np.int64)))
            with ctx.autocast():
                out = ctx.modules["model"](x)
                if out.ndim == x.ndim + 1:   # DynUNet deep supervision: (B, heads, C, ...)
                    heads = torch.unbind(out, dim=1)
                    weights = [0.5 ** i for i in range(len(heads))]
                    loss = sum(w * self.loss(h.float(), y) for w, h in zip(weights, heads)) / sum(weights)
                else:
                    loss = self.loss(out.float(), y)
            ctx.backward(loss)
            ctx.step("opt")
            return {"loss": float(loss.detach()), "batch_size": n}

        def validate(self, ctx):
            net = ctx.unwrapped("model")
            dices = []
            for vol in self.val:
                pred = predict_volume(net, vol.image, self.cfg, ctx.device)
                scores = score_volume(pred, np.asarray(CLASS_LABELS)[vol.classes], vol.spacing)
                dices.append(np.mean([scores[r]["dsc"] for r in REGIONS]))
            return {"val_dice": float(np.mean(dices))}

    return SegmentationTask


def _random_patch(vol: SegVolume, patch: Sequence[int], rng: np.random.Generator, on_tumour: bool):
    shape = vol.classes.shape
    img = vol.image
    pad = [max(0, p - s) for p, s in zip(patch, shape)]
    if any(pad):
        img = np.pad(img, [(0, 0)] + [(0, q) for q in pad])
        cls = np.pad(vol.classes, [(0, q) for q in pad])
    else:
        cls = vol.classes
    if on_tumour:
        fg = np.argwhere(cls > 0)
        centre = fg[rng.integers(len(fg))]
        start = [int(np.clip(c - p // 2, 0, s - p)) for c, p, s in zip(centre, patch, cls.shape)]
    else:
        start = [int(rng.integers(0, s - p + 1)) for p, s in zip(patch, cls.shape)]
    sl = tuple(slice(a, a + p) for a, p in zip(start, patch))
    return img[(slice(None),) + sl], cls[sl][None]


def predict_volume(net, image: np.ndarray, cfg: SegmentationConfig, device, batch: int = 16) -> np.ndarray:
    """BraTS labels ``(S, H, W)`` predicted for one ``(C, S, H, W)`` volume: slice by slice (2.5-D) or
    by MONAI's sliding-window inference over patches (3-D)."""
    import torch

    net.eval()
    with torch.no_grad():
        if cfg.network == "unet2.5d":
            mult = 2 ** (len(cfg.channels) - 1)
            out = []
            for start in range(0, image.shape[1], batch):
                zs = range(start, min(start + batch, image.shape[1]))
                xs, (h, w) = _pad_to(np.stack([_context(image, z, cfg.context) for z in zs]), mult)
                logits = net(torch.from_numpy(np.ascontiguousarray(xs)).to(device))
                out.append(logits.argmax(1)[:, :h, :w].cpu().numpy())
            classes = np.concatenate(out)
        else:
            from monai.inferers import sliding_window_inference

            x = torch.from_numpy(image[None]).to(device)
            logits = sliding_window_inference(x, cfg.patch, 2, net, overlap=0.5, mode="gaussian")
            classes = logits.argmax(1)[0].cpu().numpy()
    net.train()
    return np.asarray(CLASS_LABELS, np.uint8)[classes]


# -- the study ------------------------------------------------------------------------------------------
@dataclass
class SubsetsResult:
    """What :func:`run_subsets` wrote: Table 3, the per-subject scores, the subjects skipped (with
    why), the seconds it took and run facts (test subjects, load averages, the verdict)."""

    out: Path
    table: pd.DataFrame          # table3.csv
    scores: pd.DataFrame         # per subject, combination and region
    skipped: list[tuple[str, str]]
    seconds: float
    info: dict

    def to_markdown(self) -> str:
        """Table 3 as Markdown, the test, time and load average, the non-inferiority verdict, where it
        was written and each skipped subject with why."""
        from mridomain.report import df_to_markdown

        lines = [df_to_markdown(display_table(self.table)),
                 f"* one-sided paired t-test against all four sequences, p < 0.05 ({self.info['test_subjects']} "
                 f"test subjects); {self.seconds:.0f} s, load average {self.info['load_average_start']} -> "
                 f"{self.info['load_average_end']}", self.info["verdict"], f"-> {self.out}"]
        lines += [f"  skipped {p}: {why}" for p, why in self.skipped]
        return "\n".join(lines)


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def non_inferiority_verdict(table: pd.DataFrame, combo: str = "t1ce+flair") -> str:
    """Whether ``combo`` is marked significantly worse than the complete set on any DSC / ASSD cell."""
    if combo not in set(table["combination"]):
        return f"{combo} was not among the combinations"
    row = table[table["combination"] == combo].iloc[0]
    worse = [f"{m.upper()} {r.upper()} (p={row[f'{m}_{r}_p']:.3g})" for m in ("dsc", "assd") for r in REGIONS
             if row[f"{m}_{r}_mark"] == "*"]
    if worse:
        return f"{combo} is significantly worse than all four sequences on " + ", ".join(worse) + \
               " (the paper: no worse, p > 0.05)"
    return f"{combo} is not significantly worse than all four sequences on any DSC or ASSD cell (p >= 0.05), as in the paper"


def _figure(table: pd.DataFrame):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.6))
    axes = fig.subplots(1, 2)
    x = np.arange(len(table))
    for ax, metric, label in ((axes[0], "dsc", "DSC (higher is better)"), (axes[1], "assd", "ASSD mm (lower is better)")):
        for j, region in enumerate(REGIONS):
            means, stds = table[f"{metric}_{region}_mean"], table[f"{metric}_{region}_std"]
            bars = ax.bar(x + (j - 1) * 0.27, means, 0.27, yerr=stds, capsize=2, label=region.upper())
            for b, mark, sd in zip(bars, table[f"{metric}_{region}_mark"], stds):
                if mark:   # above the error bar
                    ax.text(b.get_x() + b.get_width() / 2, b.get_height() + np.nan_to_num(sd), "*", ha="center",
                            va="bottom", fontsize=12, fontweight="bold")
        ax.set_xticks(x)
        ax.set_xticklabels(table["combination"], rotation=35, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.suptitle("Segmentation by sequence combination (* significantly worse than all four, one-sided paired t-test)",
                 fontsize=9)
    fig.tight_layout()
    return fig


def run_subsets(data: str | Path, out: str | Path, combinations: Sequence[str] | None = None, preset: str = "cpu",
                seed: int = 0, epochs: int | None = None, device: str | None = None, progress: bool = True,
                alpha: float = 0.05, **overrides: Any) -> SubsetsResult:
    """Python twin of ``mridomain synth subsets``: train one segmentation network per sequence
    combination on the same split and seed, score the test subjects, test each combination against
    the complete set and write ``table3.csv``, ``scores.csv``, ``table3.png`` and ``report.html``.

    Subjects without a ``_seg`` file or lacking a sequence are skipped and listed. A finished
    combination (``runs/<combination>/scores.csv``) is reused when the command runs again.
    """
    import torch

    from mridomain.engine import Engine, resolve_device, write_json_atomic
    from mridomain.engine.checkpoint import load_weights
    from mridomain.progress import progress_bar
    from mridomain.report import Section, write_html_report
    from mridomain.synth.data import load_dataset, split_subjects

    t0, load0 = time.perf_counter(), _load()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    combos = parse_combinations(combinations)
    cfg = make_segmentation_config(preset, seed=seed, epochs=epochs, device=device, **overrides)
    ds = load_dataset(data, BRATS_SEQUENCES, progress=progress)
    skipped = list(ds.skipped)
    subjects = []
    for sub in ds.subjects:
        if sub.seg is None:
            skipped.append((str(sub.folder or sub.subject_id), "no _seg file (segmentation needs labels)"))
        else:
            subjects.append(sub)
    if len(subjects) < 4:
        raise EmptyInputError(Path(data), f"{len(subjects)} subjects with all of {list(BRATS_SEQUENCES)} and a "
                                          "_seg file; the split needs at least 4")
    split = split_subjects([s.subject_id for s in subjects], cfg.fractions, seed)
    if not split["val"]:
        split["val"] = split["train"][-1:]
        split["train"] = split["train"][:-1]
    by_id = {s.subject_id: s for s in subjects}
    write_json_atomic(out / "split.json", split)
    all_scores = []
    for combo in progress_bar(combos, desc="combinations", unit="net", enabled=progress):
        name = combination_name(combo)
        run = out / "runs" / name
        done = run / "scores.csv"
        if done.exists():
            all_scores.append(pd.read_csv(done))
            continue
        train = seg_volumes([by_id[i] for i in split["train"]], combo)
        val = seg_volumes([by_id[i] for i in split["val"][:cfg.val_subjects]], combo)
        test = seg_volumes([by_id[i] for i in split["test"]], combo)
        task = _segmentation_task_class()(cfg, train, val)
        Engine(cfg, run, progress=progress, resumable=False).fit(task)
        torch.manual_seed(cfg.seed)
        net = load_weights(build_segmentation_network(cfg, len(combo), train[0].spacing), run / "model.safetensors")
        dev = resolve_device(device)
        net = net.to(dev)
        rows = []
        for vol in test:
            pred = predict_volume(net, vol.image, cfg, dev)
            for region, m in score_volume(pred, np.asarray(CLASS_LABELS)[vol.classes], vol.spacing).items():
                rows.append({"combination": name, "subject": vol.subject_id, "region": region, **m})
        frame = pd.DataFrame(rows)
        frame.to_csv(done, index=False)
        all_scores.append(frame)
    scores = pd.concat(all_scores, ignore_index=True)
    scores.to_csv(out / "scores.csv", index=False)
    reference = combination_name(BRATS_SEQUENCES)
    table = compare_with_reference(scores, reference, alpha)
    table.to_csv(out / "table3.csv", index=False)
    from mridomain.report import figure_to_png

    fig = _figure(table)
    (out / "table3.png").write_bytes(figure_to_png(fig))
    seconds = time.perf_counter() - t0
    info = {"preset": preset, "config": cfg.to_dict(), "combinations": [combination_name(c) for c in combos],
            "train_subjects": len(split["train"]), "val_subjects": len(split["val"]),
            "test_subjects": len(split["test"]), "seconds": round(seconds, 1), "load_average_start": load0,
            "load_average_end": _load(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "verdict": non_inferiority_verdict(table), "alpha": alpha,
            "test": "scipy.stats.ttest_rel, one-sided: DSC alternative='less', HD95/ASSD alternative='greater' "
                    "(H1: the combination is worse than all four)"}
    write_json_atomic(out / "subsets.json", info)
    undefined = int(scores[["hd95", "assd"]].isna().any(axis=1).sum())
    write_html_report(out / "report.html", "Segmentation by sequence combination (Table 3)", [
        Section("Table 3", text=(
            f"{cfg.network} ({preset} preset) trained once per combination on {len(split['train'])} subjects "
            f"(validation {len(split['val'])}, best epoch by mean Dice), seed {seed}; scored on "
            f"{len(split['test'])} test subjects. * marks p < {alpha} in the one-sided paired t-test that the "
            f"combination is worse than all four sequences. Distances in mm; {undefined} subject-region rows "
            "had one of prediction and truth empty (distance undefined, left out).\n\n"
            f"{seconds:.0f} s, load average {load0} at the start, {info['load_average_end']} at the end, "
            f"{os.cpu_count()} CPUs."),
            tables=[("as the paper's Table 3", display_table(table)), ("all values (table3.csv)", table.round(4))],
            figures=[("DSC and ASSD per region", out / "table3.png")], note=info["verdict"]),
        Section("Skipped", tables=[pd.DataFrame(skipped, columns=["path", "reason"])]) if skipped else
        Section("Skipped", text="none"),
    ], subtitle=f"mridomain synth subsets {data} -o {out} --preset {preset} --seed {seed}")
    return SubsetsResult(out, table, scores, skipped, seconds, info)


def simulate_once(folder: Path, subjects: int, seed: int, voxel_mm: float, progress: bool) -> None:
    """Simulate the demo's brains unless ``folder`` already holds this very set (``simulation.json``
    says so, written last): a demo run again goes straight to its networks."""
    import json

    from mridomain.sim.brain import simulate_brains

    stamp, want = folder / "simulation.json", {"subjects": subjects, "seed": seed, "voxel_mm": voxel_mm}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return
    simulate_brains(folder, n_subjects=subjects, seed=seed, voxel_mm=voxel_mm, progress=progress)
    stamp.write_text(json.dumps(want))


#: the demo's simulated subjects (3 mm voxels keep it inside 10 minutes on 2 cores)
DEMO_SUBJECTS = 24


def run_subsets_demo(out: str | Path = "subsets_demo", subjects: int = DEMO_SUBJECTS, seed: int = 0,
                     combinations: Sequence[str] | None = ("paper",), epochs: int | None = None,
                     voxel_mm: float = 3.0, progress: bool = True) -> SubsetsResult:
    """Python twin of ``mridomain synth subsets demo``: simulate brains, then :func:`run_subsets`
    on the paper's five rows at the cpu preset."""
    out = Path(out)
    simulate_once(out / "brains", subjects, seed, voxel_mm, progress)
    return run_subsets(out / "brains", out, combinations=combinations, preset="cpu", seed=seed, epochs=epochs,
                       progress=progress)
