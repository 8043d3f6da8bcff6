"""The queue without model processes: submit, bounds, JSON payloads, and the reaper's bookkeeping.

The reaper tests use a real Redis and RQ's own dequeue. A "dead worker" is a real ``DetbotWorker`` object
that takes a job exactly as ``detbot worker`` does before running it, and then never runs it and never
sends a heartbeat: what Redis holds afterwards is what a SIGKILLed worker leaves behind. The SIGKILL of
real worker processes is tested in tests/test_worker_recovery.py.
"""

from __future__ import annotations

import json
import zlib

import pytest
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from detector.params import DetectParams
from jobs import keys, store
from jobs.client import DETECT_JOB, DetectionClient
from jobs.defaults import LIVENESS_TTL
from jobs.exceptions import QueueFullError, QueueUnavailableError
from jobs.keys import EVENTS_STREAM
from jobs.recovery import reap, running_jobs
from jobs.settings import WorkerSettings
from jobs.worker import DetbotWorker
from tests.conftest import free_port
from tests.workers import wait_for

IMAGE = b"\x89PNG not really, the reaper never looks"


def submit(client: DetectionClient, n: int = 1) -> list[str]:
    return [client.submit(IMAGE, DetectParams(0.5), routing={"chat": 7, "n": i}) for i in range(n)]


def take_and_die(redis: Redis, queue: Queue, name: str) -> Job:
    """A worker named ``name`` takes the next job as `detbot worker` does, then dies before running it."""
    worker = DetbotWorker(queue, settings=WorkerSettings(worker_name=name))
    result = Queue.dequeue_any([queue], None, connection=redis, serializer=JSONSerializer)
    assert result is not None, "nothing to take"
    job = result[0]
    worker.prepare_execution(job)
    worker.prepare_job_execution(job, remove_from_intermediate_queue=True)
    return job


def events(redis: Redis) -> list[dict[bytes, bytes]]:
    return [fields for _id, fields in redis.xrange(EVENTS_STREAM)]


def test_submitted_job_payload_is_json_not_pickle(redis: Redis) -> None:
    client = DetectionClient(redis)
    (job_id,) = submit(client)
    raw = redis.hget(Job.key_for(job_id), "data")
    assert raw is not None
    func, instance, args, kwargs = json.loads(zlib.decompress(raw))
    assert (func, instance, args, kwargs) == (DETECT_JOB, None, [job_id], {})
    assert store.load_image(redis, job_id) == IMAGE
    assert store.job_params(redis, job_id) == {"confidence": 0.5, "classes": None, "class_confidence": {}}


def test_full_queue_is_refused_at_once_and_stores_nothing(redis: Redis) -> None:
    client = DetectionClient(redis, queue_name="full", max_queued=3)
    accepted = submit(client, 3)
    keys_before = set(redis.keys("detbot:*"))
    with pytest.raises(QueueFullError):
        client.submit(IMAGE, DetectParams(0.5))
    assert set(redis.keys("detbot:*")) == keys_before  # no image bytes left behind for the refused photo
    assert client.queued() == 3
    assert client.position(accepted[2]) == 3


def test_submit_many_queues_all_or_none_against_the_limit(redis: Redis) -> None:
    client = DetectionClient(redis, queue_name="few", max_queued=3)
    submit(client)
    assert client.room() == 2
    keys_before = set(redis.keys("*"))
    with pytest.raises(QueueFullError):
        client.submit_many([IMAGE] * 3, DetectParams(0.5), [{"n": i} for i in range(3)])
    assert set(redis.keys("*")) == keys_before  # not the two that would have fitted either
    job_ids = client.submit_many([b"one", b"two"], DetectParams(0.4), [{"n": 1}, {"n": 2}])
    assert client.queue.get_job_ids()[1:] == job_ids and client.room() == 0
    assert [store.load_image(redis, j) for j in job_ids] == [b"one", b"two"]
    assert [json.loads(redis.hget(keys.job(j), "routing") or b"") for j in job_ids] == [{"n": 1}, {"n": 2}]


def test_submit_many_transaction_that_fails_midway_leaves_nothing(redis: Redis) -> None:
    """Redis drops the connection at the second photo (bigger than it accepts in one command), after the
    first one's commands were already sent: the transaction never reaches EXEC, nothing of it exists."""
    client = DetectionClient(redis, queue_name="midway")
    limit = redis.config_get("proto-max-bulk-len")["proto-max-bulk-len"]
    redis.config_set("proto-max-bulk-len", 1024 * 1024)
    try:
        with pytest.raises(QueueUnavailableError):
            client.submit_many([IMAGE, b"x" * (2 * 1024 * 1024)], DetectParams(0.5), [{"n": 1}, {"n": 2}])
    finally:
        redis.config_set("proto-max-bulk-len", limit)
    assert redis.keys("detbot:*") == [] and redis.keys("rq:job:*") == []
    assert client.queued() == 0


def test_unreachable_redis_is_a_distinct_error() -> None:
    client = DetectionClient(Redis(port=free_port(), retry=Retry(NoBackoff(), 0)))
    with pytest.raises(QueueUnavailableError):
        client.submit(IMAGE, DetectParams(0.5))


