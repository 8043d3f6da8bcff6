"""The bot's Prometheus metrics and a small /metrics + /healthz HTTP endpoint (off unless a port is set)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from http.server import ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge

from detector.errors import ImageError
from jobs.metrics import Health, serve_endpoints

log = logging.getLogger(__name__)

# Every label value each metric may carry: a fixed set, so a metric's series never grow with what people
# send (no sizes, dimensions or error texts; those go to the log line). A value outside its set is counted
# as OTHER, with a warning: a caller to fix, not a new series.
OTHER = "other"
ANSWER_OUTCOMES = frozenset({"ok", "error"})
# The image checks' reasons are the detector's stable error codes (a fixed list in detector/errors.py).
IMAGE_REFUSALS = frozenset({ImageError.code, *(cls.code for cls in ImageError.__subclasses__())})
REFUSED_REASONS = frozenset({
    "not_a_photo", "not_an_image", "usage", "unknown_class", "rate_limit_user", "rate_limit_chat", "too_big",
    "download_failed", "queue_full", "redis_unreachable", "internal", *IMAGE_REFUSALS,
    "chat_queue_full",
    "model_unavailable",  # a model of DETBOT_MODELS the deployment lacks, or with no worker running (bot.models)
    # Clips (bot/video.py): refused from Telegram's metadata or their header (detector.video's codes).
    "video_too_long", "video_too_large", "not_a_video", "corrupt_video", "bad_video",
})
DELIVERY_FAILURES = frozenset({"gave_up", "uncertain", "chat_gone", "forbidden", "bad_request", "refused"})
# Metric (family) name -> label -> its values: what tests/test_bounded_state.py checks a scrape against.
LABEL_VALUES: dict[str, dict[str, frozenset[str]]] = {
    "detbot_bot_photos_answered": {"outcome": ANSWER_OUTCOMES},
    "detbot_bot_photos_refused": {"reason": REFUSED_REASONS},
    "detbot_bot_delivery_failed": {"reason": DELIVERY_FAILURES},
}


def label(value: str, allowed: frozenset[str], metric: str) -> str:
    """``value`` when it is one of ``allowed``, else OTHER (and a warning naming the caller's mistake)."""
    if value in allowed:
        return value
    log.warning("metric %s: label value %r is not in its fixed set; counted as %r", metric, value, OTHER)
    return OTHER


class BotMetrics:
    """Counters of photos received, answered and refused, and the queue's depth read at scrape time."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.received = Counter(
            "detbot_bot_photos_received", "Photos the bot accepted for an answer (albums count each photo).",
            registry=self.registry,
        )
        self.answered = Counter(
            "detbot_bot_photos_answered", "Photos answered, by outcome (ok: boxes drawn; error: friendly error).",
            ["outcome"], registry=self.registry,
        )
        self.refused = Counter(
            "detbot_bot_photos_refused", "Photos refused before queueing, by reason.", ["reason"],
            registry=self.registry,
        )
        self.delivery_failed = Counter(
            "detbot_bot_delivery_failed", "Answers Telegram refused for good (chat gone, bot blocked...).",
            ["reason"], registry=self.registry,
        )
        self.queue_depth = Gauge("detbot_queue_depth", "Jobs waiting in the queue.", registry=self.registry)

    def refuse(self, reason: str, count: int = 1) -> None:
        """Count photos refused before queueing; ``reason`` is one of REFUSED_REASONS."""
        self.refused.labels(label(reason, REFUSED_REASONS, "refused")).inc(count)

    def answer(self, outcome: str, count: int = 1) -> None:
        """Count photos answered; ``outcome`` is "ok" or "error"."""
        self.answered.labels(label(outcome, ANSWER_OUTCOMES, "answered")).inc(count)

    def undelivered(self, reason: str, count: int = 1) -> None:
        """Count answers that will not reach their chat; ``reason`` is one of DELIVERY_FAILURES."""
        self.delivery_failed.labels(label(reason, DELIVERY_FAILURES, "delivery_failed")).inc(count)

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """Read the queue's depth on each scrape; NaN while Redis is unreachable."""

        def read() -> float:
            try:
                return float(depth())
            except Exception:
                return float("nan")

        self.queue_depth.set_function(read)


def serve(metrics: BotMetrics, healthy: Callable[[], dict[str, bool]], host: str, port: int) -> ThreadingHTTPServer:
    """Start the endpoint in a daemon thread; returns the server (``server_address`` has the real port)."""

    def health() -> Health:
        checks = healthy()
        body = json.dumps({"ok": all(checks.values()), **checks}).encode()
        return 200 if all(checks.values()) else 503, body, "application/json"

    server = serve_endpoints(metrics.registry, health, host, port, "metrics")
    log.info("metrics and health on http://%s:%d/metrics and /healthz", *server.server_address[:2])
    return server
