"""Table 4 and Fig. 7 of the Seq2Seq paper: does adding M_d as input channels help a classifier?

The paper trains a ResNet-18 on T1 + T2, T1Gd + FLAIR and all four sequences, each with and without
the imaging-differentiation maps M_d of those sequences, to predict MGMT promoter methylation of
574 BraTS 2021 subjects in a 5 x 4 subject-level nested cross-validation, and reports AUC and
accuracy (M_d raised the AUC by up to 0.023). :func:`run_downstream` repeats that on any folder in
the BraTS layout with a labels CSV (``BraTS21_ID,MGMT_value`` runs unchanged) and a Seq2Seq run
that computes M_d (eq. 5, :mod:`mridomain.synth.differentiation`).

Nested cross-validation: the subjects are split into ``outer_folds`` stratified folds; for each
outer fold the rest is split again into ``inner_folds``; one network is trained per inner split
(the inner validation fold picks its best epoch and stops it early) and the outer test fold is
scored by the mean probability of the inner networks. Every input variant uses the same folds and
seeds, so with/without M_d are paired on the same subjects. Every subject is tested exactly once:
AUC and accuracy are pooled over the outer folds with subject-bootstrap 95% intervals, plus the
mean +- std over outer folds (the paper's form), and the paired AUC difference with - without M_d
with its paired bootstrap interval.

Presets: ``paper`` is a 3-D MONAI ResNet-18 on a 128^3 crop around the tumour (Adam, 50 epochs,
batch 2, lr 1e-3; the paper's network was pre-trained, which needs weights nothing here downloads);
``cpu`` a 2-D ResNet-18 of quarter width on the axial slice with the largest tumour area, resampled
to 3 mm pixels and cropped to 48 x 48 around the tumour.
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from mridomain.engine.classification import ArrayClassifier, ClassifierSettings
from mridomain.errors import EmptyInputError, InvalidArgumentError, SchemaMismatchError
from mridomain.synth.config import BRATS_SEQUENCES

__all__ = ["DownstreamConfig", "DOWNSTREAM_PRESETS", "make_downstream_config", "INPUT_COMBINATIONS", "read_labels",
           "match_labels", "nested_cv_splits", "MdClassifier", "DownstreamResult", "run_downstream",
           "run_downstream_demo", "variant_channels"]

#: Table 4's input combinations (each run with and without M_d of its sequences)
INPUT_COMBINATIONS: dict[str, tuple[str, ...]] = {"T1+T2": ("t1", "t2"), "T1Gd+FLAIR": ("t1ce", "flair"),
                                                  "All": BRATS_SEQUENCES}


class DownstreamConfig(ClassifierSettings):
    """The Table 4 classifier and its nested cross-validation: network, crop around the tumour, voxel
    size, folds and training schedule."""

    network: Literal["resnet18_2d", "resnet18_3d"] = "resnet18_3d"
    widen_factor: float = Field(1.0, gt=0)         # MONAI ResNet width multiplier (1 = ResNet-18)
    crop: tuple[int, ...] = (128, 128, 128)        # around the tumour: (H, W) for 2-D, (D, H, W) for 3-D
    pixel_mm: float | None = None                  # resample to this voxel size first (None: as read)
    outer_folds: int = Field(5, ge=2)
    inner_folds: int = Field(4, ge=2)
    epochs: int = Field(50, ge=1)
    batch_size: int = Field(2, ge=2)
    lr: float = Field(1e-3, gt=0)
    patience: int | None = Field(10, ge=1)
    monitor: str = "val_loss"


DOWNSTREAM_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpu": {"network": "resnet18_2d", "widen_factor": 0.25, "crop": (48, 48), "pixel_mm": 3.0, "epochs": 12,
            "batch_size": 16, "patience": 4},
}


def make_downstream_config(preset: str = "cpu", **overrides: Any) -> DownstreamConfig:
    """The downstream config of ``preset`` (``paper`` or ``cpu``) with ``overrides`` applied; a crop
    whose length does not match the network's dimensions is an :class:`InvalidArgumentError`."""
    cfg = DownstreamConfig.from_preset(DOWNSTREAM_PRESETS, preset, overrides, what="downstream config")
    want = 2 if cfg.network == "resnet18_2d" else 3
    if len(cfg.crop) != want:
        raise InvalidArgumentError(f"crop {cfg.crop}: {cfg.network} needs {want} sizes")
    return cfg


