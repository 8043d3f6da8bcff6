"""Pre- and post-processing shared by every engine: letterbox in, merge NMS and scaling back out.

The image is letterboxed with OpenCV as ultralytics does it, and the model's raw candidates go through one
NumPy post-processing whatever ran the model (PyTorch included, see :class:`detector.engines.TorchEngine`):
ultralytics' class-aware NMS, with each kept box replaced by the score-weighted mean of the candidates it
suppressed ("merge NMS"). Merging makes the answer a smooth function of the scores: with plain NMS a bf16
rounding difference (OpenVINO on CPUs with AVX512-BF16) can let a neighbouring candidate win and move a box
by several pixels; merged, the backends agree. The head used is the one-to-many head plus NMS, as
ultralytics' own ``predict`` does by default.

Input shapes: a photo is letterboxed to its own aspect ratio (ultralytics' ``rect``: the long side at the
model's size, the short side padded to a multiple of the stride), or into a larger *canvas* an engine has
compiled ahead (:func:`canvases`, :func:`cover`), so that no photo waits for a compile.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

# Grey of ultralytics' letterbox padding: the exported model was trained with it.
PAD_VALUE = 114
# ultralytics' NMS IoU for detection (its ``iou`` default); only for heads that are not end-to-end.
NMS_IOU = 0.7
# ultralytics hands at most this many candidates to NMS; more is only noise from a bad threshold.
MAX_NMS_CANDIDATES = 30_000
# Candidates of one class up to which NMS compares them all at once (an n×n matrix: 4 MB at 1024); a class
# with more (only at evaluation floors such as 0.001) goes through the loop, which needs no n×n memory.
NMS_MATRIX_LIMIT = 1024
# Photo aspect ratios (long side / short side) that get an input shape of their own, in landscape and
# portrait, besides the square: 4:3 (most phone cameras), 3:2 (cameras, many phones), 16:9 (video frames,
# screenshots). Any other photo is padded into the smallest of these that holds it; the square holds all.
COMMON_ASPECTS = (4 / 3, 3 / 2, 16 / 9)

Shape = tuple[int, int]  # (height, width) of a model input


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the model input: scale, then padding on the left and top."""

    gain: float
    pad_x: int
    pad_y: int
    # The model input's (height, width): the letterboxed photo's canvas (a segmentation head's mask
    # prototypes cover it at a fraction of its resolution).
    canvas: Shape = (0, 0)


def _fit(h: int, w: int, imgsz: int) -> tuple[float, int, int]:
    """ultralytics' scaling: the gain and the resized width and height (the long side becomes ``imgsz``)."""
    gain = min(imgsz / h, imgsz / w)
    return gain, max(round(w * gain), 1), max(round(h * gain), 1)


def rect_shape(h: int, w: int, imgsz: int, stride: int) -> Shape:
    """The model input an ``h``×``w`` photo letterboxes to with ``rect``: the resized photo, each side padded
    up to a multiple of the stride (ultralytics' rounding)."""
    _, new_w, new_h = _fit(h, w, imgsz)
    return new_h + (imgsz - new_h) % stride, new_w + (imgsz - new_w) % stride


def rect_shapes(imgsz: int, stride: int) -> list[Shape]:
    """Every input shape ``rect`` letterboxing can give: the long side is always ``imgsz``, so a photo's shape
    is set by its short side alone (e.g. 39 shapes at 640 with stride 32)."""
    sides = range(1, imgsz + 1)
    shapes = {rect_shape(k, imgsz, imgsz, stride) for k in sides} | {rect_shape(imgsz, k, imgsz, stride) for k in sides}
    return sorted(shapes)


def canvases(imgsz: int, stride: int) -> tuple[Shape, ...]:
    """The input shapes an engine compiles ahead: the square first (it holds any photo), then landscape and
    portrait shapes of :data:`COMMON_ASPECTS` (at 640: 480, 448 and 384 by 640, both ways)."""
    out = [(imgsz, imgsz)]
    for aspect in COMMON_ASPECTS:
        short = round(imgsz / aspect)
        for shape in (rect_shape(short, imgsz, imgsz, stride), rect_shape(imgsz, short, imgsz, stride)):
            if shape not in out:
                out.append(shape)
    return tuple(out)


