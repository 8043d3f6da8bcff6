"""Turn untrusted bytes into a BGR array, safely: size checked from the header before any decoding.

OpenCV is imported inside the decoding functions, never at the top: the bot imports this module for
:func:`read_header` and must not load OpenCV.
"""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from detector.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageTooLargeError,
    NotAnImageError,
    UnsupportedFormatError,
)
from detector.precheck import check_structure
from detector.settings import DEFAULT_MAX_PIXELS

# MPO is how many phone cameras label their JPEGs; the first frame is the ordinary photo.
ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF"})
ImageInput = bytes | bytearray | memoryview | str | Path | np.ndarray
# Modes of more than 8 bits per channel (16-bit and 32-bit integer, 32-bit float), scaled down to 8 bits.
WIDE_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
# Rows scaled at a time: the float32 temporary stays a few megabytes however large the image.
SCALE_ROWS = 256
# The EXIF tag saying how a camera held the photo; anything but 1 (upright) needs a turn when decoded.
EXIF_ORIENTATION = 0x0112


def _pil_open(data: bytes) -> Image.Image:
    """PIL's own ``Image.open``: ultralytics replaces it with one that tries to pip-install a HEIF plugin."""
    patches = sys.modules.get("ultralytics.utils.patches")
    opener = getattr(patches, "_image_open", None) or Image.open
    return opener(io.BytesIO(data))


def read_header(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open ``data`` lazily (header only) and reject what is empty, unknown, unsupported or too large.

    The container's structure is checked first (:mod:`detector.precheck`), so PIL never parses a file
    built to make its header parsers slow or greedy: this costs at most milliseconds on any file.
    """
    if not data:
        raise EmptyImageError("The file is empty (0 bytes).")
    check_structure(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = _pil_open(data)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"The image is too large (over {max_pixels / 1e6:.0f} megapixels).") from exc
    except UnidentifiedImageError as exc:
        raise NotAnImageError("This is not an image I can read (JPEG, PNG, WebP, BMP, TIFF or GIF).") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise CorruptImageError("The image is damaged and cannot be read.") from exc
    if img.format not in ACCEPTED_FORMATS:
        raise UnsupportedFormatError(
            f"{img.format} images are not supported; send a JPEG, PNG, WebP, BMP, TIFF or GIF."
        )
    w, h = img.size
    if w * h > max_pixels:
        raise ImageTooLargeError(
            f"The image is too large: {w}×{h} is {w * h / 1e6:.0f} megapixels, "
            f"the limit is {max_pixels / 1e6:.0f} megapixels."
        )
    if w < 1 or h < 1:
        raise CorruptImageError("The image has no pixels.")
    return img


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """A 16/32-bit or float greyscale array to uint8, its brightest value at 255 when above 255.

    Scaled a band of rows at a time: float64 copies of a whole 36-megapixel image took a worker to 1.2 GB.
    """
    peak = float(arr.max()) if arr.size else 0.0
    if not np.isfinite(peak):
        peak = float(np.nanmax(np.where(np.isfinite(arr), arr, 0)))
    scale = np.float32(255.0 / peak if peak > 255 else 1.0)
    out = np.empty(arr.shape, np.uint8)
    for top in range(0, arr.shape[0], SCALE_ROWS):
        band = arr[top:top + SCALE_ROWS].astype(np.float32)
        band *= scale
        np.clip(band, 0, 255, out=band)
        out[top:top + SCALE_ROWS] = np.nan_to_num(band, copy=False)
    return out


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any 8-bit mode (greyscale, palette, RGBA, CMYK) to RGB; transparency composited on white.

    Wider modes (16-bit, 32-bit, float) go through :func:`_to_uint8` instead.
    """
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        rgba = img.convert("RGBA")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file's bytes to a contiguous BGR uint8 array, EXIF orientation applied."""
    img = read_header(bytes(data), max_pixels)
    try:
        img.seek(0)  # GIF/TIFF/MPO: the first frame
        img.load()
        img = ImageOps.exif_transpose(img) or img
        # Wide greyscale goes to BGR without PIL's RGB copy in between: two fewer full-size copies.
        wide = img.mode in WIDE_MODES
        arr = _to_uint8(np.asarray(img)) if wide else np.asarray(_to_rgb(img), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise CorruptImageError("The image is damaged or truncated and cannot be read.") from exc
    del img
    # cvtColor: a tenth of the time of NumPy's strided [:, :, ::-1] copy (several ms per photo).
    import cv2

    return cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR if wide else cv2.COLOR_RGB2BGR)


def load_image(image: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Accept bytes, a path or an already decoded BGR array and return a BGR array."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise NotAnImageError("Expected an H×W×3 uint8 BGR array.")
        if image.shape[0] * image.shape[1] > max_pixels:
            raise ImageTooLargeError(f"The image is too large (over {max_pixels / 1e6:.0f} megapixels).")
        return image
    if isinstance(image, (str, Path)):
        try:
            data = Path(image).read_bytes()
        except OSError as exc:
            raise NotAnImageError(f"Cannot read {image}: {exc.strerror or exc}.") from exc
        return decode_image(data, max_pixels)
    return decode_image(bytes(image), max_pixels)


def decode(image: ImageInput, max_pixels: int) -> np.ndarray:
    """:func:`load_image`, with a fast path for the common case of a plain JPEG photo."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        array = _fast_jpeg(bytes(image), max_pixels)
        if array is not None:
            return array
    return load_image(image, max_pixels)


def _fast_jpeg(data: bytes, max_pixels: int) -> np.ndarray | None:
    """A complete, upright, RGB JPEG decoded by OpenCV (half the time of PIL); None for anything else.

    The header is checked first by :func:`read_header` (size limit, format), so every rejection and its
    message stay those of the PIL path. Rotated (EXIF), CMYK, greyscale or truncated files (no end marker)
    go the PIL way, which handles each of them.
    """
    header = read_header(data, max_pixels)
    if header.format not in ("JPEG", "MPO") or header.mode != "RGB" or not data.endswith(b"\xff\xd9"):
        return None
    if header.getexif().get(EXIF_ORIENTATION, 1) != 1:
        return None
    import cv2

    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if array is None or array.shape[:2] != (header.height, header.width):
        return None
    return array
