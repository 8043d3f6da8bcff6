"""Who opened the page as a Telegram Mini App: the ``initData`` check, a pure function.

Telegram hands a Mini App ``initData``, a query string signed with the bot's token
(https://core.telegram.org/bots/webapps#validating-data-received-via-the-mini-app): the data-check-string
is every field but ``hash``, sorted by name, as ``name=value`` lines joined by ``\\n``;
``secret_key = HMAC_SHA256(key="WebAppData", msg=bot_token)`` and ``hash = hex(HMAC_SHA256(secret_key,
data_check_string))``. Anything that does not check out — no hash, a wrong one, a field twice, no
``auth_date`` or one older than :data:`MAX_AGE`, no user — is refused, and the API answers 401.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from urllib.parse import parse_qsl

# initData older than this is refused: a leaked one stops working within a day (Telegram's own advice).
MAX_AGE = 24 * 60 * 60
# A clock this far ahead of ours is still believed (machines' clocks differ a little).
CLOCK_SKEW = 60
# Longer initData is not Telegram's (it is a few hundred bytes): refused before any parsing.
MAX_LENGTH = 8192
WEB_APP_DATA = b"WebAppData"


class InitDataError(ValueError):
    """initData that does not prove who the user is; the message says why (for the log, not the person)."""


@dataclass(frozen=True)
class WebAppUser:
    """The Telegram user the verified initData names."""

    id: int
    language_code: str
    auth_date: int
    chat_instance: str = ""


def secret_key(bot_token: str) -> bytes:
    """The key initData is signed with, derived from the bot's token (the web keeps this, not the token)."""
    return hmac.new(WEB_APP_DATA, bot_token.encode(), hashlib.sha256).digest()


def _signature(fields: dict[str, str], key: bytes) -> str:
    check = "\n".join(f"{name}={value}" for name, value in sorted(fields.items()))
    return hmac.new(key, check.encode(), hashlib.sha256).hexdigest()


def sign(fields: dict[str, str], bot_token: str) -> str:
    """The ``hash`` Telegram puts beside ``fields`` (tests sign their own initData with it)."""
    return _signature(fields, secret_key(bot_token))


def check_init_data(init_data: str, bot_token: str, now: float, max_age: int = MAX_AGE) -> WebAppUser:
    """The user ``init_data`` was signed for with ``bot_token``; raises InitDataError otherwise."""
    return check_signed(init_data, secret_key(bot_token), now, max_age)


def check_signed(init_data: str, key: bytes, now: float, max_age: int = MAX_AGE) -> WebAppUser:
    """:func:`check_init_data` with the token's :func:`secret_key`."""
    if not init_data or len(init_data) > MAX_LENGTH:
        raise InitDataError("missing or too long")
    try:
        pairs = parse_qsl(init_data, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise InitDataError("not a query string") from None
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise InitDataError("a field appears twice")
    presented = fields.pop("hash", "")
    if not hmac.compare_digest(_signature(fields, key), presented):
        raise InitDataError("the hash does not match")
    try:
        auth_date = int(fields.get("auth_date", ""))
    except ValueError:
        raise InitDataError("no auth_date") from None
    if now - auth_date > max_age:
        raise InitDataError("older than a day")
    if auth_date - now > CLOCK_SKEW:
        raise InitDataError("auth_date is in the future")
    try:
        user = json.loads(fields.get("user", ""))
        user_id = user["id"]
    except (ValueError, TypeError, KeyError):
        raise InitDataError("no user") from None
    if not isinstance(user_id, int) or isinstance(user_id, bool):
        raise InitDataError("no user id")
    return WebAppUser(user_id, str(user.get("language_code") or ""), auth_date, fields.get("chat_instance", ""))