def cover(shape: Shape, available: Iterable[Shape] | None) -> Shape:
    """The smallest of ``available`` that holds ``shape`` (``shape`` itself when any shape will do, i.e.
    ``available`` is None, or when none holds it)."""
    if available is None:
        return shape
    holding = [s for s in available if s[0] >= shape[0] and s[1] >= shape[1]]
    return min(holding, key=lambda s: (s[0] * s[1], s)) if holding else shape


def letterbox(image: np.ndarray, imgsz: int, stride: int, rect: bool = True,
              canvas: Shape | None = None) -> tuple[np.ndarray, Letterbox]:
    """ultralytics' letterbox (same rounding): the resized, padded uint8 BGR image and the geometry.

    ``rect``: pad only to a multiple of the stride (what ultralytics does for PyTorch models) instead of to
    a full square, which saves up to half the compute on photos that are not square. ``canvas``: pad into
    this shape instead (one that holds the ``rect`` shape, see :func:`cover`), the photo centred as always.
    """
    h, w = image.shape[:2]
    gain, new_w, new_h = _fit(h, w, imgsz)
    if canvas is None:
        canvas = rect_shape(h, w, imgsz, stride) if rect else (imgsz, imgsz)
    dw, dh = canvas[1] - new_w, canvas[0] - new_h
    top, bottom = round(dh / 2 - 0.1), round(dh / 2 + 0.1)
    left, right = round(dw / 2 - 0.1), round(dw / 2 + 0.1)
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if top or bottom or left or right:
        pad = (PAD_VALUE, PAD_VALUE, PAD_VALUE)
        image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=pad)
    return np.ascontiguousarray(image), Letterbox(gain, left, top, canvas)


