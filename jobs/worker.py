"""``detbot worker``: one process, one model loaded and warmed once, jobs from the Redis queue.

This module holds the RQ worker subclass and the command that starts it; what lets another worker take
over a dead one's job (liveness, running-job records, the reaper, the heartbeat thread) is in
:mod:`jobs.recovery`, and the job function in :mod:`jobs.tasks`.

- An RQ ``SimpleWorker`` (no fork per job: no reloaded model, no OpenMP/OpenCV state broken by fork), with
  JSON serialization, and only ``jobs.tasks.detect_job`` allowed to run (anything else is refused unrun).
- Each job's running-job record rides in the Redis round trips in which RQ starts and ends the job; RQ's
  redundant round trips per job are dropped (they are most of the queue's cost).
- SIGTERM: the current job finishes, then the worker exits 0 (RQ's warm shutdown). A second SIGTERM stops at
  once; the interrupted job is left for the reaper to requeue. During start-up (imports, model load, warm-up)
  nothing is held and SIGTERM ends it at once; idle, the worker exits within a second or so.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import DeserializationError, StopRequested
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException
from rq.utils import now
from rq.worker import SimpleWorker, WorkerStatus

from detector.names import ClassNames, ClassNamesError, load_class_names
from jobs import models, recovery, store, tasks
from jobs.client import DETECT_JOB, make_queue
from jobs.defaults import RESULT_TTL
from jobs.recovery import CurrentJob, Heartbeat
from jobs.render import SERVE_BLOCK, RenderServer
from jobs.settings import WorkerSettings, load_settings
from jobs.shutdown import end_process
from jobs.video import VIDEO_SPAN_JOB

if TYPE_CHECKING:
    from jobs.metrics import WorkerMetrics

log = logging.getLogger("detbot.worker")
# The packages whose loggers a worker writes (``detbot.worker``, ``detector.model`` ...).
OWN_LOGGERS = ("detbot", "detector", "jobs")

# The job functions a worker runs; anything else is refused unrun (RQ would import any function by name).
ALLOWED_JOBS = frozenset({DETECT_JOB, VIDEO_SPAN_JOB})

# Exit statuses of `detbot worker` besides 0 (stopped on request); 70, stuck in native code, is
# recovery.EXIT_WEDGED, where the watchdog exits.
EXIT_CONFIG = 2  # bad settings or Redis unreachable at start
EXIT_NO_MODEL = 3  # the model cannot be loaded: nothing could ever be processed

# RQ's own worker heartbeat (its worker key lives worker_ttl + 60 s): once a second is plenty.
RQ_HEARTBEAT_MIN_INTERVAL = 1.0
# `rq suspend` takes effect within this long (RQ checks before every job, one round trip each time).
RQ_SUSPENSION_CHECK_INTERVAL = 1.0
# The thread reading RQ's command channel (`rq` shutdown / stop-job commands) wakes this often (one select()
# on its socket, no Redis traffic). RQ's own wakes once a minute, and redis-py (>= 8) joins that thread when
# the worker unsubscribes at exit: stops took up to 60 s.
COMMAND_CHANNEL_POLL = 0.2
# After a lost connection the command channel's thread tries again this much later (redis-py resubscribes).
COMMAND_CHANNEL_RETRY = 1.0
# The buttons' render thread finishes the re-drawing in hand (tens of ms) after its wait for work.
RENDER_STOP_TIMEOUT = SERVE_BLOCK + 2.0


class StartupInterrupted(BaseException):
    """SIGTERM/SIGINT while the worker was starting: nothing is held yet, so start-up just ends. A
    BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way swallows it."""


class StopRequest:
    """A stop asked by SIGTERM/SIGINT before RQ's own handlers take over (they do once the worker loop runs).

    While ``interruptible`` (imports, model load, warm-up: nothing held) the signal ends start-up at once
    (:class:`StartupInterrupted`). Once the worker registers, the request is only noted and acted on at
    the worker's next step: the take-over wait, or the loop's first check.
    """

    def __init__(self) -> None:
        self._requested = threading.Event()
        self._listeners: list[Callable[[], None]] = []
        self.interruptible = True

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.set()
        if self.interruptible:
            raise StartupInterrupted(signum)

    def on_stop(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (from a signal handler: it must only flag something) when a stop is asked."""
        self._listeners.append(listener)
        if self.is_set():
            listener()

    def set(self) -> None:
        self._requested.set()
        for listener in self._listeners:
            listener()

    def is_set(self) -> bool:
        return self._requested.is_set()


