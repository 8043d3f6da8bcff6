"""The Detector: one YOLO model, loaded and warmed once, used for every image."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detector.errors import InvalidConfidenceError, ModelLoadError, UnknownClassError
from detector.image import ImageInput, load_image
from detector.result import Box, Detection, Timings
from detector.runtime import disable_analytics, quiet_ultralytics
from detector.settings import (
    DEFAULT_CONFIDENCE,
    DEFAULT_MAX_DETECTIONS,
    DEFAULT_MAX_PIXELS,
    JPEG_QUALITY,
    MAX_ANNOTATED_SIDE,
    DetectorSettings,
)

log = logging.getLogger(__name__)

# The size ultralytics' own detection models are trained at; used only when a checkpoint does not say.
FALLBACK_IMGSZ = 640


def _model_imgsz(model: Any) -> int | None:
    """The training size stored in the checkpoint or export metadata, if any."""
    for source in (getattr(model, "overrides", None), (getattr(model, "ckpt", None) or {}).get("train_args")):
        imgsz = (source or {}).get("imgsz")
        if isinstance(imgsz, int):
            return imgsz
        if isinstance(imgsz, (list, tuple)) and imgsz:
            return int(max(imgsz))
    return None


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda:0"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def load_yolo(weights: str) -> Any:
    """Load YOLO weights (path or ultralytics name) or fail with one line saying how to fix it."""
    quiet_ultralytics()
    from ultralytics import YOLO

    disable_analytics()
    try:
        return YOLO(weights, task="detect")
    except Exception as exc:  # ultralytics raises anything from FileNotFoundError to ConnectionError
        where = "a file that does not exist" if "/" in weights or Path(weights).suffix not in (".pt", "") else (
            "not on disk and could not be downloaded (no internet?)"
        )
        raise ModelLoadError(
            f"Cannot load the YOLO model {weights!r}: {where}. Set DETBOT_MODEL to the path of YOLO weights "
            f"(e.g. DETBOT_MODEL=/models/best.pt) or to an ultralytics model name such as yolo26n.pt."
        ) from exc


class Detector:
    """Loads a YOLO model once and runs it on one image at a time.

    Not thread-safe by design: torch inference on one model from several threads is a classic crash.
    Calls are serialised with a lock; run one Detector per process (or per thread) to scale.
    """

    def __init__(
        self,
        model: str = "yolo26n.pt",
        *,
        device: str = "auto",
        imgsz: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_detections: int = DEFAULT_MAX_DETECTIONS,
        warmup: bool = True,
    ) -> None:
        started = time.perf_counter()
        self.weights = model
        self.device = _resolve_device(device)
        self.max_pixels = max_pixels
        self.max_detections = max_detections
        self._yolo = load_yolo(model)
        self.names: dict[int, str] = {int(k): str(v) for k, v in self._yolo.names.items()}
        self._ids_by_name = {v.lower(): k for k, v in self.names.items()}
        self.imgsz = imgsz or _model_imgsz(self._yolo) or FALLBACK_IMGSZ
        self._lock = threading.Lock()
        if warmup:
            self.warmup()
        self.load_seconds = time.perf_counter() - started

    @classmethod
    def from_settings(cls, settings: DetectorSettings, *, warmup: bool = True) -> Detector:
        return cls(
            settings.model,
            device=settings.device,
            imgsz=settings.imgsz,
            max_pixels=settings.max_pixels,
            max_detections=settings.max_detections,
            warmup=warmup,
        )

    @property
    def model_name(self) -> str:
        return Path(self.weights).name

    def warmup(self) -> None:
        """One inference on a blank image so the first real photo does not pay for lazy initialisation."""
        self._predict(np.full((self.imgsz, self.imgsz, 3), 114, np.uint8), 0.5, None, 1)

    def class_ids(self, classes: Sequence[str] | None) -> list[int] | None:
        """Class names (case-insensitive) to ids; an unknown name is an error listing the known ones."""
        if not classes:
            return None
        unknown = [c for c in classes if c.lower() not in self._ids_by_name]
        if unknown:
            known = ", ".join(sorted(self.names.values()))
            raise UnknownClassError(f"Unknown class {', '.join(unknown)}. This model knows: {known}.")
        return sorted({self._ids_by_name[c.lower()] for c in classes})

    def _predict(self, image: np.ndarray, confidence: float, ids: list[int] | None, max_det: int) -> Any:
        with self._lock:
            return self._yolo.predict(
                image, conf=confidence, classes=ids, max_det=max_det, imgsz=self.imgsz,
                device=self.device, verbose=False,
            )[0]

    def _run(
        self, image: ImageInput, confidence: float, classes: Sequence[str] | None, max_detections: int | None
    ) -> tuple[np.ndarray, Any, Detection]:
        if not 0.0 < confidence <= 1.0:
            raise InvalidConfidenceError(f"Confidence must be above 0 and at most 1, got {confidence}.")
        ids = self.class_ids(classes)
        t0 = time.perf_counter()
        array = load_image(image, self.max_pixels)
        t1 = time.perf_counter()
        result = self._predict(array, confidence, ids, max_detections or self.max_detections)
        t2 = time.perf_counter()
        det = Detection(
            boxes=self._boxes(result),
            width=int(array.shape[1]),
            height=int(array.shape[0]),
            confidence=confidence,
            classes=tuple(self.names[i] for i in ids) if ids else None,
            model=self.model_name,
            timings=Timings(decode_ms=(t1 - t0) * 1e3, inference_ms=(t2 - t1) * 1e3),
        )
        return array, result, det

    def _boxes(self, result: Any) -> tuple[Box, ...]:
        data = result.boxes.data.cpu().numpy() if result.boxes is not None else np.zeros((0, 6))
        boxes = [
            Box(int(c), self.names[int(c)], round(float(p), 4), *(round(float(v), 1) for v in (x1, y1, x2, y2)))
            for x1, y1, x2, y2, p, c in data[:, :6]
        ]
        return tuple(sorted(boxes, key=lambda b: -b.confidence))

    def detect(
        self,
        image: ImageInput,
        confidence: float = DEFAULT_CONFIDENCE,
        classes: Sequence[str] | None = None,
        max_detections: int | None = None,
    ) -> Detection:
        """Find objects in one image (bytes, path or BGR array)."""
        return self._run(image, confidence, classes, max_detections)[2]

    def detect_annotated(
        self,
        image: ImageInput,
        confidence: float = DEFAULT_CONFIDENCE,
        classes: Sequence[str] | None = None,
        max_detections: int | None = None,
    ) -> tuple[Detection, bytes]:
        """Like :meth:`detect`, plus the image with boxes and labels drawn, as JPEG bytes."""
        _, result, det = self._run(image, confidence, classes, max_detections)
        t0 = time.perf_counter()
        jpeg = encode_jpeg(result.plot())
        annotate_ms = (time.perf_counter() - t0) * 1e3
        timings = Timings(det.timings.decode_ms, det.timings.inference_ms, annotate_ms)
        return Detection(det.boxes, det.width, det.height, det.confidence, det.classes, det.model, timings), jpeg


def encode_jpeg(image: np.ndarray, max_side: int = MAX_ANNOTATED_SIDE, quality: int = JPEG_QUALITY) -> bytes:
    """BGR array to JPEG bytes, the long side capped so Telegram accepts it as a photo."""
    h, w = image.shape[:2]
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
