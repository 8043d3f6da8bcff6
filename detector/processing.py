"""Pre- and post-processing shared by every engine: letterbox in, merge NMS and scaling back out.

The image is letterboxed with OpenCV as ultralytics does it, and the model's raw candidates go through one
NumPy post-processing whatever ran the model (PyTorch included, see :class:`detector.engines.TorchEngine`):
ultralytics' class-aware NMS, with each kept box replaced by the score-weighted mean of the candidates it
suppressed ("merge NMS"). Merging makes the answer a smooth function of the scores: with plain NMS a bf16
rounding difference (OpenVINO on CPUs with AVX512-BF16) can let a neighbouring candidate win and move a box
by several pixels; merged, the backends agree. The head used is the one-to-many head plus NMS, as
ultralytics' own ``predict`` does by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Grey of ultralytics' letterbox padding: the exported model was trained with it.
PAD_VALUE = 114
# ultralytics' NMS IoU for detection (its ``iou`` default); only for heads that are not end-to-end.
NMS_IOU = 0.7
# ultralytics hands at most this many candidates to NMS; more is only noise from a bad threshold.
MAX_NMS_CANDIDATES = 30_000
# Class offset for class-aware NMS in one pass: boxes of different classes never overlap.
NMS_CLASS_OFFSET = 7680.0


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the model input: scale, then padding on the left and top."""

    gain: float
    pad_x: int
    pad_y: int


def letterbox(image: np.ndarray, imgsz: int, stride: int, rect: bool) -> tuple[np.ndarray, Letterbox]:
    """ultralytics' letterbox (same rounding): the resized, padded uint8 BGR image and the geometry.

    ``rect``: pad only to a multiple of the stride (what ultralytics does for PyTorch models) instead of to
    a full square, which saves up to half the compute on photos that are not square.
    """
    h, w = image.shape[:2]
    gain = min(imgsz / h, imgsz / w)
    new_w, new_h = max(round(w * gain), 1), max(round(h * gain), 1)
    dw, dh = imgsz - new_w, imgsz - new_h
    if rect:
        dw, dh = dw % stride, dh % stride
    top, bottom = round(dh / 2 - 0.1), round(dh / 2 + 0.1)
    left, right = round(dw / 2 - 0.1), round(dw / 2 + 0.1)
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if top or bottom or left or right:
        pad = (PAD_VALUE, PAD_VALUE, PAD_VALUE)
        image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=pad)
    return np.ascontiguousarray(image), Letterbox(gain, left, top)


def merge_nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy NMS on xyxy boxes sorted by descending score, as ultralytics/torchvision do it; returns the
    kept indices and, for each, the score-weighted mean box of it and the candidates it suppressed."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.arange(len(boxes))
    keep, merged = [], []
    while order.size:
        i, rest = order[0], order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        overlap = inter / (areas[i] + areas[rest] - inter + 1e-9) > iou
        group = np.concatenate([[i], rest[overlap]])
        weights = scores[group, None]
        keep.append(i)
        merged.append((boxes[group] * weights).sum(axis=0) / weights.sum())
        order = rest[~overlap]
    return np.asarray(keep, dtype=np.int64), np.asarray(merged, dtype=np.float32).reshape(-1, 4)


def decode_raw(output: np.ndarray, confidence: float) -> np.ndarray:
    """A raw head's ``1×(4+nc)×N`` output (xywh, class scores) to ``K×6`` rows (x1, y1, x2, y2, conf,
    class) after merge NMS, best first."""
    pred = output[0]
    scores = pred[4:].max(axis=0)  # along the contiguous axis: a fraction of a millisecond for 80×8400
    keep = scores > confidence
    if not keep.any():
        return np.zeros((0, 6), np.float32)
    cand = pred[:, keep].T
    conf, cls = scores[keep], cand[:, 4:].argmax(axis=1)
    xy, wh = cand[:, :2], cand[:, 2:4] / 2
    rows = np.concatenate([xy - wh, xy + wh, conf[:, None], cls[:, None].astype(np.float32)], axis=1)
    rows = rows[np.argsort(-conf, kind="stable")][:MAX_NMS_CANDIDATES]
    kept, merged = merge_nms(rows[:, :4] + rows[:, 5:6] * NMS_CLASS_OFFSET, rows[:, 4], NMS_IOU)
    out = rows[kept]
    out[:, :4] = merged - out[:, 5:6] * NMS_CLASS_OFFSET
    return out


def postprocess(
    output: np.ndarray,
    geometry: Letterbox,
    shape: tuple[int, int],
    thresholds: np.ndarray,
    max_det: int,
) -> np.ndarray:
    """Raw model output to ``K×6`` rows in pixels of the original image, best first, at most ``max_det``:
    the boxes whose confidence reaches their class's threshold (``thresholds[class id]``; +inf: left out)."""
    rows = decode_raw(output, float(thresholds.min()))
    rows = rows[rows[:, 4] >= thresholds[rows[:, 5].astype(np.int64)]]
    rows = rows[np.argsort(-rows[:, 4], kind="stable")][:max_det].astype(np.float32)
    h, w = shape
    rows[:, [0, 2]] = np.clip((rows[:, [0, 2]] - geometry.pad_x) / geometry.gain, 0, w)
    rows[:, [1, 3]] = np.clip((rows[:, [1, 3]] - geometry.pad_y) / geometry.gain, 0, h)
    return rows
