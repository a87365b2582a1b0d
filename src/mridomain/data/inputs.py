"""Image files and folders -> preprocessed slices: the one path by which new images reach a model.

``predict``, ``route`` and ``compare`` read their inputs here, with the preprocessing a run records
in its ``preprocess.json`` (the very :func:`mridomain.data.preprocess_slices` that built the
training cache), so a model sees new images exactly as it saw its training slices. Unreadable
inputs are skipped with a one-line reason; the rest are read.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mridomain.progress import progress_bar

from mridomain.data.cache import preprocess_slices
from mridomain.errors import EmptyInputError, MridomainError

__all__ = ["InputImage", "InputSlices", "iter_inputs", "read_inputs", "skip_reason"]


@dataclass
class InputImage:
    """One input (a file, a series folder, a volume) as preprocessed slices."""

    source: Path
    slices: np.ndarray                      # (S, h, w) float32, preprocessed
    meta: dict[str, Any]                    # header fields (mridomain.io.ImageData.meta)
    files: list[Path]                       # one per slice for DICOM series, else [source]

    def file_of(self, i: int) -> Path:
        return self.files[i] if len(self.files) == len(self.slices) else self.files[0]


@dataclass
class InputSlices:
    """All inputs' slices stacked, one row per slice, plus what could not be read."""

    images: np.ndarray                      # (N, h, w)
    rows: pd.DataFrame                      # source, slice, file
    inputs: list[InputImage] = field(repr=False, default_factory=list)
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["path", "reason"]))


def skip_reason(err: BaseException) -> str:
    """The one-line reason an input is skipped."""
    if isinstance(err, MridomainError):
        return getattr(err, "reason", None) or str(err)
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"


def iter_inputs(paths: Sequence[str | Path], preprocess: dict[str, Any], skipped: list[tuple[str, str]],
                progress: bool = True, desc: str = "reading images") -> Iterator[InputImage]:
    """Yield each readable input preprocessed as ``preprocess`` (a run's preprocess.json) says;
    append ``(path, reason)`` to ``skipped`` for each one that is not."""
    from mridomain.io import read_image

    size = preprocess.get("size") or 224
    normalization = preprocess.get("normalization") or "max255"
    for path in progress_bar(list(paths), desc=desc, enabled=progress, unit="input"):
        path = Path(path)
        try:
            img = read_image(path)
            if img.pixels.size == 0:
                raise EmptyInputError(path, "no pixels")
            x = preprocess_slices(np.asarray(img.pixels, dtype=np.float32), size, normalization)
        except Exception as err:  # noqa: BLE001 - an unreadable file may raise anything: skip, report
            skipped.append((str(path), skip_reason(err)))
            continue
        yield InputImage(source=path, slices=x, meta=dict(img.meta), files=[Path(f) for f in img.files])


def read_inputs(paths: Sequence[str | Path], preprocess: dict[str, Any], progress: bool = True) -> InputSlices:
    """Every readable input's slices stacked; raises :class:`EmptyInputError` when none is readable."""
    skipped: list[tuple[str, str]] = []
    inputs = list(iter_inputs(paths, preprocess, skipped, progress=progress))
    skipped_df = pd.DataFrame(skipped, columns=["path", "reason"])
    if not inputs:
        first = f" (e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise EmptyInputError(Path(str(paths[0])) if len(paths) else Path("."),
                              f"none of the {len(paths)} inputs could be read{first}")
    rows = pd.DataFrame([{"source": str(i.source), "slice": k, "file": str(i.file_of(k))}
                         for i in inputs for k in range(len(i.slices))])
    return InputSlices(images=np.concatenate([i.slices for i in inputs]), rows=rows, inputs=inputs,
                       skipped=skipped_df)
