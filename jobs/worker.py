"""``detbot worker``: one process, one model loaded and warmed once, jobs from the Redis queue.

- An RQ ``SimpleWorker`` (no fork per job: no reloaded model, no OpenMP/OpenCV state broken by fork), with
  JSON serialization, and only ``jobs.tasks.detect_job`` allowed to run (anything else is refused unrun).
- A heartbeat thread (Redis only, never torch) keeps a short-TTL liveness key per worker; each worker records
  the job it runs in ``detbot:running:{queue}``. The reaper, run by whichever worker holds a Redis lock,
  requeues at the front the jobs of workers whose liveness key is gone (SIGKILL, OOM, power loss) within
  about ``LIVENESS_TTL + REAP_INTERVAL`` seconds, or ends them with ``failed_after_retries``.
- SIGTERM: the current job finishes, then the worker exits 0 (RQ's warm shutdown). A second SIGTERM stops at
  once; the interrupted job is left for the reaper to requeue.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import DeserializationError
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException
from rq.utils import now
from rq.worker import SimpleWorker, WorkerStatus

from jobs import store, tasks
from jobs.client import DETECT_JOB, make_queue
from jobs.defaults import (
    HEARTBEAT_INTERVAL,
    KEY_PREFIX,
    LIVENESS_TTL,
    ORPHAN_GRACE,
    REAP_INTERVAL,
    RESULT_TTL,
    WEDGED_GRACE,
)
from jobs.settings import WorkerSettings, load_settings

log = logging.getLogger("detbot.worker")

# Exit statuses of `detbot worker` besides 0 (stopped on request).
EXIT_CONFIG = 2  # bad settings or Redis unreachable at start
EXIT_NO_MODEL = 3  # the model cannot be loaded: nothing could ever be processed
EXIT_WEDGED = 70  # stuck in native code past the job timeout: exit so a supervisor restarts us

# RQ's own worker heartbeat (its worker key lives worker_ttl + 60 s): once a second is plenty.
RQ_HEARTBEAT_MIN_INTERVAL = 1.0
# `rq suspend` takes effect within this long (RQ checks before every job, one round trip each time).
RQ_SUSPENSION_CHECK_INTERVAL = 1.0
# How long an orphan marker lives: long enough to be seen by two reaper passes, short enough not to pile up.
ORPHAN_MARK_TTL = 4 * ORPHAN_GRACE


def alive_key(worker_name: str) -> str:
    return f"{KEY_PREFIX}:alive:{worker_name}"


def running_key(queue_name: str) -> str:
    """Hash job id -> name of the worker running it."""
    return f"{KEY_PREFIX}:running:{queue_name}"


def reaper_lock_key(queue_name: str) -> str:
    return f"{KEY_PREFIX}:reaper:{queue_name}"


def orphan_key(queue_name: str, job_id: str) -> str:
    return f"{KEY_PREFIX}:orphan:{queue_name}:{job_id}"


def is_alive(redis: Redis, worker_name: str) -> bool:
    """True while the worker's heartbeat is fresh; also its readiness (the key appears after warm-up)."""
    return bool(redis.exists(alive_key(worker_name)))


def running_jobs(redis: Redis, queue_name: str) -> dict[str, str]:
    """Job id -> worker name, for every job a worker has started and not yet finished."""
    raw: dict[bytes, bytes] = redis.hgetall(running_key(queue_name))  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in raw.items()}


# Forget a running-job record only if it is still ours (the reaper may have handed the job to another worker).
_RELEASE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""

