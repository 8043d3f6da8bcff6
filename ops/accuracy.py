"""``detbot bench accuracy``: mAP50 and mAP50-95 of detbot's own path, per backend, on a YOLO dataset.

Each backend (PyTorch, ONNX Runtime, OpenVINO, OpenVINO INT8 when nncf is installed) runs the way a worker
runs it — detbot's decoding, letterbox, engine and merge-NMS post-processing — at the evaluation floor
ultralytics itself uses (confidence 0.001, up to 300 boxes). Matching and AP are ultralytics' own
(greedy matching per IoU threshold 0.50…0.95, ``ap_per_class``), and ``YOLO(model).val()`` on the same
images is the reference, so the difference in points is detbot's path and nothing else.
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
from typing import Any

import numpy as np

from detector.params import DetectParams

# ultralytics' own validation floor and box cap: mAP needs the whole precision-recall curve.
EVAL_CONFIDENCE = 0.001
EVAL_MAX_DETECTIONS = 300
# COCO's ten IoU thresholds, 0.50 to 0.95.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
# A backend whose mAP50-95 is this many points below PyTorch's loses accuracy people would notice.
MAX_MAP_LOSS = 1.0


@dataclass(frozen=True)
class Truth:
    """One image's labelled boxes: class ids and x1, y1, x2, y2 in pixels."""

    path: Path
    classes: np.ndarray
    boxes: np.ndarray


@dataclass
class Score:
    """One row of the table."""

    variant: str
    map50: float
    map50_95: float
    images: int
    seconds: float
    delta_map50: float = 0.0
    delta_map50_95: float = 0.0


