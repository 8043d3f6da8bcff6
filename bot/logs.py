"""Logging for the bot process: one line per event, and never the token.

httpx logs every request URL, and Bot API URLs contain the token: its loggers are raised to WARNING, and
a filter on the handler redacts the token from whatever still gets through (including other libraries'
tracebacks, which are folded into the line as ``Type: message``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

REDACTED = "<redacted>"
# Libraries whose INFO lines contain request URLs (and so the token) or are noise at INFO.
NOISY_LOGGERS = ("httpx", "httpcore", "telegram.ext.Updater", "apscheduler")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactFilter(logging.Filter):
    """Replace each secret by ``<redacted>`` and fold exception info into the single log line."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            message = f"{message} ({type(exc).__name__}: {exc})"
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
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