class DetbotWorker(SimpleWorker):
    """RQ's SimpleWorker with liveness, abandoned-job recovery, a function allow-list and one-line logs."""

    log_result_lifespan = False

    def __init__(self, queue: Queue, *, settings: WorkerSettings, metrics: Any = None,
                 stop_request: StopRequest | None = None, **kwargs: Any) -> None:
        super().__init__(
            [queue], name=settings.worker_name, connection=queue.connection, serializer=JSONSerializer,
            log_job_description=False, **kwargs,
        )
        self.settings = settings
        self.metrics = metrics
        self.current: CurrentJob | None = None
        self.heartbeat_thread = Heartbeat(
            self.connection, queue, self.name, max_attempts=settings.max_attempts, metrics=metrics,
            current=lambda: self.current,
        )
        self._interrupted: str | None = None
        self._released = False
        self._suspension_checked = float("-inf")
        # Set once a stop is asked, by a signal at start-up (main's handler) or later (RQ's, see request_stop).
        self.stop_request = stop_request or StopRequest()
        # True only while the main thread waits for a job: the one place where a stop may interrupt it.
        self._waiting_for_job = False

    # --- start and stop -------------------------------------------------------------------------------

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        self._take_over_name()
        if self.stop_request.is_set():
            raise StopRequested  # asked to stop before registering: nothing to undo
        super().bootstrap(*args, **kwargs)
        self.heartbeat_thread.start()
        log.info("worker %s ready on queue %s", self.name, self.queues[0].name)

    def _take_over_name(self) -> None:
        """Reuse the name of a dead predecessor (a restarted container) and recover the job it held.

        RQ keeps a dead worker's record for minutes; the liveness key says within LIVENESS_TTL whether the
        name's owner is gone. If it stays alive, RQ refuses the name as before.
        """
        if not recovery.wait_until_gone(self.connection, self.name, self.stop_request.is_set):
            return
        self.connection.delete(self.key)
        recovery.reclaim_predecessor(
            self.connection, self.queues[0], self.name, max_attempts=self.settings.max_attempts
        )

    def request_stop(self, signum: int, frame: Any) -> None:
        """RQ's warm shutdown, except where it takes effect. Idle, RQ raises StopRequested wherever the main
        thread happens to be, also between taking a job and starting it (the job then waits in RQ's
        intermediate list for the reaper). Here it is raised only while the worker waits for a job; a job
        already taken runs, and the loop stops after it (:meth:`check_for_suspension`)."""
        self.stop_request.set()
        try:
            super().request_stop(signum, frame)  # logs, and arms the second signal's cold shutdown
        except StopRequested:
            if self._waiting_for_job:
                raise

    def set_shutdown_requested_date(self) -> None:
        """RQ writes this from the signal handler, in the middle of the job in hand: a Redis error here must
        not be raised into that job (the date is only shown by dashboards)."""
        try:
            super().set_shutdown_requested_date()
        except RedisError as exc:
            log.warning("worker %s: could not record the stop request: %s", self.name, type(exc).__name__)

    def handle_warm_shutdown_request(self) -> None:
        current = self.current
        if current is not None:
            doing = f"finishing job {current.job_id}, then exiting"
        else:
            doing = "exiting" if self._waiting_for_job else "finishing the job just taken, if any, then exiting"
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
        recovery.mark_gone(self.connection, self.name, self.queues[0].name)
        try:
            super().teardown()  # RQ: its death record and the command channel
        except RedisError as exc:  # RQ's worker record expires by itself; the stop must not fail on it
            log.warning("worker %s: could not unregister from RQ: %s: %s", self.name, type(exc).__name__, exc)

    def subscribe(self) -> None:
        """RQ's command channel, read by a thread that wakes every COMMAND_CHANNEL_POLL seconds: the worker
        stops that thread on its way out, and waits for it."""
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]  # RQ types it as None
            sleep_time=COMMAND_CHANNEL_POLL, daemon=True, exception_handler=self._command_channel_failed
        )

    @staticmethod
    def _command_channel_failed(exc: BaseException, _pubsub: Any, _thread: Any) -> None:
        """As RQ's: a lost connection is retried (the heartbeat logs the outage), anything else ends the thread."""
        if not isinstance(exc, RedisConnectionError):
            raise exc
        time.sleep(COMMAND_CHANNEL_RETRY)

    # --- taking jobs ----------------------------------------------------------------------------------

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        while True:
            self._waiting_for_job = True  # from here a stop request interrupts the wait (request_stop)
            try:
                if self.stop_request.is_set():  # asked just before the flag went up
                    raise StopRequested
                return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            except RedisError:
                raise
            except Exception as exc:  # a malformed job hash must not stop the worker
                job_id = getattr(exc, "job_id", None)
                if job_id is None:
                    raise
                log.warning("job %s refused: unreadable job record (%s)", job_id, type(exc).__name__)
                self.connection.lrem(self.queues[0].intermediate_queue_key, 0, job_id)
            finally:
                self._waiting_for_job = False

    def _refusal(self, job: Job) -> str | None:
        """Why this job must not run, or None. JSON alone does not stop RQ importing any function by name."""
        try:
            func_name, args = job.func_name, job.args
        except DeserializationError:
            return "its payload is not JSON (pickle is refused)"
        except Exception as exc:
            return f"its payload is unreadable ({type(exc).__name__})"
        if func_name not in ALLOWED_JOBS:
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
            pipe.expire(job.key, RESULT_TTL)  # no RQ worker finishes it: nothing else would expire its hash
            pipe.execute()
        if self.metrics is not None:
            self.metrics.refused()

    def execute_job(self, job: Job, queue: Queue) -> None:
        reason = self._refusal(job)
        if reason is not None:
            self._refuse(job, queue, reason)
            return
        # The worker's DETBOT_JOB_TIMEOUT decides, raised or lowered: it is set for the hardware the model
        # runs on, in one place, whatever timeout the producer wrote into the job.
        job.timeout = self.settings.job_timeout
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
            recovery.record(conn, self.queues[0].name, job_id, self.name)
        elif self.current is not None and self._interrupted != self.current.job_id:
            recovery.release(conn, self.queues[0].name, self.current.job_id, self.name)
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
        if self.stop_request.is_set():
            # The loop's first step: a stop asked while registering, or while a job taken was running.
            raise StopRequested
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
                recovery.release(self.connection, queue.name, job.id, self.name)
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
            tasks.fail_job(self.connection, job.id, code, f"{name} outside detect_job")
        except RedisError as redis_exc:
            log.error("job %s: cannot record its failure: %s: %s", job.id, type(redis_exc).__name__, redis_exc)


