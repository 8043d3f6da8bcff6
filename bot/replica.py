"""One ``detbot bot`` process among any number serving one token: who polls, who handles, who takes webhooks.

Every replica delivers answers (its own consumer of the completion stream, :mod:`bot.delivery`) and, in
webhook mode, takes Telegram's requests into the inbox (:mod:`bot.webhook`). One of them at a time — the
holder of the lease (:mod:`bot.lease`) — polls Telegram (long polling) and hands the inbox's updates to the
handlers (:mod:`bot.dispatch`), so a chat's updates stay in order and no update is handled twice. When the
holder dies a standby takes the lease within seconds, takes over the inbox's unfinished updates and goes
on; when it stops gracefully it hands over at once.

At the start of its turn the holder makes Telegram's side match the mode: setWebhook (URL, secret, the
update kinds, max connections) in webhook mode, deleteWebhook when the bot went back to polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dtm
import logging
from collections.abc import Sequence

from redis.asyncio import Redis
from telegram.error import InvalidToken, TelegramError
from telegram.ext import Application

from bot.dispatch import Dispatcher
from bot.flow import FLOW_STALE, Flow
from bot.inbox import Inbox
from bot.lease import REDIS_ERRORS, RETRY_INTERVAL, Lease
from bot.polling import LeaseLost, Poller
from bot.settings import BotSettings, listen_address
from bot.telegram_io import describe
from bot.webhook import WebhookServer
from jobs import keys

log = logging.getLogger(__name__)

WEBHOOK = "webhook"


class Replica:
    """This process's part: ``name`` is its name among the replicas (lease value, consumer names)."""

    def __init__(self, application: Application, settings: BotSettings, redis: Redis, name: str,
                 allowed_updates: Sequence[str]) -> None:
        self.application = application
        self.settings = settings
        self.name = name
        self.allowed_updates = list(allowed_updates)
        bot_id = settings.bot_id
        self.inbox = Inbox(redis, bot_id, name)
        self.lease = Lease(redis, keys.lease(bot_id), name)
        self.flow = Flow(redis, bot_id)
        self.webhook: WebhookServer | None = None
        if settings.webhook_url and settings.webhook_secret is not None:
            host, port = listen_address(settings.webhook_listen)
            self.webhook = WebhookServer(self.inbox, settings.webhook_path,
                                         settings.webhook_secret.get_secret_value(), host, port)
        self._reached_redis = False
        self._led = False

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: take webhook requests (webhook mode), and lead whenever the lease is this one's."""
        if self.webhook is not None:
            await self.webhook.start()
        try:
            announced = False
            while not stop.is_set():
                try:
                    held: bool | None = await self.lease.acquire()
                    self._reached_redis = True
                except REDIS_ERRORS:
                    held = None
                if held or (held is None and self._may_poll_without_redis()):
                    await self._lead(stop, degraded=held is None)
                    announced = False
                    if not stop.is_set():  # the turn ended (lease lost, an error): a breath before the next
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), RETRY_INTERVAL)
                    continue
                if not announced and held is False:
                    log.info("standing by: another replica polls and handles updates")
                    announced = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RETRY_INTERVAL)
        finally:
            if self.webhook is not None:
                await self.webhook.stop()

    def _may_poll_without_redis(self) -> bool:
        """With Redis unreachable no replica can hold the lease: the one that held it (or one that never
        reached Redis, e.g. started while it was down) polls on alone, replying "unavailable" where needed.
        A webhook bot needs nothing of that: Telegram keeps the updates its 503s refused."""
        return self.webhook is None and (self._led or not self._reached_redis)

    async def _lead(self, stop: asyncio.Event, degraded: bool) -> None:
        mode = WEBHOOK if self.webhook is not None else "polling"
        log.info("this replica (%s) now %s%s", self.name,
                 "handles the updates of the webhook" if mode == WEBHOOK else "polls Telegram and handles updates",
                 " (without Redis until it answers)" if degraded else "")
        self._led = True
        lost = asyncio.Event()
        ended = asyncio.Event()  # stop, or the lease lost: the dispatcher and the poller end
        keeper = asyncio.create_task(self.lease.keep(lost, degraded))
        results: list[object] = []
        try:
            dispatcher = Dispatcher(self.application, self.inbox)
            with contextlib.suppress(*REDIS_ERRORS):
                await self.inbox.adopt_legacy()
            await self._prepare()
            work = [asyncio.create_task(dispatcher.run(ended))]
            if self.webhook is None:
                poller = Poller(self.application.bot, self.inbox, dispatcher, self.flow, self.allowed_updates,
                                self.name)
                work.append(asyncio.create_task(poller.run(ended)))
            else:
                work.append(asyncio.create_task(self._watch_webhook(ended)))
            waits = [asyncio.create_task(stop.wait()), asyncio.create_task(lost.wait())]
            try:
                await asyncio.wait([*work, *waits], return_when=asyncio.FIRST_COMPLETED)
            finally:
                ended.set()
                for task in waits:
                    task.cancel()
                results = await asyncio.gather(*work, return_exceptions=True)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        for result in results:
            if isinstance(result, InvalidToken):
                raise result
            if isinstance(result, LeaseLost):
                log.warning("%s", result)
            elif isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("this replica's turn ended on an error: %s", describe(result))
        if stop.is_set():
            await self.lease.release()  # a standby takes over now, not after the lease's TTL

    async def _prepare(self) -> None:
        """Telegram's side to match the mode (one replica at a time does this: the holder)."""
        bot = self.application.bot
        try:
            if self.webhook is not None:
                await self._set_webhook()
                return
            info = await bot.get_webhook_info()
            if info.url:
                await bot.delete_webhook()
                log.info("webhook %s deleted: back to long polling", info.url)
        except InvalidToken:
            raise
        except TelegramError as exc:
            log.warning("could not %s: %s", "set the webhook" if self.webhook else "check for a webhook",
                        describe(exc))
            with contextlib.suppress(*REDIS_ERRORS):
                await self.flow.failed(WEBHOOK if self.webhook else "polling", describe(exc))

    async def _set_webhook(self) -> None:
        secret = self.settings.webhook_secret
        await self.application.bot.set_webhook(
            url=self.settings.webhook_url or "", secret_token=secret.get_secret_value() if secret else None,
            allowed_updates=self.allowed_updates, max_connections=self.settings.webhook_max_connections,
        )
        log.info("webhook set: Telegram posts updates to %s", self.settings.webhook_url)

    async def _watch_webhook(self, ended: asyncio.Event) -> None:
        """Every check interval: what Telegram says of the webhook (set again if someone removed it; its
        last delivery error makes /healthz unhealthy)."""
        interval = self.settings.test_webhook_check_ms / 1000
        while not ended.is_set():
            try:
                await self._check_webhook()
            except InvalidToken:
                raise
            except (TelegramError, *REDIS_ERRORS) as exc:
                log.warning("could not check the webhook: %s", describe(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), interval)

    async def _check_webhook(self) -> None:
        info = await self.application.bot.get_webhook_info()
        if info.url != self.settings.webhook_url:
            log.warning("the webhook is %s, not %s: setting it again", info.url or "not set", self.settings.webhook_url)
            await self.flow.failed(WEBHOOK, f"webhook was {info.url or 'not set'}")
            await self._set_webhook()
            return
        error_at = info.last_error_date
        recent = error_at is not None and dtm.datetime.now(dtm.timezone.utc) - error_at < dtm.timedelta(
            seconds=FLOW_STALE)
        if recent and info.pending_update_count:
            await self.flow.failed(WEBHOOK, f"Telegram cannot deliver to the webhook: {info.last_error_message}")
        else:
            await self.flow.ok(WEBHOOK)
