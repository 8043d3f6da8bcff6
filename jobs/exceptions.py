"""Errors the queue raises to its callers (the bot)."""

from __future__ import annotations


class JobsError(Exception):
    """Base of the queue's errors."""


class QueueFullError(JobsError):
    """Too many jobs are waiting; try again in a minute."""


class ChatQueueFullError(QueueFullError):
    """One chat has as many photos waiting as it may (``jobs.fair.chat_limit``); other chats still get in."""

    def __init__(self, message: str, waiting: int = 0) -> None:
        super().__init__(message)
        self.waiting = waiting


class AlreadyQueuedError(JobsError):
    """The submit's "once" marker exists: these photos were queued before (an update handled again)."""


class QueueUnavailableError(JobsError):
    """Redis cannot be reached."""


class ImageExpiredError(JobsError):
    """A job's image bytes are gone (TTL passed before a worker took it)."""
