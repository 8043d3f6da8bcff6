"""Webhook mode: every replica takes Telegram's POSTs, and answers 200 only once the update is in Redis.

PTB's own webhook server (``Application.run_webhook``, tornado) answers 200 as soon as the update is in its
in-memory queue: a bot killed right after would have lost it, and Telegram would not send it again. Here
each request is checked (the ``X-Telegram-Bot-Api-Secret-Token`` header: missing 401, wrong 403, and
nothing is done), then added to the same inbox long polling fills (:mod:`bot.inbox`), and only then does
the 200 go back. Everything after the inbox is the same code in both modes. With Redis unreachable or the
inbox full the answer is 503: Telegram keeps the update and tries again later.

A server of aiohttp's (well kept, runs in the bot's own event loop); any replica behind the TLS proxy may
take any request.
"""

from __future__ import annotations

import hmac
import json
import logging
import time

from aiohttp import web

from bot.inbox import Inbox
from bot.lease import REDIS_ERRORS
from bot.telegram_io import describe

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# An update is a few KB (files are fetched separately); anything much larger is not from Telegram.
MAX_BODY = 1024 * 1024
# Refused requests (no or a wrong secret: scanners, a misconfigured proxy) are logged once per this long,
# with their count, so a flood of them never floods the log.
REFUSED_LOG_EVERY = 60.0
# What a 503 asks Telegram to wait (it retries on its own schedule anyway).
RETRY_AFTER = "5"


class WebhookServer:
    """The HTTP endpoint at ``path`` on ``host:port``; ``secret`` is DETBOT_WEBHOOK_SECRET."""

    def __init__(self, inbox: Inbox, path: str, secret: str, host: str, port: int) -> None:
        self.inbox = inbox
        self.path = path
        self.secret = secret.encode()
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._refused = 0
        self._refused_logged = 0.0
        self.accepted = 0

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(self.path, self._post)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0 and self._runner.addresses:
            self.port = int(self._runner.addresses[0][1])  # a free port was asked for (tests)
        log.info("taking webhook requests on %s:%d%s", self.host, self.port, self.path)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _post(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER)
        if given is None or not hmac.compare_digest(given.encode(), self.secret):
            self._refuse(request, "no secret" if given is None else "a wrong secret")
            return web.Response(status=401 if given is None else 403)
        try:
            data = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
            log.warning("webhook request with the right secret but no update in it: refused")
            return web.Response(status=400)
        try:
            if await self.inbox.full():
                log.warning("inbox full: update %s left with Telegram for now", data["update_id"])
                return web.Response(status=503, headers={"Retry-After": RETRY_AFTER})
            await self.inbox.add([(data["update_id"], json.dumps(data))])
        except REDIS_ERRORS as exc:
            log.warning("update %s not taken: Redis unreachable (%s); Telegram sends it again later",
                        data["update_id"], describe(exc))
            return web.Response(status=503, headers={"Retry-After": RETRY_AFTER})
        self.accepted += 1
        return web.Response(status=200)

    def _refuse(self, request: web.Request, why: str) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._refused_logged >= REFUSED_LOG_EVERY:
            log.warning("webhook request from %s refused: %s (%d refused since the last such line)",
                        request.remote, why, self._refused)
            self._refused, self._refused_logged = 0, now
