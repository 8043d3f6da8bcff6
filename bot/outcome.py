"""A finished job as the bot reads it: the detection of a successful one, the sentence for a failed one."""

from __future__ import annotations

import logging

from bot import replies
from bot.telegram_io import describe
from detector.result import Detection
from jobs.store import Completion

log = logging.getLogger(__name__)


def detection_of(c: Completion) -> Detection | None:
    """The detection to answer with; None for a failed job or an unreadable result (then it is an error)."""
    if not (c.ok and c.detection and c.annotated):
        return None
    try:
        return Detection.from_dict(c.detection)
    except (KeyError, TypeError, ValueError) as exc:
        log.error("job %s has an unreadable result: %s", c.job_id, describe(exc))
        return None


def error_text(c: Completion) -> str:
    return replies.error_reply(c.code or "internal_error", c.message)
