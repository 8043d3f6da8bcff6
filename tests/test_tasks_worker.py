"""Segmentation and pose answers through real ``detbot worker`` processes (tests/assets/shapes-seg.pt and
shapes-pose.pt): outlines and keypoints in the stored answer, re-drawings, cut-outs and stickers from what the
worker kept, never a second inference."""

from __future__ import annotations

import asyncio
import io
import json
import re
import urllib.request
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
from PIL import Image
from redis import Redis

from detector.cutout import largest_first
from detector.params import DetectParams
from detector.render import rows_to_boxes, select
from detector.result import Box, Detection
from jobs import store
from jobs.client import DetectionClient
from jobs.render import KIND_CUTOUTS, KIND_DRAW, KIND_STICKER, RenderClient
from ops.shapes import SKELETON, VISIBLE, Shape, iou, make_images
from tests.conftest import RedisServer, free_port
from tests.shapes import IMGSZ, POSE_MODEL_PATH, SEG_MODEL_PATH
from tests.telegram_stub import encode
from tests.workers import WorkerProcess, start_worker, wait_for

COMPLETION_TIMEOUT = 60.0
# Images the models never saw (training used seed 1, validation 2).
SEED = 1201
IMAGES = 3
SEG_QUEUE, POSE_QUEUE = "seg", "pose"
# Outlines against the drawn shapes (see tests/test_shapes_models.py for the model's own figures: mean 0.90,
# every shape of 32 model pixels or more >= 0.85, the smallest triangles down to 0.56).
MIN_MASK_IOU, MIN_SMALL_MASK_IOU, SMALL_SHAPE, MIN_MEAN_MASK_IOU = 0.8, 0.5, 32, 0.85
# Keypoints against the drawn vertices, in the model's pixels (mean 1.0, worst 5.0 on 1807 unseen keypoints).
MAX_KEYPOINT_ERROR, MAX_MEAN_KEYPOINT_ERROR = 6.0, 2.0
# An answer keeps every object down to the floor with its outline: a shapes photo's rows stay small.
MAX_STORED_BYTES = 16_000


@pytest.fixture(scope="module")
def ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture(scope="module")
def workers(redis_server: RedisServer, wredis: Redis, ports: tuple[int, int],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[WorkerProcess]]:
    """A segmentation worker and a pose worker, each on a queue of its own, started together."""
    log_dir = tmp_path_factory.mktemp("tasks")
    started = [
        start_worker(redis_server.url, queue=queue, log_dir=log_dir, wait=False,
                     env={"DETBOT_MODEL": str(model), "DETBOT_METRICS_PORT": str(port)})
        for queue, model, port in ((SEG_QUEUE, SEG_MODEL_PATH, ports[0]), (POSE_QUEUE, POSE_MODEL_PATH, ports[1]))
    ]
    try:
        for worker in started:
            worker.wait_ready()
        yield started
    finally:
        for worker in started:
            worker.close()


@pytest.fixture(scope="module")
def fresh() -> list[tuple[np.ndarray, list[Shape]]]:
    return make_images(SEED, IMAGES)


def answer(redis: Redis, queue: str, image: bytes, params: DetectParams) -> store.Completion:
    job_id = DetectionClient(redis, queue_name=queue).submit(image, params)
    found = wait_for(lambda: store.read_completion(redis, job_id), COMPLETION_TIMEOUT, f"job {job_id}")
    assert found is not None and found.ok, found
    return found


def render(redis: Redis, queue: str, kind: str, image: bytes, boxes: tuple[Box, ...],
           index: int | None = None) -> list[bytes]:
    """A render request as the bot makes it, through the real client."""
    from redis.asyncio import Redis as AsyncRedis

    async def once() -> list[bytes]:
        where = redis.connection_pool.connection_kwargs
        client = AsyncRedis(host=where["host"], port=where["port"], db=where.get("db", 0))
        try:
            return await RenderClient(client, queue).render(kind, image, boxes, "", index)
        finally:
            await client.aclose()

    return asyncio.run(once())