def _iou(a: np.ndarray, b: np.ndarray, area_a: np.ndarray, area_b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes ``a`` and ``b``, broadcast against each other (one box and many, or every pair)."""
    w = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0)
    h = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0)
    inter = w * h
    return inter / (area_a + area_b - inter + 1e-9)


def _areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def merge_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float,
              values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class-aware greedy NMS on xyxy boxes sorted by descending score, as ultralytics/torchvision do it;
    returns the kept indices (best first) and, for each, the score-weighted mean of ``values`` (default: the
    boxes; with mask coefficients or keypoints beside them, those too) over it and the candidates it
    suppressed. A candidate overlapping several kept boxes belongs to the first (best)."""
    values = boxes if values is None else values
    if len(boxes) <= NMS_MATRIX_LIMIT:
        return _merge_nms_matrix(boxes, scores, classes, iou, values)
    kept_parts, merged_parts = [], []  # thousands of candidates (evaluation floors): class by class
    for c in np.unique(classes):
        idx = np.flatnonzero(classes == c)
        one = _merge_nms_matrix if len(idx) <= NMS_MATRIX_LIMIT else _merge_nms_loop
        kept, merged = one(boxes[idx], scores[idx], classes[idx], iou, values[idx])
        kept_parts.append(idx[kept])
        merged_parts.append(merged)
    kept, merged = np.concatenate(kept_parts), np.concatenate(merged_parts)
    order = np.argsort(kept)
    return kept[order], merged[order]


def _merge_nms_matrix(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float,
                      values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`merge_nms` with every pair compared at once (n×n), then one greedy pass over rows of booleans:
    microseconds per candidate instead of a dozen NumPy calls per kept box."""
    areas = _areas(boxes)
    overlap = _iou(boxes[:, None], boxes[None], areas[:, None], areas[None]) > iou
    overlap &= classes[:, None] == classes[None]
    suppressed = np.zeros(len(boxes), bool)
    keep = []
    for i in range(len(boxes)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= overlap[i]
    kept = np.asarray(keep, dtype=np.int64)
    owner = overlap[kept].argmax(axis=0)  # the first kept box overlapping each candidate (a kept one: itself)
    weights = scores.astype(np.float64)
    sums = np.zeros((len(kept), values.shape[1]))
    np.add.at(sums, owner, values * weights[:, None])
    merged = sums / np.bincount(owner, weights=weights, minlength=len(kept))[:, None]
    return kept, merged.astype(np.float32)


def _merge_nms_loop(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float,
                    values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`merge_nms` for one class, one kept box at a time against the candidates still left: no n×n
    matrix, for the rare class with thousands of candidates."""
    areas = _areas(boxes)
    order = np.arange(len(boxes))
    keep, merged = [], []
    while order.size:
        i, rest = order[0], order[1:]
        overlap = _iou(boxes[i], boxes[rest], areas[i], areas[rest]) > iou
        group = np.concatenate([[i], rest[overlap]])
        weights = scores[group, None].astype(np.float64)
        keep.append(i)
        merged.append((values[group] * weights).sum(axis=0) / weights.sum())
        order = rest[~overlap]
    return np.asarray(keep, dtype=np.int64), np.asarray(merged, dtype=np.float32).reshape(-1, values.shape[1])


def decode_raw(output: np.ndarray, confidence: float, nc: int | None = None) -> np.ndarray:
    """A raw head's ``1×(4+nc+E)×N`` output (xywh, class scores, then E extra values per candidate: a
    segmentation head's mask coefficients, a pose head's keypoints) to ``K×(6+E)`` rows (x1, y1, x2, y2, conf,
    class, extras) after merge NMS, best first. ``nc``: the number of classes (default: every row after the
    box is a class score, a detection head)."""
    pred = output[0]
    nc = pred.shape[0] - 4 if nc is None else nc
    scores = pred[4:4 + nc].max(axis=0)  # along the contiguous axis: a fraction of a millisecond for 80×8400
    keep = scores > confidence
    if not keep.any():
        return np.zeros((0, 6 + pred.shape[0] - 4 - nc), np.float32)
    cand = pred[:, keep].T
    conf, cls = scores[keep], cand[:, 4:4 + nc].argmax(axis=1)
    xy, wh = cand[:, :2], cand[:, 2:4] / 2
    rows = np.concatenate([xy - wh, xy + wh, conf[:, None], cls[:, None].astype(np.float32), cand[:, 4 + nc:]],
                          axis=1)
    rows = rows[np.argsort(-conf, kind="stable")][:MAX_NMS_CANDIDATES]
    # Merged: the box and whatever the head gives beside it (mask coefficients, keypoints), so every part of
    # an object moves smoothly with the scores, as its box does.
    values = np.concatenate([rows[:, :4], rows[:, 6:]], axis=1)
    kept, merged = merge_nms(rows[:, :4], rows[:, 4], rows[:, 5], NMS_IOU, values)
    out = rows[kept]
    out[:, :4] = merged[:, :4]
    out[:, 6:] = merged[:, 4:]
    return out


def postprocess(
    output: np.ndarray,
    geometry: Letterbox,
    shape: tuple[int, int],
    thresholds: np.ndarray,
    max_det: int,
    keypoints: int = 0,
) -> np.ndarray:
    """Raw model output to ``K×(6+E)`` rows in pixels of the original image, best first, at most ``max_det``:
    the boxes whose confidence reaches their class's threshold (``thresholds[class id]``; +inf: left out; one
    per class, so ``len(thresholds)`` is the number of classes). ``keypoints``: how many keypoints follow the
    class (pose): they are scaled back too; other extras (mask coefficients) stay as the head gave them."""
    rows = decode_raw(output, float(thresholds.min()), len(thresholds))
    rows = rows[rows[:, 4] >= thresholds[rows[:, 5].astype(np.int64)]]
    rows = rows[np.argsort(-rows[:, 4], kind="stable")][:max_det].astype(np.float32)
    h, w = shape
    rows[:, [0, 2]] = np.clip((rows[:, [0, 2]] - geometry.pad_x) / geometry.gain, 0, w)
    rows[:, [1, 3]] = np.clip((rows[:, [1, 3]] - geometry.pad_y) / geometry.gain, 0, h)
    if keypoints:
        points = rows[:, 6:6 + 3 * keypoints].reshape(len(rows), keypoints, 3)
        points[..., 0] = np.clip((points[..., 0] - geometry.pad_x) / geometry.gain, 0, w)
        points[..., 1] = np.clip((points[..., 1] - geometry.pad_y) / geometry.gain, 0, h)
        rows[:, 6:6 + 3 * keypoints] = points.reshape(len(rows), 3 * keypoints)
    return rows
