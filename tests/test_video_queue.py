"""Clips on the real queue: span jobs on real ``detbot worker`` processes (the shapes model), taking turns
with photos, answered exactly once, resumed after a SIGKILL mid-clip, cancelled on request.

Workers are started once for the module (their model load is the slow part); each test flushes Redis.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Iterator

import cv2
import pytest
from redis import Redis
from rq import Queue

from detector.params import DetectParams
from detector.video import VideoLimits, plan, probe
from jobs import keys, store, video
from jobs.client import DetectionClient
from jobs.defaults import QUEUE_NAME
from ops.shapes import encode_clip, make_clip, make_images
from tests.conftest import RedisServer
from tests.workers import WorkerProcess, running_workers, start_worker, wait_for

CHAT = 4242
# A span of the test clip takes this much longer (the worker sleeps inside it): a test can act mid-clip.
SLOW_SPAN_MS = "700"


@pytest.fixture(scope="module")
def workers(redis_server: RedisServer) -> Iterator[list[WorkerProcess]]:
    with running_workers(redis_server.url, count=2) as found:
        yield found


@pytest.fixture
def redis(redis_server: RedisServer, workers: list[WorkerProcess]) -> Iterator[Redis]:
    client = Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


def clip_bytes(seconds: float = 3.0) -> bytes:
    return encode_clip(make_clip(seconds=seconds))


def submit(redis: Redis, data: bytes, chat: int = CHAT, queue: str = QUEUE_NAME, **routing: object) -> str:
    limits = VideoLimits()
    client = DetectionClient(redis, queue_name=queue)
    return video.submit(client, data, plan(probe(data, limits), limits), limits, DetectParams(0.25),
                        {"chat_id": chat, **routing})


def events(redis: Redis, queue: str = QUEUE_NAME) -> Counter[str]:
    return Counter(f[b"job_id"].decode() for _, f in redis.xrange(keys.events(queue)))


def completion(redis: Redis, video_id: str, timeout: float = 120.0) -> store.Completion:
    found = wait_for(lambda: store.read_completion(redis, video_id), timeout, f"clip {video_id}'s answer")
    assert found is not None
    return found


def test_a_clip_is_answered_once_with_its_unique_objects(redis: Redis) -> None:
    data = clip_bytes()
    video_id = submit(redis, data)
    done = completion(redis, video_id)
    assert done.ok, done.code
    assert done.detection is not None and done.annotated is not None
    assert done.detection["counts"] == make_clip().counts()
    assert probe(done.annotated).codec == "h264"
    wait_for(lambda: not redis.exists(keys.video_parts(video_id)), 10, "the spans' parts to go")
    assert events(redis) == Counter({video_id: 1})


def test_spans_take_turns_with_photos_of_other_chats(redis: Redis, workers: list[WorkerProcess]) -> None:
    """While a clip is worked on, another chat's photo waits behind at most one span per worker."""
    video_id = submit(redis, clip_bytes(6.0))
    wait_for(lambda: int(redis.hget(keys.job(video_id), "done") or 0) > 0, 60, "the clip's first span")
    _, jpeg = cv2.imencode(".jpg", make_images(1500, 1)[0][0])
    photo = DetectionClient(redis).submit(jpeg.tobytes(), DetectParams(), routing={"chat_id": CHAT + 1})
    photo_done = completion(redis, photo)
    clip_done = completion(redis, video_id)
    assert photo_done.ok and clip_done.ok
    # The photo was answered before the clip's last span: it did not wait for the whole clip.
    order = [f[b"job_id"].decode() for _, f in redis.xrange(keys.EVENTS_STREAM)]
    assert order.index(photo) < order.index(video_id)


def test_a_worker_killed_mid_clip_leaves_it_to_another_answered_once(redis_server: RedisServer,
                                                                     redis: Redis) -> None:
    """On a queue of its own, so that the clip's spans reach only the slow worker until it is killed (idle
    workers merely paused would still take a span off the queue inside Redis, and the reaper would count it)."""
    queue = "video-kill"
    slow = start_worker(redis_server.url, queue=queue, env={"DETBOT_TEST_JOB_DELAY_MS": SLOW_SPAN_MS})
    try:
        video_id = submit(redis, clip_bytes(), queue=queue)
        wait_for(lambda: int(redis.hget(keys.job(video_id), "done") or 0) > 0, 60, "a finished span")
        span = slow.wait_busy()
        assert span.startswith(video_id)
        slow.kill()
    finally:
        slow.close()
    # A finished span handed out again (as to a worker the reaper took for dead that comes back): a no-op.
    first_span = video.span_id(video_id, 0)
    redis.rpush(Queue(queue, connection=redis).key, first_span)
    progress: list[int] = []

    def answered() -> store.Completion | None:
        progress.append(int(redis.hget(keys.job(video_id), "done") or 0))
        return store.read_completion(redis, video_id)

    rescuer = start_worker(redis_server.url, queue=queue)
    try:
        done = wait_for(answered, 120, f"clip {video_id}'s answer")
        # (the clip may have been answered before the kill: the rescuer then only has the copy to take, once
        # it has started, which takes a while on a loaded machine)
        rescuer.wait_ready()
        wait_for(lambda: f"span {first_span} duplicate" in rescuer.output(), 30, "the first span's second copy")
    finally:
        rescuer.close()
    assert done.ok
    assert progress == sorted(progress)  # the progress never went back
    assert redis.hget(keys.job(video.span_id(video_id, 1)), "status") == b"ok"  # not rewritten as waiting
    assert done.detection is not None and done.detection["counts"] == make_clip().counts()
    # The span that was running ran again (one start lost to the kill); the spans finished before it did not.
    assert redis.hget(keys.job(span), "attempts") == b"1"
    earlier = [video.span_id(video_id, i) for i in range(video.parse_span_id(span)[1])]
    assert earlier and all(redis.hget(keys.job(s), "attempts") == b"0" for s in earlier)
    assert events(redis, queue)[video_id] == 1


def test_a_cancelled_clip_is_answered_as_cancelled(redis_server: RedisServer, redis: Redis,
                                                   workers: list[WorkerProcess]) -> None:
    for w in workers:
        w.proc.send_signal(signal.SIGSTOP)
    try:
        video_id = submit(redis, clip_bytes())
        assert video.cancel(redis, video_id)
    finally:
        for w in workers:
            w.proc.send_signal(signal.SIGCONT)
    done = completion(redis, video_id)
    assert not done.ok and done.code == video.CODE_CANCELLED
    assert not video.cancel(redis, video_id)  # over: nothing to cancel


def test_a_corrupt_clip_gets_an_error_answer(redis: Redis) -> None:
    data = clip_bytes()
    broken = data[:len(data) // 2]  # the header probes; the frames stop half-way
    limits = VideoLimits()
    info = probe(data, limits)
    client = DetectionClient(redis)
    video_id = video.submit(client, broken, plan(info, limits), limits, DetectParams(), {"chat_id": CHAT})
    done = completion(redis, video_id)
    # A cut-off clip is answered with what decodes (its last frame held) or, with nothing, an error.
    assert done.ok or done.code in ("corrupt_video", "not_a_video")
    assert json.loads(json.dumps(done.details)) == done.details
