"""The text rendering shared by every front end."""

from __future__ import annotations

from detector import Box, Detection, format_text, summary_line
from detector.render import box_lines


def det(*names: str, conf: float = 0.5) -> Detection:
    boxes = tuple(Box(i, n, 0.9 - i * 0.1, 10.4, 20.6, 110.0, 220.0) for i, n in enumerate(names))
    return Detection(boxes=boxes, width=640, height=480, confidence=conf)


def test_summary_counts_per_class_and_threshold() -> None:
    assert summary_line(det("circle", "square", "circle")) == (
        "3 objects at confidence ≥ 0.50: circle ×2, square ×1"
    )
    assert summary_line(det("triangle", conf=0.4)) == "1 object at confidence ≥ 0.40: triangle ×1"


def test_nothing_found_suggests_lower_threshold() -> None:
    line = summary_line(det(conf=0.6))
    assert line.startswith("No objects found at confidence ≥ 0.60") and "lower threshold" in line


def test_one_line_per_box_with_class_confidence_and_box() -> None:
    text = format_text(det("circle", "square"))
    lines = text.splitlines()
    assert lines[1:] == ["1. circle 0.90 [10, 21, 110, 220]", "2. square 0.80 [10, 21, 110, 220]"]
    assert box_lines(det("circle")) == ["1. circle 0.90 [10, 21, 110, 220]"]


def test_class_filter_is_shown() -> None:
    d = Detection(boxes=(), width=1, height=1, confidence=0.25, classes=("dog",))
    assert "(only dog)" in summary_line(d)
