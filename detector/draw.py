"""The annotated answer: boxes and labels drawn onto the photo (:func:`draw_boxes`), then JPEG-encoded.

Every box and label is drawn here and nowhere else, so how labels render changes in one function.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

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


def draw_boxes(image: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """Draw each box and its ``name 0.87`` label onto ``image`` (in place), as ultralytics' plots look."""
    lw = max(round(sum(image.shape[:2]) / 2 * 0.003), 2)
    thickness, scale = max(lw - 1, 1), lw / 3
    for box in reversed(boxes):  # the most confident box is drawn last, on top
        colour = PALETTE[box.class_id % len(PALETTE)]
        text_colour = (0, 0, 0) if sum(colour) > 3 * 160 else (255, 255, 255)
        p1 = (int(box.x1), int(box.y1))
        cv2.rectangle(image, p1, (int(box.x2), int(box.y2)), colour, lw, cv2.LINE_AA)
        label = f"{box.class_name} {box.confidence:.2f}"
        (w, h), _ = cv2.getTextSize(label, 0, scale, thickness)
        outside = p1[1] >= h + 3
        corner = (p1[0] + w, p1[1] - h - 3 if outside else p1[1] + h + 3)
        cv2.rectangle(image, p1, corner, colour, -1, cv2.LINE_AA)
        origin = (p1[0], p1[1] - 2 if outside else p1[1] + h + 2)
        cv2.putText(image, label, origin, 0, scale, text_colour, thickness, cv2.LINE_AA)
    return image


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
