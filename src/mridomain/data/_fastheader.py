"""Fast path for reading a few top-level header fields of an ordinary DICOM file.

Indexing an archive reads ~30 tags from each of possibly millions of files. pydicom parses
every element into objects and converts values through hooks and validators, ~1-2 ms per MR
header; this reader walks the element headers of the common case (DICM preamble, little-endian
explicit or implicit VR) with :mod:`struct`, skips unwanted values without reading them, and
converts only the wanted ones. Anything unusual (deflate, big endian, enhanced multi-frame
functional groups, non-ASCII text, undefined-length UN, a wanted sequence, odd structure, and any
file that ends inside an element: damaged files are judged by one reader) raises :class:`Fallback`
and the caller reads the file with pydicom instead, so the fast path never has to be complete,
only right where it answers. Tests compare it field by field with pydicom.
"""
from __future__ import annotations

import os
import struct
from typing import Any

from mridomain.io.pixel_checks import pixel_fragments

_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT",
                       b"SV", b"UV"})
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_IMPLICIT_LE = "1.2.840.10008.1.2"
_NOT_LE_EXPLICIT = frozenset({_IMPLICIT_LE, "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"})
#: Enhanced MR keeps TR, TE, flip angle... in functional groups (5200,9229/9230), and
#: mridomain.io derives AcquisitionMatrix / ContrastBolusAgent from (0018,9058), (0018,9231),
#: (0018,0012) when the legacy tags are missing: leave such files to pydicom and io.
_FALLBACK_TAGS = frozenset({0x52009229, 0x52009230, 0x00189058, 0x00189231, 0x00180012})
_CHUNK = 1 << 16
_VALID_VRS = frozenset(v.encode() for v in (
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "PN", "SH", "SL", "SS",
    "ST", "TM", "UI", "UL", "US")) | _LONG_VRS
_HH, _H, _I = struct.Struct("<HH"), struct.Struct("<H"), struct.Struct("<I")
#: What pydicom's decoders read (io.headers.pixel_data_problem): odd values there are pydicom's call.
_PIXEL_KEYWORDS = frozenset({"Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "PlanarConfiguration",
                             "PhotometricInterpretation", "BitsAllocated", "BitsStored", "PixelRepresentation"})


class Fallback(Exception):
    """The fast reader does not handle this file; read it with pydicom."""


class _Reader:
    """Random access to a file through one buffered window (no reading of skipped values)."""

    __slots__ = ("fh", "size", "base", "buf")

    def __init__(self, fh: Any, size: int):
        self.fh, self.size, self.base, self.buf = fh, size, 0, b""

    def get(self, pos: int, n: int) -> bytes:
        end = pos + n
        if pos < self.base or end > self.base + len(self.buf):
            if end > self.size:
                raise EOFError
            self.fh.seek(pos)
            self.base, self.buf = pos, self.fh.read(max(n, _CHUNK))
        o = pos - self.base
        return self.buf[o:o + n]


def _element(r: _Reader, pos: int, explicit: bool) -> tuple[int, bytes | None, int, int]:
    """(tag, vr or None, length, value start) of the element header at ``pos``."""
    head = r.get(pos, 8)
    group, elem = struct.unpack_from("<HH", head)
    tag = group << 16 | elem
    if group == 0xFFFE:  # item / delimiters never carry a VR
        return tag, None, struct.unpack_from("<I", head, 4)[0], pos + 8
    if not explicit:
        return tag, None, struct.unpack_from("<I", head, 4)[0], pos + 8
    vr = head[4:6]
    if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
        raise Fallback("not a valid VR")
    if vr in _LONG_VRS:
        return tag, vr, struct.unpack("<I", r.get(pos + 8, 4))[0], pos + 12
    return tag, vr, struct.unpack_from("<H", head, 6)[0], pos + 8


def _skip_sequence(r: _Reader, pos: int, explicit: bool, depth: int = 0) -> int:
    """Position after an undefined-length sequence whose items start at ``pos``."""
    if depth > 16:
        raise Fallback("sequences nested too deep")
    while True:
        tag, _, length, start = _element(r, pos, False)
        if tag == _SEQ_END:
            return start
        if tag != _ITEM:
            raise Fallback("unexpected element in a sequence")
        if length != _UNDEFINED:
            pos = start + length
            continue
        pos = start
        while True:  # an undefined-length item: walk its elements to the item delimiter
            tag, vr, length, start = _element(r, pos, explicit)
            if tag == _ITEM_END:
                pos = start
                break
            if length == _UNDEFINED:
                if vr == b"UN":
                    raise Fallback("undefined-length UN")
                pos = _skip_sequence(r, start, explicit, depth + 1)
            else:
                pos = start + length


def _convert(vr: str, raw: bytes, keyword: str) -> Any:
    """The field value of one wanted element, through the package's one value decoder."""
    from mridomain.io.fields import decode_value, field_value

    if not raw.isascii() and vr not in ("US", "SS", "UL", "SL", "FL", "FD"):
        raise Fallback("non-ASCII text: the character set decides")
    done, value = decode_value(vr, raw)
    if not done:
        raise Fallback(f"VR {vr} needs pydicom")
    return field_value(keyword, value)