def load_dataset(data: str, split: str = "val") -> tuple[list[Truth], dict[int, str]]:
    """The images of ``split`` with their labels, read the way ultralytics reads a dataset YAML."""
    from PIL import Image
    from ultralytics.data.utils import check_det_dataset, img2label_paths

    info = check_det_dataset(data, autodownload=False)
    folders = info[split] if isinstance(info[split], list) else [info[split]]
    images = sorted(p for f in folders for p in Path(f).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    truths = []
    for image, label in zip(images, img2label_paths([str(p) for p in images]), strict=True):
        with Image.open(image) as img:
            w, h = img.size
        rows = np.loadtxt(label, ndmin=2) if Path(label).is_file() else np.zeros((0, 5))
        rows = rows.reshape(-1, 5)
        xy, wh = rows[:, 1:3] * (w, h), rows[:, 3:5] * (w, h) / 2
        truths.append(Truth(image, rows[:, 0].astype(int), np.concatenate([xy - wh, xy + wh], axis=1)))
    return truths, {int(k): str(v) for k, v in info["names"].items()}


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
    correct = np.zeros((len(boxes), len(IOU_THRESHOLDS)), bool)
    if not len(boxes) or not len(true_boxes):
        return correct
    iou = iou_matrix(true_boxes, boxes) * (true_classes[:, None] == classes[None, :])
    claimed = np.zeros((len(true_boxes), len(IOU_THRESHOLDS)), bool)
    for j in np.flatnonzero((iou >= IOU_THRESHOLDS[0]).any(axis=0)):
        free = np.where(claimed, 0.0, iou[:, j, None])
        best = free.argmax(axis=0)
        correct[j] = free[best, range(len(IOU_THRESHOLDS))] >= IOU_THRESHOLDS
        claimed[best, range(len(IOU_THRESHOLDS))] |= correct[j]
    return correct


Stats = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def image_stats(true_boxes: np.ndarray, true_classes: np.ndarray, boxes: np.ndarray, classes: np.ndarray,
                conf: np.ndarray) -> Stats:
    """One image's contribution to :func:`mean_ap`: its hits, confidences, predicted and true classes."""
    return match(true_boxes, true_classes, boxes, classes), conf, classes, true_classes


def mean_ap(stats: list[Stats]) -> tuple[float, float]:
    """mAP50 and mAP50-95 in points, from (hits, confidences, predicted classes, true classes) per image."""
    from ultralytics.utils.metrics import ap_per_class

    hits, conf, pred_cls, target_cls = (np.concatenate(parts) for parts in zip(*stats, strict=True))
    if not len(target_cls):
        return 0.0, 0.0
    ap = ap_per_class(hits, conf, pred_cls, target_cls)[5]
    return round(100 * float(ap[:, 0].mean()), 2), round(100 * float(ap.mean()), 2)


Predict = Callable[[Path], tuple[np.ndarray, np.ndarray, np.ndarray]]


def evaluate(predict: Predict, truths: list[Truth]) -> tuple[float, float]:
    """``predict`` (image -> xyxy boxes, class ids, confidences, best first) on every image, scored."""
    stats = []
    for truth in truths:
        boxes, classes, conf = predict(truth.path)
        stats.append(image_stats(truth.boxes, truth.classes, boxes, classes, conf))
    return mean_ap(stats)


def detbot_predict(detector: Any) -> Predict:
    """detbot's own path: decoding, letterbox, engine, merge-NMS post-processing."""
    params = DetectParams(EVAL_CONFIDENCE)

    def predict(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        det = detector.detect(path, params, max_detections=EVAL_MAX_DETECTIONS)
        boxes = np.array([b.xyxy for b in det.boxes], np.float64).reshape(-1, 4)
        return boxes, np.array([b.class_id for b in det.boxes], int), np.array([b.confidence for b in det.boxes])

    return predict


def _yolo(model: str) -> Any:
    from detector.runtime import disable_analytics, quiet_ultralytics

    quiet_ultralytics()
    from ultralytics import YOLO

    disable_analytics()
    return YOLO(model, task="detect")


def ultralytics_predict(model: str, imgsz: int | None) -> Predict:
    """ultralytics' ``predict()`` (one label per box, as every answer of a detection service has)."""
    yolo = _yolo(model)
    kwargs = {"imgsz": imgsz} if imgsz else {}

    def predict(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        result = yolo.predict(str(path), conf=EVAL_CONFIDENCE, max_det=EVAL_MAX_DETECTIONS, device="cpu",
                              verbose=False, **kwargs)[0]
        data = result.boxes.data.cpu().numpy().astype(np.float64)
        return data[:, :4], data[:, 5].astype(int), data[:, 4]

    return predict


def reference(model: str, data: str, imgsz: int | None, images: int) -> Score:
    """ultralytics' own ``val()`` on the same data: the reference figures. Note that ``val()`` runs NMS
    multi-label (one candidate box may count once per class above the floor), which no single answer can
    show, so it scores a few points above any one-label path, ultralytics' own ``predict()`` included."""
    started = time.perf_counter()
    kwargs = {"imgsz": imgsz} if imgsz else {}
    metrics = _yolo(model).val(data=data, batch=1, device="cpu", plots=False, verbose=False, **kwargs)
    seconds = time.perf_counter() - started
    return Score("ultralytics val()", round(100 * metrics.box.map50, 2), round(100 * metrics.box.map, 2),
                 images, round(seconds, 1))


def score(name: str, predict: Predict, truths: list[Truth], started: float) -> Score:
    map50, map50_95 = evaluate(predict, truths)
    return Score(name, map50, map50_95, len(truths), round(time.perf_counter() - started, 1))


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
    return score(name, detbot_predict(detector), truths, started)


def run(model: str, data: str, backends: list[str], imgsz: int | None, cache: Path,
        precisions: tuple[str, ...] = ("auto",)) -> list[Score]:
    """The reference rows (ultralytics val() and predict()), then one row per detbot backend, each with
    its difference to val()."""
    from detector.runtime import quiet_ultralytics

    quiet_ultralytics()  # before ultralytics is first imported: no banner or progress bars in the table
    truths, _names = load_dataset(data)
    int8 = importlib.util.find_spec("nncf") is not None
    rows = [reference(model, data, imgsz, len(truths))]
    rows.append(score("ultralytics predict()", ultralytics_predict(model, imgsz), truths, time.perf_counter()))
    for backend, quantised, precision in variants(backends, int8, precisions):
        rows.append(score_variant(model, backend, quantised, data, truths, cache, imgsz, precision))
    for row in rows[1:]:
        row.delta_map50 = round(row.map50 - rows[0].map50, 2)
        row.delta_map50_95 = round(row.map50_95 - rows[0].map50_95, 2)
    return rows


def table(rows: list[Score]) -> str:
    lines = ["| variant | mAP50 | mAP50-95 | Δ mAP50 | Δ mAP50-95 | images | seconds |", "|---" * 7 + "|"]
    for r in rows:
        lines.append(f"| {r.variant} | {r.map50:.2f} | {r.map50_95:.2f} | {r.delta_map50:+.2f} | "
                     f"{r.delta_map50_95:+.2f} | {r.images} | {r.seconds:.1f} |")
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
