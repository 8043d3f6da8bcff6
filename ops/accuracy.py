"""``detbot bench accuracy``: mAP50 and mAP50-95 of detbot's own path, per backend, on a YOLO dataset.

Each backend (PyTorch, ONNX Runtime, OpenVINO, OpenVINO INT8 when nncf is installed) runs the way a worker
runs it — detbot's decoding, letterbox, engine and merge-NMS post-processing — at the evaluation floor
ultralytics itself uses (confidence 0.001, up to 300 boxes). Matching and AP are ultralytics' own
(greedy matching per IoU threshold 0.50…0.95, ``ap_per_class``), and ``YOLO(model).val()`` on the same
images is the reference, so the difference in points is detbot's path and nothing else.

A segmentation model is scored on its masks too (mask mAP: the IoU of detbot's kept outline, filled, with the
labelled outline), a pose model on its keypoints (pose mAP: COCO's object keypoint similarity, OKS, with
ultralytics' sigmas), beside the box figures — the same columns ``val()`` reports as ``seg`` and ``pose``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from detector.params import DetectParams

# ultralytics' own validation floor and box cap: mAP needs the whole precision-recall curve.
EVAL_CONFIDENCE = 0.001
EVAL_MAX_DETECTIONS = 300
# COCO's ten IoU thresholds, 0.50 to 0.95.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
# A backend whose mAP50-95 is this many points below PyTorch's loses accuracy people would notice.
MAX_MAP_LOSS = 1.0
# OKS: the keypoints' area is the box's times this (ultralytics' pose validator, after COCO's evaluation).
OKS_AREA = 0.53
# The figure a segmentation or pose model is scored on besides its boxes (ultralytics' names).
TASK_METRIC = {"segment": "mask", "pose": "pose"}


@dataclass(frozen=True)
class Truth:
    """One image's labels: class ids and x1, y1, x2, y2 in pixels; per object its outline (``K×2`` pixels,
    segmentation) or its keypoints (``N×nk×3``: x, y, visibility; pose) when the dataset has them."""

    path: Path
    classes: np.ndarray
    boxes: np.ndarray
    polygons: list[np.ndarray] | None = None
    keypoints: np.ndarray | None = None


class Predicted(NamedTuple):
    """One image's answer, best first: boxes (xyxy), class ids, confidences, and outlines or keypoints."""

    boxes: np.ndarray
    classes: np.ndarray
    conf: np.ndarray
    polygons: list[np.ndarray] | None = None
    keypoints: np.ndarray | None = None


@dataclass
class Score:
    """One row of the table; ``task_*``: mask or pose mAP (``task_metric``), for a segmentation or pose model."""

    variant: str
    map50: float
    map50_95: float
    images: int
    seconds: float
    delta_map50: float = 0.0
    delta_map50_95: float = 0.0
    task_metric: str = ""
    task_map50: float = 0.0
    task_map50_95: float = 0.0
    delta_task_map50: float = 0.0
    delta_task_map50_95: float = 0.0