# Take an abandoned job back, atomically: only if it is still abandoned (a second reaper finds 'gone').
# KEYS: running, queue, intermediate, started registry, failed registry, detbot job hash, RQ job hash.
# ARGV: job id, dead worker ('' for an orphan of the dequeue window), max attempts.
_REQUEUE = """
local id = ARGV[1]
if ARGV[2] ~= '' then
  if redis.call('HGET', KEYS[1], id) ~= ARGV[2] then return {'gone', 0} end
  redis.call('HDEL', KEYS[1], id)
  redis.call('LREM', KEYS[3], 0, id)
else
  if redis.call('HEXISTS', KEYS[1], id) == 1 then return {'gone', 0} end
  if redis.call('LREM', KEYS[3], 0, id) == 0 then return {'gone', 0} end
end
local prefix = id .. ':'
for _, member in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  if string.sub(member, 1, #prefix) == prefix then redis.call('ZREM', KEYS[4], member) end
end
redis.call('ZREM', KEYS[5], id)
local status = redis.call('HGET', KEYS[6], 'status')
if status == 'ok' or status == 'error' then return {'done', 0} end
if not status then return {'unknown', 0} end
if redis.call('EXISTS', KEYS[7]) == 0 then return {'lost', 0} end
local attempts = redis.call('HINCRBY', KEYS[6], 'attempts', 1)
if attempts >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[7], 'status', 'failed')
  return {'exhausted', attempts}
end
redis.call('HSET', KEYS[7], 'status', 'queued')
redis.call('LREM', KEYS[2], 0, id)
redis.call('LPUSH', KEYS[2], id)
return {'requeued', attempts}
"""


@dataclass(frozen=True)
class Recovered:
    """One abandoned job the reaper dealt with."""

    job_id: str
    worker: str  # '' when the job was lost between dequeue and start
    result: str  # requeued, exhausted, done, lost, unknown
    attempts: int


def _requeue(redis: Redis, queue: Queue, job_id: str, worker: str, max_attempts: int) -> Recovered:
    keys = [
        running_key(queue.name), queue.key, queue.intermediate_queue_key, queue.started_job_registry.key,
        queue.failed_job_registry.key, store.job_key(job_id), Job.key_for(job_id),
    ]
    raw: Any = redis.eval(_REQUEUE, len(keys), *keys, job_id, worker, max_attempts)
    result = raw[0].decode() if isinstance(raw[0], bytes) else str(raw[0])
    return Recovered(job_id, worker, result, int(raw[1]))


def _settle(redis: Redis, rec: Recovered, why: str = "") -> None:
    """Answer for jobs that will not run again; log one line per recovered job."""
    who = why or (f"worker {rec.worker} died" if rec.worker else "it was lost between dequeue and start")
    if rec.result == "requeued":
        log.warning("job %s requeued at the front: %s (attempt %d)", rec.job_id, who, rec.attempts)
    elif rec.result == "exhausted":
        tasks.fail_job(
            redis, rec.job_id, store.CODE_RETRIES_EXHAUSTED,
            "This photo could not be processed: the workers handling it stopped several times.",
        )
        log.error("job %s failed_after_retries: %s (attempt %d)", rec.job_id, who, rec.attempts)
    elif rec.result == "lost":
        tasks.fail_job(redis, rec.job_id, store.CODE_INTERNAL, "Something went wrong on our side; please retry.")
        log.error("job %s internal_error: %s and its queue entry is gone", rec.job_id, who)
    elif rec.result == "done":
        log.info("job %s was already complete when %s; cleaned up", rec.job_id, who)
    elif rec.result == "unknown":
        log.warning("job %s is not a detbot job (or its record expired); dropped after %s", rec.job_id, who)


def _orphans(redis: Redis, queue: Queue, running: dict[str, str]) -> list[str]:
    """Job ids sitting in RQ's intermediate list, unclaimed by any worker, for at least ORPHAN_GRACE."""
    found = []
    ids: list[bytes] = redis.lrange(queue.intermediate_queue_key, 0, -1)  # type: ignore[assignment]
    for raw in ids:
        job_id = raw.decode()
        if job_id in running:
            continue
        key = orphan_key(queue.name, job_id)
        if redis.set(key, 1, nx=True, ex=ORPHAN_MARK_TTL):
            continue  # first sighting: a live worker may be between dequeue and start
        ttl: int = redis.ttl(key)
        age = ORPHAN_MARK_TTL - ttl
        if age >= ORPHAN_GRACE:
            found.append(job_id)
    return found


