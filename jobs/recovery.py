"""Recovery: a photo whose worker dies runs again on another worker, and is still answered only once.

Kept apart from :mod:`jobs.worker` because it is the part of a worker that serves the *other* workers: it
runs in a thread that never touches the model, and what it reads is what a dead worker left in Redis. It
holds:

- liveness: ``keys.alive(worker)``, a key with a short TTL that each worker's heartbeat renews. It appears
  after the model's warm-up, so it is also the worker's readiness (:func:`is_alive`);
- the running-job records: ``keys.running(queue)``, job id -> worker, written by the worker inside the
  Redis round trips in which RQ starts and ends the job (:func:`record`, :func:`release`);
- the reaper: a job recorded by a worker whose liveness key is gone, or left in RQ's intermediate list by
  a worker that died between dequeue and start, is taken back by one Lua script on RQ's registries:
  requeued at the front, or answered ``failed_after_retries`` after ``max_attempts`` (:func:`reap`, run by
  whichever worker holds ``keys.reaper_lock(queue)``: :func:`try_reap`);
- the :class:`Heartbeat` thread of each worker: renews its liveness, runs the reaper, hands back jobs its
  worker lost track of, and exits the process when a job is stuck in native code (:data:`EXIT_WEDGED`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.job import Job

from jobs import fair, keys, models, store, tasks
from jobs.defaults import HEARTBEAT_INTERVAL, LIVENESS_TTL, ORPHAN_GRACE, REAP_INTERVAL, RESULT_TTL, WEDGED_GRACE

if TYPE_CHECKING:
    from jobs.metrics import WorkerMetrics

# The worker's logger: recovery lines belong to the worker's log and are read and filtered with it.
log = logging.getLogger("detbot.worker")

# Exit status of a worker stuck in native code past its job's timeout, so that its supervisor restarts it.
EXIT_WEDGED = 70

# How long an orphan marker lives: long enough to be seen by two reaper passes, short enough not to pile up.
ORPHAN_MARK_TTL = 4 * ORPHAN_GRACE
# A live holder of a worker name renews its liveness key within this long: past it, the holder is gone.
TAKEOVER_WAIT = LIVENESS_TTL + HEARTBEAT_INTERVAL
# A worker taking over a name looks a few times per heartbeat whether the old holder's key has lapsed.
TAKEOVER_POLL = HEARTBEAT_INTERVAL / 4
# A beat in progress ends within this; a longer one hangs on Redis, and the daemon thread dies with the process.
HEARTBEAT_JOIN_TIMEOUT = HEARTBEAT_INTERVAL * 2


# -- liveness ---------------------------------------------------------------------------------------------

def is_alive(redis: Redis, worker_name: str) -> bool:
    """True while the worker's heartbeat is fresh; also its readiness (the key appears after warm-up)."""
    return bool(redis.exists(keys.alive(worker_name)))


def mark_alive(redis: Redis, worker_name: str, queue_name: str | None = None) -> None:
    """Renew the worker's liveness; the value tells an operator which process on which host holds the name.
    With ``queue_name``, its queue's view too (:mod:`jobs.models`: whether a model has a live worker)."""
    redis.set(keys.alive(worker_name), f"{os.getpid()}@{socket.gethostname()}", ex=LIVENESS_TTL)
    if queue_name is not None:
        models.beat(redis, queue_name, worker_name)


def mark_gone(redis: Redis, worker_name: str, queue_name: str | None = None) -> None:
    """Drop the liveness key now; best effort, since its TTL says the same a few seconds later."""
    with contextlib.suppress(RedisError):
        redis.delete(keys.alive(worker_name))
        if queue_name is not None:
            models.leave(redis, queue_name, worker_name)


def wait_until_gone(redis: Redis, worker_name: str, stopping: Callable[[], bool] = lambda: False) -> bool:
    """Wait for a previous holder of ``worker_name`` (a restarted container's) to stop looking alive.

    False when it is still alive after TAKEOVER_WAIT (the name is really in use), or when ``stopping()``
    turns true meanwhile: a worker asked to stop does not wait out a predecessor.
    """
    deadline = time.monotonic() + TAKEOVER_WAIT
    while is_alive(redis, worker_name) and time.monotonic() < deadline and not stopping():
        time.sleep(TAKEOVER_POLL)
    return not is_alive(redis, worker_name)


# -- running-job records --------------------------------------------------------------------------------

