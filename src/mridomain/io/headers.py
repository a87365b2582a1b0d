"""Header-only DICOM reading: the flat ``{keyword: python value}`` dict the IAP schema reads.

The indexer calls :func:`read_header_fields` on every file of an archive (possibly millions),
so the hot path opens each file once, sniffs the 128-byte preamble + ``DICM`` itself (cheap
rejection of non-DICOM files without a pydicom exception), parses only the tags asked for
(``specific_tags``) and stops before the pixel data. It still checks that the pixel data
element the header announces fits in the file, so a truncated download is reported as such
instead of surfacing later as a pixel decoding error.
"""
from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from mridomain.errors import ImageReadError
# The header reader's parts, one module per concern; their public names are re-exported here,
# where they lived before 0.2, for one release.
from mridomain.io.fields import (FUNCTIONAL_GROUP_FIELDS, HEADER_KEYWORDS, KIND_KEYWORDS, PIXEL_KEYWORDS,
                                 VOLUME_KEYWORDS, _SUPPORT_KEYWORDS, _is_empty, decode_value, field_value,
                                 header_fields_from_dataset, is_mosaic, mosaic_fields, to_python,
                                 transfer_syntax, transfer_syntax_uid)
from mridomain.io.kinds import IMAGE_KINDS, check_keep_kinds, image_kind, kind_problem, volume_labels
from mridomain.io.pixel_checks import (_UNDEFINED_LENGTH, _check_pixel_length, _one_line, _sniff,
                                       encapsulated_fragments, pixel_data_problem, pixel_fields,
                                       pixel_fragments)
from mridomain.io.walk import iter_candidate_files, iter_file_paths

__all__ = [
    "HEADER_KEYWORDS",
    "IMAGE_KINDS",
    "PIXEL_KEYWORDS",
    "VOLUME_KEYWORDS",
    "check_keep_kinds",
    "decode_value",
    "encapsulated_fragments",
    "image_kind",
    "is_mosaic",
    "kind_problem",
    "mosaic_fields",
    "pixel_data_problem",
    "pixel_fragments",
    "volume_labels",
    "FUNCTIONAL_GROUP_FIELDS",
    "read_header_fields",
    "header_fields_from_dataset",
    "open_dicom",
    "is_dicom_file",
    "iter_candidate_files",
    "iter_file_paths",
    "to_python",
    "field_value",
    "transfer_syntax",
    "transfer_syntax_uid",
    "KIND_KEYWORDS",
]


def _specific_tags(extra: Iterable[str]) -> list[int]:
    tags = []
    for kw in (*HEADER_KEYWORDS, *_SUPPORT_KEYWORDS, *extra):
        tag = tag_for_keyword(kw)
        if tag is not None:
            tags.append(tag)
    return tags


_DEFAULT_TAGS = _specific_tags(())


def open_dicom(
    path: str | Path,
    *,
    stop_before_pixels: bool = False,
    specific_tags: Sequence[int] | None = None,
    check_pixels: bool = True,
    defer_size: int | str | None = None,
) -> Dataset:
    """Read a DICOM file with precise one-line errors.

    Accepts files without the ``.dcm`` suffix and preamble-less (raw) datasets. Raises
    :class:`ImageReadError` with reasons ``"empty file"``, ``"not a DICOM file (...)"``,
    ``"truncated file: ..."``, ``"corrupt DICOM header: ..."``, ``"cannot decode pixel data:
    ..."`` (``check_pixels``: :func:`pixel_data_problem`). ``defer_size`` leaves values larger
    than that on disk until accessed (pydicom re-opens the file then). A header whose file ends
    cleanly after its last element without any pixel data (a header dump whose pixels were
    stripped) is returned as it is; one cut inside an element is a truncated file.
    """
    return _open_dicom(path, stop_before_pixels=stop_before_pixels, specific_tags=specific_tags,
                       check_pixels=check_pixels, defer_size=defer_size)[0]


