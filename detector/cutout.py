"""Objects cut out of the photo along their masks: transparent PNGs (cut-outs) and Telegram stickers (WebP).

An object with an outline (a segmentation answer) keeps only its own pixels, everything else transparent, the
edge anti-aliased; an object without one (a detection answer) is its whole box. Both read only the clean photo
and the kept boxes, so a cut-out or a sticker is a render, never an inference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from detector.masks import mask_of
from detector.result import Box

# Cut-outs per answer: Telegram sends at most 10 documents in one media group.
MAX_CUTOUTS = 10
# A Telegram sticker: one side exactly 512 px, the other at most 512; a static sticker file at most 512 KB.
STICKER_SIDE = 512
STICKER_MAX_BYTES = 512 * 1024
# WebP qualities tried in turn until the sticker fits STICKER_MAX_BYTES (a 512 px object is 20-80 KB at 90).
STICKER_QUALITIES = (90, 75, 60, 40)
# Transparent pixels kept around a sticker's object, per side (stickers are shown edge to edge otherwise).
STICKER_MARGIN = 8


def _bounds(image: np.ndarray, box: Box) -> tuple[int, int, int, int]:
    """The pixels (x1, y1, x2, y2, end exclusive) of the object: its outline's extent, else its box, within the
    image and never empty."""
    h, w = image.shape[:2]
    if box.polygon and len(box.polygon) >= 3:
        xs, ys = [p[0] for p in box.polygon], [p[1] for p in box.polygon]
        x1, y1, x2, y2 = min(xs), min(ys), max(xs) + 1, max(ys) + 1
    else:
        x1, y1, x2, y2 = box.xyxy
    left, top = min(max(math.floor(x1), 0), w - 1), min(max(math.floor(y1), 0), h - 1)
    right, bottom = min(max(math.ceil(x2), left + 1), w), min(max(math.ceil(y2), top + 1), h)
    return left, top, right, bottom


def cut(image: np.ndarray, box: Box) -> np.ndarray:
    """The object as a BGRA array: cropped to it, transparent outside its outline (opaque box without one)."""
    left, top, right, bottom = _bounds(image, box)
    crop = image[top:bottom, left:right]
    if box.polygon and len(box.polygon) >= 3:
        alpha = mask_of(box.polygon, bottom - top, right - left, (left, top))
    else:
        alpha = np.full(crop.shape[:2], 255, np.uint8)
    return np.dstack([crop, alpha])


def largest_first(boxes: Sequence[Box], limit: int = MAX_CUTOUTS) -> list[Box]:
    """At most ``limit`` of ``boxes``, the largest object (its mask's area, else its box's) first."""
    return sorted(boxes, key=lambda b: -b.area)[:limit]


def cutouts(image_bgr: np.ndarray, boxes: Sequence[Box], limit: int = MAX_CUTOUTS) -> list[bytes]:
    """Up to ``limit`` objects as PNG files (RGBA, transparent outside the mask, cropped to the object),
    largest first."""
    out = []
    for box in largest_first(boxes, limit):
        ok, buf = cv2.imencode(".png", cut(image_bgr, box))
        if not ok:
            raise RuntimeError("PNG encoding failed")
        out.append(buf.tobytes())
    return out


def sticker(image_bgr: np.ndarray, box: Box) -> bytes:
    """The object as a Telegram sticker: WebP, RGBA, transparent outside the mask, scaled so that its long side
    is 512 px (a small margin of transparency inside it), at most 512 KB."""
    rgba = cut(image_bgr, box)
    h, w = rgba.shape[:2]
    inner = STICKER_SIDE - 2 * STICKER_MARGIN
    scale = inner / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # Shrinking averages (no moiré); enlarging a small object interpolates smoothly. Colour is premultiplied by
    # alpha while scaling, so transparent pixels' colour never bleeds into the edge.
    premultiplied = rgba.astype(np.float32)
    premultiplied[..., :3] *= premultiplied[..., 3:] / 255
    resized = cv2.resize(premultiplied, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    resized = np.clip(resized, 0, 255)
    alpha = resized[..., 3:]
    resized[..., :3] = np.where(alpha > 0, resized[..., :3] * 255 / np.maximum(alpha, 1e-6), 0)
    scaled = np.clip(np.round(resized), 0, 255).astype(np.uint8)
    # The long side exactly STICKER_SIDE, as Telegram asks, the object centred with the margin around it.
    sh, sw = scaled.shape[:2]
    margin = 2 * STICKER_MARGIN
    height, width = (STICKER_SIDE, min(sw + margin, STICKER_SIDE)) if sh >= sw else \
        (min(sh + margin, STICKER_SIDE), STICKER_SIDE)
    canvas = np.zeros((height, width, 4), np.uint8)
    top, left = (height - sh) // 2, (width - sw) // 2
    canvas[top:top + sh, left:left + sw] = scaled
    data = b""
    for quality in STICKER_QUALITIES:
        ok, buf = cv2.imencode(".webp", canvas, [cv2.IMWRITE_WEBP_QUALITY, quality])
        if not ok:
            raise RuntimeError("WebP encoding failed")
        data = buf.tobytes()
        if len(data) <= STICKER_MAX_BYTES:
            break
    return data
