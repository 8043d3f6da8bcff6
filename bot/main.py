"""``detbot bot``: run the Telegram bot with long polling until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from pydantic import ValidationError
from redis import Redis
from telegram.error import InvalidToken, TelegramError
from telegram.ext import Application

from bot import logs
from bot.app import ALLOWED_UPDATES, build_application
from bot.delivery import WAIT_BLOCK_MS
from bot.metrics import BotMetrics, serve
from bot.polling import Poller
from bot.settings import BotSettings
from bot.telegram_io import describe
from detector.names import ClassNamesError, load_class_names
from jobs.settings import settings_problems

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
    """One line naming each wrong variable as a person sets it."""
    return "detbot bot: invalid settings: " + settings_problems(BotSettings, exc)


async def run(application: Application, redis: Redis) -> None:
    """Start the Application, poll until SIGINT/SIGTERM, stop it cleanly (what ``run_polling`` did, with
    detbot's own :class:`~bot.polling.Poller` fetching the updates)."""
    poller = Poller(application, redis, ALLOWED_UPDATES)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, poller.stop)
    await application.initialize()  # getMe: a refused token fails here
    try:
        if application.post_init:
            await application.post_init(application)
        await application.start()
        try:
            await poller.run()
        finally:
            await application.stop()
            if application.post_stop:
                await application.post_stop(application)
    finally:
        await application.shutdown()


def main(argv: list[str] | None = None) -> int:
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
