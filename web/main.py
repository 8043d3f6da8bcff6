"""``detbot web``: the page and the HTTP API, served by uvicorn until SIGINT/SIGTERM.

The address comes from ``--listen HOST:PORT`` or ``DETBOT_WEB_LISTEN`` (default ``127.0.0.1:8080``). Anything
but a loopback address needs API keys (``DETBOT_WEB_KEYS``): without them the server refuses to start, in
one line, rather than put a keyless detection service on a network. The socket is bound here, before the
application starts, so a taken port is one line and status 2 too; port 0 takes a free one, and the line
``web listening on http://HOST:PORT`` says which.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from collections.abc import Callable
from types import FrameType

import uvicorn
from pydantic import ValidationError
from redis import Redis
from redis.asyncio import BlockingConnectionPool
from redis.asyncio import Redis as AsyncRedis

from bot import logs
from bot.settings import telegram_if_set
from detector.names import ClassNamesError, load_class_names
from jobs.settings import settings_problems
from web.app import build_app
from web.jobs import READ_BLOCK_MS
from web.mini_app import VERDICT_WAIT, MiniApp
from web.settings import WebSettings, is_loopback, parse_listen

log = logging.getLogger("web")

EXIT_USAGE = 2
# Redis calls from requests fail fast when Redis is away, so a client hears "unavailable" promptly.
REDIS_SOCKET_TIMEOUT = 5.0
REDIS_CONNECT_TIMEOUT = 3.0
# The completion reader blocks in XREAD for READ_BLOCK_MS; its socket must wait longer than that.
READER_SOCKET_TIMEOUT = READ_BLOCK_MS / 1000 + 5.0
# An idle keep-alive connection is closed after this long: a browser reopens one in milliseconds, and a
# flood of idle connections does not hold the process's file descriptors.
KEEP_ALIVE = 5
# Requests still running at a stop get this long to finish, below `detbot run`'s bound on an idle child's stop
# (ops.run.STOP_GRACE, 5 s): waiting long polls answer at once (:meth:`web.jobs.Completions.stop`), so only
# an upload still streaming in can take it, and it is cut off after this.
GRACEFUL_STOP = 3


class Server(uvicorn.Server):
    """uvicorn's server, whose stop (SIGTERM, Ctrl-C) also answers the requests waiting for a job at once."""

    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_stop = on_stop

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self.on_stop()


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv4 or IPv6); raises OSError."""
    family, kind, proto, _name, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _mini_app(settings: WebSettings, token: str | None) -> MiniApp | None:
    """The bot's Mini App when this web has the bot's token (``detbot run`` and compose give it one only
    with DETBOT_WEB_PUBLIC_URL): Redis connections of its own, whose socket outwaits a verdict's wait, at
    most one per connection served."""
    if not token:
        return None
    pool = BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=settings.web_max_connections, timeout=REDIS_SOCKET_TIMEOUT,
        socket_timeout=VERDICT_WAIT + REDIS_SOCKET_TIMEOUT, socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
    )
    return MiniApp(AsyncRedis(connection_pool=pool), token, settings.answer_ttl)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="detbot web", description="Serve the page and the HTTP API on the "
                                     "detection queue. Settings come from the environment (README, 'The web face').")
    parser.add_argument("--listen", metavar="HOST:PORT", help="address to serve on (default: $DETBOT_WEB_LISTEN "
                        "or 127.0.0.1:8080); anything but loopback needs DETBOT_WEB_KEYS")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        settings = WebSettings()
        listen = args.listen or settings.web_listen
        host, port = parse_listen(listen)
        telegram = telegram_if_set()
        names = load_class_names(settings.class_names)
    except ValidationError as exc:
        print("detbot web: invalid settings: " + settings_problems(WebSettings, exc), file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, ClassNamesError) as exc:
        print(f"detbot web: invalid settings: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not is_loopback(host) and not settings.keys():
        print(f"detbot web: listening on {host} would serve anyone who reaches it: set DETBOT_WEB_KEYS (API keys, "
              "comma-separated) or listen on 127.0.0.1", file=sys.stderr)
        return EXIT_USAGE
    token = telegram.telegram_bot_token.get_secret_value() if telegram else None
    logs.configure(settings.log_level, [*settings.keys(), token or ""])
    try:
        sock = bind(host, port)
    except OSError as exc:
        print(f"detbot web: cannot listen on {listen}: {exc.strerror or exc} (set DETBOT_WEB_LISTEN or --listen)",
              file=sys.stderr)
        return EXIT_USAGE
    redis = Redis.from_url(settings.redis_url, socket_timeout=REDIS_SOCKET_TIMEOUT,
                           socket_connect_timeout=REDIS_CONNECT_TIMEOUT, health_check_interval=30)
    reader = AsyncRedis.from_url(settings.redis_url, socket_timeout=READER_SOCKET_TIMEOUT,
                                 socket_connect_timeout=REDIS_CONNECT_TIMEOUT)
    app = build_app(settings, redis, reader, mini_app=_mini_app(settings, token), names=names)
    trusted = settings.web_trusted_proxies.strip()
    config = uvicorn.Config(
        app, log_level=settings.log_level.lower(), access_log=False, server_header=False, proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None, limit_concurrency=settings.web_max_connections,
        timeout_keep_alive=KEEP_ALIVE, timeout_graceful_shutdown=GRACEFUL_STOP, log_config=None,
    )
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    log.info("web listening on http://%s:%d (API keys: %s, models: %s, Mini App: %s)", shown, bound_port,
             len(settings.keys()) or "none, loopback only", ", ".join(settings.models()),
             settings.web_public_url or "on" if token else "off (no TELEGRAM_BOT_TOKEN)")
    try:
        Server(config, app.state.services.stop_threadsafe).run(sockets=[sock])
    finally:
        sock.close()
        redis.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
