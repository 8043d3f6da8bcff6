"""Sending to Telegram without ever crashing the caller: retries for transient errors, one log line otherwise."""

from __future__ import annotations

import asyncio
import datetime as dtm
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from telegram import Bot, Message, ReplyParameters
from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError, RetryAfter, TelegramError, TimedOut

log = logging.getLogger(__name__)
T = TypeVar("T")

# First pause after a network error or a 5xx; doubled on each further failure.
RETRY_FIRST_DELAY = 1.0
# Longest pause between attempts: Telegram outages last minutes, a person waits for the answer.
RETRY_MAX_DELAY = 30.0
# Attempts of one call on network errors and 5xx (pauses 1+2+4+8+16+30 s: about a minute) before giving up:
# the caller drops that answer rather than hold its chat's lane for ever.
SEND_ATTEMPTS = 7
# Telegram's "retry after" honoured this many times in a row for one call; more means it will not take it.
FLOOD_ATTEMPTS = 5


class PermanentSendError(Exception):
    """Telegram refused for good (chat gone, bot blocked, bad request): retrying cannot help."""


class GaveUpError(PermanentSendError):
    """Network errors or 5xx on every attempt: the answer is given up (one log line, a metric)."""


class UncertainSendError(PermanentSendError):
    """The request reached Telegram but no answer came back (read timeout): it may have been sent, so it
    is not sent again (at most once: a duplicate answer is worse than the rare lost one)."""


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


def _may_have_arrived(exc: NetworkError) -> bool:
    """A read timeout: the whole request was sent, Telegram may well have acted on it."""
    return isinstance(exc, TimedOut) and isinstance(exc.__cause__, httpx.ReadTimeout)


async def with_retry(call: Callable[[], Awaitable[T]], what: str, attempts: int = SEND_ATTEMPTS,
                     first_delay: float = RETRY_FIRST_DELAY) -> T:
    """Run one Bot API call, retrying network errors and 5xx with backoff ``attempts`` times at most, and
    Telegram's "retry after" (waiting as long as it says; only this caller waits).

    Raises ChatMigrated (the caller re-targets) as is; PermanentSendError for refusals, GaveUpError when
    every attempt failed, UncertainSendError after a read timeout (never repeated blindly).
    """
    delay = first_delay
    tries = floods = 0
    while True:
        try:
            return await call()
        except ChatMigrated:
            raise
        except RetryAfter as exc:
            floods += 1
            if floods >= FLOOD_ATTEMPTS:
                raise GaveUpError(f"{describe(exc)} ({floods} times)") from exc
            wait = _seconds(exc.retry_after)
            log.warning("%s: flood control, waiting %.0f s", what, wait)
            await asyncio.sleep(wait)
            continue
        except (BadRequest, Forbidden) as exc:
            raise PermanentSendError(describe(exc)) from exc
        except NetworkError as exc:
            if _may_have_arrived(exc):
                raise UncertainSendError(describe(exc)) from exc
            tries += 1
            if tries >= attempts:
                raise GaveUpError(f"{describe(exc)} ({tries} attempts)") from exc
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


async def fetch_file(bot: Bot, file_id: str, attempts: int = 1, retry_delay: float = RETRY_FIRST_DELAY) -> bytes:
    """A file's bytes from Telegram (getFile, then the download), tried ``attempts`` times after a network
    error or a timeout (reading a file twice does no harm); a BadRequest (too big, gone) is raised at once."""
    attempt = 1
    while True:
        try:
            file = await bot.get_file(file_id)
            return bytes(await file.download_as_bytearray())
        except BadRequest:
            raise  # the file itself was refused: trying again changes nothing
        except NetworkError as exc:
            if attempt >= attempts:
                raise
            log.info("download of %s failed (%s); trying again", file_id, describe(exc))
        await asyncio.sleep(retry_delay * attempt)
        attempt += 1
