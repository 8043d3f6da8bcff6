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


def box_line(index: int, box: Box) -> str:
    """``1. dog 0.87 [x1, y1, x2, y2]`` with whole pixels."""
    coords = ", ".join(str(round(v)) for v in box.xyxy)
    return f"{index}. {box.class_name} {box.confidence:.2f} [{coords}]"


def box_lines(det: Detection) -> list[str]:
    return [box_line(i, b) for i, b in enumerate(det.boxes, 1)]


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


def boxes_to_rows(boxes: tuple[Box, ...] | list[Box]) -> list[list[Any]]:
    """Boxes as compact rows ``[class_id, class_name, confidence, x1, y1, x2, y2]`` (kept in Redis per answer)."""
    return [[b.class_id, b.class_name, b.confidence, b.x1, b.y1, b.x2, b.y2] for b in boxes]


def rows_to_boxes(rows: list[list[Any]]) -> tuple[Box, ...]:
    """:func:`boxes_to_rows` back; raises ValueError/TypeError on rows that are not boxes."""
    return tuple(Box(int(r[0]), str(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5]), float(r[6]))
                 for r in rows)
