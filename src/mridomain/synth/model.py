"""A trained synthesis run: rebuilt from its JSON, used to translate whole volumes.

A run folder holds ``generator.safetensors`` and one ``discriminator_<sequence>.safetensors`` per
sequence (best validation epoch), ``config.json`` (:class:`~mridomain.synth.config.SynthConfig`),
``schema.json`` (sequence set, time points, normalization, subject splits), ``metrics.csv``,
``learning_curve.png`` and ``last/`` (what ``resume`` continues from). Nothing is unpickled.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mridomain.errors import EmptyInputError, InvalidArgumentError, SchemaMismatchError
from mridomain.synth.config import SynthConfig
from mridomain.synth.data import NORMALIZATION, Subject, slice_stack
from mridomain.synth.network import Seq2SeqGenerator, build_generator, one_hot_code

__all__ = ["SCHEMA_FORMAT", "SynthRun", "load_run", "synthesize", "to_model_range", "from_model_range",
           "check_sequences"]

SCHEMA_FORMAT = "mridomain-synth-schema"
SCHEMA_VERSION = 1


def to_model_range(x: np.ndarray | torch.Tensor):
    """[0, 1] intensities -> the generator's tanh range [-1, 1]."""
    return x * 2.0 - 1.0


def from_model_range(x: np.ndarray | torch.Tensor):
    """The generator's tanh range [-1, 1] -> [0, 1] intensities (the inverse of :func:`to_model_range`)."""
    return (x + 1.0) / 2.0


def check_sequences(have: Sequence[str], run_sequences: Sequence[str], where: str) -> None:
    """Refuse sequences the run was not trained on (a run of another sequence set)."""
    unknown = [s for s in have if s not in run_sequences]
    if unknown:
        raise SchemaMismatchError(f"{where}: sequence(s) {unknown} are not in the run's sequence set "
                                  f"{list(run_sequences)} (a run of another sequence set)")