def running_jobs(redis: Redis, queue_name: str) -> dict[str, str]:
    """Job id -> worker name, for every job a worker has started and not yet finished."""
    raw: dict[bytes, bytes] = redis.hgetall(keys.running(queue_name))  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in raw.items()}


# Forget a running-job record only if it is still ours (the reaper may have handed the job to another worker).
_RELEASE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""


def record(conn: Redis, queue_name: str, job_id: str, worker_name: str) -> None:
    """Record that ``worker_name`` runs ``job_id``; ``conn`` is usually the pipeline in which RQ starts it."""
    conn.hset(keys.running(queue_name), job_id, worker_name)


def release(conn: Redis, queue_name: str, job_id: str, worker_name: str) -> None:
    """Forget the record if it is still ``worker_name``'s; ``conn`` is usually the pipeline in which RQ ends it."""
    conn.eval(_RELEASE, 1, keys.running(queue_name), job_id, worker_name)


# -- the reaper -----------------------------------------------------------------------------------------

# Take an abandoned job back, atomically: only if it is still abandoned (a second reaper finds 'gone').
# KEYS: running, queue, intermediate, started registry, failed registry, detbot job hash, RQ job hash.
# ARGV: job id, dead worker ('' for an orphan of the dequeue window), max attempts, TTL of an ended RQ job.
# A job that will not run again keeps its RQ hash only ARGV[4] seconds: no RQ worker finishes it, so
# nothing else would ever expire it (issue 11: the hashes of reaped jobs piled up for ever).
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
if status == 'ok' or status == 'error' then
  redis.call('EXPIRE', KEYS[7], ARGV[4])
  return {'done', 0}
end
if not status then
  redis.call('EXPIRE', KEYS[7], ARGV[4])
  return {'unknown', 0}
end
if redis.call('EXISTS', KEYS[7]) == 0 then return {'lost', 0} end
local attempts = redis.call('HINCRBY', KEYS[6], 'attempts', 1)
if attempts >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[7], 'status', 'failed')
  redis.call('EXPIRE', KEYS[7], ARGV[4])
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
    script_keys = [
        keys.running(queue.name), queue.key, queue.intermediate_queue_key, queue.started_job_registry.key,
        queue.failed_job_registry.key, keys.job(job_id), Job.key_for(job_id),
    ]
    raw: Any = redis.eval(_REQUEUE, len(script_keys), *script_keys, job_id, worker, max_attempts, RESULT_TTL)
    result = raw[0].decode() if isinstance(raw[0], bytes) else str(raw[0])
    return Recovered(job_id, worker, result, int(raw[1]))


def _settle(redis: Redis, rec: Recovered, why: str = "") -> None:
    """Answer for jobs that will not run again; log one line per recovered job."""
    who = why or (f"worker {rec.worker} died" if rec.worker else "it was lost between dequeue and start")
    if rec.result == "requeued":
        log.warning("job %s requeued at the front: %s (attempt %d)", rec.job_id, who, rec.attempts)
    elif rec.result == "exhausted":
        tasks.fail_job(redis, rec.job_id, store.CODE_RETRIES_EXHAUSTED, f"{rec.attempts} starts, each worker died")
        log.error("job %s failed_after_retries: %s (attempt %d)", rec.job_id, who, rec.attempts)
    elif rec.result == "lost":
        tasks.fail_job(redis, rec.job_id, store.CODE_INTERNAL, "queue entry lost after its worker died")
        log.error("job %s internal_error: %s and its queue entry is gone", rec.job_id, who)
    elif rec.result == "done":
        log.info("job %s was already complete when %s; cleaned up", rec.job_id, who)
    elif rec.result == "unknown":
        log.warning("job %s is not a detbot job (or its record expired); dropped after %s", rec.job_id, who)


def _take_back(
    redis: Redis, queue: Queue, job_id: str, worker: str, max_attempts: int, why: str = ""
) -> Recovered | None:
    """Requeue or answer one abandoned job; None when someone else took it back first."""
    rec = _requeue(redis, queue, job_id, worker, max_attempts)
    if rec.result == "gone":
        return None
    _settle(redis, rec, why)
    return rec


