"""``detbot bot``: run the Telegram bot with long polling until SIGINT/SIGTERM."""

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
from telegram.error import InvalidToken, TelegramError
from telegram.ext import Application

from bot import logs
from bot.app import ALLOWED_UPDATES, SERVICES, build_application
from bot.delivery import WAIT_BLOCK_MS
from bot.metrics import BotMetrics, serve
from bot.polling import Poller
from bot.settings import BotSettings
from bot.telegram_io import describe
from detector.names import ClassNamesError, load_class_names
from jobs.settings import env_names
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


def _settings_error(exc: ValidationError) -> str:
    """One line naming each wrong variable as a person sets it (pydantic reports a field or its alias)."""
    names = env_names(BotSettings)
    problems = []
    for err in exc.errors():
        loc = str(err["loc"][0]) if err["loc"] else ""
        env = names.get(loc, loc.upper() or "settings")
        problems.append(f"{env}: {'not set' if err['type'] == 'missing' else err['msg']}")
    return "detbot bot: invalid settings: " + "; ".join(problems)


async def run(application: Application, redis: Redis) -> None:
    """Start the Application, poll until SIGINT/SIGTERM, stop it cleanly (what ``run_polling`` did, with
    detbot's own :class:`~bot.polling.Poller` fetching the updates). A signal while starting (getMe, the
    command menus: Telegram may be slow) ends the start-up there."""
    poller = Poller(application, redis, ALLOWED_UPDATES)
    stopping = asyncio.Event()

    def stop() -> None:
        stopping.set()
        poller.stop()
        application.bot_data[SERVICES].status.close()  # no "queued" message is still to come

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    try:
        started = await _unless_stopped(_start(application), stopping)
        try:
            if started:
                await poller.run()
            else:
                log.info("stop requested while starting: exiting")
        finally:
            if application.running:
                await application.stop()
                if application.post_stop:
                    await application.post_stop(application)
    finally:
        await application.shutdown()


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
    parser = argparse.ArgumentParser(prog="detbot bot", description="Run the Telegram bot (long polling). "
                                     "Settings come from the environment; see docs/bot.md.")
    parser.parse_args(argv)
    try:
        settings = BotSettings()
    except ValidationError as exc:
        print(_settings_error(exc), file=sys.stderr)
        return 2
    try:
        names = load_class_names(settings.class_names)
    except ClassNamesError as exc:
        print(f"detbot bot: invalid settings: DETBOT_CLASS_NAMES: {exc}", file=sys.stderr)
        return 2
    token = settings.telegram_bot_token.get_secret_value()
    logs.configure(settings.log_level, [token])
    redis = _redis(settings.redis_url, REDIS_SOCKET_TIMEOUT)
    metrics = BotMetrics()
    if settings.bot_metrics_port is not None:
        def healthy() -> dict[str, bool]:
            try:
                return {"redis": bool(redis.ping())}
            except Exception:
                return {"redis": False}

        serve(metrics, healthy, settings.bot_metrics_host, settings.bot_metrics_port)
    application = build_application(
        settings, redis, reader_redis=lambda: _redis(settings.redis_url, READER_SOCKET_TIMEOUT), metrics=metrics,
        names=names,
    )
    try:
        asyncio.run(run(application, redis))
    except InvalidToken:
        log.error("Telegram refused the token: check TELEGRAM_BOT_TOKEN")
        return 2  # a setting to fix: restarting cannot help
    except (TelegramError, OSError) as exc:
        log.error("cannot talk to Telegram at %s: %s", settings.telegram_api_base_url, describe(exc))
        return 1
    end_process(0)  # stopped: the result reader's blocking read and the interpreter's teardown are not waited for


if __name__ == "__main__":
    sys.exit(main())