def _pad_to(x: torch.Tensor, multiple: int, dims: int) -> tuple[torch.Tensor, list[int]]:
    sizes = list(x.shape[-dims:])
    pads: list[int] = []
    for s in reversed(sizes):
        extra = (-s) % multiple
        pads += [extra // 2, extra - extra // 2]
    return torch.nn.functional.pad(x, pads), sizes


def _crop_back(x: torch.Tensor, sizes: list[int], padded: list[int]) -> torch.Tensor:
    idx = [slice(None)] * (x.dim() - len(sizes))
    for s, p in zip(sizes, padded):
        start = (p - s) // 2
        idx.append(slice(start, start + s))
    return x[tuple(idx)]


@torch.no_grad()
def synthesize(generator: Seq2SeqGenerator, volume: np.ndarray, source: int, targets: dict[int, int],
               code_dim: int, device: torch.device | str = "cpu", batch_slices: int = 16,
               slices: Sequence[int] | None = None) -> dict[int, np.ndarray]:
    """Translate one ``(T, S, H, W)`` volume in [0, 1] of sequence ``source`` into every target.

    ``targets`` maps a target index to its number of time points. Each slice batch is encoded once
    and decoded for every target. 2-D / 2.5-D models run slice by slice (the centre channel of a
    2.5-D output is kept), only on ``slices`` when given; 3-D models translate the whole volume.
    Sizes are zero-padded to multiples of the generator's downsampling (4; 1 at full resolution) and
    cropped back. Returns ``{target: (T_target, S', H, W)}`` in [0, 1], ``S'`` the number of slices
    computed.
    """
    generator.eval()
    device = torch.device(device)
    codes = {t: one_hot_code(t, code_dim, device) for t in targets}
    source_code = one_hot_code(source, code_dim, device)
    vol = np.asarray(volume, dtype=np.float32)
    if generator.ndims == 3:
        x = to_model_range(torch.from_numpy(vol)).unsqueeze(0).unsqueeze(2).to(device)  # (1, T, 1, S, H, W)
        xp, sizes = _pad_to(x, generator.downsampling, 3)
        z = generator.encode(xp, source_code)
        out = {}
        for t, n in targets.items():
            y = _crop_back(generator.decode(z, codes[t], n), sizes, list(xp.shape[-3:]))
            out[t] = from_model_range(y[0, :, 0]).clamp(0, 1).cpu().numpy()
        return out
    channels = generator.in_channels
    wanted = list(range(vol.shape[1])) if slices is None else [int(z) for z in slices]
    out = {t: np.zeros((n, len(wanted), *vol.shape[2:]), np.float32) for t, n in targets.items()}
    for start in range(0, len(wanted), batch_slices):
        zs = wanted[start:start + batch_slices]
        x = np.stack([slice_stack(vol, z, channels) for z in zs])          # (B, T, C, H, W)
        xt = to_model_range(torch.from_numpy(x)).to(device)
        xp, sizes = _pad_to(xt, generator.downsampling, 2)
        z = generator.encode(xp, source_code)
        for t, n in targets.items():
            y = _crop_back(generator.decode(z, codes[t], n), sizes, list(xp.shape[-2:]))
            y = from_model_range(y[:, :, channels // 2]).clamp(0, 1).cpu().numpy()   # (B, T, H, W)
            out[t][:, start:start + len(zs)] = np.transpose(y, (1, 0, 2, 3))
    return out


@dataclass
class SynthRun:
    """A loaded run: its config, schema and generator (in eval mode on ``device``)."""

    path: Path
    config: SynthConfig
    schema: dict[str, Any]
    generator: Seq2SeqGenerator
    device: torch.device

    @property
    def normalization(self) -> dict:
        """How the run's volumes were normalized (its schema's; a run from before the field: the paper's)."""
        return dict(self.schema.get("normalization") or NORMALIZATION)

    @property
    def sequences(self) -> tuple[str, ...]:
        """The run's sequence set, in the order of the generator's sequence codes."""
        return tuple(self.config.sequences)

    def index(self, sequence: str) -> int:
        """Position of ``sequence`` in the run's sequence set (its code); a sequence the run was not
        trained on is a :class:`SchemaMismatchError`."""
        check_sequences([sequence], self.sequences, str(self.path))
        return self.sequences.index(sequence)

    def translate(self, subject: Subject, source: str, targets: Sequence[str] | None = None,
                  batch_slices: int = 16, slices: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """``{target: (T, S, H, W)}`` generated from ``subject``'s ``source`` volume (only ``slices``
        when given, for 2-D / 2.5-D runs). ``targets`` defaults to every other sequence; naming the
        source among them gives its self-translation X'_{i->i}."""
        check_sequences(subject.available, self.sequences, subject.subject_id)
        if source not in subject.volumes:
            raise InvalidArgumentError(f"{subject.subject_id}: source {source} is not available")
        targets = [t for t in self.sequences if t != source] if targets is None else list(targets)
        tp = self.schema.get("timepoints", {})
        out = synthesize(self.generator, subject.volumes[source], self.index(source),
                         {self.index(t): int(tp.get(t, 1)) for t in targets}, self.config.network.code_dim,
                         self.device, batch_slices, slices=slices)
        return {self.sequences[k]: v for k, v in out.items()}

    def translate_all(self, subject: Subject, batch_slices: int = 16, slices: Sequence[int] | None = None,
                      include_self: bool = True) -> dict[tuple[str, str], np.ndarray]:
        """``{(source, target): (T, S, H, W)}`` for every ordered pair of the subject's sequences,
        the self-translations (s, s) included unless ``include_self`` is False (eq. 4 and 5 use them)."""
        pairs = {}
        for src in subject.available:
            for tgt, vol in self.translate(subject, src, [t for t in subject.available
                                                          if t != src or include_self],
                                           batch_slices, slices).items():
                pairs[(src, tgt)] = vol
        return pairs


def load_run(run: str | Path, device: str | torch.device | None = None, which: str = "best") -> SynthRun:
    """Rebuild a run folder's generator from ``config.json`` and load its weights (best or last)."""
    from mridomain.engine import load_weights, resolve_device
    from mridomain.files import read_versioned_json

    run = Path(run)
    if not (run / "config.json").exists() or not (run / "schema.json").exists():
        raise EmptyInputError(run, "not a synthesis run folder (config.json / schema.json missing)")
    config = SynthConfig.from_json(run / "config.json")
    schema = read_versioned_json(run / "schema.json", SCHEMA_VERSION, expect=SCHEMA_FORMAT)
    if list(schema.get("sequences", [])) != list(config.sequences):
        raise SchemaMismatchError(f"{run}: schema.json and config.json disagree on the sequence set")
    dev = resolve_device(device)
    generator = build_generator(config.network)
    weights = run / "generator.safetensors" if which == "best" else run / "last" / "generator.safetensors"
    load_weights(generator, weights)
    generator.to(dev).eval()
    return SynthRun(run, config, schema, generator, dev)
