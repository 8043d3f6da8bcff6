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
