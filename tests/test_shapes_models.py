"""The shipped segmentation and pose test models: their metadata, and masks and keypoints on unseen images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from ultralytics import YOLO

from ops.shapes import CLASSES, FLIP_IDX, KEYPOINT_NAMES, NUM_KEYPOINTS, VISIBLE, Shape, iou, make_images
from tests.shapes import IMGSZ, MODEL_PATH, POSE_MODEL_PATH, SEG_MODEL_PATH

# Seeds the models never saw (training used 1, validation 2; test_detector.py draws from 1001 on).
FRESH_SEED = 1101
FRESH_IMAGES = 4
# Shapes are looked for at the threshold test_detector.py checks recall at.
CONFIDENCE = 0.15
# A predicted mask must cover its drawn shape this well (intersection over union of the pixels). Masks come from
# prototypes at a quarter of the 256 px the model sees, so a small triangle's sharp corners round off: the bar is
# lower for shapes under SMALL_SHAPE model pixels (on 497 unseen shapes, seeds 1001-1010: every larger one >= 0.85,
# the smaller ones >= 0.56, mean 0.90).
MIN_MASK_IOU = 0.8
MIN_SMALL_MASK_IOU = 0.5
SMALL_SHAPE = 32
# ... and on average over all shapes (a box for a mask would score pi/4 on a circle, a half on a triangle).
MIN_MEAN_MASK_IOU = 0.8
# Keypoint error in the model's pixels (it sees the image at 256 px, where one pixel is up to 2.5 of the original's).
# On 1807 visible keypoints of unseen shapes (seeds 1001-1010): mean 1.0, 99th percentile 3.2, worst 5.0.
MAX_KEYPOINT_ERROR = 6.0
MAX_MEAN_KEYPOINT_ERROR = 2.0
# The predicted visibility tells present slots from absent ones: on the same shapes, a visible keypoint scores
# 0.87 on average (a few triangle apexes as low as 0.3), an absent one 0.1 (a few triangle top corners up to 0.6).
MIN_MEAN_VISIBLE = 0.6
MAX_MEAN_ABSENT = 0.3


@pytest.fixture(scope="module")
def fresh() -> list[tuple[np.ndarray, list[Shape]]]:
    images = make_images(FRESH_SEED, FRESH_IMAGES)
    assert sum(len(shapes) for _img, shapes in images) >= 2 * FRESH_IMAGES  # several shapes, so checks mean something
    return images


def polygon_mask(shape: Shape, height: int, width: int) -> np.ndarray:
    """The drawn shape's pixels, from its true outline."""
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(np.array(shape.polygon)).astype(np.int32)], 1)
    return mask.astype(bool)


def test_models_carry_task_and_the_detection_models_names() -> None:
    names = YOLO(str(MODEL_PATH)).names
    assert tuple(names.values()) == CLASSES
    seg, pose = YOLO(str(SEG_MODEL_PATH)), YOLO(str(POSE_MODEL_PATH))
    assert (seg.task, pose.task) == ("segment", "pose")
    assert seg.names == names and pose.names == names
    assert list(pose.model.kpt_shape) == [NUM_KEYPOINTS, 3]
    assert pose.model.kpt_names == {i: list(KEYPOINT_NAMES) for i in range(len(CLASSES))}
    for path in (SEG_MODEL_PATH, POSE_MODEL_PATH):
        assert path.stat().st_size < 10e6  # small, like shapes.pt; no optimizer state