def test_reaper_requeues_the_job_of_a_dead_worker_at_the_front(redis: Redis) -> None:
    client = DetectionClient(redis)
    first, second = submit(client, 2)
    queue = client.queue
    taken = take_and_die(redis, queue, "ghost")
    assert taken.id == first
    assert running_jobs(redis, queue.name) == {first: "ghost"}
    assert queue.get_job_ids() == [second]

    recovered = reap(redis, queue, max_attempts=3)

    assert [(r.job_id, r.worker, r.result, r.attempts) for r in recovered] == [(first, "ghost", "requeued", 1)]
    assert queue.get_job_ids() == [first, second]
    assert Job.fetch(first, connection=redis, serializer=JSONSerializer).get_status() == JobStatus.QUEUED
    assert running_jobs(redis, queue.name) == {}
    assert queue.started_job_registry.get_job_ids() == []
    assert events(redis) == []  # requeued, not answered
    assert reap(redis, queue, max_attempts=3) == []  # nothing left to do: no second requeue
    assert queue.get_job_ids() == [first, second]


def test_reaper_leaves_the_jobs_of_live_workers_alone(redis: Redis) -> None:
    client = DetectionClient(redis)
    (job_id,) = submit(client)
    take_and_die(redis, client.queue, "busy")
    redis.set(keys.alive("busy"), "1", ex=LIVENESS_TTL)  # its heartbeat is fresh: it is alive and working

    assert reap(redis, client.queue, max_attempts=3) == []
    assert running_jobs(redis, client.queue.name) == {job_id: "busy"}
    assert client.queue.get_job_ids() == []


def test_reaper_gives_up_after_max_attempts_with_one_error_event(redis: Redis) -> None:
    client = DetectionClient(redis)
    (job_id,) = submit(client)
    take_and_die(redis, client.queue, "ghost-1")
    assert [r.result for r in reap(redis, client.queue, max_attempts=2)] == ["requeued"]
    take_and_die(redis, client.queue, "ghost-2")

    recovered = reap(redis, client.queue, max_attempts=2)

    assert [(r.result, r.attempts) for r in recovered] == [("exhausted", 2)]
    assert client.queue.get_job_ids() == []
    (event,) = events(redis)
    assert event[b"job_id"].decode() == job_id
    completion = store.read_completion(redis, job_id)
    assert completion is not None and not completion.ok
    assert completion.code == store.CODE_RETRIES_EXHAUSTED
    assert completion.routing == {"chat": 7, "n": 0}
    assert reap(redis, client.queue, max_attempts=2) == []
    assert len(events(redis)) == 1


def test_reaper_recovers_a_job_lost_between_dequeue_and_start(redis: Redis) -> None:
    client = DetectionClient(redis)
    (job_id,) = submit(client)
    # RQ's dequeue moves the id to its intermediate list; the worker dies before recording the job.
    assert Queue.dequeue_any([client.queue], None, connection=redis, serializer=JSONSerializer) is not None
    assert client.queue.get_job_ids() == []

    # The first sighting only marks it (a live worker may be a millisecond from recording it).
    recovered = wait_for(lambda: reap(redis, client.queue, max_attempts=3), timeout=30, what="the orphan")

    assert [(r.job_id, r.worker, r.result) for r in recovered] == [(job_id, "", "requeued")]
    assert client.queue.get_job_ids() == [job_id]
    assert redis.llen(client.queue.intermediate_queue_key) == 0


def test_reaper_does_not_redo_a_job_that_completed_before_its_worker_died(redis: Redis) -> None:
    client = DetectionClient(redis)
    (job_id,) = submit(client)
    take_and_die(redis, client.queue, "ghost")
    assert store.complete(redis, job_id, ok=False, code="not_an_image", message="x")

    assert [r.result for r in reap(redis, client.queue, max_attempts=3)] == ["done"]
    assert client.queue.get_job_ids() == []
    assert len(events(redis)) == 1


def test_each_queue_has_its_own_completion_stream(redis: Redis) -> None:
    """`detbot bench queue` on a queue of its own against a live Redis read, acknowledged and deleted the
    bot's completion events: they all went to one stream. Now each queue's completions have their own."""
    bot = DetectionClient(redis)
    bench = DetectionClient(redis, queue_name="bench-1-abc", consumer="bench-1-abc", group="bench-1-abc")
    (mine,) = submit(bot)
    (theirs,) = submit(bench)
    for job_id in (mine, theirs):
        assert store.complete(redis, job_id, ok=False, code="not_an_image", message="x")
    seen = bench.wait(block_ms=10)
    assert [c.job_id for c in seen] == [theirs]
    bench.ack(seen[0])
    assert [c.job_id for c in bot.wait(block_ms=10)] == [mine]
    assert [f[b"job_id"].decode() for f in events(redis)] == [mine]
    assert keys.EVENTS_STREAM == "detbot:events" and keys.events("bench-1-abc") == "detbot:events:bench-1-abc"
    # The bench's lanes always get such a queue, hence such a stream.
    from ops.bench_queue import make_lane

    lane = make_lane(redis, 1, 10)
    assert lane.client.events == keys.events(lane.queue) != keys.EVENTS_STREAM
