"""Accuracy of the inference backends on the shapes model: do they all find what PyTorch finds?

``detbot bench --accuracy``: on fresh shapes images (seeds the model never saw) every exported backend is
compared with PyTorch object by object (same objects found, box IoU, confidence difference), and each
backend's mAP50 is computed on the shapes validation set as ``yolo val`` computes it. ``--int8`` adds an
INT8 OpenVINO export calibrated on the shapes training images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from detector.params import DetectParams
from ops.shapes import CLASSES, VAL_IMAGES, VAL_SEED, iou, make_images, write_dataset

# Shapes images for the agreement check: seeds the shapes model never saw (1 and 2 are its train/val).
AGREEMENT_SEED = 1000
AGREEMENT_IMAGES = 96
# Boxes are compared down to this confidence, and must agree from AGREEMENT_CONFIDENCE up: a box at 0.26 in
# one backend and 0.24 in another is the same answer, not a disagreement.
AGREEMENT_FLOOR = 0.15
AGREEMENT_CONFIDENCE = 0.3
EXPORTED = ("onnx", "openvino")
# INT8 calibration images: NNCF's statistics settle well before this; more only makes the export slower.
CALIBRATION_IMAGES = 128


def accuracy(model: Path, work: Path, backends: list[str], calibration: str | None) -> dict[str, Any]:
    """On the shapes model: every backend against PyTorch on fresh images (same objects, IoU, confidence),
    and mAP50 on the shapes validation set for each backend (and INT8 when ``calibration`` is given)."""
    from detector.model import Detector

    fresh = make_images(AGREEMENT_SEED, AGREEMENT_IMAGES)
    images, truths = [img for img, _ in fresh], [shapes for _, shapes in fresh]
    val = make_images(VAL_SEED, VAL_IMAGES)
    reference = Detector(str(model), backend="torch", device="cpu")
    ref = [reference.detect(img, DetectParams(AGREEMENT_FLOOR)) for img in images]
    report: dict[str, Any] = {
        "agreement_images": len(images), "objects": sum(len(t) for t in truths),
        "map50": {"torch": map50(reference, val)},
    }
    variants = [(b, False) for b in backends if b in EXPORTED] + ([("openvino", True)] if calibration else [])
    for backend, int8 in variants:
        det = Detector(str(model), backend=backend, device="cpu", export_dir=str(work / "cache-accuracy"),
                       int8=int8, int8_data=calibration)
        name = f"{det.backend}-int8" if int8 and det.backend != "torch" else det.backend
        report[name] = compare(ref, [det.detect(img, DetectParams(AGREEMENT_FLOOR)) for img in images], truths)
        report["map50"][name] = map50(det, val)
    return report


def map50(detector: Any, dataset: list[tuple[Any, list[Any]]]) -> float:
    """mAP50 over the classes at ``yolo val``'s floor: the matching and AP of ``detbot bench accuracy``
    (:mod:`ops.accuracy`), so the shapes figure and the real-data figures are one computation."""
    import numpy as np

    from ops.accuracy import EVAL_CONFIDENCE, EVAL_MAX_DETECTIONS, image_stats, mean_ap

    ids = {name: i for i, name in detector.names.items()}
    stats = []
    for img, shapes in dataset:
        det = detector.detect(img, DetectParams(EVAL_CONFIDENCE), max_detections=EVAL_MAX_DETECTIONS)
        boxes = np.array([b.xyxy for b in det.boxes], np.float64).reshape(-1, 4)
        true_boxes = np.array([s.box for s in shapes], np.float64).reshape(-1, 4)
        stats.append(image_stats(true_boxes, np.array([ids[s.name] for s in shapes], int), boxes,
                                 np.array([b.class_id for b in det.boxes], int),
                                 np.array([b.confidence for b in det.boxes])))
    return mean_ap(stats)[0]


def compare(reference: list[Any], other: list[Any], truths: list[list[Any]]) -> dict[str, Any]:
    """Per drawn object: the most confident box of its class on it (IoU >= 0.5) in each result. An object
    clearly found (>= AGREEMENT_CONFIDENCE) by one must be found by the other; then their boxes' IoU and
    confidence difference are the figures. A duplicate box one backend merges and another keeps is not an
    object, and a box near the threshold may fall on either side of it."""
    unmatched, worst_iou, worst_conf, objects = 0, 1.0, 0.0, 0
    for ref, got, shapes in zip(reference, other, truths, strict=True):
        for shape in shapes:
            a, b = _object_box(ref.boxes, shape), _object_box(got.boxes, shape)
            if max((x.confidence for x in (a, b) if x is not None), default=0.0) < AGREEMENT_CONFIDENCE:
                continue
            objects += 1
            if a is None or b is None:
                unmatched += 1
                continue
            worst_iou = min(worst_iou, iou(a.xyxy, b.xyxy))
            worst_conf = max(worst_conf, abs(a.confidence - b.confidence))
    return {"objects": objects, "unmatched": unmatched, "worst_iou": round(worst_iou, 4),
            "worst_conf_diff": round(worst_conf, 4)}


def _object_box(boxes: Any, shape: Any) -> Any:
    on_it = [b for b in boxes if b.class_name == shape.name and iou(b.xyxy, shape.box) >= 0.5]
    return max(on_it, key=lambda b: b.confidence) if on_it else None


def calibration_data(work: Path) -> str:
    """A YOLO dataset YAML whose 'val' images are the shapes *training* images: INT8 is calibrated on
    them and judged on the validation set, which it never saw."""
    root = work / "shapes-data"
    write_dataset(root)
    images = sorted((root / "images" / "train").glob("*.jpg"))[:CALIBRATION_IMAGES]
    (root / "calibration.txt").write_text("".join(f"{p}\n" for p in images))
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASSES))
    path = root / "calibration.yaml"
    path.write_text(f"path: {root}\ntrain: calibration.txt\nval: calibration.txt\nnames:\n{names}\n")
    return str(path)
