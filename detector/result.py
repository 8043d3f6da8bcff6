"""The typed result of one detection; plain data that survives a JSON round trip."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Box:
    """One detected object, in pixels of the original (EXIF-rotated) image."""

    class_id: int
    class_name: str
    confidence: float
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return self.x1, self.y1, self.x2, self.y2


@dataclass(frozen=True)
class Timings:
    """Milliseconds spent in each stage; ``annotate_ms`` is 0 when no image was drawn. ``threads``: how many
    the inference ran on (more than the worker's own share when idle cores were borrowed; 0: not known)."""

    decode_ms: float = 0.0
    inference_ms: float = 0.0
    annotate_ms: float = 0.0
    threads: int = 0

    @property
    def total_ms(self) -> float:
        return self.decode_ms + self.inference_ms + self.annotate_ms


@dataclass(frozen=True)
class Detection:
    """All boxes found in one image, highest confidence first, and how they were found."""

    boxes: tuple[Box, ...]
    width: int
    height: int
    confidence: float
    classes: tuple[str, ...] | None = None
    model: str = ""
    timings: Timings = field(default_factory=Timings)
    # Per-class thresholds that differed from ``confidence`` (class name as compared -> threshold).
    class_confidence: dict[str, float] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Boxes per class name, most frequent first (ties by name)."""
        counts: dict[str, int] = {}
        for box in self.boxes:
            counts[box.class_name] = counts.get(box.class_name, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["boxes"] = [asdict(b) for b in self.boxes]
        data["classes"] = list(self.classes) if self.classes is not None else None
        data["timings"]["total_ms"] = self.timings.total_ms
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Detection:
        timings = {k: v for k, v in data.get("timings", {}).items() if k != "total_ms"}
        classes = data.get("classes")
        return cls(
            boxes=tuple(Box(**b) for b in data["boxes"]),
            width=int(data["width"]),
            height=int(data["height"]),
            confidence=float(data["confidence"]),
            classes=tuple(classes) if classes is not None else None,
            model=str(data.get("model", "")),
            timings=Timings(**timings),
            class_confidence={str(k): float(v) for k, v in (data.get("class_confidence") or {}).items()},
        )