def metric(port: int, name: str) -> float:
    """One unlabelled metric of a worker, or the sum of a labelled one's series."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    values = [float(v) for v in re.findall(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE)]
    assert values or f"# TYPE {name} " in text, f"{name} not in /metrics"
    return sum(values)  # a labelled counter with no series yet: 0


def pixels(polygon: tuple[tuple[float, float], ...], height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    if len(polygon) >= 3:
        cv2.fillPoly(mask, [np.round(np.asarray(polygon)).astype(np.int32)], 1)
    return mask.astype(bool)


def best_mask_iou(shape: Shape, boxes: tuple[Box, ...], height: int, width: int) -> float:
    truth = pixels(shape.polygon, height, width)
    scores = [0.0]
    for box in boxes:
        if box.class_name == shape.name and box.polygon:
            mask = pixels(box.polygon, height, width)
            scores.append(float((mask & truth).sum() / (mask | truth).sum()))
    return max(scores)


def decoded(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def test_a_segmentation_answer_keeps_outlines_that_match_the_drawn_shapes(
        wredis: Redis, workers: list[WorkerProcess], fresh: list[tuple[np.ndarray, list[Shape]]]) -> None:
    ious = []
    for img, shapes in fresh:
        done = answer(wredis, SEG_QUEUE, encode(img, ".png"), DetectParams(0.15))
        assert done.detection is not None and done.annotated
        det = Detection.from_dict(done.detection)
        assert det.task == "segment" and det.skeleton is None
        kept = rows_to_boxes(done.detection["candidates"])
        assert all(b.polygon and len(b.polygon) >= 3 for b in kept)  # every kept object carries its outline
        assert all(b.keypoints is None for b in kept)
        for shape in shapes:
            score = best_mask_iou(shape, det.boxes, *img.shape[:2])
            side = max(shape.box[2] - shape.box[0], shape.box[3] - shape.box[1]) * IMGSZ / max(img.shape[:2])
            assert score >= (MIN_MASK_IOU if side >= SMALL_SHAPE else MIN_SMALL_MASK_IOU), (shape, score)
            ious.append(score)
        assert len(json.dumps(done.detection["candidates"])) <= MAX_STORED_BYTES
        # The JSON form: a polygon per object in pixels of the photo, the task at the top.
        assert det.to_dict()["task"] == "segment" and "keypoints" not in det.to_dict()["boxes"][0]
    assert np.mean(ious) >= MIN_MEAN_MASK_IOU, ious


def test_a_pose_answer_keeps_keypoints_on_the_drawn_vertices(
        wredis: Redis, workers: list[WorkerProcess], fresh: list[tuple[np.ndarray, list[Shape]]]) -> None:
    errors = []
    for img, shapes in fresh:
        done = answer(wredis, POSE_QUEUE, encode(img, ".png"), DetectParams(0.15))
        assert done.detection is not None
        det = Detection.from_dict(done.detection)
        assert det.task == "pose" and det.skeleton == SKELETON  # the checkpoint's own skeleton
        assert all(b.keypoints and len(b.keypoints) == 5 for b in rows_to_boxes(done.detection["candidates"]))
        scale = IMGSZ / max(img.shape[:2])
        for shape in shapes:
            found = max((b for b in det.boxes if b.class_name == shape.name), key=lambda b: iou(b.xyxy, shape.box))
            assert iou(found.xyxy, shape.box) >= 0.5
            assert found.keypoints is not None and found.polygon is None
            for (x, y, v), (px, py, _c) in zip(shape.keypoints, found.keypoints, strict=True):
                if v == VISIBLE:
                    errors.append(float(np.hypot(px - x, py - y)) * scale)
    assert max(errors) <= MAX_KEYPOINT_ERROR and np.mean(errors) <= MAX_MEAN_KEYPOINT_ERROR, errors


@pytest.mark.parametrize("queue", [SEG_QUEUE, POSE_QUEUE])
def test_a_redrawing_at_another_threshold_comes_from_what_the_worker_kept(
        wredis: Redis, workers: list[WorkerProcess], ports: tuple[int, int],
        fresh: list[tuple[np.ndarray, list[Shape]]], queue: str) -> None:
    """The worker's render thread draws the kept outlines or keypoints with the one renderer — the same bytes as
    the first answer at the same threshold — and the model does not run for it."""
    port = ports[0] if queue == SEG_QUEUE else ports[1]
    img, _shapes = fresh[0]
    data = encode(img, ".png")
    first = answer(wredis, queue, data, DetectParams(0.5))
    assert first.detection is not None and first.annotated
    base = Detection.from_dict({**first.detection, "boxes": []})
    kept = rows_to_boxes(first.detection["candidates"])
    runs, renders = metric(port, "detbot_model_runs"), metric(port, "detbot_renders_total")

    (same,) = render(wredis, queue, KIND_DRAW, data, select(kept, base, DetectParams(0.5)).boxes)
    assert same == first.annotated  # one renderer: a re-drawing at the answer's own view is the answer itself
    shown = Detection.from_dict(first.detection).boxes
    higher = select(kept, base, DetectParams(round(min(b.confidence for b in shown) + 0.005, 3))).boxes
    assert 0 < len(higher) < len(shown)  # the weakest object left out
    (redrawn,) = render(wredis, queue, KIND_DRAW, data, higher)
    assert redrawn != first.annotated and decoded(redrawn).shape == img.shape

    # (The render thread counts a render just after handing it back.)
    wait_for(lambda: metric(port, "detbot_renders_total") == renders + 2, 10, "the renders counted")
    assert metric(port, "detbot_model_runs") == runs  # no inference for either re-drawing


def test_cutouts_and_a_sticker_come_from_the_kept_outlines(
        wredis: Redis, workers: list[WorkerProcess], ports: tuple[int, int],
        fresh: list[tuple[np.ndarray, list[Shape]]]) -> None:
    img, _shapes = fresh[1]
    data = encode(img, ".png")
    done = answer(wredis, SEG_QUEUE, data, DetectParams(0.3))
    assert done.detection is not None
    boxes = Detection.from_dict(done.detection).boxes
    runs = metric(ports[0], "detbot_model_runs")

    pieces = render(wredis, SEG_QUEUE, KIND_CUTOUTS, data, boxes)
    order = largest_first(boxes)
    assert len(pieces) == len(order) == min(len(boxes), 10)
    areas = []
    for piece, box in zip(pieces, order, strict=True):
        with Image.open(io.BytesIO(piece)) as png:
            assert png.format == "PNG" and png.mode == "RGBA"
        rgba = decoded(piece)
        assert box.polygon is not None
        left, top = int(min(x for x, _y in box.polygon)), int(min(y for _x, y in box.polygon))
        outline = pixels(tuple((x - left, y - top) for x, y in box.polygon), *rgba.shape[:2])
        opaque = rgba[..., 3] > 127
        assert (opaque & outline).sum() / (opaque | outline).sum() >= 0.9  # transparent outside the mask
        photo = img[top:top + rgba.shape[0], left:left + rgba.shape[1]]
        assert np.array_equal(rgba[..., :3][opaque], photo[opaque])  # the photo's own pixels
        areas.append(int(opaque.sum()))
    assert areas == sorted(areas, reverse=True)  # largest first
    assert any((decoded(p)[..., 3] == 0).any() for p in pieces)

    smallest = min(range(len(boxes)), key=lambda i: boxes[i].area)
    (chosen,) = render(wredis, SEG_QUEUE, KIND_STICKER, data, boxes, index=smallest)
    (largest,) = render(wredis, SEG_QUEUE, KIND_STICKER, data, boxes)
    for sticker in (chosen, largest):
        with Image.open(io.BytesIO(sticker)) as webp:
            assert webp.format == "WEBP" and webp.mode == "RGBA"
            assert max(webp.size) == 512 and min(webp.size) <= 512
        assert len(sticker) <= 512 * 1024
        assert decoded(sticker)[0, 0, 3] == 0  # transparent in the corner
    assert chosen != largest
    assert metric(ports[0], "detbot_model_runs") == runs