def configure_logging(level: str) -> None:
    """One line per record on stdout; detbot's own loggers at ``level`` whatever the root logger says:
    OpenVINO's model conversion (a worker's first export) sets the root to ERROR while it runs, and every
    "job ... ok" line of the photos answered meanwhile went missing."""
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout
    )
    for own in OWN_LOGGERS:
        logging.getLogger(own).setLevel(level.upper())
    # RQ logs several lines per job and a traceback per failure; detbot logs one line per job instead.
    for noisy in ("rq.worker", "rq.job", "rq.queue", "rq.registry"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="detbot worker", description="Run a YOLO worker on the Redis queue.")
    parser.add_argument("--name", help="unique worker name (default: $DETBOT_WORKER_NAME or a random one)")
    parser.add_argument("--queue", help="queue to listen on (default: the served model's, see DETBOT_MODELS; "
                        "$DETBOT_QUEUE or 'detbot' for a single model)")
    parser.add_argument("--model-name", help="which model of DETBOT_MODELS to serve (default: "
                        "$DETBOT_WORKER_MODEL or the first)")
    parser.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    return parser.parse_args(argv)


def _settings(args: argparse.Namespace) -> WorkerSettings | None:
    """The environment's settings with the command line's overrides; None (one line said why) if invalid."""
    from pydantic import ValidationError

    try:
        settings = load_settings()
    except ValidationError as exc:
        print(f"detbot worker: invalid settings: {exc}", file=sys.stderr)
        return None
    if args.model_name:
        settings = settings.model_copy(update={"worker_model": args.model_name})
    try:
        settings = settings.serving()  # one process = one model: its weights and its queue
    except ValueError as exc:
        print(f"detbot worker: invalid settings: {exc}", file=sys.stderr)
        return None
    overrides = {k: v for k, v in (("worker_name", args.name), ("queue", args.queue)) if v}
    return settings.model_copy(update=overrides)


def _connect(url: str) -> Redis | None:
    """A connection known to work, or None (one line said why): a worker that cannot reach Redis is useless."""
    redis = Redis.from_url(url)
    try:
        redis.ping()
    except RedisError as exc:
        log.error("cannot reach Redis at REDIS_URL: %s: %s", type(exc).__name__, exc)
        return None
    return redis


