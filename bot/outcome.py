"""A finished job as the bot reads it: the detection of a successful one, the sentence for a failed one,
both in the language the job's routing carries."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from bot import replies
from bot.i18n import ENGLISH, Catalog, catalog
from bot.telegram_io import describe
from detector.names import ClassNames
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


@dataclass(frozen=True)
class Wording:
    """How results are put into words: in the language their routing carries (the default for jobs queued
    without one), with the class names in that language."""

    names: ClassNames = field(default_factory=ClassNames)
    default_language: str = ENGLISH

    def catalog(self, c: Completion) -> Catalog:
        return catalog(str(c.routing.get("language") or self.default_language))

    def detection_lines(self, c: Completion, det: Detection) -> list[str]:
        """The summary line, then one line per box."""
        return replies.detection_lines(self.catalog(c), det, self.names)

    def summary_line(self, c: Completion, det: Detection) -> str:
        return replies.summary_line(self.catalog(c), det, self.names)

    def error_text(self, c: Completion) -> str:
        """The friendly sentence for a failed job; the worker's own words never reach the person."""
        return replies.completion_error(self.catalog(c), c.code, c.details, self.names)
