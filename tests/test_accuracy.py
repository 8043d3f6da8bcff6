"""``detbot bench --accuracy``'s figures, on the shapes model and fresh images the model never saw."""

from __future__ import annotations

from typing import Any

from detector.params import DetectParams
from ops.agreement import AGREEMENT_FLOOR, compare, map50
from ops.shapes import iou, make_images

# Seeds of fresh images: the model's own train/val seeds are 1 and 2, the other tests use 1000-1999.
SEED = 3000
IMAGES = 6
# The shapes model scores 99.5 on its validation set; a handful of fresh images stays far above this.
MIN_MAP50 = 90.0


def test_map50_of_the_shapes_model_is_high(detector: Any) -> None:
    assert map50(detector, make_images(SEED, IMAGES)) >= MIN_MAP50


def test_a_backend_compared_with_itself_agrees_on_every_object(detector: Any) -> None:
    data = make_images(SEED, IMAGES)
    results = [detector.detect(img, DetectParams(AGREEMENT_FLOOR)) for img, _ in data]
    same = compare(results, results, [shapes for _, shapes in data])
    assert same["objects"] > IMAGES and same["unmatched"] == 0
    assert same["worst_iou"] == 1.0 and same["worst_conf_diff"] == 0.0


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == 50 / 150
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0  # empty boxes: no union, no overlap