def test_masks_cover_every_drawn_shape(fresh: list[tuple[np.ndarray, list[Shape]]]) -> None:
    model = YOLO(str(SEG_MODEL_PATH))
    best_ious = []
    for img, shapes in fresh:
        result = model.predict(img, imgsz=IMGSZ, conf=CONFIDENCE, retina_masks=True, verbose=False)[0]
        assert result.masks is not None
        masks = result.masks.data.cpu().numpy().astype(bool)
        assert masks.shape[1:] == img.shape[:2]
        classes = [result.names[int(c)] for c in result.boxes.cls]
        for shape in shapes:
            truth = polygon_mask(shape, *img.shape[:2])
            scores = [
                float((m & truth).sum() / (m | truth).sum()) if name == shape.name else 0.0
                for m, name in zip(masks, classes, strict=True)
            ]
            model_pixels = max(shape.box[2] - shape.box[0], shape.box[3] - shape.box[1]) * IMGSZ / max(img.shape[:2])
            bar = MIN_MASK_IOU if model_pixels >= SMALL_SHAPE else MIN_SMALL_MASK_IOU
            assert max(scores, default=0.0) >= bar, (shape.name, shape.box, classes, scores)
            best_ious.append(max(scores))
    assert np.mean(best_ious) >= MIN_MEAN_MASK_IOU, best_ious


def test_keypoints_sit_on_every_drawn_vertex(fresh: list[tuple[np.ndarray, list[Shape]]]) -> None:
    model = YOLO(str(POSE_MODEL_PATH))
    errors, visible, absent = [], [], []
    for img, shapes in fresh:
        scale = IMGSZ / max(img.shape[:2])
        result = model.predict(img, imgsz=IMGSZ, conf=CONFIDENCE, verbose=False)[0]
        assert result.keypoints is not None
        boxes = result.boxes.xyxy.cpu().numpy()
        classes = [result.names[int(c)] for c in result.boxes.cls]
        points = result.keypoints.data.cpu().numpy()  # (objects, NUM_KEYPOINTS, x y confidence)
        for shape in shapes:
            overlaps = [
                iou(tuple(b), shape.box) if c == shape.name else 0.0 for b, c in zip(boxes, classes, strict=True)
            ]
            assert max(overlaps, default=0.0) >= 0.5, (shape.name, shape.box, classes)
            found = points[int(np.argmax(overlaps))]
            for slot, ((x, y, v), (px, py, conf)) in enumerate(zip(shape.keypoints, found, strict=True)):
                if v == VISIBLE:
                    errors.append(float(np.hypot(px - x, py - y)) * scale)
                    assert errors[-1] <= MAX_KEYPOINT_ERROR, (shape.name, KEYPOINT_NAMES[slot], (x, y), (px, py))
                    visible.append(conf)
                else:
                    absent.append(conf)
    assert np.mean(errors) <= MAX_MEAN_KEYPOINT_ERROR, errors
    assert np.mean(visible) >= MIN_MEAN_VISIBLE and np.mean(absent) <= MAX_MEAN_ABSENT, (visible, absent)


def in_slot(name: str, x: float, y: float, cx: float, cy: float) -> bool:
    """Whether a point lies where the keypoint slot ``name`` says, seen from the shape's centre."""
    if name == "top":
        return y < cy
    return ("left" in name) == (x < cx) and ("top" in name) == (y < cy)


def test_keypoint_slots_hold_under_a_horizontal_flip() -> None:
    """Every visible keypoint lies in its slot's quarter, and still does after mirroring and FLIP_IDX."""
    checked = 0
    for img, shapes in make_images(FRESH_SEED, 20):
        width = img.shape[1]
        for shape in shapes:
            cx, cy = (shape.box[0] + shape.box[2]) / 2, (shape.box[1] + shape.box[3]) / 2
            mirrored = [(width - x, y, v) for x, y, v in shape.keypoints]
            flipped = [mirrored[FLIP_IDX[i]] for i in range(NUM_KEYPOINTS)]
            assert [v for *_xy, v in flipped] == [v for *_xy, v in shape.keypoints]  # same slots present
            for name, (x, y, v), (fx, fy, _fv) in zip(KEYPOINT_NAMES, shape.keypoints, flipped, strict=True):
                if v == VISIBLE:
                    assert in_slot(name, x, y, cx, cy) and in_slot(name, fx, fy, width - cx, cy), (shape, name)
                    checked += 1
    assert checked > 100
