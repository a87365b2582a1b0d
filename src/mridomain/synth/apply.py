"""Use a trained run on a real subject: fill a missing sequence, map what each sequence alone shows."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mridomain.errors import ImageReadError, InvalidArgumentError
from mridomain.synth.data import load_subject, subject_from_files
from mridomain.synth.differentiation import subject_dmaps, write_dmaps
from mridomain.synth.model import SynthRun, check_sequences, load_run

__all__ = ["parse_inputs", "GenerateResult", "generate", "dmap"]


def _sequence_of(path: Path, sequences: Sequence[str]) -> str | None:
    name = path.name.lower()
    for seq in sorted(sequences, key=len, reverse=True):
        if any(name.endswith(f"{sep}{seq}{suf}") for sep in "_-" for suf in (".nii.gz", ".nii")):
            return seq
    return None


def parse_inputs(inputs: Sequence[str | Path], sequences: Sequence[str]) -> dict[str, Path]:
    """``SEQ=PATH`` items, or paths whose names end in ``_<seq>.nii(.gz)`` -> ``{sequence: path}``.

    A path that does not exist is an :class:`ImageReadError`; a sequence outside the run's set or
    given twice is an :class:`InvalidArgumentError`-family error naming it.
    """
    files: dict[str, Path] = {}
    for item in inputs:
        text = str(item)
        if "=" in text and not Path(text).exists():
            seq, path = text.split("=", 1)
            seq, path = seq.strip().lower(), Path(path)
        else:
            path = Path(text)
            seq = _sequence_of(path, sequences)
            if seq is None:
                raise InvalidArgumentError(f"{path}: cannot tell its sequence from the name; write SEQ=PATH "
                                           f"with SEQ one of {list(sequences)}")
        check_sequences([seq], sequences, str(path))
        if not path.is_file():
            raise ImageReadError(path, f"missing sequence file (given for {seq})")
        if seq in files:
            raise InvalidArgumentError(f"{path}: {seq} given twice ({files[seq]})")
        files[seq] = path
    if not files:
        raise InvalidArgumentError("no input sequence given")
    return files


@dataclass
class GenerateResult:
    """What :func:`generate` wrote: the file, the sequence generated and the sequences it came from."""

    path: Path
    target: str
    sources: list[str]

    def summary(self) -> str:
        """One line for the terminal: target, sources and the file written."""
        return f"{self.target} generated from {', '.join(self.sources)} -> {self.path}"


def generate(run: str | Path | SynthRun, inputs: Sequence[str | Path], to: str, out: str | Path | None = None,
             device: str | None = None) -> GenerateResult:
    """Fill a missing sequence ``to`` of one subject from its available ``inputs`` (Python twin of
    ``mridomain synth generate``).

    Each input is translated on its own and the translations are averaged (the paper's generator
    takes one source at a time). The output is on the first input's grid and affine, in the run's
    normalized [0, 1] intensity scale; ``out`` defaults to ``<first input's folder>/<id>_<to>_synth.nii.gz``.
    """
    from mridomain.sim.brain.nifti import write_like_image

    r = run if isinstance(run, SynthRun) else load_run(run, device=device)
    to = to.lower()
    check_sequences([to], r.sequences, "--to")
    files = parse_inputs(inputs, r.sequences)
    first = next(iter(files.values()))
    subject_id = first.name.split(".nii")[0].rsplit("_", 1)[0].rsplit("-", 1)[0]
    subject = subject_from_files(files, subject_id, normalization=r.normalization)
    sources = [s for s in files if s != to]
    if not sources:
        raise InvalidArgumentError(f"{to} is the only input; give at least one other sequence")
    gens = [r.translate(subject, s, [to])[to] for s in sources]
    volume = np.mean(gens, axis=0)
    if volume.shape[0] != 1:
        raise InvalidArgumentError(f"{to} has {volume.shape[0]} time points; writing 4-D NIfTI is not supported")
    out = Path(out) if out is not None else first.parent / f"{subject_id}_{to}_synth.nii.gz"
    write_like_image(out, volume[0], subject.affine)
    return GenerateResult(out, to, sources)


def dmap(run: str | Path | SynthRun, subject: str | Path, out: str | Path | None = None,
         device: str | None = None, include_self: bool = True, match_gain: bool = False) -> list[Path]:
    """M_d of every available sequence of one subject folder (BraTS layout), as NIfTI on the
    subject's grid and an overlay PNG (Python twin of ``mridomain synth dmap``). ``out`` defaults to
    the subject's folder. Missing sequences are left out; fewer than two available is an error.
    ``match_gain``: each generated volume first scaled by its least-squares gain to the target (not in
    the paper, :func:`~mridomain.synth.differentiation.differentiation_map`), written as
    ``*_dmap_gain_matched*`` beside eq. 5's ``*_dmap*``."""
    r = run if isinstance(run, SynthRun) else load_run(run, device=device)
    sub = load_subject(subject, r.sequences, allow_missing=True, normalization=r.normalization)
    if len(sub.available) < 2:
        raise ImageReadError(Path(subject), f"only {list(sub.available)} of the run's sequences "
                                            f"{list(r.sequences)} found: M_d needs two")
    maps = subject_dmaps(sub, r.translate_all(sub, include_self=include_self), include_self=include_self,
                         match_gain=match_gain)
    return write_dmaps(sub, maps, Path(out) if out is not None else Path(subject),
                       name="dmap_gain_matched" if match_gain else "dmap")
