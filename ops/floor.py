"""The floor of ``detbot bench``: what a photo costs at the very least with a given engine, to set detbot's
own cost beside.

Per photo: decoding its JPEG (OpenCV), the engine alone on the photo's letterboxed input — letterboxed
beforehand, at its own shape, compiled beforehand for exactly that shape, with the same runtime, threads and
precision as detbot — and encoding the answer's JPEG (the photo at its size, as :func:`detector.draw.encode_jpeg`
does it). Nothing else: no header checks, no letterbox, no NMS, no drawing, no locks, no Python around it.
detbot's cost divided by this one is how close its pipeline comes to the engine's limit.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

FloorRun = Callable[[bytes, int], dict[str, float]]


def floor_runner(backend: str, weights: str, imgsz: int | None, export_dir: str, threads: int, int8: bool,
                 int8_data: str | None, precision: str, photos: list[bytes]) -> tuple[FloorRun, dict[str, Any]]:
    """The floor's ``run(data, waiting)`` for the photos given (their inputs prepared here, once) and what
    the bench reports about it."""
    import cv2
    import numpy as np

    from detector import engines, export_cache
    from detector.draw import encode_jpeg
    from detector.processing import letterbox
    from detector.runtime import configure_threads

    configure_threads(threads)
    engine: Any
    if backend == "torch":
        from detector.model import load_yolo

        yolo = load_yolo(weights)
        configure_threads(threads)
        engine = engines.TorchEngine(yolo, "cpu")
        size = imgsz or export_cache.checkpoint_imgsz(yolo) or export_cache.FALLBACK_IMGSZ
        stride = engine.stride
    else:
        spec = export_cache.ExportSpec(Path(weights), backend, imgsz, int8, int8_data)
        export = export_cache.ensure_export(spec, Path(export_dir))
        size, stride = export.imgsz, export.stride
    def decode(data: bytes) -> np.ndarray:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError("a photo OpenCV cannot decode: the floor is defined for decodable JPEGs")
        return image

    decoded = [decode(d) for d in photos]
    fitted = {id(d): letterbox(image, size, stride)[0] for d, image in zip(photos, decoded, strict=True)}
    shapes = sorted({f.shape[:2] for f in fitted.values()})
    chosen = engines.choose_precision(precision)
    if backend == "openvino":
        engine = engines.OpenVINOEngine(export.path, threads, shapes, chosen.name)
        for shape in shapes:  # every shape compiled beforehand: the engine never waits
            engine.prepare(shape)
    elif backend == "onnx":
        engine = engines.OnnxEngine(export.path, threads)
    for image in fitted.values():  # first runs (lazy initialisation) are not the floor either
        engine(image)

    def run(data: bytes, waiting: int) -> dict[str, float]:
        image = decode(data)
        engine(fitted[id(data)])
        encode_jpeg(image)
        return {}

    info = {"backend": backend, "threads": threads, "shapes": len(shapes),
            "precision": chosen.name if backend == "openvino" else "f32"}
    return run, info
