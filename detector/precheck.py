"""Cheap structural checks of untrusted image files, before PIL parses them.

PIL's header parsers run in Python and do work in proportion to what a file *declares*: every TIFF tag's
values are unpacked into tuples (a strip table of 1.5 million entries costs ~400 MB and seconds), every
JPEG marker and PNG chunk before the pixels is a Python call, EXIF entries may all point at the same
bytes. Each walk here looks only at the container's structure, with hard caps on how many entries it
visits, so it costs at most milliseconds on any 20 MB file, and refuses a file whose structure asks for
far more work than any camera, phone or editor writes. The caps are generous for real files.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from detector.errors import TooComplexImageError

# Frames (TIFF pages, GIF images, APNG/WebP animation frames): only the first is decoded, but a screencast
# GIF sent as a file runs to several hundred (one here: 783); thousands are a flood, not a picture.
MAX_FRAMES = 1024
# Tags in one TIFF/EXIF directory: real ones hold 10–100; the format allows 65 535, each a Python call in PIL.
MAX_IFD_ENTRIES = 1024
# Numbers PIL unpacks into Python tuples for one directory (~40 bytes each): strip tables of a
# 16 384-row image with one row per strip need 32 768; a million-entry table needs ~40 MB and seconds.
MAX_IFD_NUMBERS = 65_536
# Strips or tiles of one image: PIL's loader runs one decoder per strip, in Python. One row per strip
# on the tallest image we accept comes to about this; more is an image sliced to be slow.
MAX_STRIPS = 8_192
# How much longer than the image needs a strip table may be before it is a structure, not a sloppy writer.
STRIP_SLACK = 4
# Marker segments before the first scan of a JPEG: cameras write ~10–30 (ICC profiles up to 255 APP2s).
MAX_JPEG_SEGMENTS = 1024
# 0xFF fill bytes PIL steps over one by one in Python; encoders write none or a few.
MAX_JPEG_FILL_BYTES = 4096
# Scans of one JPEG (progressive files have ~10; an MPO a few images' worth): libjpeg re-walks the whole
# coefficient buffer per scan, so thousands of empty scans cost minutes of CPU.
MAX_JPEG_SCANS = 512
# Chunks of a PNG (all of them: PIL reads each IDAT header in Python too); 8 KB IDATs of a 20 MB file
# are ~2 600.
MAX_PNG_CHUNKS = 8_192
# Chunks of a WebP's RIFF container (an animation's frames are chunks; VP8X files have a few more).
MAX_RIFF_CHUNKS = 4 * MAX_FRAMES + 16
# Text chunks of a PNG: PIL inflates each (up to 1 MB) and keeps them; editors write a handful.
MAX_PNG_TEXT_CHUNKS = 32
# GIF blocks before the first frame, each a Python call in PIL's opener; real files have a few extensions.
MAX_GIF_BLOCKS_BEFORE_FRAME = 4096
# Blocks of a GIF walked looking for frames (~40 ms at most); beyond this the walk stops and accepts: PIL
# reads only the first frame, so a longer walk would be all cost and no protection.
MAX_GIF_BLOCKS = 50_000

TOO_COMPLEX = "This image file is built in a way I won't read (it would take far too long). Please send a " \
    "normal photo, or save it again as JPEG or PNG."

# TIFF field types PIL unpacks to Python numbers, and the byte size of one value of each.
_NUMERIC_SIZES = {3: 2, 4: 4, 5: 8, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
_BYTES_SIZES = {1: 1, 2: 1, 6: 1, 7: 1}
_TAG_WIDTH, _TAG_HEIGHT, _TAG_SAMPLES, _TAG_ROWS_PER_STRIP, _TAG_PLANAR = 256, 257, 277, 278, 284
_TAG_STRIP_OFFSETS, _TAG_STRIP_COUNTS = 273, 279
_TAG_TILE_WIDTH, _TAG_TILE_LENGTH, _TAG_TILE_OFFSETS, _TAG_TILE_COUNTS = 322, 323, 324, 325
# Sub-directories PIL may load from EXIF (EXIF, GPS, interoperability).
_SUB_IFD_TAGS = (34665, 34853, 40965)


def _refuse(why: str) -> TooComplexImageError:
    return TooComplexImageError(TOO_COMPLEX, detail=why)


class _Tiff:
    """One TIFF structure (a file, or the EXIF block of another format): byte order and bounded reads."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.endian = "<" if buf[:2] == b"II" else ">"
        self.big = self.u16(2) == 43  # BigTIFF: 8-byte offsets, 20-byte entries
        self.entry_size = 20 if self.big else 12

    def u16(self, at: int) -> int:
        return int(struct.unpack_from(self.endian + "H", self.buf, at)[0]) if at + 2 <= len(self.buf) else 0

    def offset(self, at: int) -> int:
        fmt = self.endian + ("Q" if self.big else "I")
        return int(struct.unpack_from(fmt, self.buf, at)[0]) if at + struct.calcsize(fmt) <= len(self.buf) else 0

    def first_ifd(self) -> int:
        return self.offset(8 if self.big else 4)

    def entries(self, ifd: int) -> int:
        return int(struct.unpack_from(self.endian + "Q", self.buf, ifd)[0]) if self.big else self.u16(ifd)

    def next_ifd(self, ifd: int) -> int:
        head = 8 if self.big else 2
        return self.offset(ifd + head + self.entries(ifd) * self.entry_size)

    def tags(self, ifd: int) -> dict[int, tuple[int, int, int]]:
        """tag -> (type, count, first value when inline or offset); refuses an oversized directory."""
        n = self.entries(ifd)
        if n > MAX_IFD_ENTRIES:
            raise _refuse(f"TIFF directory with {n} entries")
        head = 8 if self.big else 2
        fmt = self.endian + ("HHQQ" if self.big else "HHII")
        out: dict[int, tuple[int, int, int]] = {}
        numbers = declared = 0
        for i in range(n):
            at = ifd + head + i * self.entry_size
            if at + self.entry_size > len(self.buf):
                break
            tag, kind, count, value = struct.unpack_from(fmt, self.buf, at)
            size = count * (_NUMERIC_SIZES.get(kind) or _BYTES_SIZES.get(kind, 0))
            # PIL skips values that run past the end ("possibly corrupt"): they cost nothing.
            if size <= (8 if self.big else 4) or value + size <= len(self.buf):
                declared += size
                numbers += count if kind in _NUMERIC_SIZES else 0
            if kind == 3 and count == 1:
                value = struct.unpack_from(self.endian + "H", self.buf, at + (12 if self.big else 8))[0]
            out[tag] = (kind, count, value)
        # Values that do not fit in the file overlap: many entries pointing at the same bytes, each copied.
        if numbers > MAX_IFD_NUMBERS or declared > len(self.buf) + n * 8:
            raise _refuse(f"TIFF directory declaring {numbers} numbers, {declared} bytes")
        return out

    def chain(self, start: int, limit: int, strict: bool = True) -> list[int]:
        """Directory offsets following ``start``'s next-pointers, at most ``limit``; more refuse the file
        when ``strict`` (pages of a TIFF), else are ignored (EXIF, where cameras leave odd next-pointers)."""
        seen: dict[int, None] = {}  # ordered, and a loop is noticed in O(1)
        ifd = start
        while 0 < ifd < len(self.buf) and ifd not in seen:
            if len(seen) == limit:
                if strict:
                    raise _refuse(f"TIFF with over {limit} frames")
                break
            seen[ifd] = None
            ifd = self.next_ifd(ifd)
        return list(seen)


