"""Byte-level pixel data checks done without decoding: the preamble sniff, the declared pixel data
length against the file, encapsulated fragments, and the one verdict on what pydicom's decoders
would refuse (:func:`pixel_data_problem`).
"""
from __future__ import annotations

import math
import struct
import warnings
from pathlib import Path
from typing import Any, BinaryIO

from pydicom.dataset import Dataset

from mridomain.errors import ImageReadError
from mridomain.io.fields import _safe_value, transfer_syntax, transfer_syntax_uid
_PIXEL_TAG_LE = b"\xe0\x7f\x10\x00"
_PIXEL_TAG_BE = b"\x7f\xe0\x00\x10"
_UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM, _SEQUENCE_DELIMITER = 0xFFFEE000, 0xFFFEE0DD


def _sniff(fp: BinaryIO, path: str | Path, size: int) -> bool:
    """True if the file has the DICM preamble; False if it may be a preamble-less DICOM.

    Raises ImageReadError for files that cannot be DICOM at all.
    """
    if size == 0:
        raise ImageReadError(path, "empty file")
    head = fp.read(132)
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    # Old ACR-NEMA style / raw datasets start directly with an element of group 0002 or 0008
    # (little or big endian); anything else is not DICOM.
    if len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08"):
        return False
    if size < 132:
        raise ImageReadError(path, f"not a DICOM file (only {size} bytes, no DICM preamble)")
    raise ImageReadError(path, "not a DICOM file (no DICM preamble and no readable header)")


def _check_pixel_length(fp: BinaryIO, path: str | Path, size: int, ds: Dataset) -> bool:
    """After a stop_before_pixels read: verify the pixel data element fits in the file and can be
    decoded as the header describes it (:func:`pixel_data_problem`).

    Returns True when a pixel data element was found. Raises for pixel data that cannot be read.
    """
    start = fp.tell()
    head = fp.read(12)
    if len(head) < 8:
        return False
    if head[:4] == _PIXEL_TAG_LE:
        endian = "<"
    elif head[:4] == _PIXEL_TAG_BE:
        endian = ">"
    else:
        # Float / double float pixel data or something unexpected: nothing to check.
        return head[:2] in (b"\xe0\x7f", b"\x7f\xe0")
    if head[4:6] in (b"OB", b"OW", b"UN") and len(head) == 12:
        (length,) = struct.unpack(endian + "I", head[8:12])
        header_len = 12
    else:
        (length,) = struct.unpack(endian + "I", head[4:8])
        header_len = 8
    transfer = transfer_syntax(ds)
    explicit = transfer is not None and transfer != "1.2.840.10008.1.2"
    if explicit and head[4:6] not in (b"OB", b"OW", b"UN"):
        # explicit VR (PS3.5 8.2): pydicom cannot take pixel data of any other VR as pixels
        raise ImageReadError(path, f"cannot decode pixel data: PixelData with VR {head[4:6].decode('latin-1')!r}")
    fragments = pixel_fragments(fp, start + header_len, size, length, transfer)
    problem = pixel_data_problem(length, size - start - header_len, pixel_fields(ds), transfer, fragments)
    if problem is not None:
        raise ImageReadError(path, problem)
    return True


def pixel_fragments(fp: BinaryIO, start: int, size: int, length: int,
                    transfer_syntax: str | None) -> tuple[int, str | None] | None:
    """:func:`encapsulated_fragments` of a pixel data value starting at byte ``start`` when it is
    encapsulated (undefined length, or a compressed transfer syntax, whose bytes pydicom parses as
    fragments whatever their declared length); None for native data."""
    if length == _UNDEFINED_LENGTH:
        return encapsulated_fragments(fp, start, size)
    if transfer_syntax and _is_encapsulated(transfer_syntax):
        return encapsulated_fragments(fp, start, min(size, start + length), delimited=False)
    return None


def _is_encapsulated(transfer_syntax: str) -> bool:
    uid = transfer_syntax_uid(transfer_syntax)
    return uid.is_transfer_syntax and uid.is_encapsulated


