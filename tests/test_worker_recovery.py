"""Real ``detbot worker`` processes stopped, killed and restarted: no photo is lost or answered twice.

``DETBOT_TEST_JOB_DELAY_MS`` (a documented test-only worker setting) makes a worker sleep inside each job, so
a test can act while a job is certainly running: the worker records the job in Redis before the sleep.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
from redis import Redis
from rq import Queue

from detector.params import DetectParams
from jobs import keys, store
from jobs.client import DetectionClient
from jobs.keys import EVENTS_STREAM
from jobs.recovery import is_alive, reap, running_jobs
from ops.shapes import make_images
from tests.conftest import RedisServer
from tests.workers import STOP_TIMEOUT, WorkerProcess, running_workers, wait_for

# The promise: a job whose worker was SIGKILLed is answered within a minute of the kill.
RECOVERY_DEADLINE = 60.0
# Long enough that a job certainly outlives the test's action (a signal, a kill); never reached.
FOREVER_MS = "600000"
# Slow enough that the other worker surely takes a job before this one drains the queue.
SLOW_MS = "100"


def photo(seed: int = 1100) -> bytes:
    ok, buf = cv2.imencode(".jpg", make_images(seed, 1)[0][0])
    assert ok
    return buf.tobytes()


def event_counts(redis: Redis) -> Counter[str]:
    return Counter(f[b"job_id"].decode() for _id, f in redis.xrange(EVENTS_STREAM))


def attempts(redis: Redis, job_id: str) -> int:
    return int(redis.hget(keys.job(job_id), "attempts") or 0)


def assert_nothing_left_running(redis: Redis, queue: Queue) -> None:
    # A completion event is written inside the job, the running-job record released by RQ's bookkeeping
    # just after it: on a loaded machine a test can see the last event in between. Wait for the worker to
    # finish that job (it must, within the stop timeout), then check that nothing at all is left behind.
    wait_for(lambda: not running_jobs(redis, queue.name), STOP_TIMEOUT, "the last job's bookkeeping")
    assert running_jobs(redis, queue.name) == {}
    assert queue.started_job_registry.get_job_ids() == []
    assert redis.llen(queue.intermediate_queue_key) == 0
    assert queue.count == 0


@contextmanager
def workers(
    redis_server: RedisServer, tmp_path: Path, *envs: dict[str, str], **kw: str
) -> Iterator[list[WorkerProcess]]:
    """Start one worker per ``envs`` entry together (they load the model in parallel) and wait all READY."""
    with running_workers(redis_server.url, envs=list(envs), log_dir=tmp_path, **kw) as started:
        yield started


def test_sigterm_mid_job_finishes_that_job_then_exits_0(
    redis: Redis, redis_server: RedisServer, shapes_model: Path, tmp_path: Path
) -> None:
    with workers(redis_server, tmp_path, {"DETBOT_TEST_JOB_DELAY_MS": "3000"}) as (worker,):
        client = DetectionClient(redis)
        first = client.submit(photo(), DetectParams(0.25))
        second = client.submit(photo(), DetectParams(0.25))
        assert worker.wait_busy() == first

        assert worker.terminate() == 0

        log = worker.output()
        asked, answered = log.find(f"finishing job {first}, then exiting"), log.find(f"job {first} ok")
        assert 0 <= asked < answered, log  # the signal came mid-job, and the job still finished
        done = store.read_completion(redis, first)
        assert done is not None and done.ok
        assert event_counts(redis) == Counter({first: 1})
        assert client.queue.get_job_ids() == [second]  # nothing new taken after the signal
        assert not is_alive(redis, worker.name)
        assert running_jobs(redis, client.queue.name) == {}


def test_second_sigterm_stops_mid_job_and_the_job_is_requeued_not_lost(
    redis: Redis, redis_server: RedisServer, shapes_model: Path, tmp_path: Path
) -> None:
    with workers(redis_server, tmp_path, {"DETBOT_TEST_JOB_DELAY_MS": FOREVER_MS}) as (worker,):
        client = DetectionClient(redis)
        job_id = client.submit(photo(), DetectParams(0.25))
        assert worker.wait_busy() == job_id

        worker.proc.send_signal(signal.SIGTERM)  # warm: would wait for the job, which sleeps "forever"
        wait_for(lambda: "stop requested" in worker.output(), 30, "the first signal to be handled")

        def stopped() -> bool:  # RQ ignores a repeat within 1 s of the first: repeat until it takes
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
            return worker.proc.poll() is not None

        wait_for(stopped, 30, "the cold stop", interval=0.2)
        assert worker.proc.wait() == 0
        assert store.read_completion(redis, job_id) is None  # not answered, not failed
        assert running_jobs(redis, client.queue.name) == {job_id: worker.name}  # left for the reaper
        assert not is_alive(redis, worker.name)

        recovered = reap(redis, client.queue, max_attempts=3)  # what any live worker's reaper does

        assert [(r.job_id, r.result) for r in recovered] == [(job_id, "requeued")]
        assert client.queue.get_job_ids() == [job_id]
        assert "Traceback" not in worker.output()


def test_job_timeout_is_answered_and_the_worker_goes_on(
    redis: Redis, redis_server: RedisServer, shapes_model: Path, tmp_path: Path
) -> None:
    env = {"DETBOT_TEST_JOB_DELAY_MS": "4000", "DETBOT_JOB_TIMEOUT": "1"}
    with workers(redis_server, tmp_path, env) as (worker,):
        client = DetectionClient(redis)
        job_id = client.submit(photo(), DetectParams(0.25), routing={"chat": 1})

        done = wait_for(lambda: store.read_completion(redis, job_id), 60, "the timeout")

        assert (done.ok, done.code, done.routing) == (False, store.CODE_TIMEOUT, {"chat": 1})
        assert worker.proc.poll() is None
        wait_for(lambda: running_jobs(redis, client.queue.name) == {}, 30, "the job to be released")
        assert worker.current_job() is None
        assert "Traceback" not in worker.output()
        assert event_counts(redis) == Counter({job_id: 1})


def test_sigkill_mid_job_with_two_workers_every_job_answered_exactly_once(
    redis: Redis, redis_server: RedisServer, shapes_model: Path, tmp_path: Path
) -> None:
    stuck, slow = {"DETBOT_TEST_JOB_DELAY_MS": FOREVER_MS}, {"DETBOT_TEST_JOB_DELAY_MS": SLOW_MS}
    with workers(redis_server, tmp_path, stuck, slow) as (victim, survivor):
        client = DetectionClient(redis)
        image = photo()
        ids = [client.submit(image, DetectParams(0.25), routing={"n": i}) for i in range(30)]
        lost = victim.wait_busy()

        victim.kill()
        killed_at = time.monotonic()
        wait_for(lambda: set(event_counts(redis)) >= set(ids), RECOVERY_DEADLINE, "all 30 completions")

        counts = event_counts(redis)
        assert counts == Counter({job_id: 1 for job_id in ids})  # each job once, nothing duplicated
        assert time.monotonic() - killed_at < RECOVERY_DEADLINE
        for i, job_id in enumerate(ids):
            done = store.read_completion(redis, job_id)
            assert done is not None and done.ok and done.routing == {"n": i}
        assert attempts(redis, lost) == 1
        assert f"job {lost} requeued at the front: worker {victim.name} died (attempt 1)" in survivor.output()
        assert survivor.proc.poll() is None
        assert_nothing_left_running(redis, client.queue)


def test_restarted_worker_takes_over_the_killed_job_and_the_queued_ones(
    redis: Redis, redis_server: RedisServer, shapes_model: Path, tmp_path: Path
) -> None:
    name = "worker-1"  # the restarted container keeps its name
    with workers(redis_server, tmp_path, {"DETBOT_TEST_JOB_DELAY_MS": FOREVER_MS}, name=name) as (first,):
        client = DetectionClient(redis)
        ids = [client.submit(photo(1200 + i), DetectParams(0.25)) for i in range(4)]
        lost = first.wait_busy()
        first.kill()
        assert client.queue.count == 3  # queued behind the killed job, no worker running

        with workers(redis_server, tmp_path, {}, name=name) as (second,):
            wait_for(lambda: set(event_counts(redis)) >= set(ids), RECOVERY_DEADLINE + STOP_TIMEOUT,
                     "all four completions")

            assert event_counts(redis) == Counter({job_id: 1 for job_id in ids})
            assert all((c := store.read_completion(redis, i)) is not None and c.ok for i in ids)
            assert attempts(redis, lost) == 1
            assert f"job {lost} requeued at the front: worker {name} died (attempt 1)" in second.output()
            assert_nothing_left_running(redis, client.queue)