def _check_strips(tags: dict[int, tuple[int, int, int]]) -> None:
    """Strip/tile tables no longer than the image size needs, and not absurdly many strips."""
    def value(tag: int, default: int) -> int:
        return tags[tag][2] if tag in tags and tags[tag][1] == 1 else default

    width, height = value(_TAG_WIDTH, 0), value(_TAG_HEIGHT, 0)
    planes = value(_TAG_SAMPLES, 1) if value(_TAG_PLANAR, 1) == 2 else 1
    if _TAG_TILE_OFFSETS in tags:
        tw, tl = max(value(_TAG_TILE_WIDTH, 1), 1), max(value(_TAG_TILE_LENGTH, 1), 1)
        needed = -(-width // tw) * -(-height // tl) * planes
        tables = (_TAG_TILE_OFFSETS, _TAG_TILE_COUNTS)
    else:
        rows = max(value(_TAG_ROWS_PER_STRIP, 2**32 - 1), 1)
        needed = -(-height // rows) * planes
        tables = (_TAG_STRIP_OFFSETS, _TAG_STRIP_COUNTS)
    declared = max((tags[t][1] for t in tables if t in tags), default=0)
    # A table longer than the image needs is no layout a writer makes (some slack for odd writers).
    if max(declared, needed) > MAX_STRIPS or declared > STRIP_SLACK * max(needed, 1):
        raise _refuse(f"TIFF {width}×{height} with {declared} strips/tiles declared, {needed} needed")


def check_tiff(buf: bytes, exif: bool = False) -> None:
    """A TIFF file (its pages counted), or an EXIF block: every directory PIL may load, bounded."""
    tiff = _Tiff(buf)
    # An EXIF block's IFD0 and IFD1 (the thumbnail's); a file's pages, all of them up to the cap.
    ifds = tiff.chain(tiff.first_ifd(), 2 if exif else MAX_FRAMES, strict=not exif)
    if not ifds:
        return
    first = tiff.tags(ifds[0])
    if _TAG_WIDTH in first and not exif:
        _check_strips(first)
    for tag in _SUB_IFD_TAGS:
        if tag in first and first[tag][1] == 1:
            for sub in tiff.chain(first[tag][2], 1, strict=False):
                tiff.tags(sub)
    for ifd in ifds[1:2]:  # the next directory: a page, or the thumbnail's, which PIL may load too
        tiff.tags(ifd)


def check_exif(blob: bytes) -> None:
    """EXIF as PNG, WebP and JPEG carry it: an optional ``Exif\\0\\0`` prefix, then a TIFF structure."""
    if blob.startswith(b"Exif\x00\x00"):
        blob = blob[6:]
    if blob[:4] in (b"II*\x00", b"MM\x00*"):
        check_tiff(blob, exif=True)


def check_png(data: bytes) -> None:
    """Chunk count, APNG frame count, EXIF; the walk stops at IEND or after the cap."""
    at, chunks, texts = 8, 0, 0
    while at + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, at)
        chunks += 1
        texts += kind in (b"tEXt", b"zTXt", b"iTXt")
        if chunks > MAX_PNG_CHUNKS or texts > MAX_PNG_TEXT_CHUNKS:
            raise _refuse(f"PNG with over {chunks} chunks, {texts} of them text")
        if kind == b"acTL" and length >= 4 and struct.unpack_from(">I", data, at + 8)[0] > MAX_FRAMES:
            raise _refuse("APNG with too many frames")
        if kind == b"eXIf":
            check_exif(data[at + 8:at + 8 + length])
        if kind == b"IEND":
            return
        at += 12 + length


def _jpeg_segments(data: bytes) -> None:
    """Marker segments before the first scan (what PIL walks in Python), and the EXIF among them."""
    at, segments, fill = 2, 0, 0
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return  # not a marker: PIL will call the file damaged
        marker = data[at + 1]
        if marker == 0xFF:
            fill += 1
            if fill > MAX_JPEG_FILL_BYTES:
                raise _refuse("JPEG with too many fill bytes")
            at += 1
            continue
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise _refuse(f"JPEG with over {MAX_JPEG_SEGMENTS} segments before its image data")
        if marker == 0xDA:
            return
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            at += 2
            continue
        length = struct.unpack_from(">H", data, at + 2)[0]
        if marker == 0xE1 and data[at + 4:at + 10] == b"Exif\x00\x00":
            check_exif(data[at + 4:at + 2 + length])
        elif marker == 0xE2 and data[at + 4:at + 8] == b"MPF\x00":  # MPO's image index: a TIFF structure too
            check_exif(data[at + 8:at + 2 + length])
        at += 2 + length


def check_jpeg(data: bytes) -> None:
    _jpeg_segments(data)
    # In entropy-coded data 0xFF is escaped as 0xFF00, so 0xFFDA is only ever a real start of scan.
    if data.count(b"\xff\xda") > MAX_JPEG_SCANS:
        raise _refuse(f"JPEG with over {MAX_JPEG_SCANS} scans")


def _skip_sub_blocks(data: bytes, at: int, budget: int) -> tuple[int, int]:
    """Past a chain of GIF data sub-blocks, stepping at most ``budget`` of them (one chain may hold
    millions); returns the new position and how many were stepped."""
    steps = 0
    while at < len(data) and data[at] and steps < budget:
        at += data[at] + 1
        steps += 1
    return at + 1, steps + 1


def check_gif(data: bytes) -> None:
    """Frame count, walking blocks without decoding; gives up (accepts) after MAX_GIF_BLOCKS blocks."""
    if len(data) < 13:
        return
    flags = data[10]
    at = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    frames = blocks = 0
    while at < len(data) and blocks < MAX_GIF_BLOCKS:
        kind = data[at]
        if kind == 0x2C:  # image descriptor, optional local colour table, LZW size, data
            frames += 1
            if frames > MAX_FRAMES:
                raise _refuse(f"GIF with over {MAX_FRAMES} frames")
            if at + 10 > len(data):
                return
            local = data[at + 9]
            at += 10 + (3 * 2 ** ((local & 7) + 1) if local & 0x80 else 0) + 1
        elif kind == 0x21:  # extension: label, then sub-blocks
            at += 2
        else:
            return  # trailer (0x3B) or garbage: nothing more PIL would read
        budget = (MAX_GIF_BLOCKS_BEFORE_FRAME + 1 if not frames else MAX_GIF_BLOCKS) - blocks
        at, steps = _skip_sub_blocks(data, at, budget)
        blocks += steps
        if not frames and blocks > MAX_GIF_BLOCKS_BEFORE_FRAME:
            raise _refuse(f"GIF with over {MAX_GIF_BLOCKS_BEFORE_FRAME} blocks before its first frame")


def check_webp(data: bytes) -> None:
    """RIFF chunks: count (animation frames are chunks) and the EXIF chunk."""
    at, chunks = 12, 0
    while at + 8 <= len(data):
        kind, length = struct.unpack_from("<4sI", data, at)
        chunks += 1
        if chunks > MAX_RIFF_CHUNKS:
            raise _refuse(f"WebP with over {MAX_RIFF_CHUNKS} chunks")
        if kind == b"EXIF":
            check_exif(data[at + 8:at + 8 + length])
        at += 8 + length + (length & 1)


_CHECKS: list[tuple[Callable[[bytes], bool], Callable[[bytes], None]]] = [
    (lambda d: d[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), check_tiff),
    (lambda d: d.startswith(b"\x89PNG\r\n\x1a\n"), check_png),
    (lambda d: d.startswith(b"\xff\xd8"), check_jpeg),
    (lambda d: d[:6] in (b"GIF87a", b"GIF89a"), check_gif),
    (lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP", check_webp),
]


def check_structure(data: bytes) -> None:
    """Raise :class:`TooComplexImageError` when ``data``'s container structure asks for unbounded work.

    Other formats (BMP) and files too short to tell pass through: PIL's own checks judge them.
    """
    for matches, check in _CHECKS:
        if matches(data):
            try:
                check(data)
            except (struct.error, IndexError, ValueError):
                return  # a malformed structure: PIL refuses it as damaged, with its own bounded work
            return
