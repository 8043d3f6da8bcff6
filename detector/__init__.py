"""Pure object detection on top of ultralytics YOLO: no Telegram, no queue, no Redis.

Heavy imports (torch, ultralytics) happen when a :class:`Detector` is built, not on ``import detector``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from detector.errors import (
    CorruptImageError,
    DetectorError,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    InvalidConfidenceError,
    ModelLoadError,
    NotAnImageError,
    UnknownClassError,
    UnsupportedFormatError,
)
from detector.render import format_text, summary_line
from detector.result import Box, Detection, Timings
from detector.settings import DetectorSettings

if TYPE_CHECKING:
    from detector.model import Detector

__all__ = [
    "Box",
    "CorruptImageError",
    "Detection",
    "Detector",
    "DetectorError",
    "DetectorSettings",
    "EmptyImageError",
    "ImageError",
    "ImageTooLargeError",
    "InvalidConfidenceError",
    "ModelLoadError",
    "NotAnImageError",
    "Timings",
    "UnknownClassError",
    "UnsupportedFormatError",
    "format_text",
    "summary_line",
]


def __getattr__(name: str) -> Any:
    if name == "Detector":
        from detector.model import Detector

        return Detector
    raise AttributeError(name)