def _open_dicom(
    path: str | Path,
    *,
    stop_before_pixels: bool = False,
    specific_tags: Sequence[int] | None = None,
    check_pixels: bool = True,
    defer_size: int | str | None = None,
) -> tuple[Dataset, bool]:
    """:func:`open_dicom`, and whether the file holds a pixel data element."""
    try:
        size = os.path.getsize(path)
        fp = open(path, "rb")
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a folder, not a file") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot open: {exc.strerror or exc}") from None
    with fp:
        has_preamble = _sniff(fp, path, size)
        fp.seek(0)
        try:
            # pydicom reports a file that ends inside a sequence or encapsulated pixel data
            # only as a warning; record warnings (also keeps millions of reads quiet).
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ds = pydicom.dcmread(
                    fp,
                    force=not has_preamble,
                    stop_before_pixels=stop_before_pixels,
                    specific_tags=list(specific_tags) if specific_tags is not None else None,
                    defer_size=defer_size,
                )
        except InvalidDicomError as exc:
            raise ImageReadError(path, f"not a DICOM file ({_one_line(exc)})") from None
        except EOFError as exc:
            raise ImageReadError(path, f"truncated file: {_one_line(exc) or 'unexpected end of file'}") from None
        except (ValueError, KeyError, TypeError, OverflowError, struct.error, NotImplementedError, AttributeError,
                BytesLengthException) as exc:
            raise ImageReadError(path, f"corrupt DICOM header: {_one_line(exc)}") from None
        except RecursionError:
            raise ImageReadError(path, "corrupt DICOM header: sequences nested too deep to read") from None
        except OSError as exc:
            raise ImageReadError(path, f"cannot read: {_one_line(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - whatever else a damaged file makes pydicom raise
            raise ImageReadError(path, f"corrupt DICOM header: {type(exc).__name__}: {_one_line(exc)}") from None
        for warning in caught:
            text = str(warning.message)
            if "End of file reached" in text or "unexpected end" in text.lower():
                raise ImageReadError(
                    path, f"truncated file: ends at byte {size} inside a sequence or the encapsulated pixel data"
                )
        with warnings.catch_warnings():
            # the checks convert values, and pydicom warns about each odd one: reasons say what matters
            warnings.simplefilter("ignore")
            found_pixels = _check_dataset(ds, fp, path, size, has_preamble, stop_before_pixels, check_pixels)
    return ds, found_pixels


def _check_dataset(ds: Dataset, fp: BinaryIO, path: str | Path, size: int, has_preamble: bool,
                   stop_before_pixels: bool, check_pixels: bool) -> bool:
    """The checks of :func:`open_dicom` after pydicom's read; whether the file has pixel data."""
    if not _looks_like_dataset(ds):
        if not has_preamble:
            raise ImageReadError(path, "not a DICOM file (no DICM preamble and no readable header)")
        group_length = getattr(ds, "file_meta", Dataset()).get("FileMetaInformationGroupLength")
        try:
            meta_end = 132 + 12 + int(group_length) if group_length is not None else None
        except (TypeError, ValueError):  # the group length value itself was cut off
            meta_end = size + 1
        if size < 144 or (meta_end is not None and meta_end > size):
            raise ImageReadError(path, f"truncated file: ends at byte {size} inside the file meta information")
        raise ImageReadError(path, "corrupt DICOM header: no recognisable data elements after the DICM preamble")
    found_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    if check_pixels:
        transfer = transfer_syntax(ds)
        deflated = transfer == DeflatedExplicitVRLittleEndian
        if stop_before_pixels and deflated:
            # Positions in the file are positions in the compressed stream: check the
            # pixel data of the inflated dataset instead (deflated files are rare).
            found_pixels = _check_inflated_pixels(path)
        elif stop_before_pixels:
            found_pixels = _check_pixel_length(fp, path, size, ds)
        at_end = fp.tell() >= size or deflated
        if not found_pixels and at_end and _is_image_header(ds) and not deflated and not _ends_cleanly(path, size):
            # An image header that runs into the end of the file inside an element:
            # pydicom returns the partial dataset silently, so say what happened.
            raise ImageReadError(path, f"truncated file: ends at byte {size} before the pixel data")
    return found_pixels


def _check_inflated_pixels(path: str | Path) -> bool:
    """Pixel data check of a deflated file (whole dataset inflated): True when it has pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            full = pydicom.dcmread(path)
            value = full.get("PixelData")
    except Exception as exc:  # noqa: BLE001 - a damaged deflate stream may raise anything
        raise ImageReadError(path, f"corrupt deflated dataset: {_one_line(exc)}") from None
    if value is None:
        return False
    problem = pixel_data_problem(len(value), len(value), pixel_fields(full), DeflatedExplicitVRLittleEndian)
    if problem is not None:
        raise ImageReadError(path, problem)
    return True


def _ends_cleanly(path: str | Path, size: int) -> bool:
    """Does the dataset's last element end exactly where the file ends? A header dump whose pixel
    data were stripped does; a download cut inside an element does not (pydicom returns the cut
    value without a word, so the lengths decide)."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - unreadable in full: certainly not a clean end
        return False
    if any("end of file" in str(w.message).lower() for w in caught) or not len(ds):
        return False
    last = ds.get_item(max(ds.keys()))
    if isinstance(last, RawDataElement):
        if last.length == _UNDEFINED_LENGTH:
            return True  # a sequence read to its delimiter (pydicom warns when that is missing)
        return last.value_tell + last.length == size
    return True


def _is_image_header(ds: Dataset) -> bool:
    if "Rows" in ds or "Columns" in ds:
        return True
    sop = ds.get("SOPClassUID") or getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID")
    try:
        return bool(sop) and "Image Storage" in UID(str(sop)).name
    except Exception:  # an unparseable UID says nothing either way
        return False


def _looks_like_dataset(ds: Dataset) -> bool:
    """A force-read of a non-DICOM file yields junk tags; a real dataset has known keywords."""
    return any(k in ds for k in ("SOPClassUID", "SOPInstanceUID", "Modality", "StudyInstanceUID", "Rows"))


def read_header_fields(path: str | Path, extra: Iterable[str] = (), require_pixels: bool = True
                       ) -> dict[str, Any]:
    """Header-only read of one DICOM file into the flat ``{keyword: value}`` dict.

    Parses only :data:`HEADER_KEYWORDS` (+ ``extra`` keywords and the enhanced-MR functional
    groups) and stops before the pixel data, so it costs a fraction of a full ``dcmread``; the
    pixel data it announces are checked by :func:`pixel_data_problem`. A Siemens mosaic adds
    ``NumberOfImagesInMosaic`` (and its ``DiffusionBValue``) from its CSA header. Raises :class:`ImageReadError` for empty,
    non-DICOM, truncated and corrupt files, pixel data that cannot be decoded, and objects that
    are not images (no Rows / Columns). An image header without pixel data (a header dump) raises
    ``"no pixel data (...)"`` too, unless ``require_pixels=False``: then it is returned, and
    every result carries ``has_pixels`` (bool).
    """
    extra = tuple(extra)
    tags = _DEFAULT_TAGS if not extra else _specific_tags(extra)
    ds, has_pixels = _open_dicom(path, stop_before_pixels=True, specific_tags=tags)
    fields = header_fields_from_dataset(ds, extra)
    if "Rows" not in fields or "Columns" not in fields:
        sop = fields.get("SOPClassUID")
        name = UID(sop).name if sop else "unknown SOP class"
        raise ImageReadError(path, f"no pixel data (not an image: {name})")
    if is_mosaic(fields) and "NumberOfImagesInMosaic" not in fields:
        # The CSA header is private and was not among the tags read: read it now (mosaics only).
        full = open_dicom(path, stop_before_pixels=True, check_pixels=False)
        for keyword, value in mosaic_fields(full).items():
            if _is_empty(fields.get(keyword)):
                fields[keyword] = value
    if require_pixels:
        if not has_pixels:
            raise ImageReadError(path, "no pixel data (an image header without its pixels)")
    else:
        fields["has_pixels"] = has_pixels
    return fields


def is_dicom_file(path: str | Path) -> bool:
    """Cheap test: does the file carry the 128-byte preamble + ``DICM`` marker?"""
    try:
        with open(path, "rb") as fp:
            head = fp.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"
