"""Logging for the bot process: one line per event, a traceback only for the unexpected, never the token.

httpx logs every request URL, and Bot API URLs contain the token: its loggers are raised to WARNING, and
a filter on the handler redacts the token (and any other secret it is given) from whatever still gets
through: the message, and the traceback of an unexpected error, which is kept (an operator needs it to
find the bug) but redacted like the rest. Expected failures are logged as one line (``describe``) by
their callers, with no exception attached.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Iterable

REDACTED = "<redacted>"
# Libraries whose INFO lines contain request URLs (and so the token) or are noise at INFO.
NOISY_LOGGERS = ("httpx", "httpcore", "telegram.ext.Updater", "apscheduler")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactFilter(logging.Filter):
    """Replace each secret by ``<redacted>`` in the message (folded onto one line) and in the traceback."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            # Formatted here, redacted, and handed to the formatter as text: no handler formats it unredacted.
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        record.msg = " ".join(self.redact(message).split())
        record.args = None
        return True


def configure(level: str, secrets: Iterable[str]) -> logging.Handler:
    """Root logging to stderr through the redacting filter; returns the handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RedactFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    return handler
