"""Seeded synthetic "shapes" images: filled circles, squares and triangles with their true boxes.

The shipped test model (``tests/assets/shapes.pt``) was trained on ``write_dataset``'s images;
``detbot bench --accuracy`` and the tests draw fresh ones from other seeds, which the model never saw.
Same seed, same images, on every machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("circle", "square", "triangle")

# Seeds: training and validation images come from these; tests use other seeds so the model never saw them.
TRAIN_SEED = 1
VAL_SEED = 2
TRAIN_IMAGES = 900
VAL_IMAGES = 120


@dataclass(frozen=True)
class Shape:
    """One drawn shape: its class name and its tight box in pixels."""

    name: str
    box: tuple[float, float, float, float]


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A noisy background: a random colour gradient plus Gaussian noise."""
    c0 = rng.integers(0, 256, 3).astype(np.float32)
    c1 = rng.integers(0, 256, 3).astype(np.float32)
    t = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
    img = c0 * (1 - t) + c1 * t
    img = np.broadcast_to(img, (h, w, 3)) + rng.normal(0, 18, (h, w, 3)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _colour(rng: np.random.Generator, bg: np.ndarray) -> tuple[int, int, int]:
    """A colour far enough from the local background that the shape is visible to a person."""
    mean = bg.reshape(-1, 3).mean(axis=0)
    for _ in range(100):
        c = rng.integers(0, 256, 3)
        if np.abs(c - mean).sum() > 200:
            break
    return int(c[0]), int(c[1]), int(c[2])


def _overlaps(box: tuple[float, float, float, float], others: list[Shape], margin: float) -> bool:
    x1, y1, x2, y2 = box
    return any(
        x1 < o.box[2] + margin and o.box[0] < x2 + margin and y1 < o.box[3] + margin and o.box[1] < y2 + margin
        for o in others
    )


def _draw(
    img: np.ndarray, name: str, cx: float, cy: float, size: float, angle: float, colour: tuple[int, int, int]
) -> tuple[float, float, float, float]:
    """Draw one filled shape and return its tight box."""
    if name == "circle":
        r = size / 2
        cv2.circle(img, (round(cx), round(cy)), round(r), colour, -1, cv2.LINE_AA)
        return cx - r, cy - r, cx + r, cy + r
    n = 4 if name == "square" else 3
    r = size / 2 if n == 3 else size / 2 * math.sqrt(2) * 0.8
    start = angle + (math.pi / 4 if n == 4 else -math.pi / 2)
    angles = [start + 2 * math.pi * k / n for k in range(n)]
    pts = np.array([[cx + r * math.cos(a), cy + r * math.sin(a)] for a in angles])
    cv2.fillPoly(img, [np.round(pts).astype(np.int32)], colour, cv2.LINE_AA)
    return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())


def make_image(rng: np.random.Generator) -> tuple[np.ndarray, list[Shape]]:
    """One BGR image of varied size and aspect holding 1-5 non-overlapping shapes."""
    w, h = int(rng.integers(224, 641)), int(rng.integers(224, 641))
    img = _background(rng, h, w)
    shapes: list[Shape] = []
    side = min(w, h)
    for _ in range(int(rng.integers(2, 7))):
        for _attempt in range(30):
            name = CLASSES[int(rng.integers(0, 3))]
            size = float(rng.uniform(0.1, 0.33)) * side
            # Squares are drawn slightly rotated at most, so their box stays close to the square itself.
            angle = float(rng.uniform(-0.2, 0.2)) if name == "square" else float(rng.uniform(-0.3, 0.3))
            cx, cy = float(rng.uniform(size, w - size)), float(rng.uniform(size, h - size))
            probe = (cx - size * 0.6, cy - size * 0.6, cx + size * 0.6, cy + size * 0.6)
            if not _overlaps(probe, shapes, 4):
                local = img[int(probe[1]) : int(probe[3]), int(probe[0]) : int(probe[2])]
                box = _draw(img, name, cx, cy, size, angle, _colour(rng, local))
                shapes.append(Shape(name, box))
                break
    return img, shapes


def make_images(seed: int, count: int) -> list[tuple[np.ndarray, list[Shape]]]:
    """``count`` images drawn from one seed: the same seed always gives the same images."""
    rng = np.random.default_rng(seed)
    return [make_image(rng) for _ in range(count)]


def write_split(root: Path, split: str, seed: int, count: int) -> None:
    """``count`` images of ``seed`` with their YOLO labels under ``root/images/split`` and ``root/labels/split``."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for i, (img, shapes) in enumerate(make_images(seed, count)):
        h, w = img.shape[:2]
        cv2.imwrite(str(root / "images" / split / f"{i:04d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        lines = [
            f"{CLASSES.index(s.name)} {(s.box[0] + s.box[2]) / 2 / w:.6f} {(s.box[1] + s.box[3]) / 2 / h:.6f} "
            f"{(s.box[2] - s.box[0]) / w:.6f} {(s.box[3] - s.box[1]) / h:.6f}"
            for s in shapes
        ]
        (root / "labels" / split / f"{i:04d}.txt").write_text("\n".join(lines) + "\n")


def write_yaml(root: Path, train: str = "images/train", val: str = "images/val") -> Path:
    """The dataset YAML ultralytics reads for the folders under ``root``."""
    data = root / "shapes.yaml"
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASSES))
    data.write_text(f"path: {root}\ntrain: {train}\nval: {val}\nnames:\n{names}\n")
    return data


def write_dataset(root: Path) -> Path:
    """Write the YOLO-format train/val sets under ``root`` and return the data YAML's path."""
    write_split(root, "train", TRAIN_SEED, TRAIN_IMAGES)
    write_split(root, "val", VAL_SEED, VAL_IMAGES)
    return write_yaml(root)
