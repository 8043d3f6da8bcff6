"""``detbot bot``: run the Telegram bot (long polling, or a webhook) until SIGINT/SIGTERM; any number of them
serve one token side by side (:mod:`bot.replica`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from pydantic import ValidationError
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError
from telegram.error import InvalidToken, TelegramError
from telegram.ext import Application

from bot import logs
from bot.app import ALLOWED_UPDATES, SERVICES, build_application
from bot.delivery import WAIT_BLOCK_MS
from bot.flow import flowing
from bot.legacy import adopt_legacy_keys
from bot.metrics import BotMetrics, serve
from bot.replica import Replica
from bot.settings import BotSettings
from bot.telegram_io import describe
from detector.names import ClassNamesError, load_class_names
from jobs.client import MIN_REDIS, redis_version_ok
from jobs.settings import settings_problems
from jobs.shutdown import end_process

log = logging.getLogger("bot")

# Redis calls from handlers fail fast when Redis is away, so a person hears "unavailable" promptly.
REDIS_SOCKET_TIMEOUT = 5.0
# Connecting to Redis: a healthy one answers in milliseconds.
REDIS_CONNECT_TIMEOUT = 3.0
# The result reader blocks in XREADGROUP for WAIT_BLOCK_MS; its socket must wait longer than that.
READER_SOCKET_TIMEOUT = WAIT_BLOCK_MS / 1000 + 5.0


def _redis(url: str, socket_timeout: float) -> Redis:
    return Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
                          health_check_interval=30)


def _old_redis(redis: Redis) -> str | None:
    """The version of a Redis too old for detbot; None when it is new enough or cannot be asked now."""
    try:
        version = str(redis.info("server").get("redis_version", ""))
    except (RedisError, OSError):
        return None
    return None if redis_version_ok(version) else version


def _settings_error(exc: ValidationError) -> str:
    """One line naming each wrong variable as a person sets it."""
    return "detbot bot: invalid settings: " + settings_problems(BotSettings, exc)


async def run(application: Application, settings: BotSettings) -> None:
    """Start the Application, serve as one of the bot's replicas until SIGINT/SIGTERM, stop it cleanly (what
    ``run_polling`` did, with detbot's own lease, inbox, poller and webhook: :mod:`bot.replica`). A signal
    while starting (getMe, the command menus: Telegram may be slow) ends the start-up there; a signal later
    ends this replica's turn (the lease holder hands the lease over at once) and stops the Application."""
    aredis = _async_redis(settings.redis_url)
    replica = Replica(application, settings, aredis, application.bot_data[SERVICES].replica, ALLOWED_UPDATES)
    stopping = asyncio.Event()

    def stop() -> None:
        stopping.set()
        application.bot_data[SERVICES].status.close()  # no "queued" message is still to come

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    try:
        started = await _unless_stopped(_start(application), stopping)
        try:
            if started:
                await replica.run(stopping)
            else:
                log.info("stop requested while starting: exiting")
        finally:
            if application.running:
                await application.stop()
                if application.post_stop:
                    await application.post_stop(application)
    finally:
        try:
            await application.shutdown()
        finally:
            await aredis.aclose()


def _async_redis(url: str) -> AsyncRedis:
    """The event loop's own connections (inbox, lease, webhook): they never wait for a thread."""
    return AsyncRedis.from_url(url, socket_timeout=REDIS_SOCKET_TIMEOUT, socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
                               health_check_interval=30)


async def _start(application: Application) -> None:
    await application.initialize()  # getMe: a refused token fails here
    if application.post_init:
        await application.post_init(application)
    await application.start()


async def _unless_stopped(work: Coroutine[Any, Any, None], stopping: asyncio.Event) -> bool:
    """Run ``work`` unless ``stopping`` is set first (``work`` is then cancelled); True if it completed.
    Its exceptions propagate."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stopping.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if task.done():
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, TelegramError):
        await task
    return False


def main(argv: list[str] | None = None) -> int:
    """``detbot bot``; once stopped on request it ends the process itself (:func:`~jobs.shutdown.end_process`):
    the command's entry point, never called in-process."""
    parser = argparse.ArgumentParser(prog="detbot bot", description="Run the Telegram bot (long polling, or a "
                                     "webhook). "
                                     "Settings come from the environment; see docs/bot.md.")
    parser.parse_args(argv)
    try:
        settings = BotSettings()
    except ValidationError as exc:
        print(_settings_error(exc), file=sys.stderr)
        return 2
    if not settings.telegram_bot_token.get_secret_value():
        print("detbot bot: invalid settings: TELEGRAM_BOT_TOKEN: not set", file=sys.stderr)
        return 2
    try:
        names = load_class_names(settings.class_names)
    except ClassNamesError as exc:
        print(f"detbot bot: invalid settings: DETBOT_CLASS_NAMES: {exc}", file=sys.stderr)
        return 2
    token = settings.telegram_bot_token.get_secret_value()
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
    logs.configure(settings.log_level, [token, *([secret] if secret else [])])
    redis = _redis(settings.redis_url, REDIS_SOCKET_TIMEOUT)
    too_old = _old_redis(redis)
    if too_old:
        print(f"detbot bot: Redis {too_old} is too old: detbot needs Redis {'.'.join(map(str, MIN_REDIS))} or newer",
              file=sys.stderr)
        return 2
    adopt_legacy_keys(redis, settings.bot_id)
    metrics = BotMetrics()
    if settings.bot_metrics_port is not None:
        def healthy() -> dict[str, bool]:
            """Redis answers, and updates reach the bot (a 409 loop or a failing webhook is unhealthy)."""
            try:
                return {"redis": bool(redis.ping()), "updates": flowing(redis, settings.bot_id)[0]}
            except Exception:
                return {"redis": False, "updates": False}

        serve(metrics, healthy, settings.bot_metrics_host, settings.bot_metrics_port)
    application = build_application(
        settings, redis, reader_redis=lambda: _redis(settings.redis_url, READER_SOCKET_TIMEOUT), metrics=metrics,
        names=names,
    )
    try:
        asyncio.run(run(application, settings))
    except InvalidToken:
        log.error("Telegram refused the token: check TELEGRAM_BOT_TOKEN")
        return 2  # a setting to fix: restarting cannot help
    except (TelegramError, OSError) as exc:
        log.error("cannot talk to Telegram at %s: %s", settings.telegram_api_base_url, describe(exc))
        return 1
    end_process(0)  # stopped: the result reader's blocking read and the interpreter's teardown are not waited for


if __name__ == "__main__":
    sys.exit(main())