def encapsulated_fragments(fp: BinaryIO, start: int, end: int, delimited: bool = True) -> tuple[int, str | None]:
    """(number of fragments, problem or None) of encapsulated pixel data whose items lie from
    byte ``start`` to ``end`` (PS3.5 A.4: a basic offset table item, one item per fragment, then,
    for an undefined length (``delimited``), a sequence delimiter). Reads item headers only.

    It reads them as pydicom does: items walked by their lengths up to the delimiter; when that
    walk fails, the value ends at the first delimiter tag found by scanning (none: a truncated
    file, which pydicom reports too) and a last item running past that end is a short fragment.
    """
    count, problem = _walk_items(fp, start, end, delimited, tolerant=False)
    if problem is None:
        return count, None
    if delimited:
        stop = _find_delimiter(fp, start, end)
        if stop is None:
            return count, f"truncated file: ends at byte {end} inside the encapsulated pixel data (no delimiter)"
        end = stop
    return _walk_items(fp, start, end, delimited=False, tolerant=True)


def _walk_items(fp: BinaryIO, start: int, end: int, delimited: bool, tolerant: bool) -> tuple[int, str | None]:
    pos, items = start, 0
    fragments = lambda: max(items - 1, 0)  # noqa: E731 - the first item is the basic offset table
    while pos + 4 <= end:
        fp.seek(pos)
        head = fp.read(8)
        group, element = struct.unpack("<HH", head[:4])
        tag = group << 16 | element
        if tag == _SEQUENCE_DELIMITER:
            return fragments(), None
        if tag != _ITEM or len(head) < 8 or pos + 8 > end:
            if tag == _ITEM and tolerant:
                return fragments(), None  # an item header cut by the end: pydicom stops there
            return fragments(), (f"corrupt encapsulated pixel data: element ({group:04X},{element:04X}) "
                                 f"at byte {pos} where a fragment item belongs")
        (length,) = struct.unpack("<I", head[4:])
        if length == _UNDEFINED_LENGTH:
            return fragments(), f"corrupt encapsulated pixel data: an item of undefined length at byte {pos}"
        items += 1
        pos += 8 + length
        if pos > end:
            if tolerant:
                return fragments(), None  # pydicom reads the bytes there are: a short last fragment
            return fragments(), (f"truncated file: a pixel data fragment needs {length} bytes, "
                                 f"only {max(end - (pos - length), 0)} present")
    if not delimited and (tolerant or pos == end):
        return fragments(), None
    return fragments(), f"truncated file: ends at byte {end} inside the encapsulated pixel data"


def _find_delimiter(fp: BinaryIO, start: int, end: int, chunk: int = 1 << 16) -> int | None:
    """Position of the first sequence delimiter tag between ``start`` and ``end`` (a byte scan)."""
    marker = struct.pack("<HH", 0xFFFE, 0xE0DD)
    pos = start
    while pos < end:
        fp.seek(pos)
        block = fp.read(min(chunk, end - pos))
        found = block.find(marker)
        if found >= 0:
            return pos + found
        if len(block) < len(marker):
            return None
        pos += len(block) - len(marker) + 1
    return None


#: Header keyword -> pydicom's name for it among the pixel options (pydicom.pixels.utils.as_pixel_options).
_PIXEL_OPTIONS = {"Rows": "rows", "Columns": "columns", "NumberOfFrames": "number_of_frames",
                  "SamplesPerPixel": "samples_per_pixel", "PlanarConfiguration": "planar_configuration",
                  "PhotometricInterpretation": "photometric_interpretation",
                  "BitsAllocated": "bits_allocated", "BitsStored": "bits_stored",
                  "PixelRepresentation": "pixel_representation"}


#: A pixel description value pydicom cannot convert (:func:`pixel_fields`).
UNREADABLE = "<unreadable>"


def pixel_fields(ds: Dataset) -> dict[str, Any]:
    """The header fields :func:`pixel_data_problem` checks, converted by pydicom as its decoders
    convert them (:data:`UNREADABLE` where that conversion fails)."""
    out = {}
    for keyword in _PIXEL_OPTIONS:
        if keyword in ds:
            out[keyword] = _safe_value(ds, keyword, UNREADABLE)
    return out


class _DeclaredLength:
    """Stands for pixel data of a known length that was not read: pydicom's buffer validation
    asks a buffer only for its length."""

    def __init__(self, length: int):
        self.length = length

    def __len__(self) -> int:
        return self.length