def _orphans(redis: Redis, queue: Queue, running: dict[str, str]) -> list[str]:
    """Job ids sitting in RQ's intermediate list, unclaimed by any worker, for at least ORPHAN_GRACE."""
    found = []
    ids: list[bytes] = redis.lrange(queue.intermediate_queue_key, 0, -1)  # type: ignore[assignment]
    for raw in ids:
        job_id = raw.decode()
        if job_id in running:
            continue
        key = keys.orphan(queue.name, job_id)
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
        pipe.exists(keys.alive(name))
    dead = {name for name, alive in zip(workers, pipe.execute(), strict=True) if not alive}
    abandoned = [(job_id, w) for job_id, w in running.items() if w in dead]
    abandoned += [(job_id, "") for job_id in _orphans(redis, queue, running)]
    recovered = []
    for job_id, worker in abandoned:
        rec = _take_back(redis, queue, job_id, worker, max_attempts)
        if rec is not None:
            recovered.append(rec)
    released = fair.sweep_held(redis, queue.name, queue.key)
    if released:
        log.warning("released %d held photo(s) whose chats' in-flight jobs had vanished", released)
    return recovered


def try_reap(redis: Redis, queue: Queue, *, max_attempts: int, holder: str) -> list[Recovered] | None:
    """Run :func:`reap` if no worker did in the last REAP_INTERVAL (the lock is also the rate limit)."""
    if not redis.set(keys.reaper_lock(queue.name), holder, nx=True, ex=REAP_INTERVAL):
        return None
    return reap(redis, queue, max_attempts=max_attempts)


def reclaim_predecessor(redis: Redis, queue: Queue, worker_name: str, *, max_attempts: int) -> None:
    """Take back the jobs a dead earlier holder of ``worker_name`` left recorded: the reaper cannot tell a
    dead worker from its live successor of the same name."""
    for job_id, worker in running_jobs(redis, queue.name).items():
        if worker == worker_name:
            _take_back(redis, queue, job_id, worker, max_attempts)


# -- the heartbeat thread -------------------------------------------------------------------------------

@dataclass
class CurrentJob:
    """The job a worker is running, as its heartbeat sees it."""

    job_id: str
    started: float  # time.monotonic()
    timeout: float


class Heartbeat(threading.Thread):
    """Liveness, reaping and the wedge watchdog of one worker; touches Redis only, never the model."""

    def __init__(
        self,
        redis: Redis,
        queue: Queue,
        worker_name: str,
        *,
        max_attempts: int,
        metrics: WorkerMetrics | None,
        current: Callable[[], CurrentJob | None],
    ) -> None:
        super().__init__(name="detbot-heartbeat", daemon=True)
        self.redis = redis
        self.queue = queue
        self.worker_name = worker_name
        self.max_attempts = max_attempts
        self.metrics = metrics
        # Read afresh at every use: the worker's main thread moves it from job to job.
        self.current = current
        self.stopped = threading.Event()
        self._failing = False

    def stop(self) -> None:
        self.stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(HEARTBEAT_JOIN_TIMEOUT)

    def run(self) -> None:
        while True:
            self.tick()
            if self.stopped.wait(HEARTBEAT_INTERVAL):
                return

    def tick(self) -> None:
        try:
            mark_alive(self.redis, self.worker_name, self.queue.name)
            recovered = try_reap(self.redis, self.queue, max_attempts=self.max_attempts, holder=self.worker_name)
            recovered = (recovered or []) + self.reclaim_own()
            if recovered and self.metrics is not None:
                for rec in recovered:
                    self.metrics.recovered(rec.result)
            if self.metrics is not None:
                self.metrics.queue_depth.set(self.queue.count)
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
        records = running_jobs(self.redis, self.queue.name)
        mine = [job_id for job_id, name in records.items() if name == self.worker_name]
        out = []
        for job_id in mine:
            current = self.current()
            if current is not None and current.job_id == job_id:
                continue
            why = f"worker {self.worker_name} lost track of it"
            rec = _take_back(self.redis, self.queue, job_id, self.worker_name, self.max_attempts, why)
            if rec is not None:
                out.append(rec)
        return out

    def watchdog(self) -> None:
        current = self.current()
        if current is None or time.monotonic() - current.started < current.timeout + WEDGED_GRACE:
            return
        log.error(
            "job %s still running %.0f s past its %.0f s timeout: worker stuck, exiting so it is retried",
            current.job_id, time.monotonic() - current.started - current.timeout, current.timeout,
        )
        mark_gone(self.redis, self.worker_name, self.queue.name)
        os._exit(EXIT_WEDGED)
