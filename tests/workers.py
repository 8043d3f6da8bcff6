"""Start and stop real ``detbot worker`` subprocesses in tests, and wait for them without sleeping blindly.

Typical use::

    from tests.workers import running_workers, wait_for

    with running_workers(redis_server.url, count=2) as (w1, w2):   # both READY (model loaded and warmed)
        job_id = client.submit(...)
        wait_for(lambda: store.read_completion(redis, job_id), timeout=60, what="the completion")

A worker is READY when its liveness key exists in Redis: the worker sets it only after the model is loaded,
one warm-up inference passed and RQ has registered it, right before it takes its first job. Each worker's
stdout and stderr go to a log file (``WorkerProcess.output()``), never to a pipe that could fill up.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from redis import Redis

from jobs import keys
from jobs.defaults import QUEUE_NAME
from jobs.recovery import running_jobs
from tests.conftest import DETBOT, ROOT, detbot_env

T = TypeVar("T")

# A cold worker imports torch and ultralytics and warms the model: slow on a busy 2-core CI box.
READY_TIMEOUT = 180.0
# A warm shutdown waits for the current job; a job on the shapes model takes well under a second.
STOP_TIMEOUT = 60.0
# How often conditions are polled: fine enough for tests, coarse enough to leave the CPU to the workers.
POLL_INTERVAL = 0.05


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = POLL_INTERVAL) -> T:
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` seconds pass (fail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class WorkerProcess:
    """One ``detbot worker`` subprocess."""

    name: str
    queue: str
    proc: subprocess.Popen[bytes]
    redis: Redis
    log_path: Path
    _log_file: object = field(repr=False, default=None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        """Everything the worker printed so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def is_ready(self) -> bool:
        return bool(self.redis.exists(keys.alive(self.name)))

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> WorkerProcess:
        """Block until READY; fails at once (with the worker's output) if the process exits first."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.output()}")
            return self.is_ready()

        wait_for(ready, timeout, f"worker {self.name} to be ready")
        return self

    def current_job(self) -> str | None:
        """The id of the job this worker is running now, if any."""
        for job_id, worker in running_jobs(self.redis, self.queue).items():
            if worker == self.name:
                return job_id
        return None

    def wait_busy(self, timeout: float = 60.0) -> str:
        """Block until the worker runs a job; returns its id."""
        job_id = wait_for(self.current_job, timeout, f"worker {self.name} to start a job")
        assert job_id is not None
        return job_id

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (warm shutdown: the current job finishes) and wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: the worker gets no chance to clean up, exactly like an OOM kill."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(STOP_TIMEOUT)

    def close(self) -> None:
        """Stop the worker however it is (used on test teardown)."""
        if self.proc.poll() is None:
            try:
                self.terminate(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
        close = getattr(self._log_file, "close", None)
        if close:
            close()
        self.redis.close()


def start_worker(
    redis_url: str,
    *,
    name: str | None = None,
    queue: str = QUEUE_NAME,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    log_dir: Path | None = None,
    wait: bool = True,
) -> WorkerProcess:
    """Start ``detbot worker`` on the shapes model (``tests.conftest.detbot_env``) and, by default, wait READY.

    ``env`` adds or overrides environment variables, e.g. ``{"DETBOT_TEST_JOB_DELAY_MS": "500"}``.
    """
    name = name or f"test-{uuid.uuid4().hex[:8]}"
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="detbot-worker-"))
    log_path = log_dir / f"{name}.log"
    log_file = open(log_path, "wb")  # noqa: SIM115 (closed by WorkerProcess.close)
    full_env = detbot_env(REDIS_URL=redis_url, DETBOT_QUEUE=queue, DETBOT_WORKER_NAME=name, **(env or {}))
    proc = subprocess.Popen(
        [*DETBOT, "worker", *(args or [])], cwd=ROOT, env=full_env, stdout=log_file, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    worker = WorkerProcess(name, queue, proc, Redis.from_url(redis_url), log_path, log_file)
    if wait:
        try:
            worker.wait_ready()
        except BaseException:
            worker.kill()
            worker.close()
            raise
    return worker


@contextlib.contextmanager
def running_workers(
    redis_url: str,
    count: int = 1,
    *,
    env: dict[str, str] | None = None,
    envs: list[dict[str, str]] | None = None,
    **kwargs: object,
) -> Iterator[list[WorkerProcess]]:
    """``count`` workers with the extra environment ``env`` (or one worker per ``envs`` entry, each with its
    own) started together (they load their models in parallel), all READY; stopped on exit."""
    kwargs = {**kwargs, "wait": False}
    envs = envs if envs is not None else [dict(env or {}) for _ in range(count)]
    workers = [start_worker(redis_url, env=env, **kwargs) for env in envs]  # type: ignore[arg-type]
    try:
        for w in workers:
            w.wait_ready()
        yield workers
    finally:
        for w in workers:
            w.close()

