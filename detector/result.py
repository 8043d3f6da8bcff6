"""The typed result of one detection; plain data that survives a JSON round trip.

One result type for every task: a box always, plus its outline (``polygon``, segmentation) or its keypoints
(``keypoints``, pose) when the model gives them, so every front end reads, draws and serialises one shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

TASK_DETECT, TASK_SEGMENT, TASK_POSE = "detect", "segment", "pose"
TASKS = (TASK_DETECT, TASK_SEGMENT, TASK_POSE)

Point = tuple[float, float]
Keypoint = tuple[float, float, float]


@dataclass(frozen=True)
class Box:
    """One detected object, in pixels of the original (EXIF-rotated) image.

    ``polygon`` (segmentation): the object's outline, whole pixels; ``keypoints`` (pose): ``(x, y, confidence)``
    per keypoint of the model, a keypoint the model does not see having a low confidence.
    """

    class_id: int
    class_name: str
    confidence: float
    x1: float
    y1: float
    x2: float
    y2: float
    polygon: tuple[Point, ...] | None = None
    keypoints: tuple[Keypoint, ...] | None = None

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return self.x1, self.y1, self.x2, self.y2

    @property
    def area(self) -> float:
        """Pixels the object covers: its outline's area when it has one, else its box's."""
        if self.polygon and len(self.polygon) >= 3:
            return polygon_area(self.polygon)
        return max(self.x2 - self.x1, 0.0) * max(self.y2 - self.y1, 0.0)

    def scaled(self, sx: float, sy: float) -> Box:
        """The same object in an image scaled by ``sx`` × ``sy`` (a down-scaled copy of the photo)."""
        polygon = tuple((x * sx, y * sy) for x, y in self.polygon) if self.polygon is not None else None
        keypoints = tuple((x * sx, y * sy, c) for x, y, c in self.keypoints) if self.keypoints is not None else None
        return replace(self, x1=self.x1 * sx, y1=self.y1 * sy, x2=self.x2 * sx, y2=self.y2 * sy, polygon=polygon,
                       keypoints=keypoints)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``polygon`` as ``[[x, y], ...]`` and ``keypoints`` as ``[[x, y, c], ...]``, each only
        when present."""
        data = asdict(self)
        for name in ("polygon", "keypoints"):
            value = getattr(self, name)
            if value is None:
                del data[name]
            else:
                data[name] = [list(p) for p in value]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Box:
        polygon, keypoints = data.get("polygon"), data.get("keypoints")
        return cls(
            int(data["class_id"]), str(data["class_name"]), float(data["confidence"]),
            float(data["x1"]), float(data["y1"]), float(data["x2"]), float(data["y2"]),
            tuple((float(x), float(y)) for x, y in polygon) if polygon is not None else None,
            tuple((float(x), float(y), float(c)) for x, y, c in keypoints) if keypoints is not None else None,
        )


def polygon_area(points: tuple[Point, ...] | list[Point]) -> float:
    """The area a simple polygon encloses (the shoelace formula), in square pixels."""
    n = len(points)
    twice = sum(points[i][0] * points[(i + 1) % n][1] - points[(i + 1) % n][0] * points[i][1] for i in range(n))
    return abs(twice) / 2


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
    """All boxes found in one image, highest confidence first, and how they were found.

    ``task``: what the model does (``detect``, ``segment`` or ``pose``). ``skeleton`` (pose): the pairs of
    keypoint indexes joined when drawn.
    """

    boxes: tuple[Box, ...]
    width: int
    height: int
    confidence: float
    classes: tuple[str, ...] | None = None
    model: str = ""
    timings: Timings = field(default_factory=Timings)
    # Per-class thresholds that differed from ``confidence`` (class name as compared -> threshold).
    class_confidence: dict[str, float] = field(default_factory=dict)
    task: str = TASK_DETECT
    skeleton: tuple[tuple[int, int], ...] | None = None

    def counts(self) -> dict[str, int]:
        """Boxes per class name, most frequent first (ties by name)."""
        counts: dict[str, int] = {}
        for box in self.boxes:
            counts[box.class_name] = counts.get(box.class_name, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def share(self, box: Box) -> float:
        """The part of the image ``box``'s mask covers (0-1); 0 for a box without an outline."""
        if not box.polygon or self.width <= 0 or self.height <= 0:
            return 0.0
        return min(box.area / (self.width * self.height), 1.0)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"task": self.task}
        data.update(asdict(self))
        data["boxes"] = [b.to_dict() for b in self.boxes]
        data["classes"] = list(self.classes) if self.classes is not None else None
        data["timings"]["total_ms"] = self.timings.total_ms
        if self.skeleton is None:
            del data["skeleton"]
        else:
            data["skeleton"] = [list(pair) for pair in self.skeleton]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Detection:
        timings = {k: v for k, v in data.get("timings", {}).items() if k != "total_ms"}
        classes = data.get("classes")
        skeleton = data.get("skeleton")
        task = str(data.get("task") or TASK_DETECT)
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}")
        return cls(
            boxes=tuple(Box.from_dict(b) for b in data["boxes"]),
            width=int(data["width"]),
            height=int(data["height"]),
            confidence=float(data["confidence"]),
            classes=tuple(classes) if classes is not None else None,
            model=str(data.get("model", "")),
            timings=Timings(**timings),
            class_confidence={str(k): float(v) for k, v in (data.get("class_confidence") or {}).items()},
            task=task,
            skeleton=tuple((int(a), int(b)) for a, b in skeleton) if skeleton is not None else None,
        )
