"""Seeded synthetic "shapes" images: circles, squares and triangles with their true boxes, outlines and keypoints.

The shipped test models (``tests/assets/shapes.pt``, ``shapes-seg.pt``, ``shapes-pose.pt``) were trained on
``write_dataset``'s images; ``detbot bench --accuracy`` and the tests draw fresh ones from other seeds, which the
models never saw. Same seed, same images, on every machine.

Keypoints (pose): every shape has ``NUM_KEYPOINTS`` slots named ``KEYPOINT_NAMES``, placed by where the point lies
on the shape, so that a horizontal flip maps slot ``i`` to slot ``FLIP_IDX[i]``:

- square: its four corners in the four corner slots (``top`` absent);
- triangle (drawn apex up): its apex in ``top``, its base corners in ``bottom-right`` and ``bottom-left``
  (``top-left`` and ``top-right`` absent);
- circle: the four points of its rim on the diagonals (45 degrees) in the four corner slots (``top`` absent).

An absent slot is ``(0, 0, 0)``; a present one has visibility 2 (COCO's "labelled and visible"). ``SKELETON``
joins slots so that, skipping edges with an absent end, a square's and a triangle's outline is drawn (a circle's
inscribed square) and nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

CLASSES = ("circle", "square", "triangle")

KEYPOINT_NAMES = ("top-left", "top-right", "bottom-right", "bottom-left", "top")
NUM_KEYPOINTS = len(KEYPOINT_NAMES)
# Mirroring swaps left and right corners; the apex stays the apex.
FLIP_IDX = (1, 0, 3, 2, 4)
# The square's (and the circle's) four corners in a ring, then the triangle's apex to its two base corners.
SKELETON = ((0, 1), (1, 2), (2, 3), (3, 0), (2, 4), (4, 3))
VISIBLE = 2
ABSENT = (0.0, 0.0, 0)
# A circle's outline as a polygon: at the largest radius drawn (~105 px) a 64-gon strays < 0.15 px from the rim.
CIRCLE_POINTS = 64

# Seeds: training and validation images come from these; tests use other seeds so the model never saw them.
TRAIN_SEED = 1
VAL_SEED = 2
TRAIN_IMAGES = 900
VAL_IMAGES = 120

# What a data set's labels describe, in ultralytics' task names.
Task = Literal["detect", "segment", "pose"]


Point = tuple[float, float]
Keypoint = tuple[float, float, int]


@dataclass(frozen=True)
class Shape:
    """One drawn shape: its class name, its tight box, its outline and its keypoints, in pixels.

    ``polygon`` is the outline as drawn (corners rounded to whole pixels, as OpenCV drew them; a circle as a
    ``CIRCLE_POINTS``-gon), clockwise on screen; ``keypoints`` holds ``NUM_KEYPOINTS`` ``(x, y, visibility)``
    slots (see the module's docstring).
    """

    name: str
    box: tuple[float, float, float, float]
    polygon: tuple[Point, ...] = ()
    keypoints: tuple[Keypoint, ...] = ()


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


def _keypoints(slots: dict[int, Point]) -> tuple[Keypoint, ...]:
    """All ``NUM_KEYPOINTS`` slots: the given ones visible, the others absent."""
    return tuple((*slots[i], VISIBLE) if i in slots else ABSENT for i in range(NUM_KEYPOINTS))


def _draw(
    img: np.ndarray, name: str, cx: float, cy: float, size: float, angle: float, colour: tuple[int, int, int]
) -> Shape:
    """Draw one filled shape and return it with its tight box, outline and keypoints."""
    if name == "circle":
        r = size / 2
        centre, radius = (round(cx), round(cy)), round(r)
        cv2.circle(img, centre, radius, colour, -1, cv2.LINE_AA)
        rim = tuple(
            (centre[0] + radius * math.cos(a), centre[1] + radius * math.sin(a))
            for a in (2 * math.pi * k / CIRCLE_POINTS for k in range(CIRCLE_POINTS))
        )
        d = radius / math.sqrt(2)
        diagonals = {0: (-d, -d), 1: (d, -d), 2: (d, d), 3: (-d, d)}
        kpts = _keypoints({i: (centre[0] + dx, centre[1] + dy) for i, (dx, dy) in diagonals.items()})
        return Shape(name, (cx - r, cy - r, cx + r, cy + r), rim, kpts)
    n = 4 if name == "square" else 3
    r = size / 2 if n == 3 else size / 2 * math.sqrt(2) * 0.8
    start = angle + (math.pi / 4 if n == 4 else -math.pi / 2)
    angles = [start + 2 * math.pi * k / n for k in range(n)]
    pts = np.array([[cx + r * math.cos(a), cy + r * math.sin(a)] for a in angles])
    drawn = np.round(pts).astype(np.int32)
    cv2.fillPoly(img, [drawn], colour, cv2.LINE_AA)
    corners = [(float(x), float(y)) for x, y in drawn]
    # Squares turn by at most 0.2 rad and triangles by 0.3, so each vertex stays in its slot's quarter:
    # the square's corners start at bottom-right (angle ~pi/4, y down) and go clockwise; the triangle's at the apex.
    slots = dict(zip((2, 3, 0, 1), corners, strict=True)) if n == 4 else dict(zip((4, 2, 3), corners, strict=True))
    box = (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))
    return Shape(name, box, tuple(corners), _keypoints(slots))


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
                shapes.append(_draw(img, name, cx, cy, size, angle, _colour(rng, local)))
                break
    return img, shapes


def make_images(seed: int, count: int) -> list[tuple[np.ndarray, list[Shape]]]:
    """``count`` images drawn from one seed: the same seed always gives the same images."""
    rng = np.random.default_rng(seed)
    return [make_image(rng) for _ in range(count)]


def label_line(shape: Shape, w: int, h: int, task: Task = "detect") -> str:
    """One YOLO label line for ``shape`` in a ``w`` x ``h`` image: class and box (detect), class and outline
    (segment), or class, box and keypoints (pose), all normalised to 0-1."""
    cls = CLASSES.index(shape.name)
    if task == "segment":
        return f"{cls} " + " ".join(f"{x / w:.6f} {y / h:.6f}" for x, y in shape.polygon)
    x1, y1, x2, y2 = shape.box
    line = f"{cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
    if task == "pose":
        line += "".join(f" {x / w:.6f} {y / h:.6f} {v}" for x, y, v in shape.keypoints)
    return line


def write_split(root: Path, split: str, seed: int, count: int, task: Task = "detect") -> None:
    """``count`` images of ``seed`` with their YOLO labels for ``task`` under ``root/images/split`` and
    ``root/labels/split``."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for i, (img, shapes) in enumerate(make_images(seed, count)):
        h, w = img.shape[:2]
        cv2.imwrite(str(root / "images" / split / f"{i:04d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        lines = [label_line(s, w, h, task) for s in shapes]
        (root / "labels" / split / f"{i:04d}.txt").write_text("\n".join(lines) + "\n")


def write_yaml(root: Path, train: str = "images/train", val: str = "images/val", task: Task = "detect") -> Path:
    """The dataset YAML ultralytics reads for the folders under ``root`` (with the keypoint layout for pose)."""
    data = root / "shapes.yaml"
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASSES))
    text = f"path: {root}\ntrain: {train}\nval: {val}\nnames:\n{names}\n"
    if task == "pose":
        kpt_names = "".join(f"  {i}: [{', '.join(KEYPOINT_NAMES)}]\n" for i in range(len(CLASSES)))
        text += f"kpt_shape: [{NUM_KEYPOINTS}, 3]\nflip_idx: {list(FLIP_IDX)}\nkpt_names:\n{kpt_names}"
    data.write_text(text)
    return data


def write_dataset(root: Path, task: Task = "detect") -> Path:
    """Write the YOLO-format train/val sets for ``task`` under ``root`` and return the data YAML's path."""
    write_split(root, "train", TRAIN_SEED, TRAIN_IMAGES, task)
    write_split(root, "val", VAL_SEED, VAL_IMAGES, task)
    return write_yaml(root, task=task)


# -- clips: shapes that move, enter and leave (the video tests and ``detbot bench --video``) ---------------

@dataclass(frozen=True)
class Mover:
    """One shape of a clip: on screen from ``enter`` to ``leave`` (seconds), moving in a straight line from
    ``start`` to ``end`` (its centre, pixels) meanwhile. Every mover is one object: a clip's true unique count."""

    name: str
    size: float
    start: Point
    end: Point
    enter: float
    leave: float
    colour: tuple[int, int, int] = (40, 40, 220)
    angle: float = 0.0

    def centre(self, t: float) -> Point | None:
        """Where the shape is at ``t``, None when it is not on screen."""
        if not self.enter <= t < self.leave:
            return None
        k = (t - self.enter) / (self.leave - self.enter)
        return self.start[0] + (self.end[0] - self.start[0]) * k, self.start[1] + (self.end[1] - self.start[1]) * k


@dataclass(frozen=True)
class ShapesClip:
    """A synthetic clip: its frames (BGR), frame rate and the movers drawn in it."""

    frames: tuple[np.ndarray, ...]
    fps: float
    movers: tuple[Mover, ...]

    def counts(self) -> dict[str, int]:
        """Unique objects per class: what a tracker must find."""
        counts: dict[str, int] = {}
        for m in self.movers:
            counts[m.name] = counts.get(m.name, 0) + 1
        return counts


def default_movers(width: int = 320, height: int = 240, seconds: float = 3.0) -> tuple[Mover, ...]:
    """Four objects in three lanes (top, middle, bottom): a circle crossing the whole clip, a square that
    enters a quarter in, a triangle that leaves half-way and a second circle that enters after it left, in its
    lane. Unique counts: circle 2, square 1, triangle 1."""
    size = min(width, height) * 0.23
    lanes = [height * (i + 0.5) / 3 for i in range(3)]
    return (
        Mover("circle", size, (width * 0.14, lanes[0]), (width * 0.86, lanes[0]), 0.0, seconds, (40, 40, 220)),
        Mover("square", size, (width * 0.8, lanes[1]), (width * 0.35, lanes[1]), seconds * 0.27, seconds,
              (220, 60, 40), 0.1),
        Mover("triangle", size, (width * 0.2, lanes[2]), (width * 0.5, lanes[2]), 0.0, seconds * 0.53,
              (30, 200, 230)),
        Mover("circle", size, (width * 0.62, lanes[2]), (width * 0.86, lanes[2]), seconds * 0.67, seconds,
              (200, 40, 200)),
    )


def make_clip(seed: int = 0, width: int = 320, height: int = 240, seconds: float = 3.0, fps: float = 10.0,
              movers: tuple[Mover, ...] | None = None) -> ShapesClip:
    """A clip of ``movers`` (default :func:`default_movers`) over one noisy gradient background of ``seed``."""
    rng = np.random.default_rng(seed)
    background = _background(rng, height, width)
    movers = movers if movers is not None else default_movers(width, height, seconds)
    frames = []
    for i in range(round(seconds * fps)):
        img = background.copy()
        for m in movers:
            at = m.centre(i / fps)
            if at is not None:
                _draw(img, m.name, at[0], at[1], m.size, m.angle, m.colour)
        frames.append(img)
    return ShapesClip(tuple(frames), fps, movers)


def encode_clip(clip: ShapesClip, kind: Literal["mp4", "gif", "webm"] = "mp4") -> bytes:
    """The clip as a file: H.264 MP4 (as phones and Telegram send), an animated GIF, or VP9 WebM."""
    return encode_frames(clip.frames, clip.fps, kind)


def encode_frames(frames: Iterable[np.ndarray], fps: float, kind: Literal["mp4", "gif", "webm"] = "mp4",
                  crf: int = 18) -> bytes:
    """BGR frames (one size; a generator is encoded as it goes) as a clip file: H.264 MP4 at ``crf``, an
    animated GIF, or VP9 WebM."""
    import io
    from fractions import Fraction

    import av

    buffer = io.BytesIO()
    codec, pix_fmt, options = {"mp4": ("libx264", "yuv420p", {"crf": str(crf), "preset": "veryfast"}),
                               "gif": ("gif", "rgb8", {}),
                               "webm": ("libvpx-vp9", "yuv420p", {"crf": "30", "b": "0"})}[kind]
    with av.open(buffer, mode="w", format=kind) as container:
        stream: Any = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000), options=options)
        for i, image in enumerate(frames):
            if i == 0:
                stream.height, stream.width = image.shape[:2]
                stream.pix_fmt = pix_fmt
            frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format=pix_fmt)
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()