def reap(redis: Redis, queue: Queue, *, max_attempts: int) -> list[Recovered]:
    """Requeue (or give up) the jobs of dead workers on ``queue``. Safe to run anywhere, any number of times."""
    running = running_jobs(redis, queue.name)
    workers = sorted(set(running.values()))
    pipe = redis.pipeline(transaction=False)
    for name in workers:
        pipe.exists(alive_key(name))
    dead = {name for name, alive in zip(workers, pipe.execute(), strict=True) if not alive}
    abandoned = [(job_id, w) for job_id, w in running.items() if w in dead]
    abandoned += [(job_id, "") for job_id in _orphans(redis, queue, running)]
    recovered = []
    for job_id, worker in abandoned:
        rec = _requeue(redis, queue, job_id, worker, max_attempts)
        if rec.result != "gone":
            _settle(redis, rec)
            recovered.append(rec)
    return recovered


def try_reap(redis: Redis, queue: Queue, *, max_attempts: int, holder: str) -> list[Recovered] | None:
    """Run :func:`reap` if no worker did in the last REAP_INTERVAL (the lock is also the rate limit)."""
    if not redis.set(reaper_lock_key(queue.name), holder, nx=True, ex=REAP_INTERVAL):
        return None
    return reap(redis, queue, max_attempts=max_attempts)


@dataclass
class CurrentJob:
    job_id: str
    started: float  # time.monotonic()
    timeout: float


class Heartbeat(threading.Thread):
    """Liveness, reaping and the wedge watchdog; touches Redis only, never the model."""

    def __init__(self, worker: DetbotWorker) -> None:
        super().__init__(name="detbot-heartbeat", daemon=True)
        self.worker = worker
        self.stopped = threading.Event()
        self._failing = False

    def stop(self) -> None:
        self.stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(HEARTBEAT_INTERVAL * 2)

    def run(self) -> None:
        while True:
            self.tick()
            if self.stopped.wait(HEARTBEAT_INTERVAL):
                return

    def tick(self) -> None:
        w = self.worker
        try:
            w.connection.set(alive_key(w.name), f"{os.getpid()}@{socket.gethostname()}", ex=LIVENESS_TTL)
            recovered = try_reap(w.connection, w.queues[0], max_attempts=w.settings.max_attempts, holder=w.name)
            recovered = (recovered or []) + self.reclaim_own()
            if recovered and w.metrics is not None:
                for rec in recovered:
                    w.metrics.recovered(rec.result)
            if w.metrics is not None:
                w.metrics.queue_depth.set(w.queues[0].count)
            if self._failing:
                log.info("heartbeat: Redis reachable again")
            self._failing = False
        except RedisError as exc:
            if not self._failing:  # one line per outage, not one per beat
                log.error("heartbeat: Redis unreachable: %s: %s", type(exc).__name__, exc)
            self._failing = True
        except Exception as exc:  # the thread must outlive any surprise, or the worker would look dead
            log.error("heartbeat: %s: %s", type(exc).__name__, exc)
        self.watchdog()

    def reclaim_own(self) -> list[Recovered]:
        """Jobs recorded as ours that we are not running: the end of a job was lost in a Redis outage.

        The reaper skips them (we are alive), so we hand them back ourselves. The record is released
        before ``current`` moves on, so a job read here as not current has really been left behind.
        """
        w = self.worker
        queue = w.queues[0]
        mine = [job_id for job_id, name in running_jobs(w.connection, queue.name).items() if name == w.name]
        out = []
        for job_id in mine:
            current = w.current
            if current is not None and current.job_id == job_id:
                continue
            rec = _requeue(w.connection, queue, job_id, w.name, w.settings.max_attempts)
            if rec.result != "gone":
                _settle(w.connection, rec, f"worker {w.name} lost track of it")
                out.append(rec)
        return out

    def watchdog(self) -> None:
        current = self.worker.current
        if current is None or time.monotonic() - current.started < current.timeout + WEDGED_GRACE:
            return
        log.error(
            "job %s still running %.0f s past its %.0f s timeout: worker stuck, exiting so it is retried",
            current.job_id, time.monotonic() - current.started - current.timeout, current.timeout,
        )
        with contextlib.suppress(RedisError):
            self.worker.connection.delete(alive_key(self.worker.name))
        os._exit(EXIT_WEDGED)


