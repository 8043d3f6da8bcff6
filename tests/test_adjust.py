"""Adjusting an answer without a second inference: the boxes kept down to the floor, filtered, are exactly
what a run of the model at the new values finds (on the real shapes model); the buttons' steps and data."""

from __future__ import annotations

from typing import Any

import pytest

from bot.answers import Answer, Photo, new_id
from bot.buttons import ALL, HIGHER, LOWER, RESET, STEPS, apply, callback, parse_callback, step_down, step_up
from detector.params import DetectParams
from detector.render import boxes_to_rows, crop_order, rows_to_boxes, select
from ops.shapes import make_images
from tests.telegram_stub import encode

FLOOR = 0.05
# Merge NMS averages each kept box with the candidates it suppressed, weighted by score: candidates between
# the floor and the threshold now take part with their small weights. Their pull, in pixels, at most.
MERGE_PULL_PX = 3.0


def _found(det: Any) -> list[tuple[int, float]]:
    return [(b.class_id, b.confidence) for b in det.boxes]


def _same_boxes(a: Any, b: Any) -> None:
    """The same objects (class and confidence, in order) at nearly the same place."""
    assert _found(a) == _found(b)
    for x, y in zip(a.boxes, b.boxes, strict=True):
        assert max(abs(p - q) for p, q in zip(x.xyxy, y.xyxy, strict=True)) <= MERGE_PULL_PX, (x, y)


@pytest.mark.parametrize("threshold", [0.05, 0.25, 0.4, 0.6, 0.9])
def test_filtering_the_floor_equals_running_the_model_at_the_threshold(detector: Any, threshold: float) -> None:
    for img, _ in make_images(5000, 6):
        data = encode(img)
        _shown, _jpeg, every = detector.detect_adjustable(data, DetectParams(0.4), FLOOR)
        direct = detector.detect(data, DetectParams(threshold))
        _same_boxes(select(every, direct, DetectParams(threshold)), direct)


def test_the_first_answer_shows_what_was_asked_and_keeps_every_class(detector: Any) -> None:
    img, shapes = next((i, s) for i, s in make_images(5100, 40) if len({x.name for x in s}) >= 2)
    data = encode(img)
    keep = shapes[0].name
    shown, jpeg, every = detector.detect_adjustable(data, DetectParams(0.3, [keep]), FLOOR)
    direct = detector.detect(data, DetectParams(0.3, [keep]))
    _same_boxes(shown, direct)
    assert shown.classes == direct.classes == (keep,) and jpeg[:2] == b"\xff\xd8"
    assert {b.class_name for b in every} > {keep}  # other classes kept for "all classes"
    assert min(b.confidence for b in every) >= FLOOR
    assert rows_to_boxes(boxes_to_rows(every)) == every


def test_steps_never_go_below_the_floor_or_above_one() -> None:
    assert step_down(0.4, 0.05) == 0.25 and step_up(0.4) == 0.6
    assert step_down(0.05, 0.05) is None and step_up(STEPS[-1]) is None
    assert step_down(0.3, 0.2) == 0.25 and step_down(0.25, 0.2) is None
    assert step_down(0.33, 0.05) == 0.25 and step_up(0.33) == 0.4  # off-step values join the steps


def _answer(view: dict[str, Any] | None = None) -> Answer:
    start = DetectParams(0.4, None, (("person", 0.6),)).to_dict()
    photo = Photo("f", 1, {"width": 10, "height": 10, "confidence": 0.4}, [[0, "person", 0.9, 0, 0, 5, 5]])
    return Answer(1, None, 1, 1, True, "en", FLOOR, start, ["person", "dog"], [photo], view=view or {})


def test_actions_change_the_view_as_the_buttons_say() -> None:
    lower = apply(LOWER, _answer())
    assert lower == DetectParams(0.25)  # a new confidence is for every class, as a caption's is
    assert apply(HIGHER, _answer()) == DetectParams(0.6)
    only = apply("c1", _answer())
    assert only is not None and only.classes == ("dog",) and only.per_class == {"person": 0.6}
    assert apply(ALL, _answer(only.to_dict())) == DetectParams(0.4, None, (("person", 0.6),))
    assert apply(RESET, _answer(DetectParams(0.1, ["dog"]).to_dict())) == DetectParams(0.4, ["dog"], (("person", 0.6),))
    assert apply("c7", _answer()) is None and apply("zz", _answer()) is None


def test_callback_data_fits_telegram_and_parses_back() -> None:
    answer_id = new_id()
    for action in ("lo", "hi", "nv", "rs", "al", "cr", "js", "c0", "c2"):
        data = callback(answer_id, action)
        assert len(data.encode()) <= 64
        assert parse_callback(data) == (answer_id, action)
    assert parse_callback("x:1:lo") is None and parse_callback("a::lo") is None and parse_callback(None) is None


def test_crops_largest_first_at_most_ten() -> None:
    rows = [[0, "c", 0.9, 0, 0, s, s] for s in (5, 50, 20, 1, 8, 9, 10, 11, 12, 13, 14, 15)]
    order = crop_order(rows_to_boxes(rows))
    assert len(order) == 10 and order[:3] == [1, 2, 11]
