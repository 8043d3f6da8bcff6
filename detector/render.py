"""The text form of a result, shared by every front end (CLI, bot)."""

from __future__ import annotations

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
