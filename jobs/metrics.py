"""Prometheus metrics and a health endpoint for one worker process (off unless DETBOT_METRICS_PORT is set).

``/metrics``: Prometheus text format. ``/healthz``: 200 once the model is loaded and one inference passed
(the warm-up), 503 before. A registry of its own per worker, never the process-global default one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from detector.errors import DetectorError, ImageError
from jobs.store import CODE_EXPIRED, CODE_IMAGE_EXPIRED, CODE_INTERNAL, CODE_RETRIES_EXHAUSTED, CODE_TIMEOUT

# Every label value each metric may carry, from fixed sets (no sizes, dimensions or error texts: those go to
# the log line); a value outside its set is counted as OTHER. Class names are the model's own, a fixed list;
# threads are 1 .. the machine's cores.
OTHER = "other"
JOB_OUTCOMES = frozenset({"ok", "error", "duplicate"})
# A job's reason: "none" for a success, else a queue code (jobs.store) or a detector error's stable code.
JOB_REASONS = frozenset({
    "none", CODE_TIMEOUT, CODE_RETRIES_EXHAUSTED, CODE_IMAGE_EXPIRED, CODE_INTERNAL, CODE_EXPIRED,
    DetectorError.code, *(cls.code for cls in DetectorError.__subclasses__()),
    *(cls.code for cls in ImageError.__subclasses__()),
})
RECOVERY_RESULTS = frozenset({"requeued", "exhausted", "done", "lost", "unknown"})
# Metric (family) name -> label -> its values, for the check of a scrape (tests/test_bounded_state.py).
LABEL_VALUES: dict[str, dict[str, frozenset[str]]] = {
    "detbot_jobs": {"outcome": JOB_OUTCOMES, "reason": JOB_REASONS},
    "detbot_recovered_jobs": {"result": RECOVERY_RESULTS},
}


def label(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else OTHER


# Seconds: CPU inference of a small model is tens of ms, a big model on a busy CPU a few seconds.
INFERENCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Seconds from submit to completion: includes waiting in the queue, which can reach minutes when busy.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


# What a health check answers: HTTP status, body, content type.
Health = tuple[int, bytes, str]


class JobOutcome(Protocol):
    """What the metrics read of one finished job (``jobs.tasks.Outcome`` is one). Described here rather than
    imported, so the job code may import the metrics and never the other way round."""

    @property
    def status(self) -> str: ...
    @property
    def code(self) -> str: ...
    @property
    def classes(self) -> tuple[str, ...]: ...
    @property
    def inference_ms(self) -> float: ...
    @property
    def threads(self) -> int: ...


def serve_endpoints(
    registry: CollectorRegistry, health: Callable[[], Health], host: str, port: int, name: str
) -> ThreadingHTTPServer:
    """``/metrics`` (Prometheus text) and ``/healthz`` from a daemon thread; bot and worker both use it.

    Returns the server; ``server_address`` has the bound port (``port`` 0 picks a free one).
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/health"):
                self._reply(*health())
            else:
                self._reply(404, b"not found\n", "text/plain")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # scrapes are not worth a log line
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server


class WorkerMetrics:
    """Counters and histograms of one worker; ``serve()`` exposes them over HTTP."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.jobs = Counter("detbot_jobs", "Jobs finished, by outcome and reason code.", ["outcome", "reason"],
                            registry=r)
        self.job_seconds = Histogram("detbot_job_seconds", "Time a worker spent on one job.",
                                     buckets=INFERENCE_BUCKETS, registry=r)
        self.inference_seconds = Histogram("detbot_inference_seconds", "Model inference time per image.",
                                           buckets=INFERENCE_BUCKETS, registry=r)
        self.latency_seconds = Histogram("detbot_job_latency_seconds", "From enqueue to the end of the job.",
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.inferences = Counter("detbot_inferences", "Inferences by threads used (above 1: idle cores borrowed).",
                                  ["threads"], registry=r)
        self.renders = Counter("detbot_renders", "Answers re-drawn or cut into crops for buttons (no model run).",
                               ["kind"], registry=r)
        self.detections = Counter("detbot_detections", "Objects found, by class.", ["class_name"], registry=r)
        self.recoveries = Counter("detbot_recovered_jobs", "Abandoned jobs handled by this worker's reaper.",
                                  ["result"], registry=r)
        self.refusals = Counter("detbot_refused_jobs", "Jobs refused unrun (not JSON, not detect_job).",
                                registry=r)
        self.queue_depth = Gauge("detbot_queue_depth", "Jobs waiting in the queue (sampled by the heartbeat).",
                                 registry=r)
        self.ready = Gauge("detbot_worker_ready", "1 once the model is loaded and one inference passed.",
                           registry=r)
        self.model_runs = Gauge("detbot_model_runs", "Times this worker's model ran since start (the warm-up "
                                "left out); re-drawings for buttons never add one.", registry=r)
        self._server: ThreadingHTTPServer | None = None

    def watch_model_runs(self, count: Callable[[], int]) -> None:
        """Read the model's own run counter at every scrape."""
        self.model_runs.set_function(count)

    def set_ready(self, ready: bool) -> None:
        self.ready.set(1 if ready else 0)

    @property
    def is_ready(self) -> bool:
        return bool(self.ready._value.get())

    def job_done(self, outcome: JobOutcome, seconds: float) -> None:
        self.jobs.labels(label(outcome.status, JOB_OUTCOMES), label(outcome.code or "none", JOB_REASONS)).inc()
        self.job_seconds.observe(seconds)
        if outcome.inference_ms:
            self.inference_seconds.observe(outcome.inference_ms / 1e3)
        if outcome.threads:
            self.inferences.labels(str(outcome.threads)).inc()
        for name in outcome.classes:
            self.detections.labels(name).inc()

    def observe_latency(self, enqueued_at: datetime) -> None:
        start = enqueued_at if enqueued_at.tzinfo else enqueued_at.replace(tzinfo=timezone.utc)
        self.latency_seconds.observe(max(0.0, (datetime.now(timezone.utc) - start).total_seconds()))

    def rendered(self, kind: str) -> None:
        self.renders.labels(kind).inc()

    def recovered(self, result: str) -> None:
        self.recoveries.labels(label(result, RECOVERY_RESULTS)).inc()

    def refused(self) -> None:
        self.refusals.inc()

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics and /healthz from a daemon thread; returns the bound port (0 picks a free one)."""
        self._server = serve_endpoints(self.registry, self._health, host, port, "detbot-metrics")
        return int(self._server.server_address[1])

    def _health(self) -> Health:
        return (200, b"ok\n", "text/plain") if self.is_ready else (503, b"loading\n", "text/plain")

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