def pixel_data_problem(length: int, available: int, fields: dict[str, Any] | None = None,
                       transfer_syntax: str | None = None,
                       fragments: tuple[int, str | None] | None = None) -> str | None:
    """Why a PixelData element of ``length`` bytes (0xFFFFFFFF: undefined length) cannot be read
    when ``available`` bytes follow its header, or None. The one pixel data check of the package:
    the pydicom path, the index's header walker and the pixel reader all ask it.

    With the header ``fields`` (Rows, Columns, NumberOfFrames and :data:`PIXEL_KEYWORDS`) and the
    transfer syntax, it asks pydicom's own decoder validation whether the group 0028 values can
    describe these pixel data: the elements pydicom requires, their ranges, and for native data
    whether the bytes present hold the image they describe (``Rows x Columns x frames x samples
    x bits``, with YBR_FULL_422's 4:2:2 subsampling), so a NumberOfFrames of 2^31-1 in a 526 KB
    file is refused before anything allocates 16 GiB. ``fragments`` (:func:`pixel_fragments`)
    checks that encapsulated data hold their fragments within the file and at least one fragment
    per frame. Without ``fields`` only the length is checked against the file.
    """
    encapsulated = length == _UNDEFINED_LENGTH or fragments is not None
    if length == 0:
        return "no pixel data (PixelData element is empty)"
    if length == _UNDEFINED_LENGTH and available <= 0:
        return "truncated file: empty encapsulated pixel data"
    if fragments is not None:
        count, problem = fragments
        if problem is not None:
            return problem
        if count == 0:
            return "no pixel data (the encapsulated pixel data hold no fragment)"
    if fields is None:
        if not encapsulated and length > available:
            return f"truncated file: pixel data needs {length} bytes, only {max(available, 0)} present"
        return None
    # pydicom reads what the file holds when a length runs past its end: judge those bytes.
    present = max(available, 0) if length == _UNDEFINED_LENGTH else min(length, max(available, 0))
    return _decode_problem(encapsulated, present, fields, transfer_syntax, fragments[0] if fragments else None)


def _decode_problem(encapsulated: bool, present: int, fields: dict[str, Any], transfer_syntax: str | None,
                    n_fragments: int | None) -> str | None:
    from pydicom.pixels import get_decoder
    from pydicom.pixels.decoders.base import DecodeRunner

    if not transfer_syntax:
        # pydicom decodes only what the file meta says how to (a raw dataset has no file meta)
        return "cannot decode pixel data: no Transfer Syntax UID (file meta missing or damaged)"
    uid = transfer_syntax_uid(transfer_syntax)
    if not uid.is_transfer_syntax:
        return f"cannot decode pixel data: unknown transfer syntax {transfer_syntax}"
    if encapsulated and not uid.is_encapsulated:
        # items where native bytes belong: pydicom would read the item headers as pixels
        return f"cannot decode pixel data: encapsulated pixel data under transfer syntax {uid.name}"
    try:
        if not get_decoder(uid).is_available:
            return f"cannot decode pixel data: no decoder installed for {uid.name}"
    except NotImplementedError:
        return f"cannot decode pixel data: pydicom has no decoder for {uid.name}"
    unreadable = [kw for kw in _PIXEL_OPTIONS if fields.get(kw) is UNREADABLE]
    if unreadable:
        return f"cannot decode pixel data: unreadable {unreadable[0]} value"
    options = {name: fields[kw] for kw, name in _PIXEL_OPTIONS.items() if fields.get(kw) is not None}
    if fields.get("NumberOfFrames") in (None, 0, ""):
        options["number_of_frames"] = 1  # as pydicom assumes
    options["pixel_keyword"] = "PixelData"
    runner = DecodeRunner(uid)
    try:
        runner.set_options(**options)
        runner.set_source(_DeclaredLength(present))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runner.validate()
    except ValueError as err:
        text = _one_line(err)
        if "less than expected" in text:
            frames = runner.number_of_frames
            need = math.ceil(runner.frame_length(unit="bytes") * frames)
            return (f"truncated file: pixel data has {present} bytes, Rows x Columns x {frames} frame(s) "
                    f"as the header describes them need {need}")
        return f"cannot decode pixel data: {text}"
    except (AttributeError, TypeError, KeyError) as err:
        return f"cannot decode pixel data: {_one_line(err)}"
    if n_fragments is not None and runner.number_of_frames > n_fragments:
        return (f"cannot decode pixel data: NumberOfFrames {runner.number_of_frames} but the encapsulated "
                f"pixel data hold only {n_fragments} fragment(s)")
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]
