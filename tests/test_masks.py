"""Masks and keypoints: the shared post-processing, the result's forms (JSON, rows, text), drawing, cut-outs and
stickers, and the segmentation and pose test models on every backend."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from detector import masks, processing
from detector.cutout import MAX_CUTOUTS, STICKER_MAX_BYTES, STICKER_SIDE, cutouts, largest_first, sticker
from detector.draw import KEYPOINT_VISIBLE, colour_of, draw_boxes, draw_masks
from detector.errors import ModelLoadError
from detector.params import DetectParams
from detector.processing import Letterbox
from detector.render import box_line, boxes_to_rows, format_share, format_text, rows_to_boxes
from detector.result import Box, Detection, polygon_area
from ops.shapes import SKELETON, VISIBLE, Shape, iou, make_images
from tests.conftest import TEST_EXPORT_DIR
from tests.shapes import POSE_MODEL_PATH, SEG_MODEL_PATH

# -- the shared post-processing ------------------------------------------------------------------------


def raw(candidates: list[tuple[float, ...]]) -> np.ndarray:
    """A head's ``1×(4+nc+E)×N`` output from per-candidate columns (cx, cy, w, h, scores..., extras...)."""
    return np.array(candidates, np.float32).T[None]


def test_extras_ride_with_their_box_and_merge_with_it() -> None:
    """Mask coefficients or keypoints after the class scores are carried per candidate and merged as the box is
    (score-weighted mean over the candidates a kept box suppressed); they are never read as class scores."""
    out = raw([
        (50, 50, 20, 20, 0.9, 0.0, 10.0, 1.0),  # extras far above any score: still not a class
        (51, 50, 20, 20, 0.3, 0.0, 30.0, 3.0),  # same object, weaker: merged into the first
        (150, 50, 20, 20, 0.0, 0.6, -5.0, 7.0),  # another class, elsewhere
    ])
    rows = processing.decode_raw(out, 0.1, nc=2)
    assert rows.shape == (2, 8)
    assert list(rows[:, 5]) == [0, 1] and list(rows[:, 4]) == pytest.approx([0.9, 0.6])
    assert rows[0, 6] == pytest.approx((0.9 * 10 + 0.3 * 30) / 1.2)
    assert rows[0, 7] == pytest.approx((0.9 * 1 + 0.3 * 3) / 1.2)
    assert rows[0, 0] == pytest.approx(40 + 0.3 / 1.2)  # the box merged as before
    assert list(rows[1, 6:]) == [-5.0, 7.0]
    assert processing.decode_raw(out, 0.95, nc=2).shape == (0, 8)


def test_keypoints_are_scaled_back_like_boxes() -> None:
    geometry = Letterbox(0.5, 10, 20, (256, 256))
    out = raw([(60, 70, 20, 20, 0.9, 40, 50, 0.8, 30, 30, 0.1)])  # two keypoints (x, y, confidence)
    rows = processing.postprocess(out, geometry, (400, 300), np.array([0.25], np.float32), 10, keypoints=2)
    assert list(rows[0, :4]) == pytest.approx([80, 80, 120, 120])
    assert list(rows[0, 6:]) == pytest.approx([60, 60, 0.8, 40, 20, 0.1])