class DetbotWorker(SimpleWorker):
    """RQ's SimpleWorker with liveness, abandoned-job recovery, a function allow-list and one-line logs."""

    log_result_lifespan = False

    def __init__(self, queue: Queue, *, settings: WorkerSettings, metrics: Any = None, **kwargs: Any) -> None:
        super().__init__(
            [queue], name=settings.worker_name, connection=queue.connection, serializer=JSONSerializer,
            log_job_description=False, **kwargs,
        )
        self.settings = settings
        self.metrics = metrics
        self.current: CurrentJob | None = None
        self.heartbeat_thread = Heartbeat(self)
        self._interrupted: str | None = None
        self._released = False
        self._suspension_checked = float("-inf")

    # --- start and stop -------------------------------------------------------------------------------

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        self._take_over_name()
        super().bootstrap(*args, **kwargs)
        self.heartbeat_thread.start()
        log.info("worker %s ready on queue %s", self.name, self.queues[0].name)

    def _take_over_name(self) -> None:
        """Reuse the name of a dead predecessor (a restarted container) and recover the job it held.

        RQ keeps a dead worker's record for minutes; the liveness key says within LIVENESS_TTL whether the
        name's owner is gone. If it stays alive, RQ refuses the name as before.
        """
        deadline = time.monotonic() + LIVENESS_TTL + HEARTBEAT_INTERVAL
        while is_alive(self.connection, self.name) and time.monotonic() < deadline:
            time.sleep(HEARTBEAT_INTERVAL / 4)
        if is_alive(self.connection, self.name):
            return
        self.connection.delete(self.key)
        queue = self.queues[0]
        for job_id, worker in running_jobs(self.connection, queue.name).items():
            if worker == self.name:  # our predecessor died holding it: the reaper cannot tell us apart
                _settle(self.connection, _requeue(self.connection, queue, job_id, worker, self.settings.max_attempts))

    def handle_warm_shutdown_request(self) -> None:
        current = self.current
        doing = f"finishing job {current.job_id}, then exiting" if current else "exiting"
        log.info("worker %s: stop requested (SIGTERM/SIGINT), %s", self.name, doing)

    def request_force_stop(self, signum: int, frame: Any) -> None:
        try:
            super().request_force_stop(signum, frame)
        except SystemExit:
            # Stopping now: further signals would only interrupt the clean-up (or, once the interpreter
            # shuts down, kill it outright); SIGKILL still works.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            raise

    def teardown(self) -> None:
        self.heartbeat_thread.stop()
        with contextlib.suppress(RedisError):
            self.connection.delete(alive_key(self.name))
        super().teardown()

    # --- taking jobs ----------------------------------------------------------------------------------

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        while True:
            try:
                return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            except RedisError:
                raise
            except Exception as exc:  # a malformed job hash must not stop the worker
                job_id = getattr(exc, "job_id", None)
                if job_id is None:
                    raise
                log.warning("job %s refused: unreadable job record (%s)", job_id, type(exc).__name__)
                self.connection.lrem(self.queues[0].intermediate_queue_key, 0, job_id)

    def _refusal(self, job: Job) -> str | None:
        """Why this job must not run, or None. JSON alone does not stop RQ importing any function by name."""
        try:
            func_name, args = job.func_name, job.args
        except DeserializationError:
            return "its payload is not JSON (pickle is refused)"
        except Exception as exc:
            return f"its payload is unreadable ({type(exc).__name__})"
        if func_name != DETECT_JOB:
            return f"function {func_name!r} is not allowed"
        if job.kwargs or len(args) != 1 or not isinstance(args[0], str):
            return "unexpected arguments"
        return None

    def _refuse(self, job: Job, queue: Queue, reason: str) -> None:
        log.warning("job %s refused unrun: %s", job.id, reason)
        with self.connection.pipeline() as pipe:
            pipe.lrem(queue.intermediate_queue_key, 0, job.id)
            job.set_status(JobStatus.FAILED, pipeline=pipe)
            queue.failed_job_registry.add(job, ttl=RESULT_TTL, pipeline=pipe)
            pipe.execute()
        if self.metrics is not None:
            self.metrics.refused()

    def execute_job(self, job: Job, queue: Queue) -> None:
        reason = self._refusal(job)
        if reason is not None:
            self._refuse(job, queue, reason)
            return
        # Both sides may tighten the timeout: the producer per job, the worker for its hardware.
        job.timeout = min(job.timeout or self.settings.job_timeout, self.settings.job_timeout)
        # SimpleWorker.execute_job minus prepare_execution, which moves into prepare_job_execution.
        self.perform_job(job, queue)
        self.set_state(WorkerStatus.IDLE)

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """RQ's prepare_execution and prepare_job_execution, in one transaction instead of two."""
        self.current = CurrentJob(job.id, time.monotonic(), float(job.timeout or self.settings.job_timeout))
        self._released = False
        ttl = self.get_heartbeat_ttl(job)
        # No MULTI: half the replies to parse. Any prefix of these writes is a state the reaper handles.
        with self.connection.pipeline(transaction=False) as pipe:
            self.execution = Execution.create(job, ttl, pipeline=pipe, worker_name=self.name)
            self.set_state(WorkerStatus.BUSY, pipeline=pipe)
            self.set_current_job_id(job.id, pipeline=pipe)  # also records the job in detbot:running
            self.set_current_job_working_time(0, pipeline=pipe)
            self.heartbeat(ttl, pipeline=pipe)
            job.heartbeat(now(), ttl, pipeline=pipe)
            job.prepare_for_execution(self.name, pipeline=pipe)
            pipe.lrem(self.queues[0].intermediate_queue_key, 1, job.id)
            pipe.execute()

    def set_current_job_id(self, job_id: str | None = None, pipeline: Any = None) -> None:
        """RQ calls this in the transaction that starts a job and in the one that ends it: the running-job
        record rides along, so it is written atomically with RQ's own bookkeeping and costs no round trip."""
        super().set_current_job_id(job_id, pipeline)
        conn = pipeline if pipeline is not None else self.connection
        if job_id is not None:
            conn.hset(running_key(self.queues[0].name), job_id, self.name)
        elif self.current is not None and self._interrupted != self.current.job_id:
            conn.eval(_RELEASE, 1, running_key(self.queues[0].name), self.current.job_id, self.name)
            self._released = True
            if pipeline is not None:  # RQ sets IDLE right after, in a round trip of its own
                super().set_state(WorkerStatus.IDLE, pipeline)

    # Round trips to Redis are most of the queue's cost per job, and on a busy machine each one waits for
    # redis-server to be scheduled. RQ's bookkeeping is kept; only its redundant writes are dropped.

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is not None:
            super().heartbeat(timeout, pipeline)
            return
        last = self.last_heartbeat
        if last is not None and timeout is None and (now() - last).total_seconds() < RQ_HEARTBEAT_MIN_INTERVAL:
            return  # RQ beats three times a job; its worker key lives for minutes
        with self.connection.pipeline() as pipe:  # RQ sends its two commands one by one
            super().heartbeat(timeout, pipe)
            pipe.execute()

    def set_state(self, state: str, pipeline: Any = None) -> None:
        if pipeline is None and state == self._state:
            return  # RQ sets IDLE twice between two jobs
        super().set_state(state, pipeline)

    def check_for_suspension(self, burst: bool) -> None:
        now_ = time.monotonic()
        if now_ - self._suspension_checked < RQ_SUSPENSION_CHECK_INTERVAL:
            return  # RQ checks `rq suspend` before every job, in a round trip of its own
        self._suspension_checked = now_
        super().check_for_suspension(burst)

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: Any) -> None:
        """RQ's version without job dependencies (detbot jobs have none): no WATCH, no SMEMBERS, one round trip."""
        execution = self.execution
        with self.connection.pipeline(transaction=False) as pipe:  # as above: no MULTI needed
            self.increment_successful_job_count(pipeline=pipe)
            if job.started_at and job.ended_at:
                self.increment_total_working_time(job.ended_at - job.started_at, pipe)
            result_ttl = job.get_result_ttl(self.default_result_ttl)
            if result_ttl != 0:
                job._handle_success(
                    result_ttl, pipeline=pipe, worker_name=self.name,
                    execution_id=execution.id if execution else None,
                    execution_started_at=execution.created_at if execution else None,
                    execution_ended_at=job.ended_at,
                )
            job.cleanup(result_ttl, pipeline=pipe, remove_from_queue=False)
            self.cleanup_execution(job, pipeline=pipe)
            pipe.execute()

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        job.ended_at = now()  # RQ also beats the job here, for success callbacks; detbot has none

    def perform_job(self, job: Job, queue: Queue) -> bool:
        try:
            return super().perform_job(job, queue)
        finally:
            if not self._released and self._interrupted != job.id:  # RQ's bookkeeping failed half-way
                self.connection.eval(_RELEASE, 1, running_key(queue.name), job.id, self.name)
            self.current = None
            if self.metrics is not None and job.enqueued_at is not None:
                self.metrics.observe_latency(job.enqueued_at)

    # --- failures -------------------------------------------------------------------------------------

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        """One log line instead of RQ's traceback, and an answer for a job that escaped detect_job."""
        exc_type, exc = exc_info[0], exc_info[1]
        if exc_type is not None and issubclass(exc_type, (SystemExit, KeyboardInterrupt)):
            self._interrupted = job.id
            log.warning("job %s interrupted by shutdown; it will be requeued", job.id)
            return
        name = exc_type.__name__ if exc_type is not None else "Exception"
        log.error("job %s failed: %s: %s", job.id, name, exc)
        code = store.CODE_TIMEOUT if isinstance(exc, JobTimeoutException) else store.CODE_INTERNAL
        try:
            tasks.fail_job(self.connection, job.id, code, "Something went wrong on our side; please retry.")
        except RedisError as redis_exc:
            log.error("job %s: cannot record its failure: %s: %s", job.id, type(redis_exc).__name__, redis_exc)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout
    )
    # RQ logs several lines per job and a traceback per failure; detbot logs one line per job instead.
    for noisy in ("rq.worker", "rq.job", "rq.queue", "rq.registry"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="detbot worker", description="Run a YOLO worker on the Redis queue.")
    parser.add_argument("--name", help="unique worker name (default: $DETBOT_WORKER_NAME or a random one)")
    parser.add_argument("--queue", help="queue to listen on (default: $DETBOT_QUEUE or 'detbot')")
    parser.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    return parser.parse_args(argv)


