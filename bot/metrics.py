"""The bot's Prometheus metrics and a small /metrics + /healthz HTTP endpoint (off unless a port is set)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

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


def _handler(metrics: BotMetrics, healthy: Callable[[], dict[str, bool]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/metrics":
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif self.path.split("?")[0] == "/healthz":
                checks = healthy()
                body = json.dumps({"ok": all(checks.values()), **checks}).encode()
                self._send(200 if all(checks.values()) else 503, body, "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # a scrape every few seconds is not worth a log line

    return Handler


def serve(metrics: BotMetrics, healthy: Callable[[], dict[str, bool]], host: str, port: int) -> ThreadingHTTPServer:
    """Start the endpoint in a daemon thread; returns the server (``server_address`` has the real port)."""
    server = ThreadingHTTPServer((host, port), _handler(metrics, healthy))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics and health on http://%s:%d/metrics and /healthz", *server.server_address[:2])
    return server
