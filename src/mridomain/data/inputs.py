"""Image files and folders -> preprocessed slices: the one path by which new images reach a model.

``predict``, ``route`` and ``compare`` read their inputs here, with the preprocessing a run records
in its ``preprocess.json`` (the very :func:`mridomain.data.preprocess_slices` that built the
training cache), so a model sees new images exactly as it saw its training slices.

An input is a file (DICOM, NIfTI, PNG / JPEG / TIFF / BMP) or a folder. A folder may be a whole
archive: it is searched at any depth, its DICOM files are grouped into series and each series into
its volumes (``mridomain.io.scan_dicom_folder``: DWI b-values, DCE time points, echoes, Siemens
mosaics, the volumes of an enhanced multi-frame file), and every series volume becomes one
:class:`InputImage`; NIfTI volumes and pictures in it are inputs of their own. Phase, derived,
localizer and secondary-capture images are skipped with their reason unless ``keep_kinds`` names
their kind. Unreadable inputs are skipped with a one-line reason; the rest are read.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mridomain.progress import progress_bar

from mridomain.data.cache import preprocess_slices
from mridomain.errors import EmptyInputError, MridomainError

__all__ = ["IDENTITY_KEYS", "InputImage", "InputSlices", "iter_inputs", "read_inputs", "skip_reason"]

#: What names the series an input came from: keys of ``InputImage.meta`` (None when unknown, e.g.
#: for NIfTI and pictures) and columns of ``InputSlices.rows``.
IDENTITY_KEYS = ("series_uid", "patient_id", "series_description", "volume")


@dataclass
class InputImage:
    """One input (a file, a series volume, a NIfTI volume) as preprocessed slices.

    ``meta`` holds the header fields (``mridomain.io.ImageData.meta``) and the series identity
    (:data:`IDENTITY_KEYS`): ``series_uid``, ``patient_id``, ``series_description`` and ``volume``
    (0 unless the series has several volumes; ``n_volumes`` and ``volume_key`` say more).
    """

    source: Path
    slices: np.ndarray                      # (S, h, w) float32, preprocessed
    meta: dict[str, Any]
    files: list[Path]                       # one per slice for DICOM series, else [source]

    def file_of(self, i: int) -> Path:
        """The file slice ``i`` came from."""
        return self.files[i] if len(self.files) == len(self.slices) else self.files[0]

    @property
    def identity(self) -> dict[str, Any]:
        """``{series_uid, patient_id, series_description, volume}`` of this input."""
        return {key: self.meta.get(key) for key in IDENTITY_KEYS}


@dataclass
class InputSlices:
    """All inputs' slices stacked, one row per slice, plus what could not be read."""

    images: np.ndarray                      # (N, h, w)
    rows: pd.DataFrame                      # source, slice, file, series_uid, patient_id, series_description, volume
    inputs: list[InputImage] = field(repr=False, default_factory=list)
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["path", "reason"]))


def skip_reason(err: BaseException) -> str:
    """The one-line reason an input is skipped."""
    if isinstance(err, MridomainError):
        return getattr(err, "reason", None) or str(err)
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"


def _with_identity(meta: dict[str, Any]) -> dict[str, Any]:
    meta = dict(meta)
    dicom = meta.get("source_format") == "dicom"
    meta["series_uid"] = (str(meta.get("SeriesInstanceUID") or "") or None) if dicom else None
    meta["patient_id"] = (str(meta.get("PatientID") or "") or None) if dicom else None
    meta["series_description"] = (str(meta.get("SeriesDescription") or "") or None) if dicom else None
    meta["volume"] = int(meta.get("volume") or 0)
    meta.setdefault("n_volumes", 1)
    meta.setdefault("volume_key", "")
    return meta


def _images_of_file(path: Path, keep_kinds: tuple[str, ...]) -> Iterator[Any]:
    """The ImageData of one file: several when a multi-frame DICOM file holds several volumes."""
    from mridomain.io import ImageData, kind_problem, read_image

    image = read_image(path)
    if image.meta.get("source_format") == "dicom":
        problem = kind_problem(image.meta, keep_kinds)
        if problem is not None:
            raise EmptyInputError(path, problem)
    labels = image.meta.get("FrameVolumes")
    if labels is None or len(labels) != len(image.pixels):
        yield image
        return
    labels = np.asarray(labels)
    n_volumes = int(labels.max()) + 1
    for volume in range(n_volumes):
        keep = np.flatnonzero(labels == volume)
        meta = {k: v for k, v in image.meta.items() if k not in ("FrameVolumes", "FramePositions")}
        meta.update(volume=volume, n_volumes=n_volumes, volume_key=f"{image.meta.get('FrameVolumesBy')} {volume + 1}",
                    n_slices=len(keep))
        yield ImageData(image.pixels[keep], meta, path, image.spacing, [path])