# -- labels -------------------------------------------------------------------------------------------
def read_labels(path: str | Path, id_column: str | None = None, label_column: str | None = None
                ) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """``(frame with columns id, label, skipped rows)`` from a CSV: ``BraTS21_ID,MGMT_value`` is found
    by name, otherwise the first two columns (or the ones named). Labels must be 0/1; other rows are
    skipped and reported (row number and reason)."""
    path = Path(path)
    if not path.is_file():
        raise EmptyInputError(path, "labels CSV does not exist")
    try:
        frame = pd.read_csv(path, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise SchemaMismatchError(f"{path}: not a readable CSV ({err})") from err
    if frame.shape[1] < 2:
        raise SchemaMismatchError(f"{path}: needs an id column and a 0/1 label column, found {list(frame.columns)}")
    cols = list(frame.columns)
    idc = id_column or ("BraTS21_ID" if "BraTS21_ID" in cols else cols[0])
    lab = label_column or ("MGMT_value" if "MGMT_value" in cols else cols[1])
    for c in (idc, lab):
        if c not in cols:
            raise SchemaMismatchError(f"{path}: no column {c!r} (columns: {cols})")
    rows, skipped = [], []
    for i, (sid, value) in enumerate(zip(frame[idc], frame[lab]), start=2):
        text = str(value).strip()
        if text not in ("0", "1", "0.0", "1.0"):
            skipped.append((f"{path}:{i}", f"label {value!r} is not 0/1"))
            continue
        rows.append({"id": str(sid).strip(), "label": int(float(text))})
    out = pd.DataFrame(rows, columns=["id", "label"])
    dup = out["id"].duplicated(keep=False)
    if dup.any():
        raise SchemaMismatchError(f"{path}: id {out.loc[dup, 'id'].iloc[0]!r} appears more than once")
    return out, skipped


def match_labels(labels: pd.DataFrame, folders: Sequence[Path]) -> tuple[dict[Path, int], list[str]]:
    """``{subject folder: label}`` and the label ids with no folder. An id matches a folder of the same
    name or, when numeric (BraTS21_ID 00002 or 2), one whose name ends in that number (BraTS2021_00002)."""
    by_name = {f.name: f for f in folders}
    by_number: dict[int, Path] = {}
    for f in folders:
        m = re.search(r"(\d+)$", f.name)
        if m:
            by_number.setdefault(int(m.group(1)), f)
    matched, missing = {}, []
    for sid, label in zip(labels["id"], labels["label"]):
        folder = by_name.get(sid)
        if folder is None and sid.isdigit():
            folder = by_number.get(int(sid))
        if folder is None:
            missing.append(sid)
        else:
            matched[folder] = int(label)
    return matched, missing


# -- nested cross-validation --------------------------------------------------------------------------
def nested_cv_splits(labels: Sequence[int], outer_folds: int = 5, inner_folds: int = 4, seed: int = 0
                     ) -> list[dict[str, Any]]:
    """Subject-level stratified nested folds: one dict per (outer, inner) with index arrays ``train``,
    ``val`` (the inner fold: best epoch, early stopping) and ``test`` (the outer fold). Within one
    outer split, ``test`` is disjoint from every inner ``train`` and ``val``; ``train`` and ``val``
    are disjoint and together are everything but ``test``."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(y, minlength=2)
    need = outer_folds * inner_folds // (inner_folds - 1) + 1
    if counts.min() < max(outer_folds, inner_folds) or len(y) < need:
        raise InvalidArgumentError(f"{len(y)} labelled subjects ({counts[0]} of label 0, {counts[1]} of label 1) "
                                   f"are too few for {outer_folds} x {inner_folds} stratified nested folds")
    out = []
    outer = StratifiedKFold(outer_folds, shuffle=True, random_state=seed)
    for o, (rest, test) in enumerate(outer.split(np.zeros(len(y)), y)):
        inner = StratifiedKFold(inner_folds, shuffle=True, random_state=seed + 1000 + o)
        for i, (tr, va) in enumerate(inner.split(np.zeros(len(rest)), y[rest])):
            out.append({"outer": o, "inner": i, "train": rest[tr], "val": rest[va], "test": test})
    return out


# -- the classifier on the shared engine ----------------------------------------------------------------
class MdClassifier(ArrayClassifier):
    """MONAI ResNet-18 (2-D or 3-D) on stacked sequence / M_d channels, one logit; channels are
    standardized with the training images' per-channel mean and std."""

    kind: ClassVar[str] = "mridomain.synth.downstream"
    config_class: ClassVar[type[ClassifierSettings]] = DownstreamConfig
    engine_options: ClassVar[dict[str, Any]] = {"resumable": False, "plots": False}

    def __init__(self, config: DownstreamConfig, channels: int | None = None):
        super().__init__(config)
        self.channels = channels
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def architecture(self):
        """MONAI ResNet-18 (2-D or 3-D, the config's width) with ResNet's own 7 x 7 stride-2 stem and one
        output; the channel count must be known (set by :meth:`before_fit` or the metadata)."""
        from monai.networks.nets import resnet18

        if self.channels is None:
            raise SchemaMismatchError("MdClassifier: channel count unknown before fit")
        dims = 2 if self.config.network == "resnet18_2d" else 3
        # ResNet-18's own stem (7 x 7 convolution of stride 2, then max pooling) in 2-D and 3-D
        return resnet18(spatial_dims=dims, n_input_channels=self.channels, num_classes=1,
                        widen_factor=self.config.widen_factor, conv1_t_size=7, conv1_t_stride=2)

    def flip_axes(self) -> tuple[int, ...]:
        """The spatial axes of one sample (all but the channel axis)."""
        return (1, 2) if self.config.network == "resnet18_2d" else (1, 2, 3)

    def check(self, images: np.ndarray, where: str) -> None:
        """Refuse images whose channel count differs from the model's (once known)."""
        if self.channels is not None and images.shape[1] != self.channels:
            raise SchemaMismatchError(f"{where}: {images.shape[1]} input channels, the model takes {self.channels}")

    def before_fit(self, images: np.ndarray) -> None:
        """Take the channel count and the per-channel mean and std (floored at 1e-6) from the training images."""
        self.channels = int(images.shape[1])
        axes = (0,) + tuple(range(2, images.ndim))
        self.mean = np.asarray(images.mean(axis=axes), np.float32)
        self.std = np.maximum(np.asarray(images.std(axis=axes), np.float32), 1e-6)

    def prepare(self, batch: np.ndarray):
        """A batch standardized per channel with the training statistics, as a float32 tensor."""
        import torch

        shape = (1, -1) + (1,) * (batch.ndim - 2)
        x = (np.asarray(batch, np.float32) - self.mean.reshape(shape)) / self.std.reshape(shape)
        return torch.from_numpy(np.ascontiguousarray(x))

    def metadata(self) -> dict[str, Any]:
        """The channel count and per-channel mean and std, which prediction needs again."""
        return {"channels": self.channels, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_metadata(cls, config: Any, meta: dict[str, Any], where: str) -> "MdClassifier":
        """A classifier with the channel count and statistics of :meth:`metadata`."""
        obj = cls(config, int(meta["channels"]))
        obj.mean, obj.std = np.asarray(meta["mean"], np.float32), np.asarray(meta["std"], np.float32)
        return obj


# -- inputs --------------------------------------------------------------------------------------------
def _crop_around(x: np.ndarray, centre: Sequence[float], size: Sequence[int]) -> np.ndarray:
    """Crop the trailing axes of ``x`` to ``size`` centred on ``centre`` (zero padding outside)."""
    nd = len(size)
    pads = [(0, 0)] * (x.ndim - nd) + [(s, s) for s in size]
    xp = np.pad(x, pads)
    sl = [slice(None)] * (x.ndim - nd)
    for c, s in zip(centre, size):
        start = int(round(c)) + s - s // 2
        sl.append(slice(start, start + s))
    return xp[tuple(sl)]


def subject_inputs(subject: Any, maps: dict[str, np.ndarray], cfg: DownstreamConfig, sequences: Sequence[str]
                   ) -> np.ndarray:
    """``(2 x len(sequences), *crop)``: every sequence then its M_d, around the tumour (the ``_seg``
    labels; without them, the head's centre), on the 2-D slice with the largest tumour area or the
    3-D volume, resampled to ``cfg.pixel_mm`` when set."""
    from scipy import ndimage

    from mridomain.synth.subsets import _spacing

    stack = np.stack([subject.volumes[s][0] for s in sequences] + [maps[s] for s in sequences]).astype(np.float32)
    mask = subject.seg > 0 if subject.seg is not None and (subject.seg > 0).any() else subject.head_mask()
    spacing = np.asarray(_spacing(subject.affine))
    if cfg.network == "resnet18_2d":
        z = int(np.argmax(mask.sum(axis=(1, 2))))
        stack, mask, spacing = stack[:, z], mask[z], spacing[1:]
    if cfg.pixel_mm is not None:
        factors = spacing / cfg.pixel_mm
        if not np.allclose(factors, 1.0):
            stack = np.stack([ndimage.zoom(c, factors, order=1) for c in stack])
            mask = ndimage.zoom(mask.astype(np.float32), factors, order=0) > 0.5
    centre = np.argwhere(mask).mean(axis=0) if mask.any() else np.asarray(mask.shape) / 2.0
    return _crop_around(stack, centre, cfg.crop)


def variant_channels(sequences: Sequence[str], combo: Sequence[str], with_md: bool,
                     md_sequences: Sequence[str] | None = None) -> list[int]:
    """Indices into :func:`subject_inputs`' channels of a combination's images and, ``with_md``, the
    M_d of ``md_sequences`` (default: of the combination's own sequences)."""
    n = len(sequences)
    idx = [sequences.index(s) for s in combo]
    md = idx if md_sequences is None else [sequences.index(s) for s in md_sequences]
    return idx + ([n + i for i in md] if with_md else [])


# -- the study ----------------------------------------------------------------------------------------------
@dataclass
class DownstreamResult:
    """What :func:`run_downstream` wrote: Table 4, the with-minus-without-M_d differences, the
    per-subject predictions, the subjects skipped (with why), the seconds and run facts."""

    out: Path
    table: pd.DataFrame            # table4.csv
    differences: pd.DataFrame      # with - without M_d, per combination
    predictions: pd.DataFrame
    skipped: list[tuple[str, str]]
    seconds: float
    info: dict

    def to_markdown(self) -> str:
        """Table 4 and the differences as Markdown, the verdict, subjects, time and load average, where it
        was written and each skipped subject with why."""
        from mridomain.report import df_to_markdown

        lines = [df_to_markdown(self.table.round(3)), df_to_markdown(self.differences.round(3)),
                 self.info["verdict"],
                 f"{self.info['subjects']} subjects, {self.seconds:.0f} s, load average "
                 f"{self.info['load_average_start']} -> {self.info['load_average_end']} -> {self.out}"]
        lines += [f"  skipped {p}: {why}" for p, why in self.skipped]
        return "\n".join(lines)


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count one half): the same value as sklearn's
    roc_auc_score, about a thousand times faster, which the bootstrap's thousands of resamples need."""
    from scipy.stats import rankdata

    y = np.asarray(y) >= 0.5
    n1, n0 = int(y.sum()), int((~y).sum())
    if not n1 or not n0:
        return float("nan")
    ranks = rankdata(np.asarray(p, np.float64))
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p >= 0.5) == (y >= 0.5)))


