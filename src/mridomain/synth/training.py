"""Seq2Seq training on the shared engine: the generator and one patch discriminator per sequence.

Each step draws one ordered pair of sequences (source i, target j != i) and a batch of slices (or
3-D crops) whose subject has X_i; the generator runs once and returns X'_{i->j}, the
self-reconstruction X'_{i->i} and the cycle X''_{i->j->i}. Losses (section 3.4):

* reconstruction (eq. 1): ``lambda_rec`` L1 of X'_{i->i} and, for the items whose subject has X_j,
  of X'_{i->j}; plus ``lambda_per`` x VGG19 perceptual distance when weights were given;
* cycle (eq. 3): ``lambda_cyc`` L1 of X''_{i->j->i} against X_i, also when X_j is silenced;
* adversarial (eq. 2, least squares): D_j scores X'_{i->j} against real X_j drawn from subjects that
  have X_j (the paper's A^(m) and A^(n)).

The training subjects' sequences are silenced once (1-3 per subject in both presets) to mimic
incomplete protocols; a silenced volume is never read, so it can reach no loss. Validation and test
subjects keep every sequence.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from mridomain.engine import Engine, FitResult, StepContext, TrainTask, write_json_atomic
from mridomain.errors import EmptyInputError, InvalidArgumentError, SchemaMismatchError
from mridomain.synth.config import SynthConfig, make_config
from mridomain.synth.data import (BRAIN_FRACTION, Subject, SynthData, fit_normalization, load_dataset, silence_mask,
                                  slice_stack, split_subjects)
from mridomain.synth.losses import (cycle_loss, lsgan_discriminator_loss, lsgan_generator_loss,
                                    reconstruction_loss)
from mridomain.synth.model import SCHEMA_FORMAT, SCHEMA_VERSION, synthesize, to_model_range
from mridomain.synth.network import build_discriminator, build_generator, one_hot_code

__all__ = ["SynthTask", "train", "training_slices", "discriminator_name"]


def discriminator_name(sequence: str) -> str:
    """The module name of ``sequence``'s patch discriminator (``discriminator_t1``)."""
    return f"discriminator_{sequence}"