def disc_protos(cx: float, cy: float, r: float, shape: tuple[int, int]) -> np.ndarray:
    """One prototype, channels-last as the engines give them: positive inside a disc (prototype pixels, centres
    at integers), negative outside."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    return (r - np.hypot(xx - cx, yy - cy))[..., None]


@pytest.mark.parametrize(("size", "imgsz"), [((480, 640), 640), ((900, 1200), 640), ((300, 200), 256)])
def test_an_outline_is_the_mask_in_the_photos_pixels(size: tuple[int, int], imgsz: int) -> None:
    """A mask made from prototypes of the letterboxed canvas comes back as an outline in the original photo's
    pixels: through the gain, the padding and the prototypes' quarter resolution."""
    h, w = size
    image = np.zeros((h, w, 3), np.uint8)
    _, geometry = processing.letterbox(image, imgsz, 32)
    canvas_h, canvas_w = geometry.canvas
    protos_shape = (canvas_h // 4, canvas_w // 4)
    # A disc centred in the photo, radius a quarter of its short side, drawn in prototype pixels.
    centre, radius = (w / 2, h / 2), min(h, w) / 4
    to_proto = protos_shape[1] / canvas_w
    cx, cy = (centre[0] * geometry.gain + geometry.pad_x) * to_proto - 0.5, \
        (centre[1] * geometry.gain + geometry.pad_y) * to_proto - 0.5
    protos = disc_protos(cx, cy, radius * geometry.gain * to_proto, protos_shape)
    box = np.array([[centre[0] - radius - 5, centre[1] - radius - 5, centre[0] + radius + 5, centre[1] + radius + 5]])
    (outline,) = masks.polygons(protos, np.ones((1, 1), np.float32), box, geometry)
    assert 8 <= len(outline) <= masks.MAX_POLYGON_POINTS
    got = np.zeros((h, w), np.uint8)
    cv2.fillPoly(got, [np.asarray(outline, np.int32)], 1)
    truth = np.zeros((h, w), np.uint8)
    cv2.circle(truth, (round(centre[0]), round(centre[1])), round(radius), 1, -1)
    assert (got & truth).sum() / (got | truth).sum() >= 0.95
    assert polygon_area(outline) == pytest.approx(math.pi * radius ** 2, rel=0.06)

    # Cut to the box, as ultralytics cuts masks: a box over the disc's left half keeps only that half.
    half = np.array([[0, 0, centre[0], h]], np.float32)
    (left,) = masks.polygons(protos, np.ones((1, 1), np.float32), half, geometry)
    assert max(x for x, _y in left) <= centre[0] + 1
    assert polygon_area(left) == pytest.approx(math.pi * radius ** 2 / 2, rel=0.1)


def test_an_answers_outlines_are_bounded_in_points_and_bytes() -> None:
    """However ragged the masks (noise prototypes) and however many objects down to the floor, an answer's
    outlines keep at most MAX_POLYGON_POINTS each and MAX_ANSWER_POINTS together (more only when every object
    keeps its MIN_POLYGON_POINTS), best objects first: its rows stay within a few tens of KB."""
    rng = np.random.default_rng(0)
    geometry = Letterbox(640 / 4000, 0, 80, (640, 640))  # a 4000×3000 photo
    protos = rng.normal(size=(160, 160, 32)).astype(np.float32)
    for objects in (10, 100):
        xy = rng.uniform(0, 3000, (objects, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(300, 1000, (objects, 2))], axis=1).clip(0, 3000)
        outlines = masks.polygons(protos, rng.normal(size=(objects, 32)).astype(np.float32), boxes, geometry)
        sizes = [len(o) for o in outlines]
        assert max(sizes) <= masks.MAX_POLYGON_POINTS
        assert sum(sizes) <= max(masks.MAX_ANSWER_POINTS, objects * masks.MIN_POLYGON_POINTS) + 4 * objects
        kept = [Box(0, "person", 0.9, *map(float, b), polygon=o) for b, o in zip(boxes, outlines, strict=True)]
        assert len(json.dumps(boxes_to_rows(kept), separators=(",", ":"))) <= 32_000
    assert sizes[0] >= sizes[-1]  # the most confident object keeps the most detail


def test_growing_an_outline_by_half_a_sample_gives_the_masks_area() -> None:
    square = np.array([[0, 0], [9, 0], [9, 9], [0, 9]], np.float64)  # centres of a 10×10 mask's edge pixels
    for points in (square, square[::-1]):
        grown = masks.grow(points, 0.5)
        assert polygon_area(grown) == pytest.approx(100.0)
    assert polygon_area(masks.grow(np.array([[3.0, 4.0]]), 0.5)) == pytest.approx(1.0)  # one sample: a pixel


# -- the result's forms --------------------------------------------------------------------------------

SEG_BOX = Box(0, "circle", 0.91, 10, 20, 50, 60, polygon=((30, 20), (50, 40), (30, 60), (10, 40)))
POSE_BOX = Box(2, "triangle", 0.8, 0, 0, 40, 40, keypoints=((5, 5, 0.9), (35, 5, 0.2), (20, 35, 0.95)))


def test_json_has_outlines_and_keypoints_only_when_present() -> None:
    det = Detection((SEG_BOX,), 100, 80, 0.25, task="segment")
    data = det.to_dict()
    assert next(iter(data)) == "task" and data["task"] == "segment" and "skeleton" not in data
    assert data["boxes"][0]["polygon"] == [[30, 20], [50, 40], [30, 60], [10, 40]]
    assert "keypoints" not in data["boxes"][0]
    assert Detection.from_dict(json.loads(json.dumps(data))) == det
    pose = Detection((POSE_BOX,), 100, 80, 0.25, task="pose", skeleton=((0, 1), (1, 2)))
    data = pose.to_dict()
    assert data["skeleton"] == [[0, 1], [1, 2]] and data["boxes"][0]["keypoints"][0] == [5, 5, 0.9]
    assert "polygon" not in data["boxes"][0]
    assert Detection.from_dict(json.loads(json.dumps(data))) == pose
    plain = Detection((Box(0, "dog", 0.5, 1, 2, 3, 4),), 10, 10, 0.25).to_dict()
    assert plain["task"] == "detect" and set(plain["boxes"][0]) == {"class_id", "class_name", "confidence", "x1",
                                                                    "y1", "x2", "y2"}
    assert Detection.from_dict({k: v for k, v in plain.items() if k != "task"}).task == "detect"  # older results
    with pytest.raises(ValueError):
        Detection.from_dict({**plain, "task": "classify"})


def test_rows_keep_outlines_and_keypoints_compactly() -> None:
    plain = Box(1, "square", 0.5, 1.5, 2, 3, 4)
    rows = boxes_to_rows([SEG_BOX, POSE_BOX, plain])
    assert rows[0][7] == {"p": [30, 20, 50, 40, 30, 60, 10, 40]} and rows[1][7] == {"k": [5, 5, 0.9, 35, 5, 0.2, 20,
                                                                                           35, 0.95]}
    assert len(rows[2]) == 7  # a detection's row is as before
    assert rows_to_boxes(json.loads(json.dumps(rows))) == (SEG_BOX, POSE_BOX, plain)
    for broken in ([[0, "a", 0.5, 1, 2, 3, 4, {"p": [1, 2, 3]}]], [[0, "a", 0.5, 1, 2, 3, 4, {"k": [1, 2]}]],
                   [[0, "a", 0.5, 1, 2, 3, 4, [1, 2]]], [[0, "a", 0.5, 1, 2, 3, 4, {"p": ["x", 1]}]]):
        with pytest.raises((ValueError, TypeError)):
            rows_to_boxes(broken)


def test_scaling_an_object_scales_its_outline_and_keypoints() -> None:
    half = SEG_BOX.scaled(0.5, 0.25)
    assert half.xyxy == (5, 5, 25, 15) and half.polygon == ((15, 5), (25, 10), (15, 15), (5, 10))
    assert POSE_BOX.scaled(2, 2).keypoints == ((10, 10, 0.9), (70, 10, 0.2), (40, 70, 0.95))
    assert SEG_BOX.area == 800 and POSE_BOX.area == 1600  # the mask's area, else the box's


def test_the_text_gives_each_masks_part_of_the_image() -> None:
    det = Detection((SEG_BOX,), 100, 80, 0.25, task="segment")
    assert box_line(1, SEG_BOX, det.share(SEG_BOX)) == "1. circle 0.91 [10, 20, 50, 60] · 10.0% of the image"
    assert format_text(Detection((POSE_BOX,), 100, 80, 0.25, task="pose")).endswith("[0, 0, 40, 40]")
    assert format_share(0.0001) == "<0.1%" and format_share(0.5) == "50.0%"


def test_the_bot_says_the_masks_part_in_both_languages() -> None:
    from bot.i18n import catalog
    from bot.replies import detection_lines
    from detector.names import parse_class_names

    det = Detection((SEG_BOX,), 100, 80, 0.25, task="segment")
    names = parse_class_names({"ru": {"circle": "круг"}})
    assert detection_lines(catalog("en"), det, names)[1] == "1. circle 0.91 [10, 20, 50, 60] · 10.0% of the image"
    assert detection_lines(catalog("ru"), det, names)[1] == "1. круг 0.91 [10, 20, 50, 60] · 10.0% изображения"


# -- drawing -------------------------------------------------------------------------------------------


def test_masks_are_drawn_translucent_in_the_class_colour_and_keypoints_with_their_skeleton() -> None:
    grey = np.full((480, 640, 3), 128, np.uint8)
    seg = SEG_BOX.scaled(4, 4)  # a diamond (120, 80) (200, 160) (120, 240) (40, 160)
    drawn = draw_boxes(grey.copy(), [seg], {0: "круг"})
    inside, off_mask = drawn[200, 120].astype(int), drawn[220, 190].astype(int)  # in the box, on and off the diamond
    colour = np.array(colour_of(0))
    assert np.abs(inside - (0.45 * colour + 0.55 * 128)).max() <= 2  # blended, the photo still shows through
    assert list(off_mask) == [128, 128, 128]
    assert list(drawn[400, 600]) == [128, 128, 128]

    pose = Box(2, "triangle", 0.8, 100, 100, 260, 260, keypoints=((120, 120, 0.9), (240, 120, 0.2), (180, 240, 0.95)))
    drawn = draw_boxes(grey.copy(), [pose], skeleton=((0, 1), (0, 2), (1, 2)))
    assert list(drawn[240, 180]) != [128, 128, 128]  # a visible keypoint
    assert pose.keypoints is not None and pose.keypoints[1][2] < KEYPOINT_VISIBLE
    assert list(drawn[120, 240]) == [128, 128, 128]  # below KEYPOINT_VISIBLE: not drawn, nor its edges
    assert list(drawn[180, 150]) != [128, 128, 128]  # the edge 0-2 (both visible) is drawn
    assert list(drawn[120, 180]) == [128, 128, 128]  # 0-1 is not


def test_drawing_masks_leaves_every_pixel_outside_them_exactly_as_it_was() -> None:
    """The masks are blended over the whole region they span in one pass: a pixel no mask covers comes back
    bit for bit, whatever its value (every byte value occurs in the noise photo)."""
    photo = np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    square = Box(0, "square", 0.9, 50, 50, 150, 150, polygon=((50, 50), (150, 50), (150, 150), (50, 150)))
    triangle = Box(1, "triangle", 0.8, 120, 100, 350, 280, polygon=((120, 280), (235, 100), (350, 280)))
    drawn = photo.copy()
    draw_masks(drawn, [square, triangle])
    covered = np.zeros(photo.shape[:2], np.uint8)
    for box in (square, triangle):
        cv2.fillPoly(covered, [np.asarray(box.polygon, np.int32)], 1)
    assert np.array_equal(drawn[covered == 0], photo[covered == 0])
    assert (drawn[covered == 1] != photo[covered == 1]).any(axis=1).mean() > 0.9  # painted where covered


# -- cut-outs and stickers -----------------------------------------------------------------------------


def rgba(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def test_cutouts_are_transparent_outside_the_mask_largest_first_at_most_ten() -> None:
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    boxes = [Box(0, "c", 0.9, 10 + 20 * i, 10, 30 + 25 * i, 40 + 10 * i,
                 polygon=((10 + 20 * i, 10), (30 + 25 * i, 10), (20 + 22 * i, 40 + 10 * i))) for i in range(12)]
    pieces = cutouts(photo, boxes)
    assert len(pieces) == MAX_CUTOUTS
    areas = [(rgba(p)[..., 3] > 127).sum() for p in pieces]
    assert areas == sorted(areas, reverse=True)
    first = rgba(pieces[0])
    assert first.shape[2] == 4 and (first[0, 0, 3] == 0 or first[-1, 0, 3] == 0)  # a triangle's corner
    plain = rgba(cutouts(photo, [Box(0, "c", 0.9, 50, 60, 90, 100)])[0])
    assert plain.shape == (40, 40, 4) and (plain[..., 3] == 255).all()  # no mask: the whole box
    assert np.array_equal(plain[..., :3], photo[60:100, 50:90])
    # An outline running off the photo, a sliver of a box at its edge: cut within the photo, never empty.
    off = Box(0, "c", 0.9, 380, 280, 400, 300, polygon=((380, 280), (450, 280), (450, 350)))
    assert rgba(cutouts(photo, [off])[0]).shape[:2] == (20, 20)
    assert rgba(cutouts(photo, [Box(0, "c", 0.9, 399.6, 10, 400, 10.2)])[0]).shape[:2] == (1, 1)
    assert cutouts(photo, []) == []


@pytest.mark.parametrize("size", [(30, 12), (12, 30), (400, 1600), (2000, 500)])
def test_a_sticker_is_a_512_px_transparent_webp(size: tuple[int, int]) -> None:
    w, h = size
    rng = np.random.default_rng(2)
    photo = rng.integers(0, 255, (h + 20, w + 20, 3), dtype=np.uint8)  # noise: the hardest to compress
    box = Box(0, "c", 0.9, 10, 10, 10 + w, 10 + h, polygon=((10, 10), (10 + w, 10 + h // 2), (10, 10 + h)))
    data = sticker(photo, box)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "WEBP" and img.mode == "RGBA"
        assert max(img.size) == STICKER_SIDE and min(img.size) <= STICKER_SIDE
        assert (img.size[0] >= img.size[1]) == (w >= h)
    assert len(data) <= STICKER_MAX_BYTES
    pixels = rgba(data)
    assert pixels[0, -1, 3] == 0 and pixels[pixels.shape[0] // 2, pixels.shape[1] // 2, 3] == 255


def test_the_sticker_of_a_detection_box_is_the_whole_box() -> None:
    photo = np.full((100, 100, 3), (0, 200, 0), np.uint8)
    pixels = rgba(sticker(photo, Box(0, "c", 0.9, 20, 20, 60, 40)))
    assert pixels.shape[1] == STICKER_SIDE and (pixels[pixels.shape[0] // 2, 8:-8, 3] == 255).all()
    assert largest_first([POSE_BOX, SEG_BOX]) == [POSE_BOX, SEG_BOX]  # 1600 px² box before an 800 px² mask


# -- the test models on every backend ------------------------------------------------------------------

# Fresh images (seeds the models never saw).
SEED, IMAGES = 1301, 6
BACKENDS = ("torch", "onnx", "openvino")
# Every backend against PyTorch, object by object (objects both find at >= 0.3): measured on 6 images, 26
# objects: OpenVINO's bf16 masks at IoU >= 0.95 of PyTorch's, keypoints within 1 px; ONNX Runtime identical.
MIN_BACKEND_MASK_IOU = 0.85
MAX_BACKEND_KEYPOINT_PX = 3.0
MIN_MASK_IOU, MIN_MEAN_MASK_IOU = 0.5, 0.85


@pytest.fixture(scope="module")
def fresh() -> list[tuple[np.ndarray, list[Shape]]]:
    return make_images(SEED, IMAGES)


@pytest.fixture(scope="module")
def answers(fresh: list[tuple[np.ndarray, list[Shape]]]) -> dict[tuple[str, str], list[Detection]]:
    from detector.model import Detector

    out = {}
    for task, model in (("segment", SEG_MODEL_PATH), ("pose", POSE_MODEL_PATH)):
        for backend in BACKENDS:
            detector = Detector(str(model), backend=backend, export_dir=TEST_EXPORT_DIR, use_idle_cores=False)
            assert (detector.backend, detector.task) == (backend, task)
            out[task, backend] = [detector.detect(img, DetectParams(0.15)) for img, _ in fresh]
    return out


def filled(polygon: Any, h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(polygon)).astype(np.int32)], 1)
    return mask.astype(bool)


def mask_iou(a: Any, b: Any, h: int, w: int) -> float:
    ma, mb = filled(a, h, w), filled(b, h, w)
    return float((ma & mb).sum() / max((ma | mb).sum(), 1))


def same_object(boxes: tuple[Box, ...], box: Box) -> Box | None:
    found = [b for b in boxes if b.class_id == box.class_id and iou(b.xyxy, box.xyxy) >= 0.5]
    return max(found, key=lambda b: iou(b.xyxy, box.xyxy)) if found else None


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_outlines_the_drawn_shapes(answers: dict[tuple[str, str], list[Detection]],
                                                 fresh: list[tuple[np.ndarray, list[Shape]]], backend: str) -> None:
    scores = []
    for det, (img, shapes) in zip(answers["segment", backend], fresh, strict=True):
        assert det.task == "segment"
        for shape in shapes:
            best = max((mask_iou(b.polygon, shape.polygon, *img.shape[:2]) for b in det.boxes
                        if b.class_name == shape.name and b.polygon), default=0.0)
            assert best >= MIN_MASK_IOU, (shape, best)
            scores.append(best)
    assert np.mean(scores) >= MIN_MEAN_MASK_IOU, scores


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_every_backend_agrees_with_pytorch_on_masks_and_keypoints(
        answers: dict[tuple[str, str], list[Detection]], fresh: list[tuple[np.ndarray, list[Shape]]],
        backend: str) -> None:
    compared = 0
    for ref, got, (img, _shapes) in zip(answers["segment", "torch"], answers["segment", backend], fresh, strict=True):
        for box in (b for b in ref.boxes if b.confidence >= 0.3):
            other = same_object(got.boxes, box)
            assert other is not None, box
            assert mask_iou(box.polygon, other.polygon, *img.shape[:2]) >= MIN_BACKEND_MASK_IOU
            compared += 1
    for ref, got in zip(answers["pose", "torch"], answers["pose", backend], strict=True):
        assert got.skeleton == ref.skeleton == SKELETON
        for box in (b for b in ref.boxes if b.confidence >= 0.3):
            other = same_object(got.boxes, box)
            assert other is not None and box.keypoints is not None and other.keypoints is not None
            for (x, y, c), (ox, oy, _oc) in zip(box.keypoints, other.keypoints, strict=True):
                if c >= KEYPOINT_VISIBLE:
                    assert math.hypot(x - ox, y - oy) <= MAX_BACKEND_KEYPOINT_PX
            compared += 1
    assert compared >= 2 * IMAGES


def test_every_backend_puts_keypoints_on_the_drawn_vertices(answers: dict[tuple[str, str], list[Detection]],
                                                            fresh: list[tuple[np.ndarray, list[Shape]]]) -> None:
    for backend in BACKENDS:
        errors = []
        for det, (img, shapes) in zip(answers["pose", backend], fresh, strict=True):
            for shape in shapes:
                found = same_object(det.boxes, Box(["circle", "square", "triangle"].index(shape.name), shape.name,
                                                   1.0, *shape.box))
                assert found is not None and found.keypoints is not None
                errors += [math.hypot(px - x, py - y) * 256 / max(img.shape[:2])
                           for (x, y, v), (px, py, _c) in zip(shape.keypoints, found.keypoints, strict=True)
                           if v == VISIBLE]
        assert max(errors) <= 6.0 and np.mean(errors) <= 2.0, (backend, errors)


def test_an_exported_segmentation_model_given_as_weights_runs_through_ultralytics(
        fresh: list[tuple[np.ndarray, list[Shape]]]) -> None:
    """An ONNX export given as DETBOT_MODEL: its metadata names the task, ultralytics' predictor runs it, and the
    answer carries outlines like any other."""
    from detector.model import Detector

    export = Detector(str(SEG_MODEL_PATH), backend="onnx", export_dir=TEST_EXPORT_DIR, warmup=False,
                      use_idle_cores=False).export
    assert export is not None and export.task.task == "segment"
    detector = Detector(str(export.path), backend="onnx", export_dir=TEST_EXPORT_DIR, use_idle_cores=False)
    assert detector.task == "segment"
    img, shapes = fresh[0]
    det = detector.detect(img, DetectParams(0.3))
    assert all(b.polygon and len(b.polygon) >= 3 for b in det.boxes)
    for shape in shapes:
        assert max(mask_iou(b.polygon, shape.polygon, *img.shape[:2]) for b in det.boxes) >= MIN_MASK_IOU


def test_a_model_of_another_task_is_refused_with_one_line(tmp_path: Path) -> None:
    from ultralytics import YOLO

    from detector.model import Detector

    path = tmp_path / "classifier.pt"
    YOLO("yolo11n-cls.yaml").save(str(path))
    with pytest.raises(ModelLoadError, match="is a classify model; detbot serves detection, segmentation"):
        Detector(str(path), backend="torch", warmup=False)
