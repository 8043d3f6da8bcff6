"""The annotated answer: boxes and labels drawn onto the photo (:func:`draw_boxes`), then JPEG-encoded.

Every box and label is drawn here and nowhere else, so how labels render changes in one function. Label
text goes through :mod:`detector.labels` (TrueType, any script), never ``cv2.putText`` (ASCII only in
OpenCV 4: Cyrillic came out as ``???``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from detector.labels import LabelFont, default_font, draw_label
from detector.result import Box
from detector.settings import JPEG_QUALITY, MAX_ANNOTATED_SIDE

# ultralytics' colour palette (BGR), so boxes look as they do in ultralytics' own plots.
PALETTE = tuple(
    (int(h[4:6], 16), int(h[2:4], 16), int(h[0:2], 16))
    for h in (
        "042AFF", "0BDBEB", "F3F3F3", "00DFB7", "111F68", "FF6FDD", "FF444F", "CCED00", "00F344", "BD00FF",
        "00B4FF", "DD00BA", "00FFFF", "26C000", "01FFB3", "7D24FF", "7B0068", "FF1B6C", "FC6D2F", "A2FF0B",
    )
)
# Line width per pixel of the image's mean side, as ultralytics' plots (at least 2 px).
LINE_WIDTH_PER_PX = 0.003
# How opaque a mask is drawn: the object's colour shows and the object itself still shows through (as
# ultralytics' plots).
MASK_ALPHA = 0.45
# Keypoints drawn: those the model gives at least this confidence (the others are hidden or absent).
KEYPOINT_VISIBLE = 0.5


def line_width(image: np.ndarray) -> int:
    return max(round(sum(image.shape[:2]) / 2 * LINE_WIDTH_PER_PX), 2)


def colour_of(class_id: int) -> tuple[int, int, int]:
    """A class keeps its colour in every photo (and the same as in ultralytics' plots)."""
    return PALETTE[class_id % len(PALETTE)]


def draw_boxes(image: np.ndarray, boxes: Sequence[Box], names: Mapping[int, str] | None = None,
               font: LabelFont | None = None, skeleton: Sequence[tuple[int, int]] | None = None,
               tags: Sequence[str] | None = None) -> np.ndarray:
    """Draw each object onto ``image`` (in place): its mask, translucent in its class's colour (segmentation),
    its keypoints joined by ``skeleton`` (pose), its box, and its label ``3 собака 0.87`` — the box's number in
    the text list, its class as ``names`` gives it (class id -> name in the reader's language; by default the
    model's own), its confidence. Masks first, then keypoints and boxes, then labels, so nothing crosses a
    label; the most confident object's mask and label are drawn last, on top. ``tags``: what each label starts
    with instead of the box's number (a video's track ids, ``#3``)."""
    font = font or default_font()
    lw = line_width(image)
    draw_masks(image, boxes)
    for box in boxes:
        cv2.rectangle(image, (int(box.x1), int(box.y1)), (int(box.x2), int(box.y2)), colour_of(box.class_id), lw,
                      cv2.LINE_AA)
    draw_keypoints(image, boxes, skeleton, lw)
    names = names or {}
    for number, box in reversed(list(enumerate(boxes, 1))):
        name = names.get(box.class_id, box.class_name)
        tag = tags[number - 1] if tags is not None else str(number)
        draw_label(image, font, [tag, name, f"{box.confidence:.2f}"], box.xyxy, colour_of(box.class_id), lw)
    return image


def draw_masks(image: np.ndarray, boxes: Sequence[Box], alpha: float = MASK_ALPHA) -> None:
    """Each outline filled, translucent, in its class's colour; one blend over the part of the image the masks
    cover, so a photo with many objects costs one pass. Where no mask was painted the blend gives the pixel back
    unchanged (``x·alpha + x·(1-alpha)`` rounds to ``x``), so no separate coverage mask is needed."""
    h, w = image.shape[:2]
    # Far outside the image nothing is drawn; clipped there, no coordinate overflows OpenCV's integers.
    bounds = np.array([-2 * w, -2 * h]), np.array([3 * w, 3 * h])
    shapes = [(np.clip(np.round(np.asarray(b.polygon)), *bounds).astype(np.int32), colour_of(b.class_id))
              for b in reversed(boxes) if b.polygon and len(b.polygon) >= 3]
    if not shapes:
        return
    every = np.concatenate([pts for pts, _ in shapes])
    x1, y1 = max(int(every[:, 0].min()), 0), max(int(every[:, 1].min()), 0)
    x2, y2 = min(int(every[:, 0].max()) + 1, w), min(int(every[:, 1].max()) + 1, h)
    if x2 <= x1 or y2 <= y1:
        return
    region = image[y1:y2, x1:x2]
    painted = region.copy()
    for pts, colour in shapes:
        cv2.fillPoly(painted, [pts - (x1, y1)], colour, cv2.LINE_8)
    region[:] = cv2.addWeighted(painted, alpha, region, 1 - alpha, 0)


def draw_keypoints(image: np.ndarray, boxes: Sequence[Box], skeleton: Sequence[tuple[int, int]] | None,
                   lw: int) -> None:
    """Each object's keypoints the model is sure of (confidence ≥ KEYPOINT_VISIBLE) as dots, joined by
    ``skeleton`` where both ends are, in its class's colour; a dark rim keeps dots visible on any photo."""
    radius = max(lw + 1, 3)
    for box in reversed(boxes):
        if not box.keypoints:
            continue
        colour = colour_of(box.class_id)
        points = [(round(x), round(y)) if c >= KEYPOINT_VISIBLE else None for x, y, c in box.keypoints]
        for a, b in skeleton or ():
            if a < len(points) and b < len(points) and points[a] is not None and points[b] is not None:
                cv2.line(image, points[a], points[b], colour, lw, cv2.LINE_AA)  # type: ignore[arg-type]
        for point in points:
            if point is not None:
                cv2.circle(image, point, radius + 1, (32, 32, 32), -1, cv2.LINE_AA)
                cv2.circle(image, point, radius, colour, -1, cv2.LINE_AA)


def encode_jpeg(image: np.ndarray, max_side: int = MAX_ANNOTATED_SIDE, quality: int = JPEG_QUALITY) -> bytes:
    """BGR array to JPEG bytes, the long side capped so Telegram accepts it as a photo."""
    h, w = image.shape[:2]
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


# A crop keeps this share of its box's size around it on each side: the object with a little context.
CROP_MARGIN = 0.08


def crop(image: np.ndarray, box: Box, margin: float = CROP_MARGIN) -> np.ndarray:
    """The box plus ``margin`` of its size on each side, clipped to the image (never empty)."""
    h, w = image.shape[:2]
    mx, my = (box.x2 - box.x1) * margin, (box.y2 - box.y1) * margin
    x1, y1 = max(0, int(box.x1 - mx)), max(0, int(box.y1 - my))
    x2, y2 = min(w, round(box.x2 + mx)), min(h, round(box.y2 + my))
    return image[y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)]


def crop_jpegs(image: np.ndarray, boxes: Sequence[Box]) -> list[bytes]:
    """Each box cut out of the clean image (in the order given), as JPEG bytes."""
    return [encode_jpeg(np.ascontiguousarray(crop(image, box))) for box in boxes]