def _threshold_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Table 4's other columns at probability 0.5: sensitivity, specificity, PPV, NPV (NaN when undefined)."""
    y, hit = np.asarray(y) >= 0.5, np.asarray(p) >= 0.5
    tp, tn, fp, fn = (int(np.sum(a & b)) for a, b in ((y, hit), (~y, ~hit), (~y, hit), (y, ~hit)))
    ratio = lambda a, b: a / (a + b) if a + b else float("nan")  # noqa: E731
    return {"sensitivity": ratio(tp, fn), "specificity": ratio(tn, fp), "ppv": ratio(tp, fp), "npv": ratio(tn, fn)}


def compute_inputs(data: str | Path, labels_csv: str | Path, run: str | Path, out: Path, cfg: DownstreamConfig,
                   id_column: str | None = None, label_column: str | None = None, device: str | None = None,
                   progress: bool = True, needed: Sequence[str] = BRATS_SEQUENCES
                   ) -> tuple[np.ndarray, pd.DataFrame, list[tuple[str, str]], tuple[str, ...]]:
    """Read each labelled subject once, compute its M_d with the run, keep only the classifier's
    crop (``OUT/inputs.npy`` + ``OUT/subjects.csv``, reused when present). Subjects that cannot be
    read are skipped and reported; the others go on. ``needed``: the sequences the combinations use."""
    from mridomain.errors import MridomainError
    from mridomain.progress import progress_bar
    from mridomain.synth.data import _subject_folders, load_subject
    from mridomain.synth.differentiation import subject_dmaps
    from mridomain.synth.model import load_run

    inputs_path, subjects_path = out / "inputs.npy", out / "subjects.csv"
    synth = load_run(run, device=device)
    sequences = tuple(synth.sequences)
    missing_seq = [s for s in needed if s not in sequences]
    if missing_seq:
        raise SchemaMismatchError(f"{run}: the run lacks {missing_seq}; the combinations need {list(needed)}")
    labels, skipped = read_labels(labels_csv, id_column, label_column)
    folders = _subject_folders(Path(data), sequences)
    matched, missing = match_labels(labels, folders)
    skipped += [(str(labels_csv), f"{len(missing)} labelled ids have no subject folder (e.g. {missing[0]})")] \
        if missing else []
    stamp_path = out / "inputs.json"
    stamp = {"run": str(Path(run).resolve()), "data": str(Path(data).resolve()), "network": cfg.network,
             "crop": list(cfg.crop), "pixel_mm": cfg.pixel_mm, "labelled": sorted(f.name for f in matched)}
    if inputs_path.exists() and subjects_path.exists() and stamp_path.exists():
        import json

        if json.loads(stamp_path.read_text()) == stamp:   # the same inputs: reuse them
            table = pd.read_csv(subjects_path, dtype={"subject": str})
            return np.load(inputs_path, mmap_mode="r"), table, skipped, sequences
    arrays, rows = [], []
    for folder, label in progress_bar(sorted(matched.items()), desc="M_d per subject", unit="subject",
                                      enabled=progress):
        try:
            sub = load_subject(folder, sequences)
            zs = None
            if cfg.network == "resnet18_2d":
                mask = sub.seg > 0 if sub.seg is not None and (sub.seg > 0).any() else sub.head_mask()
                zs = [int(np.argmax(mask.sum(axis=(1, 2))))]
            translations = synth.translate_all(sub, slices=zs)
            if zs is not None:   # the 2.5-D generator read the neighbours; keep only the slice itself
                sub = sub.take_slices(zs)
            maps = subject_dmaps(sub, translations)
            arrays.append(subject_inputs(sub, maps, cfg, sequences).astype(np.float16))
            rows.append({"subject": folder.name, "label": label})
        except MridomainError as err:
            skipped.append((str(getattr(err, "path", folder)), getattr(err, "reason", str(err))))
    if not arrays:
        detail = f" (e.g. {skipped[-1][0]}: {skipped[-1][1]})" if skipped else ""
        raise EmptyInputError(Path(data), f"no labelled subject could be read{detail}")
    x = np.stack(arrays)
    np.save(inputs_path, x)
    table = pd.DataFrame(rows)
    table.to_csv(subjects_path, index=False)
    from mridomain.engine import write_json_atomic

    write_json_atomic(stamp_path, stamp)
    return x, table, skipped, sequences


