"""Segmentation masks as outlines, in NumPy and OpenCV (an exported worker never imports torch).

A segmentation head gives, per object, mask coefficients, and once per image a stack of mask *prototypes* at a
fraction (a quarter) of the model input's resolution. An object's mask is its coefficients' mix of the prototypes,
sampled bilinearly in the original photo's pixels, positive inside, cut to the object's box — ultralytics'
``retina_masks`` — and computed only over the box, so a small object costs little. The mask is then
kept and drawn as its outline: a polygon of whole pixels, simplified to a bounded number of points. Polygons are
what an answer keeps for its buttons (a few hundred bytes an object, where a mask is the photo's size), and what
JSON, the drawing, cut-outs and stickers read.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from detector.processing import Letterbox
from detector.result import Point

# Masks are sampled this many times per prototype pixel along each side — the model input's own resolution,
# at which ultralytics' predict() makes its masks — and never finer than the photo's own pixels: prototypes carry
# a quarter of the model input's detail (a 640 model: 160 px for the whole photo), so finer sampling only smooths
# what is there and costs time per object; coarser rounds small objects' corners off. Measured on 12 fresh shapes
# images, mean mask IoU with the drawn shapes: 0.896 at 4, 0.903 at 8 and at the photo's pixels, 0.877 at 2.
SAMPLES_PER_PROTO = 4
# ... and at most this many samples on the box's long side.
MAX_MASK_SIDE = 512
# Outline simplification (Douglas-Peucker): points closer than this to the simplified line go, in sample pixels
# (about the photo's pixels for a box up to MAX_MASK_SIDE).
SIMPLIFY_PX = 1.0
# The most points one outline keeps, and the fewest it may be cut to: bytes per answer are bounded by them (a
# circle of 100 px radius needs ~22 points at SIMPLIFY_PX; a person's outline 30-60).
MAX_POLYGON_POINTS = 48
MIN_POLYGON_POINTS = 8
# Points one answer's outlines may hold together (an answer keeps every object down to the floor): the most
# confident objects first, each up to MAX_POLYGON_POINTS, while MIN_POLYGON_POINTS stay kept for every object
# after it. So an answer's outlines hold at most max(MAX_ANSWER_POINTS, objects × MIN_POLYGON_POINTS) points,
# ~11 bytes each as kept (detector.render.boxes_to_rows): under 24 KB for the worker's 100 objects.
MAX_ANSWER_POINTS = 2000


def point_cap(used: int, index: int, objects: int) -> int:
    """The most points the outline of the ``index``-th of ``objects`` (best first) may keep when ``used``
    points went to those before it (see MAX_ANSWER_POINTS)."""
    left = MAX_ANSWER_POINTS - used - MIN_POLYGON_POINTS * (objects - index - 1)
    return max(MIN_POLYGON_POINTS, min(MAX_POLYGON_POINTS, left))


def polygons(
    protos: np.ndarray,
    coefficients: np.ndarray,
    boxes: np.ndarray,
    geometry: Letterbox,
) -> list[tuple[Point, ...]]:
    """Each object's outline in pixels of the original photo (empty when its mask is empty).

    ``protos``: ``mh×mw×nm`` prototypes of the letterboxed canvas (``geometry.canvas``), channels last as the
    engines give them (an object's logits over its box are then one matrix-vector product over a view of
    them, ~4× faster than mixing ``nm`` separate planes); ``coefficients``:
    ``K×nm``; ``boxes``: ``K×4`` xyxy in the original photo's pixels, best first (the points of the
    outlines are shared out in that order, see MAX_ANSWER_POINTS).
    """
    if not len(boxes):
        return []
    mh, mw, _ = protos.shape
    canvas_h, canvas_w = geometry.canvas
    # Prototype pixels per original pixel, and where the original's pixel centres land in prototype pixels.
    ratio_x, ratio_y = mw / canvas_w * geometry.gain, mh / canvas_h * geometry.gain
    offset_x, offset_y = mw / canvas_w * geometry.pad_x, mh / canvas_h * geometry.pad_y
    out: list[tuple[Point, ...]] = []
    used = 0
    for index, (coeff, box) in enumerate(zip(coefficients, boxes, strict=True)):
        cap = point_cap(used, index, len(boxes))
        out.append(_outline(protos, coeff, box, (ratio_x, ratio_y), (offset_x, offset_y), cap))
        used += len(out[-1])
    return out


def _outline(protos: np.ndarray, coeff: np.ndarray, box: np.ndarray, ratio: tuple[float, float],
             offset: tuple[float, float], budget: int) -> tuple[Point, ...]:
    x1, y1, x2, y2 = (float(v) for v in box)
    if x2 - x1 < 1 or y2 - y1 < 1:
        return ()
    # Sample grid over the box: ``scale`` samples per original pixel (at most 1; SAMPLES_PER_PROTO per
    # prototype pixel; fewer for a very large box).
    scale = min(1.0, SAMPLES_PER_PROTO * max(ratio), MAX_MASK_SIDE / max(x2 - x1, y2 - y1))
    ox, oy = math.floor(x1), math.floor(y1)
    width, height = max(1, math.ceil((x2 - ox) * scale)), max(1, math.ceil((y2 - oy) * scale))
    # Sample (j, i) sits at original (ox + (j + 0.5) / scale, ...), i.e. prototype pixel coordinate
    # a * j + b (pixel centres at integers, as OpenCV samples them).
    ax, ay = ratio[0] / scale, ratio[1] / scale
    bx = (ox + 0.5 / scale) * ratio[0] + offset[0] - 0.5
    by = (oy + 0.5 / scale) * ratio[1] + offset[1] - 0.5
    mh, mw, _ = protos.shape
    # Only the prototypes under the box (and one pixel around, for the bilinear samples at its edge).
    px0, py0 = max(0, math.floor(bx) - 1), max(0, math.floor(by) - 1)
    px1 = min(mw, math.ceil(ax * (width - 1) + bx) + 2)
    py1 = min(mh, math.ceil(ay * (height - 1) + by) + 2)
    if px1 <= px0 or py1 <= py0:
        return ()
    logits = protos[py0:py1, px0:px1] @ coeff.astype(np.float32, copy=False)  # (py1-py0)×(px1-px0)
    warp = np.array([[ax, 0, bx - px0], [0, ay, by - py0]], np.float64)
    sampled = cv2.warpAffine(logits, warp, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REPLICATE)
    mask = np.greater(sampled, 0).view(np.uint8)  # 1 inside: one pass, the booleans' bytes as they are
    # Cut to the box, as ultralytics does: samples whose centre lies outside it are not the object. The centres
    # grow along each axis, so those are a run of columns (rows) at each end: slices, not boolean indexing.
    left, right = np.searchsorted(ox + (np.arange(width) + 0.5) / scale, (x1, x2))
    top, bottom = np.searchsorted(oy + (np.arange(height) + 0.5) / scale, (y1, y2))
    mask[:, :left] = 0
    mask[:, right:] = 0
    mask[:top] = 0
    mask[bottom:] = 0
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return ()
    # The largest part: an object split in two by something in front keeps its main part.
    contour = contours[0] if len(contours) == 1 else max(contours, key=cv2.contourArea)
    points = simplify(contour.reshape(-1, 2), budget).astype(np.float64)
    if len(points) < 3:  # a sliver one or two samples wide: the rectangle of its samples
        points = grow(points, 0.5)
    # Back to the photo's pixel indexes (a pixel's index is its centre minus a half, as OpenCV draws them);
    # NumPy rounds halves to even, as Python's round() does.
    pixels = np.round(np.array((ox, oy)) + (points + 0.5) / scale - 0.5).astype(np.int64)
    return tuple(map(tuple, pixels.tolist()))


def grow(points: np.ndarray, by: float) -> np.ndarray:
    """A closed outline moved outwards by ``by`` (mitred corners); one or two points (a sliver) become the
    rectangle around them. (A contour runs through the centres of the mask's edge samples, half a sample inside
    its edge; growing whole outlines by that half, though, scored lower against the drawn shapes — 0.879 mean
    IoU instead of 0.896 — as the masks run a little wide already: only slivers are grown.)"""
    if len(points) < 3:
        lo, hi = points.min(axis=0) - by, points.max(axis=0) + by
        return np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
    edges = np.roll(points, -1, axis=0) - points
    lengths = np.maximum(np.hypot(edges[:, 0], edges[:, 1]), 1e-9)
    x, y = points[:, 0], points[:, 1]
    clockwise_on_screen = (x * np.roll(y, -1) - np.roll(x, -1) * y).sum() > 0  # y grows downwards
    turn = 1.0 if clockwise_on_screen else -1.0
    normals = turn * np.stack([edges[:, 1], -edges[:, 0]], axis=1) / lengths[:, None]  # outward, per edge
    before = np.roll(normals, 1, axis=0)  # the edge arriving at each point
    cos = np.clip((normals * before).sum(axis=1), -0.5, 1.0)  # mitres of sharp corners kept short
    return points + by * (normals + before) / (1 + cos)[:, None]


def simplify(points: np.ndarray, budget: int, epsilon: float = SIMPLIFY_PX) -> np.ndarray:
    """An outline (``N×2``) with the points a line within ``epsilon`` of them makes unneeded taken out, the
    tolerance doubled until at most ``budget`` points are left."""
    curve = points.reshape(-1, 1, 2).astype(np.int32)
    simple = cv2.approxPolyDP(curve, epsilon, True)
    while len(simple) > budget:
        epsilon *= 2
        simple = cv2.approxPolyDP(curve, epsilon, True)
    return simple.reshape(-1, 2)


def simplify_outline(points: np.ndarray, budget: int = MAX_POLYGON_POINTS) -> tuple[Point, ...]:
    """An outline in original pixels (float ``N×2``, e.g. ultralytics' own ``masks.xy``) as a polygon of
    whole pixels with at most ``budget`` points."""
    if len(points) < 3:
        return ()
    simple = simplify(np.round(points), budget)
    return tuple((int(x), int(y)) for x, y in simple)


def mask_of(polygon: tuple[Point, ...], height: int, width: int, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The ``height``×``width`` uint8 mask (255 inside) of ``polygon``, shifted by ``-offset`` (the top-left
    corner of a crop), anti-aliased at its edge."""
    mask = np.zeros((height, width), np.uint8)
    if len(polygon) >= 3:
        pts = np.round((np.asarray(polygon, np.float64) - offset) * 16).astype(np.int32)  # 4 fractional bits
        cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA, shift=4)
    return mask
