"""Box labels in any script, drawn offline: TrueType text through Pillow, blitted into the BGR image.

OpenCV's ``putText`` knows only ASCII (Cyrillic comes out as ``???``) and ultralytics' own Pillow path
downloads its font at run time, which fails offline and leaks a network call. Labels here are drawn with
DejaVu Sans (Latin, Cyrillic, Greek and more), which matplotlib — an ultralytics dependency and one of
detbot's — ships in ``mpl-data/fonts/ttf``; it is found on disk without importing matplotlib. Any other
``.ttf``/``.otf`` can be given instead (``LabelFont(path)``), e.g. for scripts DejaVu does not cover.

Rendering text is the slow part, so each piece of a label (``3``, ``собака``, ``0.87``) is rendered once
per font size into a grey-level mask and cached; drawing a label is then a few numpy operations.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from collections.abc import Sequence
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from detector.errors import DetectorError

# The font file inside matplotlib's package (mpl-data/fonts/ttf/DejaVuSans.ttf); licence: LICENSE_DEJAVU.
DEJAVU_IN_MATPLOTLIB = ("mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
# Label pieces kept rendered: class names × sizes, box numbers and two-decimal confidences (101 each).
PIECE_CACHE_SIZE = 4096
# Smallest font size used, in pixels: below it labels stop being readable on a phone.
MIN_FONT_PX = 11
# Font size per pixel of box line width (ultralytics' line width: ~0.3 % of the image's mean side).
FONT_PX_PER_LINE_WIDTH = 8
# Pixels of label background around the text, per side (as a fraction of the font size).
PAD_FRACTION = 0.15
Colour = tuple[int, int, int]
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
# A background brighter than this (sum of B, G, R) gets black text, as in ultralytics' plots.
DARK_TEXT_ABOVE = 3 * 160


class FontNotFoundError(DetectorError):
    """No font file to draw labels with."""

    code = "font_not_found"


def default_font_path() -> Path:
    """DejaVu Sans from the installed matplotlib package, located without importing matplotlib."""
    spec = importlib.util.find_spec("matplotlib")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder).joinpath(*DEJAVU_IN_MATPLOTLIB)
        if path.is_file():
            return path
    raise FontNotFoundError(
        "No font to draw labels with: DejaVuSans.ttf comes with matplotlib (pip install matplotlib)."
    )


@cache
def default_font() -> LabelFont:
    """The process's label font (DejaVu Sans), opened once; its rendered pieces are shared by every photo."""
    return LabelFont()


def text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light backgrounds, white on dark ones."""
    return BLACK if sum(background) > DARK_TEXT_ABOVE else WHITE


def font_size_for(line_width: int) -> int:
    return max(MIN_FONT_PX, line_width * FONT_PX_PER_LINE_WIDTH)


class LabelFont:
    """One TrueType font, rendering label pieces to cached grey-level masks (0 = background, 255 = ink)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_font_path()
        if not self.path.is_file():
            raise FontNotFoundError(f"The label font {self.path} does not exist.")
        # FreeType faces are not safe to share between threads; a worker draws on one, tests on several.
        self._lock = threading.RLock()
        self._faces: dict[int, ImageFont.FreeTypeFont] = {}
        self._patches = lru_cache(maxsize=PIECE_CACHE_SIZE)(self._piece)
        self.face(MIN_FONT_PX)  # a broken font file fails here, at start, not on the first photo

    def face(self, size: int) -> ImageFont.FreeTypeFont:
        with self._lock:
            if size not in self._faces:
                self._faces[size] = ImageFont.truetype(str(self.path), size)
            return self._faces[size]

    def _render(self, text: str, size: int) -> np.ndarray:
        font = self.face(size)
        ascent, descent = font.getmetrics()
        # The line's full height, the same for every piece, so pieces line up on one baseline.
        width = max(1, math.ceil(font.getlength(text)))
        image = Image.new("L", (width, ascent + descent), 0)
        ImageDraw.Draw(image).text((0, ascent), text, font=font, fill=255, anchor="ls")
        return np.asarray(image)

    def mask(self, text: str, size: int) -> np.ndarray:
        """``text`` rendered at ``size`` px: a grey-level mask, 0 background, 255 ink."""
        with self._lock:
            return self._render(text, size)

    def _piece(self, text: str, size: int, background: Colour) -> np.ndarray:
        """``text`` in its colour on ``background``, with the label's padding above and below (BGR)."""
        pad = padding(size)
        mask = self._render(text, size) if text else np.zeros((self._height(size), self._space(size)), np.uint8)
        alpha = np.pad(mask, ((pad, pad), (0, 0)))[..., None].astype(np.uint16)
        fg, bg = np.array(text_colour(background), np.uint16), np.array(background, np.uint16)
        patch = (fg * alpha + bg * (255 - alpha) + 127) // 255
        patch = patch.astype(np.uint8)
        patch.setflags(write=False)
        return patch

    def _height(self, size: int) -> int:
        ascent, descent = self.face(size).getmetrics()
        return ascent + descent

    def _space(self, size: int) -> int:
        return max(1, round(self.face(size).getlength(" ")))

    def parts(self, pieces: Sequence[str], size: int, background: Colour) -> list[np.ndarray]:
        """The label as patches to lay side by side: padding, pieces joined by spaces, padding.

        Each patch is cached, so a label of already seen pieces costs no text rendering at all.
        """
        pad = padding(size)
        with self._lock:
            space = self._patches("", size, background)
            edge = space[:, :pad] if space.shape[1] >= pad else space
            out = [edge]
            for i, piece in enumerate(p for p in pieces if p):
                out += [space] if i else []
                out.append(self._patches(piece, size, background))
            return [*out, edge]


def padding(size: int) -> int:
    """Pixels of label background around the text."""
    return max(1, round(size * PAD_FRACTION))


def place(box: tuple[float, float, float, float], size: tuple[int, int], image: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of a ``size`` (w, h) label for ``box`` in an ``image`` of (w, h): above the box's
    top-left corner when there is room, else just inside it; always inside the image."""
    (x1, y1, _x2, _y2), (w, h), (width, height) = box, size, image
    y = int(y1) - h if int(y1) - h >= 0 else int(y1)
    x = min(max(int(x1), 0), max(width - w, 0))
    return x, min(max(y, 0), max(height - h, 0))


def paste(image: np.ndarray, parts: Sequence[np.ndarray], corner: tuple[int, int]) -> tuple[int, int, int, int]:
    """Copy the label's patches side by side into ``image`` from ``corner``, clipped to the image;
    returns the rectangle drawn (x1, y1, x2, y2)."""
    x, y = corner
    height, width = image.shape[:2]
    y2 = min(y + parts[0].shape[0], height)
    for part in parts:
        w = min(part.shape[1], width - x)
        if w <= 0 or y2 <= y:
            break
        image[y:y2, x:x + w] = part[: y2 - y, :w]
        x += w
    return corner[0], y, x, y2


def draw_label(image: np.ndarray, font: LabelFont, pieces: Sequence[str], box: tuple[float, float, float, float],
               background: Colour, line_width: int) -> tuple[int, int, int, int]:
    """One box's label (``["3", "собака", "0.87"]``), sized for ``line_width``, on a ``background``
    rectangle placed by :func:`place`; returns the rectangle drawn."""
    parts = font.parts(pieces, font_size_for(line_width), background)
    size = (sum(p.shape[1] for p in parts), parts[0].shape[0])
    return paste(image, parts, place(box, size, (image.shape[1], image.shape[0])))