def _roc_figure(pred: pd.DataFrame, combinations: Sequence[str] = tuple(INPUT_COMBINATIONS)):
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_curve

    fig = Figure(figsize=(4 * len(combinations), 3.8))
    axes = fig.subplots(1, len(combinations), squeeze=False)[0]
    for ax, combo in zip(axes, combinations):
        for with_md, style in ((False, "--"), (True, "-")):
            name = combo + ("+M_d" if with_md else "")
            part = pred[pred["variant"] == name]
            if part["label"].nunique() == 2:
                fpr, tpr, _ = roc_curve(part["label"], part["probability"])
                ax.plot(fpr, tpr, style, label=f"{name} (AUC {_auc(part['label'].to_numpy(), part['probability'].to_numpy()):.3f})")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set_title(combo)
        ax.set_xlabel("1 - specificity")
        ax.set_ylabel("sensitivity")
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("ROC, outer-fold test predictions pooled (with M_d: solid; without: dashed)", fontsize=9)
    fig.tight_layout()
    return fig


def run_downstream(data: str | Path, labels: str | Path, run: str | Path, out: str | Path, preset: str = "cpu",
                   seed: int = 0, epochs: int | None = None, outer_folds: int | None = None,
                   inner_folds: int | None = None, id_column: str | None = None, label_column: str | None = None,
                   device: str | None = None, progress: bool = True,
                   combinations: dict[str, tuple[str, ...]] | None = None,
                   md_of: dict[str, tuple[str, ...]] | None = None, **overrides: Any) -> DownstreamResult:
    """Python twin of ``mridomain synth downstream``: nested CV of the six Table 4 inputs; writes
    ``table4.csv``, ``md_difference.csv``, ``predictions.csv``, ``fig7_roc.png`` and ``report.html``.

    ``combinations`` (name: sequences) replaces Table 4's three (the breast Fig. 7 uses wash-in alone);
    ``md_of`` (name: sequences) names whose M_d a combination's "+M_d" variant adds (default its own)."""
    import torch

    from mridomain.engine import write_json_atomic
    from mridomain.progress import progress_bar
    from mridomain.report import Section, figure_to_png, write_html_report
    from mridomain.statistics import bootstrap_statistic_ci

    t0, load0 = time.perf_counter(), _load()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = make_downstream_config(preset, seed=seed, epochs=epochs, outer_folds=outer_folds, inner_folds=inner_folds,
                                 device=device, **overrides)
    combos = dict(INPUT_COMBINATIONS if combinations is None else combinations)
    md_of = dict(md_of or {})
    needed = tuple(dict.fromkeys(s for name, c in combos.items() for s in c + tuple(md_of.get(name, ()))))
    x, subjects, skipped, sequences = compute_inputs(data, labels, run, out, cfg, id_column, label_column, device,
                                                     progress, needed=needed)
    y = subjects["label"].to_numpy(np.int64)
    splits = nested_cv_splits(y, cfg.outer_folds, cfg.inner_folds, seed)
    write_json_atomic(out / "folds.json", [{"outer": s["outer"], "inner": s["inner"],
                                            "train": subjects["subject"].iloc[s["train"]].tolist(),
                                            "val": subjects["subject"].iloc[s["val"]].tolist(),
                                            "test": subjects["subject"].iloc[s["test"]].tolist()} for s in splits])
    variants = [(c, md) for c in combos for md in (False, True)]
    rows = []
    jobs = [(c, md, s) for c, md in variants for s in splits]
    probs: dict[tuple[str, bool, int], list[np.ndarray]] = {}
    for combo, with_md, split in progress_bar(jobs, desc="nested CV", unit="net", enabled=progress):
        ch = variant_channels(sequences, combos[combo], with_md, md_of.get(combo))
        pick = lambda idx, ch=ch: np.asarray(x[idx][:, ch], np.float32)  # noqa: E731
        torch.manual_seed(seed)
        clf = MdClassifier(cfg).fit(pick(split["train"]), y[split["train"]], pick(split["val"]), y[split["val"]],
                                    progress=False)
        probs.setdefault((combo, with_md, split["outer"]), []).append(clf.predict_proba(pick(split["test"])))
    tests = {s["outer"]: s["test"] for s in splits}
    for (combo, with_md, o), ps in probs.items():
        for i, p in zip(tests[o], np.mean(ps, axis=0)):
            rows.append({"variant": combo + ("+M_d" if with_md else ""), "combination": combo, "with_md": with_md,
                         "outer": o, "subject": subjects["subject"].iloc[i], "label": int(y[i]),
                         "probability": float(p)})
    pred = pd.DataFrame(rows)
    pred.to_csv(out / "predictions.csv", index=False)
    table_rows = []
    for (combo, with_md), part in pred.groupby(["combination", "with_md"], sort=False):
        yy, pp = part["label"].to_numpy(), part["probability"].to_numpy()
        folds = part.groupby("outer")
        fold_auc = [_auc(g["label"].to_numpy(), g["probability"].to_numpy()) for _, g in folds]
        fold_acc = [_accuracy(g["label"].to_numpy(), g["probability"].to_numpy()) for _, g in folds]
        auc_lo, auc_hi = bootstrap_statistic_ci([yy, pp], _auc, seed=seed)
        acc_lo, acc_hi = bootstrap_statistic_ci([yy, pp], _accuracy, seed=seed)
        table_rows.append({"method": combo + ("+M_d" if with_md else ""), "auc": _auc(yy, pp), "auc_ci_low": auc_lo,
                           "auc_ci_high": auc_hi, "auc_fold_mean": float(np.nanmean(fold_auc)),
                           "auc_fold_std": float(np.nanstd(fold_auc)), "accuracy": _accuracy(yy, pp),
                           "accuracy_ci_low": acc_lo, "accuracy_ci_high": acc_hi,
                           "accuracy_fold_mean": float(np.mean(fold_acc)), "accuracy_fold_std": float(np.std(fold_acc)),
                           **_threshold_metrics(yy, pp), "subjects": len(yy)})
    table = pd.DataFrame(table_rows)
    table.to_csv(out / "table4.csv", index=False)
    diff_rows = []
    for combo in combos:
        a = pred[pred["variant"] == combo + "+M_d"].set_index("subject")
        b = pred[pred["variant"] == combo].set_index("subject").loc[a.index]
        yy, pa, pb = a["label"].to_numpy(), a["probability"].to_numpy(), b["probability"].to_numpy()
        d_auc = lambda y_, p1, p2: _auc(y_, p1) - _auc(y_, p2)  # noqa: E731
        d_acc = lambda y_, p1, p2: _accuracy(y_, p1) - _accuracy(y_, p2)  # noqa: E731
        lo, hi = bootstrap_statistic_ci([yy, pa, pb], d_auc, seed=seed)
        alo, ahi = bootstrap_statistic_ci([yy, pa, pb], d_acc, seed=seed)
        diff_rows.append({"combination": combo, "auc_difference": d_auc(yy, pa, pb), "auc_difference_ci_low": lo,
                          "auc_difference_ci_high": hi, "accuracy_difference": d_acc(yy, pa, pb),
                          "accuracy_difference_ci_low": alo, "accuracy_difference_ci_high": ahi})
    diffs = pd.DataFrame(diff_rows)
    diffs.to_csv(out / "md_difference.csv", index=False)
    (out / "fig7_roc.png").write_bytes(figure_to_png(_roc_figure(pred, tuple(combos))))
    seconds = time.perf_counter() - t0
    helped = [r["combination"] for _, r in diffs.iterrows() if r["auc_difference_ci_low"] > 0]
    hurt = [r["combination"] for _, r in diffs.iterrows() if r["auc_difference_ci_high"] < 0]
    verdict = ("M_d raised the AUC with a 95% interval above 0 for " + ", ".join(helped) if helped else
               "M_d did not raise the AUC with a 95% interval above 0 for any combination") + \
              (("; it lowered it (interval below 0) for " + ", ".join(hurt)) if hurt else "") + \
              " (AUC differences: " + ", ".join(f"{r['combination']} {r['auc_difference']:+.3f}"
                                                for _, r in diffs.iterrows()) + ")"
    info = {"preset": preset, "config": cfg.to_dict(), "subjects": len(y), "label_counts": np.bincount(y).tolist(),
            "sequences": list(sequences), "combinations": {k: list(v) for k, v in combos.items()},
            "md_of": {k: list(v) for k, v in md_of.items()}, "run": str(run), "seconds": round(seconds, 1), "load_average_start": load0,
            "load_average_end": _load(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "verdict": verdict, "networks_trained": len(jobs)}
    write_json_atomic(out / "downstream.json", info)
    write_html_report(out / "report.html", "Classification with and without M_d (Table 4, Fig. 7)", [
        Section("Table 4", text=(
            f"{cfg.network} (width x{cfg.widen_factor}, {preset} preset) on {len(y)} subjects "
            f"({np.bincount(y).tolist()} of labels 0/1), {cfg.outer_folds} x {cfg.inner_folds} subject-level "
            f"nested cross-validation: each inner fold picks the best epoch of one network (early stopping "
            f"after {cfg.patience} epochs without a lower validation loss); the outer test fold is scored by "
            f"the mean of the {cfg.inner_folds} inner networks. AUC and accuracy pooled over the outer test "
            "folds with subject-bootstrap 95% intervals, and mean +- std over outer folds.\n\n"
            f"{seconds:.0f} s, load average {load0} at the start, {info['load_average_end']} at the end, "
            f"{os.cpu_count()} CPUs."), tables=[("table4.csv", table.round(3)),
                                                ("with - without M_d, paired on subjects", diffs.round(3))],
            note=verdict),
        Section("Fig. 7: ROC curves", figures=[("ROC", out / "fig7_roc.png")]),
        Section("Skipped", tables=[pd.DataFrame(skipped, columns=["path", "reason"])]) if skipped else
        Section("Skipped", text="none"),
    ], subtitle=f"mridomain synth downstream {data} --labels {labels} --run {run} -o {out} --preset {preset}")
    return DownstreamResult(out, table, diffs, pred, skipped, seconds, info)


#: the demo's simulated subjects
DEMO_SUBJECTS = 40


def run_downstream_demo(out: str | Path = "downstream_demo", subjects: int = DEMO_SUBJECTS, seed: int = 0,
                        outer_folds: int = 5, inner_folds: int = 4, epochs: int | None = None,
                        synth_epochs: int | None = None, voxel_mm: float = 3.0,
                        progress: bool = True) -> DownstreamResult:
    """Python twin of ``mridomain synth downstream demo``: simulate brains (with the
    ``strong_enhancement`` trait in ``labels.csv``), train Seq2Seq at the cpu preset on them and run
    :func:`run_downstream` at the cpu preset."""
    from mridomain.synth.training import train

    from mridomain.synth.subsets import simulate_once

    out = Path(out)
    simulate_once(out / "brains", subjects, seed, voxel_mm, progress)
    if not (out / "run" / "generator.safetensors").exists():
        train(out / "brains", out / "run", preset="cpu", epochs=synth_epochs, seed=seed, progress=progress)
    return run_downstream(out / "brains", out / "brains" / "labels.csv", out / "run", out, preset="cpu", seed=seed,
                          epochs=epochs, outer_folds=outer_folds, inner_folds=inner_folds, progress=progress)
