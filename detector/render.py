"""The text form of a result, shared by every front end (CLI, bot)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from detector.params import DetectParams
from detector.result import Box, Detection


def format_confidence(value: float) -> str:
    """Thresholds are written with two decimals (``0.50``), as people set them; a smaller one with the
    digits it has (``0.001``), never as a misleading ``0.00``."""
    return f"{value:.2f}" if value >= 0.01 or value <= 0 else f"{value:.4g}"


def summary_line(det: Detection) -> str:
    """One line: how many objects per class, at which threshold."""
    at = f"at confidence ≥ {format_confidence(det.confidence)}"
    only = f" (only {', '.join(det.classes)})" if det.classes else ""
    if not det.boxes:
        return f"No objects found {at}{only}. Try a lower threshold, e.g. 0.15."
    n = len(det.boxes)
    parts = ", ".join(f"{name} ×{count}" for name, count in det.counts().items())
    return f"{n} object{'s' if n != 1 else ''} {at}{only}: {parts}"


def format_share(share: float) -> str:
    """A mask's part of the image in per cent: ``12.5%``; a sliver as ``<0.1%``, never a misleading ``0.0%``."""
    percent = share * 100
    return "<0.1%" if 0 < percent < 0.05 else f"{percent:.1f}%"


def box_line(index: int, box: Box, share: float | None = None) -> str:
    """``1. dog 0.87 [x1, y1, x2, y2]`` with whole pixels; a mask's part of the image after it
    (``· 12.5% of the image``) when ``share`` is given."""
    coords = ", ".join(str(round(v)) for v in box.xyxy)
    line = f"{index}. {box.class_name} {box.confidence:.2f} [{coords}]"
    return line if share is None else f"{line} · {format_share(share)} of the image"


def box_lines(det: Detection) -> list[str]:
    return [box_line(i, b, det.share(b) if b.polygon else None) for i, b in enumerate(det.boxes, 1)]


def format_text(det: Detection) -> str:
    """The summary line, then one line per box."""
    return "\n".join([summary_line(det), *box_lines(det)])


# -- adjustable answers: the boxes kept down to a floor, and what one set of parameters shows of them ------

# The most crops sent for one answer: Telegram's media group holds at most 10 items.
MAX_CROPS = 10


def select(candidates: tuple[Box, ...] | list[Box], base: Detection, params: DetectParams,
           classes: tuple[str, ...] | None = None) -> Detection:
    """The answer ``params`` asks for, out of every box kept down to the floor (``candidates``, best first):
    the same boxes a model run at ``params`` would have found (greedy NMS keeps a box only for the boxes
    above it, so filtering afterwards equals filtering before). ``base`` gives the size, model and timings;
    ``classes``: the filter as the model writes the names (for the summary line)."""
    boxes = tuple(b for b in candidates if params.keeps(b.class_name, b.confidence))
    return replace(base, boxes=boxes, confidence=params.threshold, classes=classes,
                   class_confidence=params.per_class)


def crop_order(boxes: tuple[Box, ...] | list[Box], limit: int = MAX_CROPS) -> list[int]:
    """Indexes (0-based, into ``boxes``) of the boxes to cut out: largest area first, at most ``limit``."""
    order = sorted(range(len(boxes)), key=lambda i: -(boxes[i].x2 - boxes[i].x1) * (boxes[i].y2 - boxes[i].y1))
    return order[:limit]


# The keys of a row's optional eighth item: the outline as flat whole-pixel x, y pairs, the keypoints as flat
# x, y, confidence triples.
ROW_POLYGON, ROW_KEYPOINTS = "p", "k"


def boxes_to_rows(boxes: tuple[Box, ...] | list[Box]) -> list[list[Any]]:
    """Boxes as compact rows ``[class_id, class_name, confidence, x1, y1, x2, y2]`` (kept in Redis per answer),
    plus, for an object with an outline or keypoints, ``{"p": [x, y, x, y, ...]}`` (whole pixels) or
    ``{"k": [x, y, c, ...]}``: what re-drawing, cut-outs and stickers need, never a second inference."""
    return [_row(b) for b in boxes]


def _row(box: Box) -> list[Any]:
    row: list[Any] = [box.class_id, box.class_name, box.confidence, box.x1, box.y1, box.x2, box.y2]
    extra: dict[str, list[float]] = {}
    if box.polygon is not None:
        extra[ROW_POLYGON] = [_compact(v) for point in box.polygon for v in point]
    if box.keypoints is not None:
        extra[ROW_KEYPOINTS] = [_compact(v) for point in box.keypoints for v in point]
    if extra:
        row.append(extra)
    return row


def _compact(value: float) -> float:
    """A whole number written without its ``.0`` in JSON (two bytes per coordinate)."""
    return int(value) if float(value).is_integer() else value


def rows_to_boxes(rows: list[list[Any]]) -> tuple[Box, ...]:
    """:func:`boxes_to_rows` back; raises ValueError/TypeError on rows that are not boxes."""
    boxes = []
    for r in rows:
        extra = r[7] if len(r) > 7 else {}
        if not isinstance(extra, dict):
            raise TypeError("a row's eighth item is not an outline or keypoints")
        polygon = keypoints = None
        if ROW_POLYGON in extra:
            flat = [float(v) for v in extra[ROW_POLYGON]]
            polygon = tuple(zip(flat[0::2], flat[1::2], strict=True))
        if ROW_KEYPOINTS in extra:
            flat = [float(v) for v in extra[ROW_KEYPOINTS]]
            if len(flat) % 3:
                raise ValueError("keypoints are not x, y, confidence triples")
            keypoints = tuple(zip(flat[0::3], flat[1::3], flat[2::3], strict=True))
        boxes.append(Box(int(r[0]), str(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5]), float(r[6]),
                         polygon=polygon, keypoints=keypoints))
    return tuple(boxes)