def _images_of_folder(folder: Path, keep_kinds: tuple[str, ...], skipped: list[tuple[str, str]],
                      progress: bool) -> Iterator[tuple[Path, Any]]:
    """(files to report on failure, ImageData or the exception) for every input in a folder."""
    from mridomain.io import BITMAP_SUFFIXES, NIFTI_SUFFIXES, iter_candidate_files, read_dicom_volume, scan_dicom_files

    files = list(iter_candidate_files(folder))
    if not files:
        skipped.append((str(folder), "empty folder: no files"))
        return
    pictures = [f for f in files if f.name.lower().endswith((*NIFTI_SUFFIXES, *BITMAP_SUFFIXES))]
    taken = set(pictures)
    volumes = scan_dicom_files([f for f in files if f not in taken], progress=progress, skipped=skipped,
                               keep_kinds=keep_kinds, desc=f"reading headers in {folder.name}")
    for volume in volumes:
        # every file is accounted for: read, or one row of its own in the skip report
        files = [*volume.files, *(c for copies in volume.copies.values() for c in copies)]
        reported = len(skipped)
        try:
            image = read_dicom_volume(volume, skipped=skipped)
        except Exception as err:  # noqa: BLE001 - an unreadable file may raise anything: skip, report
            named = {path for path, _ in skipped[reported:]}
            yield [f for f in files if str(f) not in named], err
            continue
        yield sorted(set(image.files), key=str), image
    for picture in pictures:
        yield from _file_images(picture, keep_kinds)


def iter_inputs(paths: Sequence[str | Path], preprocess: dict[str, Any], skipped: list[tuple[str, str]],
                progress: bool = True, desc: str = "reading images",
                keep_kinds: Iterable[str] = ()) -> Iterator[InputImage]:
    """Yield each readable input preprocessed as ``preprocess`` (a run's preprocess.json) says,
    one per file, or per series volume of a folder (see the module docstring); append
    ``(path, reason)`` to ``skipped`` for each one that is not. ``keep_kinds``: image kinds to
    read although they are not anatomical images (``mridomain.io.IMAGE_KINDS``)."""
    from mridomain.io import check_keep_kinds

    keep_kinds = check_keep_kinds(keep_kinds)
    size = preprocess.get("size") or 224
    normalization = preprocess.get("normalization") or "max255"
    for path in progress_bar(list(paths), desc=desc, enabled=progress, unit="input"):
        path = Path(path)
        if path.is_dir():
            found: Iterable[tuple[Path, Any]] = _images_of_folder(path, keep_kinds, skipped, progress)
        else:
            found = _file_images(path, keep_kinds)
        for where, image in found:
            try:
                if isinstance(image, BaseException):
                    raise image
                if image.pixels.size == 0:
                    raise EmptyInputError(path, "no pixels")
                x = preprocess_slices(np.asarray(image.pixels, dtype=np.float32), size, normalization,
                                      preprocess.get("kspace_view"))
            except Exception as err:  # noqa: BLE001 - an unreadable file may raise anything: skip, report
                # one row per file (a folder's volume lists its files), never one row for a folder
                for w in (where if isinstance(where, list) else [where]):
                    skipped.append((str(w), skip_reason(err)))
                continue
            yield InputImage(source=Path(image.source), slices=x, meta=_with_identity(image.meta),
                             files=[Path(f) for f in image.files])


def _file_images(path: Path, keep_kinds: tuple[str, ...]) -> Iterator[tuple[Path, Any]]:
    try:
        for image in _images_of_file(path, keep_kinds):
            yield path, image
    except Exception as err:  # noqa: BLE001 - reported by the caller
        yield path, err


def read_inputs(paths: Sequence[str | Path], preprocess: dict[str, Any], progress: bool = True,
                keep_kinds: Iterable[str] = ()) -> InputSlices:
    """Every readable input's slices stacked; raises :class:`EmptyInputError` when none is readable."""
    skipped: list[tuple[str, str]] = []
    inputs = list(iter_inputs(paths, preprocess, skipped, progress=progress, keep_kinds=keep_kinds))
    skipped_df = pd.DataFrame(skipped, columns=["path", "reason"])
    if not inputs:
        first = f" (e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise EmptyInputError(Path(str(paths[0])) if len(paths) else Path("."),
                              f"none of the {len(paths)} inputs could be read{first}")
    rows = pd.DataFrame([{"source": str(i.source), "slice": k, "file": str(i.file_of(k)), **i.identity}
                         for i in inputs for k in range(len(i.slices))])
    return InputSlices(images=np.concatenate([i.slices for i in inputs]), rows=rows, inputs=inputs,
                       skipped=skipped_df)
