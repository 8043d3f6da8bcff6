"""The bot's Prometheus metrics and a small /metrics + /healthz HTTP endpoint (off unless a port is set)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from http.server import ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge

from jobs.metrics import Health, serve_endpoints

log = logging.getLogger(__name__)


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