def read_fields_fast(path: str, wanted: dict[int, tuple[str, str]]) -> tuple[dict[str, Any] | None, str | None]:
    """Fields ``{keyword: value}`` of the wanted top-level tags, or (None, reason) for a file
    that cannot hold a usable image. ``wanted`` maps tag -> (keyword, dictionary VR).

    Raises:
        Fallback: the file needs the full pydicom reader (includes files without a preamble).
    """
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        r = _Reader(fh, size)
        try:
            if size < 132 or r.get(128, 4) != b"DICM":
                raise Fallback("no DICM preamble")
            pos = 132
            transfer = None
            while True:  # file meta group 0002: always explicit VR little endian
                tag, vr, length, start = _element(r, pos, True)
                if tag >> 16 != 0x0002:
                    break
                if length == _UNDEFINED:
                    raise Fallback("undefined length in file meta")
                if tag == 0x00020010:
                    if vr != b"UI":
                        raise Fallback("transfer syntax element with a wrong VR")
                    transfer = r.get(start, length).decode("ascii", "replace").rstrip("\x00 ")
                pos = start + length
            if transfer is None:
                raise Fallback("no transfer syntax")
            explicit = transfer != _IMPLICIT_LE
            if transfer in _NOT_LE_EXPLICIT and transfer != _IMPLICIT_LE:
                raise Fallback(f"transfer syntax {transfer}")
            fields: dict[str, Any] = {}
            # Hot loop: element headers parsed in place from one buffered window (no per-element
            # calls or slices), values read only for wanted tags.
            base, buf = 0, b""
            long_vrs, pixel_tags, fallback_tags = _LONG_VRS, _PIXEL_TAGS, _FALLBACK_TAGS
            unpack_hh, unpack_h, unpack_i = _HH.unpack_from, _H.unpack_from, _I.unpack_from
            while True:
                o = pos - base
                if o < 0 or o + 12 > len(buf):
                    if pos + 8 > size:
                        if pos != size:
                            raise Fallback("file ends inside an element header")
                        if "Rows" not in fields or "Columns" not in fields:
                            sop = fields.get("SOPClassUID") or "unknown SOP class"
                            return None, f"not an image (no Rows/Columns, no pixel data; SOP class {sop})"
                        # The last element ends exactly at the end of the file: a header whose
                        # pixel data were stripped (a header dump), not a cut download.
                        fields.setdefault("ContrastBolusAgent", None)
                        fields["_pixel_length"], fields["_pixel_room"] = None, 0
                        fields["_transfer_syntax"], fields["_fragments"] = transfer, None
                        return fields, None
                    fh.seek(pos)
                    base, buf, o = pos, fh.read(_CHUNK), 0
                group, elem = unpack_hh(buf, o)
                tag = group << 16 | elem
                if explicit:
                    vr = buf[o + 4:o + 6]
                    if vr in long_vrs:
                        if o + 12 > len(buf):
                            raise Fallback("file ends inside an element header")
                        length, start = unpack_i(buf, o + 8)[0], pos + 12
                    elif vr in _VALID_VRS:
                        length, start = unpack_h(buf, o + 6)[0], pos + 8
                    else:
                        raise Fallback("not a valid VR")
                else:
                    vr = None
                    length, start = unpack_i(buf, o + 4)[0], pos + 8
                if tag in pixel_tags:
                    # Same convention as mridomain.io.header_fields_from_dataset: None = absent.
                    fields.setdefault("ContrastBolusAgent", None)
                    fields["_pixel_length"] = length
                    fields["_pixel_room"] = size - start
                    fields["_transfer_syntax"] = transfer
                    fields["_fragments"] = pixel_fragments(fh, start, size, length, transfer)
                    return fields, None
                if tag in fallback_tags:
                    raise Fallback("enhanced MR / derived fields: io handles these")
                if length == _UNDEFINED:
                    if tag in wanted or vr == b"UN":
                        raise Fallback("wanted or UN undefined-length element")
                    pos = _skip_sequence(_Reader(fh, size), start, explicit)
                    continue
                if start + length > size:
                    raise Fallback(f"element ({group:04X},{elem:04X}) needs {length} bytes, {size - start} left")
                spec = wanted.get(tag)
                if spec is not None:
                    keyword, dict_vr = spec
                    use_vr = vr.decode() if vr is not None else dict_vr
                    if use_vr in ("UN", "SQ") or " or " in use_vr:
                        raise Fallback("value needs pydicom")
                    if use_vr != dict_vr and keyword in _PIXEL_KEYWORDS:
                        raise Fallback("a pixel description element with an unexpected VR")
                    so = start - base
                    if so + length <= len(buf):
                        raw = buf[so:so + length]
                    else:
                        fh.seek(start)
                        raw = fh.read(length)
                    value = _convert(use_vr, raw, keyword)
                    if value is None and keyword in _PIXEL_KEYWORDS and raw.strip(b"\x00 "):
                        raise Fallback("an unreadable pixel description value: pydicom decides")
                    if not (keyword == "NumberOfFrames" and value in ("", None)):
                        fields[keyword] = value
                pos = start + length
        except EOFError as err:
            raise Fallback("file ends inside the DICOM header") from err
        except (struct.error, UnicodeDecodeError, ValueError, OverflowError) as err:
            raise Fallback(str(err)) from err
