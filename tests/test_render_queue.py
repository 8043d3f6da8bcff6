"""The render requests between the bot and the workers' render threads (jobs/render.py), on a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from redis import Redis

from detector.errors import CorruptImageError
from detector.params import DetectParams
from detector.result import Box
from jobs import keys
from jobs.client import DetectionClient
from jobs.render import (
    CLEAN_MAX_BYTES,
    CLEAN_MAX_SIDE,
    KIND_CLEAN,
    KIND_CROPS,
    KIND_DRAW,
    REFUSED_MEMORY,
    RENDER_WAIT,
    RenderClient,
    Renderer,
    RenderError,
    RenderServer,
)
from ops.shapes import make_images
from tests.telegram_stub import encode, image_size
from tests.workers import running_workers

BOXES = (Box(0, "circle", 0.9, 1, 2, 30, 40), Box(1, "square", 0.5, 5, 5, 9, 9))


def render(redis: Redis, kind: str, image: bytes, boxes: tuple[Box, ...], language: str, queue: str = "q",
           wait: int = RENDER_WAIT) -> list[bytes]:
    """One request through the bot's (asynchronous) client, on a client of its own for this event loop."""
    from redis.asyncio import Redis as AsyncRedis

    async def once() -> list[bytes]:
        where = redis.connection_pool.connection_kwargs
        client = AsyncRedis(host=where["host"], port=where["port"], db=where.get("db", 0))
        try:
            return await RenderClient(client, queue, wait=wait).render(kind, image, boxes, language)
        finally:
            await client.aclose()

    return asyncio.run(once())


@pytest.fixture
def serving(redis: Redis) -> Iterator[list[str]]:
    """A render thread whose renderer echoes what it was asked; yields the kinds it rendered."""
    done: list[str] = []

    def renderer(kind: str, image: bytes, boxes: tuple[Box, ...], language: str,
                 index: int | None = None) -> list[bytes]:
        if image == b"broken":
            raise CorruptImageError("damaged")
        if image == b"bug":
            raise RuntimeError("a bug")
        return [f"{kind}:{image.decode()}:{b.class_name}:{language}".encode() for b in boxes]

    server = RenderServer(Redis(connection_pool=redis.connection_pool), "q", renderer, done.append)
    server.start()
    yield done
    server.stop()
    server.join(10)


def test_a_render_comes_back_in_order(redis: Redis, serving: list[str]) -> None:
    assert render(redis, KIND_CROPS, b"img", BOXES, "ru") == [b"crops:img:circle:ru", b"crops:img:square:ru"]
    assert render(redis, KIND_DRAW, b"img", BOXES[:1], "") == [b"draw:img:circle:"]
    assert serving == [KIND_CROPS, KIND_DRAW]
    assert not list(redis.scan_iter(match="detbot:render:*"))  # nothing left behind


def test_errors_come_back_as_codes_and_the_thread_keeps_serving(redis: Redis, serving: list[str]) -> None:
    with pytest.raises(RenderError) as damaged:
        render(redis, KIND_DRAW, b"broken", BOXES, "")
    assert damaged.value.code == CorruptImageError.code
    with pytest.raises(RenderError) as bug:
        render(redis, KIND_DRAW, b"bug", BOXES, "")
    assert bug.value.code == "internal_error"
    assert render(redis, KIND_DRAW, b"ok", BOXES[:1], "") == [b"draw:ok:circle:"]
    assert serving == [KIND_DRAW]


def test_without_a_worker_the_bot_gives_up_and_the_request_goes(redis: Redis) -> None:
    with pytest.raises(RenderError) as timeout:
        render(redis, KIND_DRAW, b"img", BOXES, "", wait=1)
    assert timeout.value.code == "timeout"
    # A worker that comes later finds the request id but no request: it draws nothing and answers nothing.
    assert not list(redis.scan_iter(match="detbot:render:req:*"))
    rendered: list[str] = []
    echo: Renderer = lambda kind, image, boxes, language, index=None: [image]  # noqa: E731
    server = RenderServer(redis, "q", echo, rendered.append)
    waiting: list[bytes] = redis.lrange(keys.renders("q"), 0, -1)  # type: ignore[assignment]
    (render_id,) = [i.decode() for i in waiting]
    redis.delete(keys.renders("q"))
    server.serve(render_id)
    assert rendered == [] and not redis.exists(keys.render_done(render_id))


def test_a_worker_renders_while_its_inference_is_in_hand(redis_server: Any, redis: Redis, shapes_model: Path,
                                                         tmp_path: Path) -> None:
    """The real render thread of a real worker answers while the worker is busy with a photo: a press never
    waits behind the inference in hand (nor behind the queue)."""
    img, _ = make_images(6000, 1)[0]
    data = encode(img)
    client = DetectionClient(redis)
    with running_workers(redis_server.url, env={"DETBOT_TEST_JOB_DELAY_MS": "8000"}, log_dir=tmp_path) as (worker,):
        job_id = client.submit(data, DetectParams(0.4))
        client.submit(data, DetectParams(0.4))  # and one more waiting behind it
        assert worker.wait_busy() == job_id
        (jpeg,) = render(redis, KIND_DRAW, data, BOXES, "ru", "detbot")
        assert worker.current_job() == job_id  # still detecting the first photo
        assert image_size(jpeg) == (img.shape[1], img.shape[0])
        crops = render(redis, KIND_CROPS, data, BOXES, "", "detbot")
        assert [image_size(c)[0] < img.shape[1] for c in crops] == [True, True]

        # An image sent as a large file: the worker hands back its clean copy, bounded in side and bytes.
        rng = np.random.default_rng(7)
        big = encode(rng.integers(0, 255, (3000, 4000, 3), dtype=np.uint8), ".png")
        assert len(big) > CLEAN_MAX_BYTES
        (small,) = render(redis, KIND_CLEAN, big, (), "", "detbot")
        assert len(small) <= CLEAN_MAX_BYTES and max(image_size(small)) == CLEAN_MAX_SIDE
        assert image_size(small) == (CLEAN_MAX_SIDE, round(3000 * CLEAN_MAX_SIDE / 4000))


def test_a_render_near_redis_maxmemory_is_refused_before_anything_is_written(redis: Redis, serving: list[str],
                                                                             ) -> None:
    """The photos' memory guard covers renders: near maxmemory a press is refused (the bot says it could
    not adjust the answer), and no request takes the room the workers' results need."""
    used = int(redis.info("memory")["used_memory"])
    redis.config_set("maxmemory", used + 1_000_000)
    try:
        with pytest.raises(RenderError) as full:
            render(redis, KIND_DRAW, b"x" * 2_000_000, BOXES, "")
        assert full.value.code == REFUSED_MEMORY
        assert not list(redis.scan_iter(match="detbot:render:*")) and serving == []
        assert render(redis, KIND_DRAW, b"small", BOXES[:1], "") == [b"draw:small:circle:"]
    finally:
        redis.config_set("maxmemory", 0)
