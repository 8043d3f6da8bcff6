"""The Telegram Mini App's requests to the bot, and the links that open it. Telegram-free: the web face uses
this module too.

The web face checks a person's ``initData`` and reads a bot's kept answers, but it never talks to Telegram:
whatever touches a chat goes through the bot. A request — *apply* a view (threshold, classes) to an answer,
or fetch an answer's clean *photo* — is put in the bot's inbox (:meth:`bot.inbox.Inbox.add_request`) beside
Telegram's updates, so it keeps their promises: it is in Redis before the web answers; one replica (the
lease holder) handles it, in its chat's order; and when that replica dies half-way, the next one takes it
over. An apply is applied once because its id is the press id the answer keeps
(:meth:`bot.answers.AnswerBook.set_view`), as a button press's is, and it goes through the buttons' own
code (:meth:`bot.buttons.Buttons.apply_view`): the asker-or-admin rule, the per-person limit, the
coalescing, the re-drawing on a worker and the edit of the answer in the chat.

The bot's verdict goes onto a list of the request's own (:func:`jobs.keys.mini_app_reply`), which the web
waits on (BLPOP) for a few seconds; a verdict nobody waits for any more expires.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote

from redis.asyncio import Redis

from bot.answers import Answer
from jobs import keys

KIND_VIEW = "view"
KIND_PHOTO = "photo"
KINDS = (KIND_VIEW, KIND_PHOTO)

# The bot's verdicts (the web turns each into an HTTP status).
APPLIED = "applied"  # the view changed; the answer in the chat shows it
UNCHANGED = "unchanged"  # the answer already showed that view
SENT = "sent"  # a photo: here it is
GONE = "gone"  # the answer expired
NOT_YOURS = "not_yours"  # neither the asker nor (in a group) an admin
TOO_FAST = "too_fast"  # over the per-person press limit
UNAVAILABLE = "unavailable"  # Redis or Telegram away, or Redis too full to carry a photo
FAILED = "failed"  # the re-drawing or the edit failed
STALE = "stale"  # the request waited longer than REQUEST_MAX_AGE (the bot was down): dropped
BAD = "bad"  # not a request this bot can read
VERDICTS = (APPLIED, UNCHANGED, SENT, GONE, NOT_YOURS, TOO_FAST, UNAVAILABLE, FAILED, STALE, BAD)

# A verdict waits this long for the web to read it (it waits seconds, then answers "sent" and forgets it).
REPLY_TTL = 60
# A request the bot reaches later than this (it was down, or far behind) is dropped, not applied: the
# person who asked gave up long ago, and an answer changing by itself an hour later would surprise them.
REQUEST_MAX_AGE = 600
# Bytes of randomness in a request's id.
ID_BYTES = 12
# The page's query parameter naming the answer (the web_app button's URL) — a direct link's ``startapp``
# parameter carries the bare answer id instead.
ANSWER_PARAMETER = "answer"


@dataclass(frozen=True)
class MiniAppRequest:
    """One request of a Mini App to the bot (also the "update" PTB hands its handler: a custom update type).

    ``chat_id`` is the answer's chat: it orders the request among that chat's updates. ``view``: the
    parameters to apply (``DetectParams.to_dict()``); ``index``: the photo of an album to fetch (0: a single
    photo, else its place).
    """

    kind: str
    request_id: str
    answer_id: str
    chat_id: int
    user_id: int
    at: float
    view: dict[str, Any] = field(default_factory=dict)
    index: int = 0
    language_code: str = ""

    @classmethod
    def new(cls, kind: str, answer_id: str, chat_id: int, user_id: int, *, view: dict[str, Any] | None = None,
            index: int = 0, language_code: str = "") -> MiniAppRequest:
        return cls(kind, secrets.token_urlsafe(ID_BYTES), answer_id, chat_id, user_id, time.time(), view or {},
                   index, language_code)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any) -> MiniAppRequest:
        """A request read back from the inbox; raises ValueError for anything else."""
        if not isinstance(raw, dict) or raw.get("kind") not in KINDS:
            raise ValueError("not a Mini App request")
        try:
            return cls(str(raw["kind"]), str(raw["request_id"]), str(raw["answer_id"]), int(raw["chat_id"]),
                       int(raw["user_id"]), float(raw["at"]), dict(raw.get("view") or {}), int(raw.get("index") or 0),
                       str(raw.get("language_code") or ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a Mini App request: {exc}") from None

    def stale(self, now: float) -> bool:
        return now - self.at > REQUEST_MAX_AGE


def may_view(answer: Answer, user_id: int) -> bool:
    """Who may open an answer in the Mini App: in a private chat its person only; in a group anyone who
    can open the group's 🎚 link (who may *apply* is the buttons' rule, decided by the bot)."""
    return not answer.private or user_id == answer.asker


async def give_verdict(redis: Redis, bot_id: int, request_id: str, verdict: str, data: bytes = b"") -> None:
    """The bot's verdict (and a photo's bytes) for the web waiting on it."""
    key = keys.mini_app_reply(bot_id, request_id)
    pipe = redis.pipeline(transaction=True)
    pipe.rpush(key, verdict.encode() + b"\n" + data)
    pipe.expire(key, REPLY_TTL)
    await pipe.execute()


async def wait_verdict(redis: Redis, bot_id: int, request_id: str, timeout: float) -> tuple[str, bytes] | None:
    """The verdict on a request and its data, or None when none came within ``timeout`` seconds."""
    key = keys.mini_app_reply(bot_id, request_id)
    found: Any = await redis.blpop([key], timeout=timeout)
    if found is None:
        return None
    await redis.delete(key)
    verdict, _, data = bytes(found[1]).partition(b"\n")
    return verdict.decode(), data


@dataclass(frozen=True)
class MiniAppLinks:
    """Where the 🎚 button under an answer leads: the page on that answer.

    A private chat gets a ``web_app`` button (Telegram opens it as a Mini App, with initData, without any
    registration); Telegram allows those only in private chats, so a group gets a plain URL button with the
    direct link of the Mini App registered with @BotFather (``t.me/<bot>/<app>?startapp=<answer id>``:
    opened as a Mini App too, with initData), or no button without such an app.
    """

    public_url: str  # https://…/ (DETBOT_WEB_PUBLIC_URL)
    app_name: str | None = None  # DETBOT_WEB_APP_NAME
    bot_username: str = ""

    def page(self, answer_id: str) -> str:
        """The web_app button's URL (private chats)."""
        return f"{self.public_url}?{ANSWER_PARAMETER}={quote(answer_id)}"

    def direct(self, answer_id: str) -> str | None:
        """The direct link of the registered Mini App on ``answer_id`` (groups), None without one."""
        if not self.app_name or not self.bot_username:
            return None
        return f"https://t.me/{self.bot_username}/{self.app_name}?startapp={quote(answer_id)}"