def _start_metrics(settings: WorkerSettings) -> WorkerMetrics | None:
    """The worker's /metrics and /healthz server, when a port is set (off by default: one port per worker)."""
    if not settings.metrics_port:
        return None
    from jobs.metrics import WorkerMetrics

    metrics = WorkerMetrics()
    metrics.serve(settings.metrics_host, settings.metrics_port)
    return metrics


def _load_detector(settings: WorkerSettings) -> Any:
    import cv2

    from detector.model import Detector
    from detector.runtime import configure_threads

    configure_threads(settings.threads)
    cv2.setNumThreads(0)
    # On an empty export cache PyTorch answers the first photos while the export is made (docs/performance.md).
    return Detector.from_settings(settings, background_export=True)  # loads and runs one warm-up inference


def _warm_detector(settings: WorkerSettings) -> Any | None:
    """The detector, loaded and warmed; None (one line said how to set DETBOT_MODEL) if the model cannot load."""
    from detector.errors import ModelLoadError

    started = time.perf_counter()
    try:
        detector = _load_detector(settings)
    except ModelLoadError as exc:
        log.error("%s", exc)
        return None
    log.info("model %s loaded and warmed on %s in %.1f s", detector.model_name, detector.device,
             time.perf_counter() - started)
    return detector


def _class_names(settings: WorkerSettings) -> ClassNames | None:
    """DETBOT_CLASS_NAMES, read once before the model loads, so a bad file fails fast; None: one line said why."""
    try:
        return load_class_names(settings.class_names)
    except ClassNamesError as exc:
        log.error("DETBOT_CLASS_NAMES: %s", exc)
        return None


def _work(redis: Redis, settings: WorkerSettings, detector: Any, metrics: WorkerMetrics | None, burst: bool,
          names: ClassNames, stop: StopRequest) -> int:
    """Take jobs until stopped; the job function finds the model in the context set here."""
    queue = make_queue(redis, settings.queue)
    store.publish_class_names(redis, queue.name, detector.names)
    # The task names the model for `/segment` and `/pose` when DETBOT_MODELS does not (jobs.models).
    models.publish_info(redis, queue.name, str(getattr(detector, "task", "detect")), Path(settings.model).name)
    context = tasks.WorkerContext(redis, detector, metrics, settings.test_job_delay_ms, queue.key,
                                  class_names=names, floor=settings.detection_floor)
    tasks.set_context(context)
    # Buttons' re-drawings on a thread of their own: a press never waits behind the photos queued here.
    renders = RenderServer(Redis.from_url(settings.redis_url), queue.name, partial(tasks.render, context),
                           metrics.rendered if metrics is not None else None)
    renders.start()
    stop.on_stop(renders.stop)  # it takes no new re-drawing once a stop is asked; the one in hand finishes
    try:
        worker = DetbotWorker(queue, settings=settings, metrics=metrics, stop_request=stop)
        stop.interruptible = False  # registering: from here a stop is acted on between steps, never inside one
        worker.work(burst=burst, logging_level="WARNING")
    except ValueError as exc:  # RQ: a live worker already has this name
        log.error("%s", exc)
        return EXIT_CONFIG
    except StopRequested:  # asked to stop while taking over its name: never registered
        log.info("worker %s: stop requested while starting, exiting", worker.name)
    finally:
        renders.stop()
        renders.join(RENDER_STOP_TIMEOUT)
        tasks.set_context(None)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``detbot worker``: 0 once stopped on request, EXIT_CONFIG or EXIT_NO_MODEL if it cannot start.
    Ends the process itself (:func:`~jobs.shutdown.end_process`): the command's entry point, never called
    in-process."""
    args = _parse(argv)
    stop = StopRequest()
    stop.install()
    try:
        status = _start(args, stop)
    except StartupInterrupted:
        log.info("stop requested while starting: exiting")
        status = 0
    except SystemExit as exc:  # a second signal: RQ's cold shutdown, after the clean-up it allows
        status = exc.code if isinstance(exc.code, int) else 0
    end_process(status)


def _start(args: argparse.Namespace, stop: StopRequest) -> int:
    """Load, warm, register and work until stopped (main's body, under its start-up signal handler)."""
    settings = _settings(args)
    if settings is None:
        return EXIT_CONFIG
    configure_logging(settings.log_level)
    names = _class_names(settings)
    if names is None:
        return EXIT_CONFIG
    redis = _connect(settings.redis_url)
    if redis is None:
        return EXIT_CONFIG
    metrics = _start_metrics(settings)
    detector = _warm_detector(settings)
    if detector is None:
        return EXIT_NO_MODEL
    if metrics is not None:
        metrics.set_ready(True)
    return _work(redis, settings, detector, metrics, args.burst, names, stop)