def training_slices(data: SynthData, channels: int, min_fraction: float = BRAIN_FRACTION
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(subject index, slice index) of every slice with at least ``min_fraction`` of head in it."""
    subs, zs = [], []
    for n, sub in enumerate(data.subjects):
        frac = sub.head_mask().mean(axis=(1, 2))
        for z in np.flatnonzero(frac >= min_fraction):
            subs.append(n)
            zs.append(int(z))
    return np.asarray(subs, np.int64), np.asarray(zs, np.int64)


def _even(values: np.ndarray, k: int) -> np.ndarray:
    if len(values) <= k:
        return values
    return values[np.linspace(0, len(values) - 1, k).round().astype(int)]


class _Batches:
    """``steps_per_epoch`` batches built on the fly, deterministic from (seed, epoch, step)."""

    def __init__(self, task: "SynthTask", epoch: int, rank: int, world_size: int):
        self.task, self.epoch, self.rank, self.world = task, epoch, rank, world_size

    def __len__(self) -> int:
        return self.task.config.steps_per_epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for step in range(len(self)):
            yield self.task.make_batch(self.epoch, step, self.rank, self.world)


class SynthTask(TrainTask):
    """The Seq2Seq GAN as an engine task (see the module docstring for the losses).

    Args:
        config: the run's :class:`SynthConfig`.
        train, val: subjects of the run's sequence set.
        available: ``(len(train), S)`` boolean, the training availability after silencing.
        splits: subject ids per split (written to ``schema.json``).
    """

    def __init__(self, config: SynthConfig, train: SynthData, val: SynthData, available: np.ndarray,
                 splits: dict[str, list[str]] | None = None):
        self.config = config
        self.seqs = tuple(config.sequences)
        self.train, self.val = train, val
        self.available = np.asarray(available, bool)
        if self.available.shape != (len(train), len(self.seqs)):
            raise InvalidArgumentError(f"available mask {self.available.shape} does not match "
                                       f"{len(train)} subjects x {len(self.seqs)} sequences")
        for n, sub in enumerate(train.subjects):
            for k, s in enumerate(self.seqs):
                if self.available[n, k] and s not in sub.volumes:
                    raise InvalidArgumentError(f"{sub.subject_id}: {s} marked available but not loaded")
        self.splits = splits or {}
        self.timepoints = {**val.timepoints, **train.timepoints} if len(val) else train.timepoints
        net = config.network
        self.channels, self.ndims = net.in_channels, net.ndims
        shapes = {sub.shape for sub in train.subjects}
        self.spatial = self._training_size(shapes)
        if self.ndims == 2:
            self.item_subject, self.item_z = training_slices(train, self.channels)
        else:
            self.item_subject = np.arange(len(train), dtype=np.int64)
            self.item_z = np.zeros(len(train), np.int64)
        avail = self.available[self.item_subject]
        # pair_pools[i][j]: the items whose subject has both sequence i and sequence j (paired_items);
        # pools[i], its diagonal: the items whose subject has sequence i
        self.pair_pools = [[np.flatnonzero(avail[:, i] & avail[:, j]) for j in range(len(self.seqs))]
                           for i in range(len(self.seqs))]
        self.pools = [self.pair_pools[k][k] for k in range(len(self.seqs))]
        # the training items whose segmentation has a lesion voxel (label > 0), for lesion_oversample;
        # looked for only when it is on (a memory-mapped dataset is not read through for nothing)
        has_lesion = np.zeros(len(self.item_subject), bool)
        if config.lesion_oversample > 0:
            regions = (self._lesion_region(n) for n in range(len(self.item_subject)))
            has_lesion = np.array([r is not None and bool(r.any()) for r in regions], bool)
        self.lesion_pools = [p[has_lesion[p]] for p in self.pools]
        if config.lesion_oversample > 0 and not has_lesion.any():
            print(f"lesion_oversample {config.lesion_oversample}: no training subject has a segmentation "
                  "(_seg file) with a lesion, so every crop is drawn uniformly")
        self.sources = [k for k, p in enumerate(self.pools) if len(p)]
        if not self.sources:
            raise EmptyInputError(train.root or Path("."), "no training slice with an available sequence")
        self.perceptual = None
        if config.perceptual_weights and config.lambda_per > 0:
            from mridomain.synth.perceptual import PerceptualLoss

            self.perceptual = PerceptualLoss(config.perceptual_weights)

    def _lesion_region(self, item: int) -> np.ndarray | None:
        """The segmentation of training item ``item`` (its slice in 2-D modes, its volume in 3-D) as a
        lesion mask (label > 0); None without a segmentation."""
        sub = self._item_subject(item)
        if sub.seg is None:
            return None
        return (sub.seg[int(self.item_z[item])] if self.ndims == 2 else sub.seg) > 0

    def _training_size(self, shapes: set[tuple[int, int, int]]) -> tuple[int, ...]:
        if self.config.crop is not None:
            return tuple(self.config.crop)
        dims = 2 if self.ndims == 2 else 3
        biggest = [max(s[-dims + a] for s in shapes) for a in range(dims)]
        return tuple(int(np.ceil(b / 4) * 4) for b in biggest)

    # -- engine hooks ------------------------------------------------------------------------------
    def build_modules(self) -> dict[str, torch.nn.Module]:
        """The generator and one patch discriminator per sequence of the run."""
        mods: dict[str, torch.nn.Module] = {"generator": build_generator(self.config.network)}
        for s in self.seqs:
            mods[discriminator_name(s)] = build_discriminator(self.config.network)
        return mods

    def build_optimizers(self, modules: dict[str, torch.nn.Module]) -> dict[str, torch.optim.Optimizer]:
        """Two Adams with the config's ``lr`` and ``betas``: one for the generator, one for all the
        discriminators together."""
        c = self.config
        disc = [p for name, m in modules.items() if name != "generator" for p in m.parameters()]
        return {"generator": torch.optim.Adam(modules["generator"].parameters(), lr=c.lr, betas=c.betas),
                "discriminator": torch.optim.Adam(disc, lr=c.lr, betas=c.betas)}

    def learning_rates(self, epoch: int) -> dict[str, float] | None:
        """Cosine decay from ``lr`` to ``lr x lr_min_factor`` over the run for both optimizers; None (rates
        left as they are) with the constant schedule."""
        c = self.config
        if c.lr_schedule == "constant":
            return None
        progress = epoch / max(1, c.epochs - 1)
        lr = c.lr * (c.lr_min_factor + (1 - c.lr_min_factor) * 0.5 * (1 + np.cos(np.pi * progress)))
        return {"generator": float(lr), "discriminator": float(lr)}

    def train_batches(self, epoch: int, rank: int, world_size: int) -> _Batches:
        """``steps_per_epoch`` batches of ``epoch``, built on the fly and deterministic from (seed, epoch,
        step)."""
        return _Batches(self, epoch, rank, world_size)

    def save_metadata(self, out: Path) -> None:
        """Write config.json and schema.json (sequences, time points, mode, normalization, training size,
        splits and which sequences each training subject had)."""
        self.config.to_json(out / "config.json")
        write_json_atomic(out / "schema.json", {
            "format": SCHEMA_FORMAT, "version": SCHEMA_VERSION, "sequences": list(self.seqs),
            "timepoints": self.timepoints, "mode": self.config.network.mode,
            "normalization": self.train.normalization,
            "training_size": list(self.spatial), "data": str(self.train.root) if self.train.root else None,
            "splits": self.splits,
            "training_availability": {sub.subject_id: [s for k, s in enumerate(self.seqs) if self.available[n, k]]
                                      for n, sub in enumerate(self.train.subjects)},
            "perceptual": bool(self.perceptual is not None),
        })

    # -- batches -----------------------------------------------------------------------------------
    def _item_subject(self, item: int) -> Subject:
        """The training subject that item ``item`` (a slice stack or a volume) comes from."""
        return self.train.subjects[int(self.item_subject[item])]

    def _crop_origin(self, rng: np.random.Generator, item: int) -> tuple[int, ...]:
        """A crop origin drawn uniformly over item ``item``; centred where the image is smaller."""
        shape = self._item_subject(item).shape
        dims = len(self.spatial)
        return tuple(int(rng.integers(0, max(1, s - c + 1))) if s > c else -((c - s) // 2)
                     for s, c in zip(shape[-dims:], self.spatial))

    def _lesion_crop_origin(self, rng: np.random.Generator, item: int) -> tuple[int, ...]:
        """A crop origin whose crop holds one of the item's lesion voxels, drawn at random, at a random
        place in the crop (nnU-Net's foreground oversampling); centred where the image is smaller."""
        shape = self._item_subject(item).shape
        region = self._lesion_region(item)
        lesions = np.flatnonzero(region)
        voxel = np.unravel_index(lesions[int(rng.integers(len(lesions)))], region.shape)
        dims = len(self.spatial)
        return tuple(int(rng.integers(max(0, int(v) - c + 1), min(s - c, int(v)) + 1)) if s > c
                     else -((c - s) // 2) for v, s, c in zip(voxel, shape[-dims:], self.spatial))

    def _sample(self, item: int, seq: int, origin: tuple[int, ...]) -> np.ndarray:
        """(T, C, *spatial) in [-1, 1] of one training item (slice stack or 3-D crop)."""
        vol = self._item_subject(item).volumes[self.seqs[seq]]
        x = slice_stack(vol, int(self.item_z[item]), self.channels) if self.ndims == 2 else vol[:, np.newaxis]
        dims = len(self.spatial)
        out = np.zeros(x.shape[:-dims] + tuple(self.spatial), np.float32)
        src, dst = [slice(None)] * (x.ndim - dims), [slice(None)] * (x.ndim - dims)
        for o, s, c in zip(origin, x.shape[-dims:], self.spatial):
            if o >= 0:
                src.append(slice(o, o + c))
                dst.append(slice(0, min(c, s - o)))
            else:
                src.append(slice(0, s))
                dst.append(slice(-o, -o + s))
        out[tuple(dst)] = x[tuple(src)]
        return to_model_range(out)

    def make_batch(self, epoch: int, step: int, rank: int = 0, world_size: int = 1) -> dict[str, Any]:
        """This rank's part of global batch ``step`` of ``epoch`` (a pure function of the seed)."""
        rng = np.random.default_rng([self.config.seed, epoch, step, 5])
        i = int(rng.choice(self.sources))
        j = int(rng.choice([k for k in range(len(self.seqs)) if k != i]))
        b = self.config.batch_size
        if world_size > b:
            raise InvalidArgumentError(f"batch_size {b} cannot be split over {world_size} DDP ranks: each rank needs "
                                       f"at least one item (set batch_size >= {world_size})")
        # the last n_lesion items of the batch are crops around a lesion voxel (nnU-Net's layout)
        n_lesion = int(round(self.config.lesion_oversample * b)) if len(self.lesion_pools[i]) else 0
        pool = self.pools[i]
        if self.config.paired_items and len(self.pair_pools[i][j]):
            pool = self.pair_pools[i][j]
        items = rng.choice(pool, size=b - n_lesion, replace=len(pool) < b - n_lesion)
        reals = rng.choice(self.pools[j], size=b, replace=len(self.pools[j]) < b) if len(self.pools[j]) else []
        origins = [self._crop_origin(rng, n) for n in items]
        if n_lesion:
            lesion_items = rng.choice(self.lesion_pools[i], size=n_lesion,
                                      replace=len(self.lesion_pools[i]) < n_lesion)
            origins += [self._lesion_crop_origin(rng, n) for n in lesion_items]
            items = np.concatenate([items, lesion_items])
        real_origins = [self._crop_origin(rng, n) for n in reals]
        if world_size > 1:
            # every rank draws the whole batch and keeps its part: the ranks' parts are the one batch
            keep = np.array_split(np.arange(b), world_size)[rank]
            items, origins = items[keep], [origins[k] for k in keep]
            if len(reals):
                reals, real_origins = reals[keep], [real_origins[k] for k in keep]
        x_i = np.stack([self._sample(n, i, o) for n, o in zip(items, origins)])
        has_j = self.available[self.item_subject[items], j]
        t_j = int(self.timepoints[self.seqs[j]])
        x_j = np.zeros((len(items), t_j) + x_i.shape[2:], np.float32)
        for k, (n, o) in enumerate(zip(items, origins)):
            if has_j[k]:
                x_j[k] = self._sample(n, j, o)
        real = [self._sample(n, j, o) for n, o in zip(reals, real_origins)]
        return {"source": i, "target": j, "x_source": torch.from_numpy(x_i), "x_target": torch.from_numpy(x_j),
                "has_target": torch.from_numpy(has_j.copy()),
                "real_target": torch.from_numpy(np.stack(real)) if real else None}

    # -- one step ----------------------------------------------------------------------------------
    def generator_losses(self, batch: dict[str, Any], generator: torch.nn.Module, discriminator: torch.nn.Module,
                         device: torch.device) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """Total generator loss, its parts, and X'_{i->j} (for the discriminator step)."""
        c = self.config
        i, j = batch["source"], batch["target"]
        x_i = batch["x_source"].to(device)
        x_j = batch["x_target"].to(device)
        has_j = batch["has_target"].to(device)
        code_i = one_hot_code(i, c.network.code_dim, device)
        code_j = one_hot_code(j, c.network.code_dim, device)
        # a term whose weight is 0 is not computed at all: no cycle pass, no discriminator
        fake_j, self_i, cyc_i = generator(x_i, code_j, n_out=x_j.shape[1], source_code=code_i, n_source=x_i.shape[1],
                                          cycle=c.lambda_cyc > 0)
        rec = reconstruction_loss(self_i, x_i, 1.0, c.rec_loss)
        n_pairs = 1.0
        if bool(has_j.any()):
            rec = rec + reconstruction_loss(fake_j[has_j], x_j[has_j], 1.0, c.rec_loss)
            n_pairs += 1.0
        rec = rec / n_pairs
        total = c.lambda_rec * rec
        parts = {"rec_loss": rec}
        if cyc_i is not None:
            parts["cyc_loss"] = cycle_loss(cyc_i, x_i, 1.0)
            total = total + c.lambda_cyc * parts["cyc_loss"]
        if c.lambda_adv > 0:
            parts["adv_loss"] = lsgan_generator_loss(discriminator(fake_j.flatten(0, 1)))
            total = total + c.lambda_adv * parts["adv_loss"]
        if self.perceptual is not None:
            self.perceptual.to(device)
            per = self.perceptual(self_i.flatten(0, 2).unsqueeze(1), x_i.flatten(0, 2).unsqueeze(1))
            if bool(has_j.any()):
                per = (per + self.perceptual(fake_j[has_j].flatten(0, 2).unsqueeze(1),
                                             x_j[has_j].flatten(0, 2).unsqueeze(1))) / 2
            total = total + c.lambda_per * per
            parts["per_loss"] = per
        return total, parts, fake_j

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, float]:
        """One generator step on the weighted losses, then (when ``lambda_adv`` > 0) one step of the target
        sequence's discriminator on the detached fakes and, where the batch has one, a real target."""
        generator = ctx.modules["generator"]
        disc = ctx.modules[discriminator_name(self.seqs[batch["target"]])]
        total, parts, fake_j = self.generator_losses(batch, generator, disc, ctx.device)
        ctx.backward(total)
        ctx.step("generator")
        logs = {k: float(v.detach()) for k, v in parts.items()}
        logs.update({"loss": float(total.detach()), "batch_size": float(len(fake_j))})
        if self.config.lambda_adv == 0:
            return logs
        ctx.zero_grad("discriminator")  # the generator's adversarial term reached D_j too
        fake = fake_j.detach().flatten(0, 1)
        real = batch["real_target"]
        if real is not None:
            real = real.to(ctx.device).flatten(0, 1)
            scores = disc(torch.cat([fake, real]))
            d_loss = lsgan_discriminator_loss(scores[len(fake):], scores[:len(fake)])
        else:
            d_loss = lsgan_discriminator_loss(None, disc(fake))
        ctx.backward(d_loss)
        ctx.step("discriminator")
        logs["disc_loss"] = float(d_loss.detach())
        return logs

    # -- validation --------------------------------------------------------------------------------
    def validate(self, ctx: StepContext) -> dict[str, float]:
        """Mean L1 (``val_loss``) and PSNR (``val_psnr``) of every translation between the available
        sequences of the first ``val_subjects`` validation subjects, on ``val_slices`` evenly spaced head
        slices (whole volumes in 3-D)."""
        generator = ctx.unwrapped("generator")
        l1s, psnrs = [], []
        for sub in self.val.subjects[: self.config.val_subjects]:
            frac = sub.head_mask().mean(axis=(1, 2))
            zs = _even(np.flatnonzero(frac >= BRAIN_FRACTION), self.config.val_slices)
            if self.ndims == 3:
                zs = None
            avail = [k for k, s in enumerate(self.seqs) if s in sub.volumes]
            for i in avail:
                targets = {j: int(self.timepoints[self.seqs[j]]) for j in avail if j != i}
                if not targets:
                    continue
                out = synthesize(generator, sub.volumes[self.seqs[i]], i, targets, self.config.network.code_dim,
                                 ctx.device, slices=zs)
                for j, y in out.items():
                    truth = sub.volumes[self.seqs[j]] if zs is None else sub.volumes[self.seqs[j]][:, zs]
                    err = np.abs(y - truth)
                    l1s.append(float(err.mean()))
                    mse = float((err ** 2).mean())
                    psnrs.append(10 * np.log10(1.0 / max(mse, 1e-10)))
        if not l1s:
            raise EmptyInputError(self.val.root or Path("."), "no validation subject with two sequences")
        return {"val_loss": float(np.mean(l1s)), "val_psnr": float(np.mean(psnrs))}

    def progress_postfix(self, row: dict[str, Any]) -> dict[str, str]:
        """The epoch's validation PSNR."""
        return {"psnr": f"{row.get('val_psnr', float('nan')):.2f}"}


def _check_split(splits: dict[str, list[str]], n: int) -> None:
    if not splits["train"] or not splits["val"]:
        raise InvalidArgumentError(f"{n} subjects give an empty train or validation split "
                                   f"({ {k: len(v) for k, v in splits.items()} }); simulate or add more subjects")


def _layout_overrides(data: str | Path | SynthData, overrides: dict) -> dict:
    """``overrides`` completed from the data folder's ``dataset.json`` (its sequences and config
    defaults, e.g. the ConvLSTM for 4-D sequences) where the caller did not set them."""
    from mridomain.synth.data import layout_description

    described = None if isinstance(data, SynthData) or "sequences" in overrides else layout_description(data)
    if described is None:
        return overrides
    sequences, defaults = described
    merged = {**defaults, **overrides, "sequences": sequences}
    if "network" in defaults or "network" in overrides:
        merged["network"] = {**defaults.get("network", {}), **(overrides.get("network") or {})}
    return merged


def train(data: str | Path | SynthData, out: str | Path, preset: str = "cpu", epochs: int | None = None,
          resume: bool = False, seed: int | None = None, device: str | None = None, progress: bool = True,
          allow_missing: bool = False, config: SynthConfig | None = None, cache: str | Path | None = None,
          **overrides) -> FitResult:
    """Train a Seq2Seq generator (Python twin of ``mridomain synth train``).

    Args:
        data: a folder of subjects in the BraTS layout, or loaded :class:`SynthData`.
        out: run folder.
        preset: ``paper`` or ``cpu`` (ignored when ``config`` is given).
        epochs, seed, device, overrides: replace preset fields (``network={...}`` for the network).
        resume: continue the run in ``out`` (its config and subject split are reused; ``epochs``
            may raise the total).
        allow_missing: a subject lacking a sequence file trains with that sequence unavailable
            instead of being skipped.
        cache: folder for memory-mapped float16 volumes (datasets larger than memory).
    """
    from mridomain.engine import read_json

    out = Path(out)
    if resume:
        config = SynthConfig.from_json(out / "config.json")
        if epochs is not None:
            config = config.updated(epochs=epochs)
        schema = read_json(out / "schema.json")
        splits, normalization = schema.get("splits"), schema.get("normalization")
    else:
        if config is None:
            config = make_config(preset, epochs=epochs, seed=seed, device=device,
                                 **_layout_overrides(data, overrides))
        splits = normalization = None
    dataset = data if isinstance(data, SynthData) else load_dataset(
        data, config.sequences, allow_missing=allow_missing, progress=progress, cache=cache,
        normalization=normalization)
    if dataset.skipped:            # named, never dropped silently: a CSV in the run and one line now
        import warnings

        from mridomain.files import write_skip_report

        report = write_skip_report(dataset.skipped, out / "skipped_subjects.csv")
        path, reason = dataset.skipped[0]
        warnings.warn(f"{len(dataset.skipped)} subject(s) skipped (listed in {report}); first: {path}: {reason}",
                      stacklevel=2)
    if tuple(dataset.sequences) != tuple(config.sequences):
        raise SchemaMismatchError(f"data of sequences {list(dataset.sequences)} for a config of "
                                  f"{list(config.sequences)}")
    ids = [s.subject_id for s in dataset.subjects]
    if splits is None:
        splits = split_subjects(ids, config.fractions, config.seed)
    missing = [i for part in splits.values() for i in part if i not in set(ids)]
    if missing:
        raise SchemaMismatchError(f"{out}: the run's subjects {missing[:3]} are not in {dataset.root}")
    _check_split(splits, len(ids))
    if dataset.normalization["kind"] != config.normalization:
        if isinstance(data, SynthData):
            raise SchemaMismatchError(f"the data given are normalized {dataset.normalization['kind']!r}, the config "
                                      f"asks for {config.normalization!r}: pass the data folder instead")
        # the median normalization's levels come from the training subjects, known only now: read again
        normalization = fit_normalization(config.normalization, dataset.subset(splits["train"]).subjects,
                                          config.sequences)
        del dataset   # one dataset in memory at a time
        dataset = load_dataset(data, config.sequences, allow_missing=allow_missing, progress=progress, cache=cache,
                               normalization=normalization)
        if sorted(s.subject_id for s in dataset.subjects) != sorted(ids):
            raise SchemaMismatchError(f"{dataset.root}: the subjects changed while the data were read twice")
    train_data, val_data = dataset.subset(splits["train"]), dataset.subset(splits["val"])
    loaded = np.array([[s in sub.volumes for s in config.sequences] for sub in train_data.subjects])
    available = silence_mask(len(train_data), len(config.sequences), tuple(config.silence), config.seed, loaded)
    task = SynthTask(config, train_data, val_data, available, splits)
    return Engine(config, out, progress=progress).fit(task, resume=resume)