def _load_detector(settings: WorkerSettings) -> Any:
    import cv2

    from detector.model import Detector
    from detector.runtime import configure_threads

    configure_threads(settings.threads)
    cv2.setNumThreads(0)
    return Detector.from_settings(settings)  # loads and runs one warm-up inference


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError

    from detector.errors import ModelLoadError

    args = _parse(argv)
    try:
        settings = load_settings()
    except ValidationError as exc:
        print(f"detbot worker: invalid settings: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    overrides = {k: v for k, v in (("worker_name", args.name), ("queue", args.queue)) if v}
    settings = settings.model_copy(update=overrides)
    _configure_logging(settings.log_level)
    redis = Redis.from_url(settings.redis_url)
    try:
        redis.ping()
    except RedisError as exc:
        log.error("cannot reach Redis at REDIS_URL: %s: %s", type(exc).__name__, exc)
        return EXIT_CONFIG
    metrics = None
    if settings.metrics_port:
        from jobs.metrics import WorkerMetrics

        metrics = WorkerMetrics()
        metrics.serve(settings.metrics_host, settings.metrics_port)
    started = time.perf_counter()
    try:
        detector = _load_detector(settings)
    except ModelLoadError as exc:
        log.error("%s", exc)
        return EXIT_NO_MODEL
    log.info("model %s loaded and warmed on %s in %.1f s", detector.model_name, detector.device,
             time.perf_counter() - started)
    if metrics is not None:
        metrics.set_ready(True)
    queue = make_queue(redis, settings.queue)
    tasks.set_context(tasks.WorkerContext(redis, detector, metrics, settings.test_job_delay_ms, queue.key))
    try:
        worker = DetbotWorker(queue, settings=settings, metrics=metrics)
        worker.work(burst=args.burst, logging_level="WARNING")
    except ValueError as exc:  # RQ: a live worker already has this name
        log.error("%s", exc)
        return EXIT_CONFIG
    finally:
        tasks.set_context(None)
    return 0
