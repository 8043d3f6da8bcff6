"""Image bytes for tests: every format, odd modes, and broken files, built in memory."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
from PIL import Image
from ultralytics.utils import ASSETS

BUS = ASSETS / "bus.jpg"
ZIDANE = ASSETS / "zidane.jpg"


def encode(bgr: np.ndarray, fmt: str, **params: object) -> bytes:
    """Encode a BGR array with PIL in the given format (JPEG, PNG, WEBP, BMP, TIFF, GIF)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1])).save(buf, format=fmt, **params)
    return buf.getvalue()


def png_bytes(bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", bgr)
    assert ok
    return buf.tobytes()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header claims width×height 8-bit RGB pixels (the data is a token):
    refused from the header alone when the size is over the limit."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _chunk(b"IEND", b"")
    )


def huge_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit PNG of width×height pixels that is only tens of kilobytes on disk.

    Decoding it would allocate width×height bytes (and three times that as RGB): a decompression bomb.
    """
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


# -- hostile files: each built to make a header parser slow or greedy (issue 11) ------------------------

def _ifd(entries: list[tuple[int, int, int, int]], next_ifd: int = 0) -> bytes:
    """A little-endian TIFF directory: (tag, type, count, value-or-offset) entries, sorted by tag."""
    body = b"".join(struct.pack("<HHII", *e) for e in sorted(entries))
    return struct.pack("<H", len(entries)) + body + struct.pack("<I", next_ifd)


def tiff_many_strips(strips: int = 1_000_000, width: int = 32, height: int = 32) -> bytes:
    """An uncompressed greyscale TIFF whose strip tables hold ``strips`` entries (4 bytes each, twice):
    ~8 MB per million. PIL unpacks both tables into tuples of Python ints on open."""
    tables = 8 + width * height
    offsets = struct.pack("<I", 8) * strips
    counts = struct.pack("<I", 1) * strips
    ifd_at = tables + len(offsets) + len(counts)
    ifd = _ifd([(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
                (273, 4, strips, tables), (277, 3, 1, 1), (278, 4, 1, 1), (279, 4, strips, tables + len(offsets))])
    return b"II*\x00" + struct.pack("<I", ifd_at) + b"\x80" * (width * height) + offsets + counts + ifd


def tiff_tall_strips(height: int = 10_000) -> bytes:
    """A 1-pixel-wide TIFF of ``height`` rows, one row per strip: as many decoder runs as rows."""
    pixels = 8
    offsets = b"".join(struct.pack("<I", pixels + i) for i in range(height))
    counts = struct.pack("<I", 1) * height
    tables = pixels + height
    ifd_at = tables + len(offsets) + len(counts)
    ifd = _ifd([(256, 4, 1, 1), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
                (273, 4, height, tables), (277, 3, 1, 1), (278, 4, 1, 1), (279, 4, height, tables + len(offsets))])
    return b"II*\x00" + struct.pack("<I", ifd_at) + b"\x80" * height + offsets + counts + ifd


def tiff_many_frames(frames: int = 5_000) -> bytes:
    """A TIFF of ``frames`` 8×8 pages sharing one strip: a chain of directories."""
    pixels_at, size = 8, 64
    entries = lambda: [(256, 4, 1, 8), (257, 4, 1, 8), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),  # noqa: E731
                       (273, 4, 1, pixels_at), (277, 3, 1, 1), (278, 4, 1, 8), (279, 4, 1, size)]
    first = pixels_at + size
    step = len(_ifd(entries()))
    out = [b"II*\x00", struct.pack("<I", first), b"\x80" * size]
    for i in range(frames):
        out.append(_ifd(entries(), first + (i + 1) * step if i + 1 < frames else 0))
    return b"".join(out)


def exif_garbage() -> bytes:
    """An EXIF block (TIFF structure) of 1000 entries each declaring the same 48 000 bytes of LONGs: PIL
    would copy and unpack each, 12 million Python ints from a 64 KB segment."""
    data_at, values = 8 + 2 + 1000 * 12 + 4, 12_000
    ifd = _ifd([(40000 + i, 4, values, data_at) for i in range(1000)])
    blob = b"II*\x00" + struct.pack("<I", 8) + ifd
    return blob + b"\x00" * (4 * values)


def jpeg_with_app1(jpeg: bytes, payload: bytes) -> bytes:
    """``jpeg`` with an APP1 segment holding ``payload`` right after its start marker."""
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def jpeg_many_markers(jpeg: bytes, markers: int = 3_000_000) -> bytes:
    """``jpeg`` with ``markers`` empty comment segments before its frame: each one a Python call in PIL."""
    return jpeg[:2] + b"\xff\xfe\x00\x02" * markers + jpeg[2:]


def jpeg_many_scans(jpeg: bytes, scans: int = 5_000) -> bytes:
    """``jpeg`` followed by ``scans`` extra start-of-scan segments (empty): a progressive-scan flood."""
    sos = b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00"
    return jpeg[:-2] + sos * scans + b"\xff\xd9"


def png_many_chunks(chunks: int = 1_500_000) -> bytes:
    """A 1×1 PNG with ``chunks`` empty private ancillary chunks before its pixels (12 bytes each)."""
    filler = _chunk(b"tEXt", b"")
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    idat = _chunk(b"IDAT", zlib.compress(b"\x00\x80"))
    return b"\x89PNG\r\n\x1a\n" + ihdr + filler * chunks + idat + _chunk(b"IEND", b"")


def png_with_exif(png: bytes, exif: bytes) -> bytes:
    """``png`` with an eXIf chunk holding ``exif`` right after IHDR."""
    return png[:33] + _chunk(b"eXIf", exif) + png[33:]


def gif_many_frames(frames: int = 5_000) -> bytes:
    """A 1×1 GIF of ``frames`` frames, ~20 bytes each."""
    head = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return head + frame * frames + b"\x3b"


def gif_many_extensions(extensions: int = 3_000_000) -> bytes:
    """A 1×1 GIF with ``extensions`` empty comment extensions (3 bytes each) before its only frame."""
    one = gif_many_frames(1)
    return one[:19] + b"\x21\xfe\x00" * extensions + one[19:]


def gif_one_long_comment(sub_blocks: int = 8_000_000) -> bytes:
    """A 1×1 GIF whose single comment, before the frame, is ``sub_blocks`` 1-byte sub-blocks (2 bytes each)."""
    one = gif_many_frames(1)
    return one[:19] + b"\x21\xfe" + b"\x01 " * sub_blocks + b"\x00" + one[19:]


def png_many_texts(texts: int = 5_000) -> bytes:
    """A 1×1 PNG with ``texts`` compressed text chunks, each inflating to 1 MB: 5 GB of text from ~5 MB."""
    bomb = _chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b" " * 1_000_000, 9))
    plain = png_many_chunks(0)
    return plain[:33] + bomb * texts + plain[33:]


def webp_many_chunks(webp: bytes, chunks: int = 100_000) -> bytes:
    """``webp`` with ``chunks`` empty unknown chunks after its image chunk, the RIFF size fixed up."""
    body = webp[12:] + b"XXXX\x00\x00\x00\x00" * chunks
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body


def wide_png(width: int = 6000, height: int = 6000) -> bytes:
    """A 16-bit greyscale PNG (a gradient, so it decodes to something) near the pixel limit."""
    ramp = (np.arange(width, dtype=np.uint32) * 65535 // max(width - 1, 1)).astype(">u2").tobytes()
    row = b"\x00" + ramp
    comp = zlib.compressobj(1)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def float_tiff(width: int = 6000, height: int = 6000) -> bytes:
    """A 32-bit float greyscale TIFF near the pixel limit, deflate-compressed to a few megabytes."""
    # Wide bands of a few values (one negative, some above 255): compresses to kilobytes, quickly.
    row = np.repeat(np.array([-1.0, 0.5, 300.0, 4000.0], np.float32), -(-width // 4))[:width]
    arr = np.ascontiguousarray(np.broadcast_to(row, (height, width)))
    buf = io.BytesIO()
    Image.fromarray(arr, "F").save(buf, format="TIFF", compression="tiff_adobe_deflate")
    return buf.getvalue()