def load_dataset(data: str, split: str = "val") -> tuple[list[Truth], dict[int, str]]:
    """The images of ``split`` with their labels, read the way ultralytics reads a dataset YAML: boxes, or
    outlines (a row longer than a box), or a box and keypoints (a dataset with ``kpt_shape``)."""
    from PIL import Image
    from ultralytics.data.utils import check_det_dataset, img2label_paths

    info = check_det_dataset(data, autodownload=False)
    folders = info[split] if isinstance(info[split], list) else [info[split]]
    images = sorted(p for f in folders for p in Path(f).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    kpt_shape = info.get("kpt_shape")
    truths = []
    for image, label in zip(images, img2label_paths([str(p) for p in images]), strict=True):
        with Image.open(image) as img:
            w, h = img.size
        lines = Path(label).read_text().split("\n") if Path(label).is_file() else []
        rows = [np.array(line.split(), np.float64) for line in lines if line.strip()]
        truths.append(_truth(image, rows, w, h, kpt_shape))
    return truths, {int(k): str(v) for k, v in info["names"].items()}


def _truth(image: Path, rows: list[np.ndarray], w: int, h: int, kpt_shape: list[int] | None) -> Truth:
    classes = np.array([int(r[0]) for r in rows], int)
    if kpt_shape:
        nk, ndim = int(kpt_shape[0]), int(kpt_shape[1])
        boxes = _xywh_boxes(np.array([r[1:5] for r in rows]).reshape(-1, 4), w, h)
        points = np.array([r[5:5 + nk * ndim] for r in rows]).reshape(-1, nk, ndim) * (w, h, 1)[:ndim]
        if ndim == 2:  # no visibility: every labelled keypoint counts
            points = np.concatenate([points, 2.0 * np.ones((*points.shape[:2], 1))], axis=-1)
        return Truth(image, classes, boxes, keypoints=points)
    if any(len(r) > 5 for r in rows):
        polygons = [r[1:].reshape(-1, 2) * (w, h) for r in rows]
        boxes = np.array([[*p.min(axis=0), *p.max(axis=0)] for p in polygons]).reshape(-1, 4)
        return Truth(image, classes, boxes, polygons=polygons)
    return Truth(image, classes, _xywh_boxes(np.array([r[1:5] for r in rows]).reshape(-1, 4), w, h))


def _xywh_boxes(xywh: np.ndarray, w: int, h: int) -> np.ndarray:
    xy, wh = xywh[:, :2] * (w, h), xywh[:, 2:4] * (w, h) / 2
    return np.concatenate([xy - wh, xy + wh], axis=1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (M×4) with every box of ``b`` (N×4), xyxy."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)


def match(true_boxes: np.ndarray, true_classes: np.ndarray, boxes: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """N×10 hits: each prediction (best first) claims the best unclaimed truth of its class per threshold."""
    if not len(boxes) or not len(true_boxes):
        return np.zeros((len(boxes), len(IOU_THRESHOLDS)), bool)
    return match_scores(iou_matrix(true_boxes, boxes), true_classes, classes)


def match_scores(overlap: np.ndarray, true_classes: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """:func:`match` on any T×N overlap (box IoU, mask IoU, keypoint similarity) of truths and predictions."""
    correct = np.zeros((overlap.shape[1], len(IOU_THRESHOLDS)), bool)
    if not overlap.size:
        return correct
    iou = overlap * (true_classes[:, None] == classes[None, :])
    claimed = np.zeros((len(true_classes), len(IOU_THRESHOLDS)), bool)
    for j in np.flatnonzero((iou >= IOU_THRESHOLDS[0]).any(axis=0)):
        free = np.where(claimed, 0.0, iou[:, j, None])
        best = free.argmax(axis=0)
        correct[j] = free[best, range(len(IOU_THRESHOLDS))] >= IOU_THRESHOLDS
        claimed[best, range(len(IOU_THRESHOLDS))] |= correct[j]
    return correct


def _filled(polygon: np.ndarray) -> tuple[np.ndarray, int, int]:
    """An outline's pixels as a boolean crop and the crop's top-left corner (pixel indexes, as drawn)."""
    pts = np.round(np.asarray(polygon, np.float64)).astype(np.int32).reshape(-1, 2)
    if len(pts) < 3:
        return np.zeros((0, 0), bool), 0, 0
    left, top = pts.min(axis=0)
    right, bottom = pts.max(axis=0) + 1
    crop = np.zeros((bottom - top, right - left), np.uint8)
    cv2.fillPoly(crop, [pts - (left, top)], 1)
    return crop.astype(bool), int(left), int(top)


def mask_iou_matrix(truths: list[np.ndarray], predicted: list[np.ndarray]) -> np.ndarray:
    """IoU of every labelled outline with every predicted one, their pixels filled at the image's
    resolution; only pairs whose extents overlap are compared pixel by pixel."""
    out = np.zeros((len(truths), len(predicted)))
    true_masks, pred_masks = [_filled(p) for p in truths], [_filled(p) for p in predicted]
    for i, (tm, tx, ty) in enumerate(true_masks):
        t_area = int(tm.sum())
        for j, (pm, px, py) in enumerate(pred_masks):
            x1, y1 = max(tx, px), max(ty, py)
            x2, y2 = min(tx + tm.shape[1], px + pm.shape[1]), min(ty + tm.shape[0], py + pm.shape[0])
            if x2 <= x1 or y2 <= y1:
                continue
            inter = int((tm[y1 - ty:y2 - ty, x1 - tx:x2 - tx] & pm[y1 - py:y2 - py, x1 - px:x2 - px]).sum())
            union = t_area + int(pm.sum()) - inter
            out[i, j] = inter / union if union else 0.0
    return out


def oks_matrix(true_points: np.ndarray, true_boxes: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Object keypoint similarity of every labelled pose (``T×nk×3``) with every predicted one (``N×nk×3``),
    as ultralytics' pose validator computes it (COCO's sigmas for 17 keypoints, else 1/nk each)."""
    from ultralytics.utils.metrics import OKS_SIGMA

    nk = true_points.shape[1]
    sigma = np.asarray(OKS_SIGMA if nk == len(OKS_SIGMA) else np.ones(nk) / nk)
    area = (true_boxes[:, 2] - true_boxes[:, 0]) * (true_boxes[:, 3] - true_boxes[:, 1]) * OKS_AREA
    d = ((true_points[:, None, :, :2] - points[None, :, :, :2]) ** 2).sum(-1)  # T×N×nk
    e = d / ((2 * sigma) ** 2 * (area[:, None, None] + 1e-7) * 2)
    labelled = true_points[..., 2] != 0
    return (np.exp(-e) * labelled[:, None]).sum(-1) / (labelled.sum(-1)[:, None] + 1e-7)


Stats = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def image_stats(true_boxes: np.ndarray, true_classes: np.ndarray, boxes: np.ndarray, classes: np.ndarray,
                conf: np.ndarray) -> Stats:
    """One image's contribution to :func:`mean_ap`: its hits, confidences, predicted and true classes."""
    return match(true_boxes, true_classes, boxes, classes), conf, classes, true_classes


def task_stats(truth: Truth, found: Predicted) -> Stats | None:
    """One image's contribution to the mask or pose mAP (None when neither the labels nor the answer have
    outlines or keypoints)."""
    if truth.polygons is not None and found.polygons is not None:
        overlap = mask_iou_matrix(truth.polygons, found.polygons)
    elif truth.keypoints is not None and found.keypoints is not None and len(found.keypoints) and len(truth.boxes):
        overlap = oks_matrix(truth.keypoints, truth.boxes, found.keypoints)
    elif truth.keypoints is not None and found.keypoints is not None:
        overlap = np.zeros((len(truth.boxes), len(found.boxes)))
    else:
        return None
    return match_scores(overlap, truth.classes, found.classes), found.conf, found.classes, truth.classes


def mean_ap(stats: list[Stats]) -> tuple[float, float]:
    """mAP50 and mAP50-95 in points, from (hits, confidences, predicted classes, true classes) per image."""
    from ultralytics.utils.metrics import ap_per_class

    hits, conf, pred_cls, target_cls = (np.concatenate(parts) for parts in zip(*stats, strict=True))
    if not len(target_cls):
        return 0.0, 0.0
    ap = ap_per_class(hits, conf, pred_cls, target_cls)[5]
    return round(100 * float(ap[:, 0].mean()), 2), round(100 * float(ap.mean()), 2)


Predict = Callable[[Path], Predicted]


def evaluate(predict: Predict, truths: list[Truth]) -> tuple[tuple[float, float], tuple[float, float] | None]:
    """``predict`` on every image, scored: box mAP50 and mAP50-95, and the mask or pose figures when the
    labels and the answers carry outlines or keypoints."""
    stats, extra = [], []
    for truth in truths:
        found = predict(truth.path)
        stats.append(image_stats(truth.boxes, truth.classes, found.boxes, found.classes, found.conf))
        more = task_stats(truth, found)
        if more is not None:
            extra.append(more)
    return mean_ap(stats), (mean_ap(extra) if extra and len(extra) == len(truths) else None)


def detbot_predict(detector: Any) -> Predict:
    """detbot's own path: decoding, letterbox, engine, merge-NMS post-processing, outlines from the masks'
    prototypes or keypoints."""
    params = DetectParams(EVAL_CONFIDENCE)

    def predict(path: Path) -> Predicted:
        det = detector.detect(path, params, max_detections=EVAL_MAX_DETECTIONS)
        boxes = np.array([b.xyxy for b in det.boxes], np.float64).reshape(-1, 4)
        polygons = keypoints = None
        if det.task == "segment":
            polygons = [np.asarray(b.polygon or (), np.float64).reshape(-1, 2) for b in det.boxes]
        if det.task == "pose":
            nk = detector.model_task.keypoints
            keypoints = np.array([b.keypoints or () for b in det.boxes], np.float64).reshape(-1, nk, 3)
        return Predicted(boxes, np.array([b.class_id for b in det.boxes], int),
                         np.array([b.confidence for b in det.boxes]), polygons, keypoints)

    return predict


def _yolo(model: str) -> Any:
    from detector.runtime import disable_analytics, quiet_ultralytics

    quiet_ultralytics()
    from ultralytics import YOLO

    disable_analytics()
    return YOLO(model)


def ultralytics_predict(model: str, imgsz: int | None) -> Predict:
    """ultralytics' ``predict()`` (one label per box, as every answer of a detection service has), with its
    masks' outlines (``masks.xy``) or keypoints."""
    yolo = _yolo(model)
    kwargs = {"imgsz": imgsz} if imgsz else {}

    def predict(path: Path) -> Predicted:
        result = yolo.predict(str(path), conf=EVAL_CONFIDENCE, max_det=EVAL_MAX_DETECTIONS, device="cpu",
                              verbose=False, **kwargs)[0]
        data = result.boxes.data.cpu().numpy().astype(np.float64)
        polygons = keypoints = None
        if yolo.task == "segment":
            polygons = [np.asarray(xy, np.float64) for xy in result.masks.xy] if result.masks is not None else []
        if yolo.task == "pose" and result.keypoints is not None:
            keypoints = result.keypoints.data.cpu().numpy().astype(np.float64)
        return Predicted(data[:, :4], data[:, 5].astype(int), data[:, 4], polygons, keypoints)

    return predict


def reference(model: str, data: str, imgsz: int | None, images: int) -> Score:
    """ultralytics' own ``val()`` on the same data: the reference figures. Note that ``val()`` runs NMS
    multi-label (one candidate box may count once per class above the floor), which no single answer can
    show, so it scores a few points above any one-label path, ultralytics' own ``predict()`` included."""
    started = time.perf_counter()
    kwargs = {"imgsz": imgsz} if imgsz else {}
    yolo = _yolo(model)
    metrics = yolo.val(data=data, batch=1, device="cpu", plots=False, verbose=False, **kwargs)
    seconds = time.perf_counter() - started
    row = Score("ultralytics val()", round(100 * metrics.box.map50, 2), round(100 * metrics.box.map, 2),
                images, round(seconds, 1))
    metric = TASK_METRIC.get(yolo.task)
    if metric:
        figures = metrics.seg if metric == "mask" else metrics.pose
        row.task_metric, row.task_map50, row.task_map50_95 = metric, round(100 * figures.map50, 2), round(
            100 * figures.map, 2)
    return row


def score(name: str, predict: Predict, truths: list[Truth], started: float, task: str = "detect") -> Score:
    (map50, map50_95), extra = evaluate(predict, truths)
    row = Score(name, map50, map50_95, len(truths), round(time.perf_counter() - started, 1))
    if extra is not None and task in TASK_METRIC:
        row.task_metric, (row.task_map50, row.task_map50_95) = TASK_METRIC[task], extra
    return row


Variant = tuple[str, bool, str]  # backend, INT8, OpenVINO precision


def variants(requested: list[str], int8: bool, precisions: tuple[str, ...] = ("auto",)) -> list[Variant]:
    """Each backend; OpenVINO once per precision asked, and INT8 (in the first precision) when possible."""
    out: list[Variant] = []
    for backend in requested:
        out += [(backend, False, p) for p in (precisions if backend == "openvino" else ("auto",))]
    if int8 and "openvino" in requested:
        out.append(("openvino", True, precisions[0]))
    return out


def score_variant(model: str, backend: str, int8: bool, data: str, truths: list[Truth], cache: Path,
                  imgsz: int | None, precision: str = "auto") -> Score:
    from detector.model import Detector

    started = time.perf_counter()
    detector = Detector(model, backend=backend, device="cpu", export_dir=cache, imgsz=imgsz, int8=int8,
                        int8_data=data if int8 else None, use_idle_cores=False, max_detections=EVAL_MAX_DETECTIONS,
                        precision=precision)
    detector.prepared.wait()  # every canvas compiled: the photos run as a worker's would after start-up
    name = f"detbot {detector.backend}{'-int8' if int8 and detector.backend != 'torch' else ''}"
    if detector.backend == "openvino":
        name += f" ({detector.precision.name})"
    return score(name, detbot_predict(detector), truths, started, detector.task)


def run(model: str, data: str, backends: list[str], imgsz: int | None, cache: Path,
        precisions: tuple[str, ...] = ("auto",)) -> list[Score]:
    """The reference rows (ultralytics val() and predict()), then one row per detbot backend, each with
    its difference to val()."""
    from detector.runtime import quiet_ultralytics

    quiet_ultralytics()  # before ultralytics is first imported: no banner or progress bars in the table
    truths, _names = load_dataset(data)
    int8 = importlib.util.find_spec("nncf") is not None
    rows = [reference(model, data, imgsz, len(truths))]
    task = next((t for t, m in TASK_METRIC.items() if m == rows[0].task_metric), "detect")
    rows.append(score("ultralytics predict()", ultralytics_predict(model, imgsz), truths, time.perf_counter(),
                      task))
    for backend, quantised, precision in variants(backends, int8, precisions):
        rows.append(score_variant(model, backend, quantised, data, truths, cache, imgsz, precision))
    for row in rows[1:]:
        row.delta_map50 = round(row.map50 - rows[0].map50, 2)
        row.delta_map50_95 = round(row.map50_95 - rows[0].map50_95, 2)
        row.delta_task_map50 = round(row.task_map50 - rows[0].task_map50, 2)
        row.delta_task_map50_95 = round(row.task_map50_95 - rows[0].task_map50_95, 2)
    return rows


def table(rows: list[Score]) -> str:
    """The rows as a Markdown table: box figures, then the mask or pose figures of a segmentation or pose
    model."""
    metric = next((r.task_metric for r in rows if r.task_metric), "")
    head = "| variant | mAP50 | mAP50-95 | Δ mAP50 | Δ mAP50-95 |"
    if metric:
        head += f" {metric} mAP50 | {metric} mAP50-95 | Δ {metric} mAP50 | Δ {metric} mAP50-95 |"
    lines = [head + " images | seconds |", "|---" * (head.count("|") + 1) + "|"]
    for r in rows:
        line = f"| {r.variant} | {r.map50:.2f} | {r.map50_95:.2f} | {r.delta_map50:+.2f} | {r.delta_map50_95:+.2f} |"
        if metric:
            line += (f" {r.task_map50:.2f} | {r.task_map50_95:.2f} | {r.delta_task_map50:+.2f} | "
                     f"{r.delta_task_map50_95:+.2f} |")
        lines.append(line + f" {r.images} | {r.seconds:.1f} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="YOLO weights (.pt)")
    parser.add_argument("--data", required=True, help="an ultralytics dataset YAML (its 'val' split is used)")
    parser.add_argument("--backends", default="torch,onnx,openvino", help="comma-separated backends")
    parser.add_argument("--imgsz", type=int, help="inference size (default: the model's own)")
    parser.add_argument("--json", type=Path, help="write the rows as JSON to this file")
    parser.add_argument("--cache", type=Path, help="export cache folder (default: a temporary one)")
    parser.add_argument("--precision", default="auto",
                        help="OpenVINO's precision(s), comma-separated: auto, bf16, f32 (default auto)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="detbot bench accuracy", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    with tempfile.TemporaryDirectory(prefix="detbot-accuracy-") as tmp:
        precisions = tuple(p.strip() for p in args.precision.split(",") if p.strip()) or ("auto",)
        rows = run(args.model, args.data, backends, args.imgsz, args.cache or Path(tmp), precisions)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
