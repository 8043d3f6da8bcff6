"""Sending to Telegram without ever crashing the caller: retries for transient errors, one log line otherwise."""

from __future__ import annotations

import asyncio
import datetime as dtm
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from telegram import Bot, Message, ReplyParameters
from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError, RetryAfter, TelegramError

log = logging.getLogger(__name__)
T = TypeVar("T")

# First pause after a network error; doubled on each further failure.
RETRY_FIRST_DELAY = 1.0
# Longest pause between attempts: Telegram outages last minutes, a person waits for the answer.
RETRY_MAX_DELAY = 30.0


class PermanentSendError(Exception):
    """Telegram refused for good (chat gone, bot blocked, bad request): retrying cannot help."""


def describe(exc: BaseException) -> str:
    """``Type: message`` on one line: what goes into a log line instead of a traceback."""
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    if not text or text == name:
        return name
    return text if text.startswith(f"{name}:") else f"{name}: {text}"


def _seconds(value: float | dtm.timedelta) -> float:
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


def reply_to(message_id: int | None) -> ReplyParameters | None:
    """Reply to a message, but still deliver if the person deleted it meanwhile."""
    if message_id is None:
        return None
    return ReplyParameters(message_id=message_id, allow_sending_without_reply=True)


async def with_retry(call: Callable[[], Awaitable[T]], what: str, attempts: int | None = None) -> T:
    """Run one Bot API call, retrying transient failures with backoff; ``attempts=None``: until it works.

    Raises PermanentSendError for refusals and ChatMigrated (the caller re-targets) as is.
    """
    delay = RETRY_FIRST_DELAY
    tries = 0
    while True:
        tries += 1
        try:
            return await call()
        except ChatMigrated:
            raise
        except RetryAfter as exc:
            wait = _seconds(exc.retry_after)
            log.warning("%s: flood control, waiting %.0f s", what, wait)
            await asyncio.sleep(wait)
            continue
        except (BadRequest, Forbidden) as exc:
            raise PermanentSendError(describe(exc)) from exc
        except NetworkError as exc:
            if attempts is not None and tries >= attempts:
                raise
            log.warning("%s failed (%s); retrying in %.0f s", what, describe(exc), delay)
        except TelegramError as exc:
            raise PermanentSendError(describe(exc)) from exc
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX_DELAY)


async def say(bot: Bot, chat_id: int, text: str, *, reply: int | None = None, thread: int | None = None,
              **kwargs: Any) -> Message | None:
    """A short reply that must not crash its caller: one quick retry, then one log line."""
    try:
        return await with_retry(
            lambda: bot.send_message(
                chat_id, text, reply_parameters=reply_to(reply), message_thread_id=thread, **kwargs
            ),
            f"reply to chat {chat_id}",
            attempts=2,
        )
    except (TelegramError, PermanentSendError) as exc:
        log.warning("could not reply in chat %s: %s", chat_id, describe(exc))
        return None
