"""A stand-in for the Telegram Bot API: a real HTTP server on 127.0.0.1 that speaks the Bot API protocol.

It implements what the bot calls (getMe, getUpdates long polling, getFile and file downloads, sendPhoto,
sendDocument, sendMessage, sendMediaGroup, editMessageText, deleteMessage, sendChatAction, getChatMember,
setMyCommands, setWebhook/deleteWebhook/getWebhookInfo, sendSticker, uploadStickerFile and the sticker sets
(getStickerSet, createNewStickerSet, addStickerToSet, with Telegram's refusals: a set full, a name taken, a
person who never started the bot), ...), records every call, and lets a test push
updates (photos, documents, commands) and make calls fail. Tests wait for what they expect by polling a
condition with a deadline.

Like Telegram, a getUpdates ends an older one still waiting with 409 ("terminated by other getUpdates
request": two pollers), and while a webhook is set getUpdates is refused with 409 and the updates are
POSTed to the webhook instead, one at a time, with its secret, until it answers 2xx (a failed delivery
shows in getWebhookInfo's last error).
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import itertools
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from PIL import Image

T = TypeVar("T")

# The longest a getUpdates call is held open; the bot asks for its own (shorter or longer) timeout.
MAX_LONG_POLL = 30.0
# Telegram refuses to hand out files larger than this through getFile.
FILE_SIZE_LIMIT = 20 * 1024 * 1024
# Telegram's flood limits as (messages, seconds), enforced only after enforce_limits(): about 30 messages a
# second over all chats, about one a second per private chat (short bursts pass), 20 a minute per group.
OVERALL_LIMIT = (30.0, 1.0)
PRIVATE_LIMIT = (3.0, 3.0)
GROUP_LIMIT = (20.0, 60.0)
# Requests arrive a little out of the order the bot paced them in (uploads take longer): one of slack.
LIMIT_SLACK = 1.0
# What counts against the limits: messages sent, edited or deleted (not getUpdates, getFile, getMe).
LIMITED_PREFIXES = ("send", "edit", "delete", "copy", "forward")
# A webhook that refused an update (or could not be reached) gets it again after this long.
WEBHOOK_RETRY = 0.5
# How long the stand-in waits for a webhook's answer.
WEBHOOK_TIMEOUT = 10.0
# Fields whose form values are plain text, never JSON (a caption "0.4" must stay a string).
TEXT_FIELDS = frozenset({"text", "caption", "custom_title", "description", "short_description", "name"})


@dataclass
class Call:
    """One request the bot made."""

    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    ok: bool = True
    result: Any = None
    at: float = field(default_factory=time.monotonic)

    @property
    def chat_id(self) -> int | None:
        value = self.params.get("chat_id")
        return int(value) if value is not None else None

    @property
    def reply_to(self) -> int | None:
        rp = self.params.get("reply_parameters")
        if isinstance(rp, dict):
            return int(rp["message_id"])
        value = self.params.get("reply_to_message_id")
        return int(value) if value is not None else None

    @property
    def thread(self) -> int | None:
        value = self.params.get("message_thread_id")
        return int(value) if value is not None else None

    @property
    def text(self) -> str:
        return str(self.params.get("text") or self.params.get("caption") or "")


@dataclass
class Failure:
    method: str
    status: int
    description: str
    remaining: int | None
    chat_id: int | None
    retry_after: int | None = None
    migrate_to: int | None = None


# How a bot sends clips: a video, an animation (GIF), a round video note.
VIDEO_METHODS = ("sendVideo", "sendAnimation", "sendVideoNote")
# A bot may upload files of up to 50 MB (sendVideo, sendDocument, ...).
UPLOAD_LIMIT = 50 * 1024 * 1024


def _parse_value(key: str, raw: str) -> Any:
    if key in TEXT_FIELDS:
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _image_size(data: bytes) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:
        return 1, 1


class TelegramStub:
    """The Bot API on ``http://127.0.0.1:<port>``; point the bot's TELEGRAM_API_BASE_URL at :attr:`url`."""

    def __init__(self, token: str, username: str = "detbot_test_bot", bot_id: int | None = None) -> None:
        self.token = token
        self.username = username
        # Telegram's bot id is the token's numeric part (the bot names its Redis keys by it).
        self.bot_id = int(token.split(":", 1)[0]) if bot_id is None else bot_id
        self.calls: list[Call] = []
        self.admins: dict[int, set[int]] = {}
        self.files: dict[str, bytes] = {}
        self.file_sizes: dict[str, int] = {}
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.deleted: set[tuple[int, int]] = set()
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1000)
        self._file_ids = itertools.count(1)
        self._failures: list[Failure] = []
        self._hangs: list[tuple[str, int | None]] = []
        self._slow: list[tuple[str, int | None, float]] = []
        self._released = threading.Event()
        self._cond = threading.Condition()
        self._closing = False
        self._polls = 0
        # Long polls: each new getUpdates ends the one still waiting (409), as Telegram's do.
        self._poll_generation = 0
        self.conflicts = 0  # getUpdates answered 409 because a newer one came
        # The webhook set with setWebhook (url, secret_token, allowed_updates, max_connections), if any.
        self.webhook: dict[str, Any] = {}
        self.webhook_error: tuple[float, str] | None = None  # last delivery error: (unix time, text)
        self.webhook_deliveries = 0  # updates the webhook took (2xx)
        self._webhook_thread: threading.Thread | None = None
        self._webhook_broken: str | None = None  # break_webhook(): what Telegram reports instead of delivering
        # Telegram's flood limits: off unless enforce_limits() (a bucket's level and when it was last read).
        self._limits: dict[str, tuple[float, float]] | None = None
        self._buckets: dict[Any, tuple[float, float]] = {}
        self._limit_refusals = 0
        # 429s by the limit that refused: "overall", "private", "group".
        self.limit_refusals_by: dict[str, int] = {}
        # Sticker sets the bot made (name -> owner, title, format, the stickers' file ids), people who never
        # started the bot (Telegram makes no set for them), names taken by sets gone, a set's size limit.
        self.sticker_sets: dict[str, dict[str, Any]] = {}
        self.never_started: set[int] = set()
        self.taken_set_names: set[str] = set()
        self.sticker_set_limit = STATIC_SET_LIMIT
        self._server = _QuietServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="telegram-stub", daemon=True)

    # -- lifecycle --------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def events(self) -> str:
        """The completion stream of this bot's jobs on the default queue."""
        from jobs.defaults import QUEUE_NAME
        from jobs.keys import events

        return events(QUEUE_NAME, self.bot_id)

    def start(self) -> TelegramStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()

    # -- what tests use ---------------------------------------------------------------------------------

    @staticmethod
    def user(user_id: int, name: str | None = None, language_code: str | None = None) -> dict[str, Any]:
        """A person; ``language_code`` as their Telegram app's language (``ru``, ``en-GB``), absent if None."""
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": name or f"user{user_id}"}
        if language_code is not None:
            user["language_code"] = language_code
        return user

    @staticmethod
    def private_chat(user_id: int) -> dict[str, Any]:
        return {"id": user_id, "type": "private", "first_name": f"user{user_id}"}

    @staticmethod
    def group_chat(chat_id: int, forum: bool = False) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": chat_id, "type": "supergroup", "title": f"group {chat_id}"}
        if forum:
            chat["is_forum"] = True
        return chat

    def add_file(self, data: bytes, file_size: int | None = None) -> str:
        """Store bytes the bot can fetch with getFile; ``file_size`` may claim more than ``data`` holds."""
        file_id = f"file{next(self._file_ids)}"
        with self._cond:
            self.files[file_id] = data
            self.file_sizes[file_id] = len(data) if file_size is None else file_size
        return file_id

    def send(self, chat: dict[str, Any], user_id: int, *, reply_to: dict[str, Any] | None = None,
             thread: int | None = None, language_code: str | None = None, **fields: Any) -> dict[str, Any]:
        """Push an update with a new message from a person; returns the message as the bot will see it."""
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": self.user(user_id, language_code=language_code),
            **fields,
        }
        if thread is not None:
            message["message_thread_id"] = thread
            message["is_topic_message"] = True
        if reply_to is not None:
            message["reply_to_message"] = {k: v for k, v in reply_to.items() if k != "reply_to_message"}
        for key in ("text", "caption"):
            value = fields.get(key)
            if isinstance(value, str) and value.startswith("/"):
                command = value.split()[0]
                message["entities" if key == "text" else "caption_entities"] = [
                    {"type": "bot_command", "offset": 0, "length": len(command)}
                ]
        with self._cond:
            self.messages[(chat["id"], message["message_id"])] = message
            self._updates.append({"update_id": next(self._update_ids), "message": message})
            self._cond.notify_all()
        return message

    def photo(self, chat: dict[str, Any], user_id: int, data: bytes, caption: str | None = None,
              file_size: int | None = None, **fields: Any) -> dict[str, Any]:
        """A photo message: Telegram sends a thumbnail and the full size; the last is the largest."""
        w, h = _image_size(data)
        thumb = self.add_file(data)
        full = self.add_file(data, file_size)
        sizes = [
            {"file_id": thumb, "file_unique_id": f"u{thumb}", "width": max(1, w // 4), "height": max(1, h // 4),
             "file_size": max(1, len(data) // 8)},
            {"file_id": full, "file_unique_id": f"u{full}", "width": w, "height": h,
             "file_size": self.file_sizes[full]},
        ]
        if caption is not None:
            fields["caption"] = caption
        return self.send(chat, user_id, photo=sizes, **fields)

    def document(self, chat: dict[str, Any], user_id: int, data: bytes, mime_type: str, file_name: str,
                 caption: str | None = None, file_size: int | None = None, **fields: Any) -> dict[str, Any]:
        file_id = self.add_file(data, file_size)
        doc = {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_name": file_name,
               "mime_type": mime_type, "file_size": self.file_sizes[file_id]}
        if caption is not None:
            fields["caption"] = caption
        return self.send(chat, user_id, document=doc, **fields)

    def video(self, chat: dict[str, Any], user_id: int, data: bytes, kind: str = "video", *, duration: int = 3,
              size: tuple[int, int] = (320, 240), caption: str | None = None, file_size: int | None = None,
              **fields: Any) -> dict[str, Any]:
        """A clip message as Telegram sends it: ``kind`` is ``video``, ``animation`` (a GIF: Telegram sets
        ``document`` too) or ``video_note`` (round, square, no caption); ``duration`` is Telegram's whole
        seconds, ``file_size`` may claim more than ``data`` holds."""
        file_id = self.add_file(data, file_size)
        media: dict[str, Any] = {"file_id": file_id, "file_unique_id": f"u{file_id}", "duration": duration,
                                 "file_size": self.file_sizes[file_id]}
        if kind == "video_note":
            media["length"] = size[0]
        else:
            media.update(width=size[0], height=size[1], mime_type="video/mp4")
        if kind == "animation":
            fields["document"] = {k: v for k, v in media.items() if k not in ("duration", "width", "height")}
        if caption is not None:
            fields["caption"] = caption
        return self.send(chat, user_id, **{kind: media}, **fields)

    def resend(self, message: dict[str, Any]) -> None:
        """Deliver a message again in a new update, as Telegram does when a bot died before confirming it."""
        with self._cond:
            self._updates.append({"update_id": next(self._update_ids), "message": message})
            self._cond.notify_all()

    def text(self, chat: dict[str, Any], user_id: int, text: str, **fields: Any) -> dict[str, Any]:
        return self.send(chat, user_id, text=text, **fields)

    def update_id_of(self, message: dict[str, Any]) -> int:
        """The id of the (last) update that handed ``message`` to the bot in a getUpdates answer."""
        with self._cond:
            return max(u["update_id"] for c in self.calls if c.method == "getUpdates" and c.ok
                       for u in c.result or [] if u.get("message") is message)

    def unconfirmed(self) -> list[int]:
        """Ids of the updates the bot has not confirmed yet (a getUpdates offset past them drops them)."""
        with self._cond:
            return [u["update_id"] for u in self._updates]

    def fail(self, method: str, status: int = 502, description: str = "Bad Gateway", times: int | None = None,
             chat_id: int | None = None, retry_after: int | None = None, migrate_to: int | None = None) -> None:
        """Make ``method`` fail (for one chat, or all) ``times`` times, or until :meth:`clear_failures`.

        ``retry_after``: Telegram's flood control (429); ``migrate_to``: the group became a supergroup.
        """
        with self._cond:
            self._failures.append(Failure(method, status, description, times, chat_id, retry_after, migrate_to))

    def clear_failures(self) -> None:
        with self._cond:
            self._failures.clear()

    def hang(self, method: str, chat_id: int | None = None) -> None:
        """Carry out ``method`` (for one chat, or all) but hold its HTTP answer until :meth:`release`: the
        bot's read timeout fires although the message was sent, as when Telegram answers too late."""
        with self._cond:
            self._hangs.append((method, chat_id))

    def slow(self, method: str, seconds: float, chat_id: int | None = None) -> None:
        """Carry out the next ``method`` (for one chat, or any) at once but answer it ``seconds`` later (keep
        it under the bot's read timeout, 5 s): a call that takes its time, once."""
        with self._cond:
            self._slow.append((method, chat_id, seconds))

    def release(self) -> None:
        """Let the held answers go (to a bot that stopped waiting for them) and hold no more."""
        with self._cond:
            self._hangs.clear()
        self._released.set()

    def member_update(self, chat: dict[str, Any], user_id: int, status: str, old_status: str = "member") -> None:
        """A ``my_chat_member`` update: the bot's own status in ``chat`` changed (``kicked``: blocked in a
        private chat or removed from a group; ``left``; ``member``: added back or unblocked)."""
        bot = {"id": self.bot_id, "is_bot": True, "first_name": "detbot", "username": self.username}

        def member(value: str) -> dict[str, Any]:
            return {"status": value, "user": bot, **({"until_date": 0} if value == "kicked" else {})}

        change = {"chat": chat, "from": self.user(user_id), "date": int(time.time()),
                  "old_chat_member": member(old_status), "new_chat_member": member(status)}
        with self._cond:
            self._updates.append({"update_id": next(self._update_ids), "my_chat_member": change})
            self._cond.notify_all()

    def press(self, chat_id: int, user_id: int, message_id: int, data: str,
              language_code: str | None = None) -> str:
        """A ``callback_query`` update: ``user_id`` pressed the inline button carrying ``data`` under the
        message ``message_id`` (as it is now, after any edits); returns the query's id."""
        query_id = f"cq{next(self._update_ids)}"
        with self._cond:
            message = self.messages[(chat_id, message_id)]
            query = {"id": query_id, "from": self.user(user_id, language_code=language_code),
                     "chat_instance": f"ci{chat_id}", "data": data, "message": message}
            self._updates.append({"update_id": next(self._update_ids), "callback_query": query})
            self._cond.notify_all()
        return query_id

    def keyboard(self, chat_id: int, message_id: int) -> list[list[dict[str, Any]]]:
        """The inline keyboard a message shows now (sent with it or set by an edit); [] when none."""
        with self._cond:
            markup = self.messages.get((chat_id, message_id), {}).get("reply_markup") or {}
        return list(markup.get("inline_keyboard") or [])

    def sent(self, method: str | None = None, chat_id: int | None = None, ok: bool | None = True) -> list[Call]:
        """Recorded calls, filtered; by default only those the stub answered with success."""
        with self._cond:
            calls = list(self.calls)
        return [
            c for c in calls
            if (method is None or c.method == method) and (chat_id is None or c.chat_id == chat_id)
            and (ok is None or c.ok == ok)
        ]

    def answers(self, chat_id: int) -> list[Call]:
        """What a person in ``chat_id`` saw: photos, albums and text messages, in order."""
        return [c for c in self.sent(chat_id=chat_id) if c.method in ("sendPhoto", "sendMessage", "sendMediaGroup",
                                                                       "sendDocument", *VIDEO_METHODS)]

    def wait_for(self, condition: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
        """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            result = condition()
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            with self._cond:
                self._cond.wait(min(remaining, 0.2))

    def polling(self) -> bool:
        """True once the bot is waiting for updates (it is up and listening)."""
        with self._cond:
            return self._polls > 0

    def polls(self) -> int:
        """getUpdates calls so far (every replica's)."""
        with self._cond:
            return self._polls

    def post_webhook(self, update: dict[str, Any], secret: str | None = None, url: str | None = None,
                     ) -> tuple[int, float, float]:
        """POST one update to the webhook (the one set, or ``url``) with ``secret`` in the secret header
        (None: no header); returns the HTTP status and when the request was sent and answered (monotonic)."""
        target = url or str(self.webhook.get("url") or "")
        request = urllib.request.Request(target, data=json.dumps(update).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        if secret is not None:
            request.add_header("X-Telegram-Bot-Api-Secret-Token", secret)
        sent = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as resp:
                return int(resp.status), sent, time.monotonic()
        except urllib.error.HTTPError as exc:
            return int(exc.code), sent, time.monotonic()

    def next_update_id(self) -> int:
        return next(self._update_ids)

    def break_webhook(self, error: str) -> None:
        """Deliver nothing to the webhook and report ``error`` as its last error (a proxy whose certificate
        Telegram refuses, a wrong secret behind it): updates pile up, as with Telegram."""
        with self._cond:
            self._webhook_broken = error

    def mend_webhook(self) -> None:
        with self._cond:
            self._webhook_broken = None
            self._cond.notify_all()

    def _deliver_webhook(self) -> None:
        """While a webhook is set: POST the oldest unconfirmed update to it until it answers 2xx, in order."""
        while True:
            with self._cond:
                while not self._closing and (not self.webhook or not self._updates):
                    self._cond.wait(1.0)
                if self._closing:
                    return
                update, hook, broken = self._updates[0], dict(self.webhook), self._webhook_broken
            try:
                if broken:
                    raise OSError(broken)
                status, _sent, _answered = self.post_webhook(update, hook.get("secret_token"), hook["url"])
                error = "" if 200 <= status < 300 else f"Wrong response from the webhook: {status}"
            except OSError as exc:
                error = str(exc)
            with self._cond:
                if error:
                    self.webhook_error = (time.time(), error)
                elif self._updates and self._updates[0] is update:
                    self._updates.pop(0)
                    self.webhook_deliveries += 1
                    self._cond.notify_all()
            if error:
                time.sleep(WEBHOOK_RETRY)

    # -- Telegram's flood limits (optional) ------------------------------------------------------------

    def enforce_limits(self, overall: tuple[float, float] = OVERALL_LIMIT,
                       private: tuple[float, float] = PRIVATE_LIMIT, group: tuple[float, float] = GROUP_LIMIT) -> None:
        """Answer like Telegram beyond its flood limits: 429 with ``retry_after``. Each limit is (messages,
        seconds) as a leaky bucket of that size: ~30/s over all chats (sends, edits, deletions), ~1/s per
        private chat with a burst of 3, 20/min per group (every ``send*`` counts, chat actions too)."""
        with self._cond:
            self._limits = {"overall": overall, "private": private, "group": group}
            self._buckets.clear()

    def requests_by_method(self) -> dict[str, int]:
        """Every request the bot made (refused ones too), counted by method; file downloads as "download"."""
        with self._cond:
            counts: dict[str, int] = {}
            for call in self.calls:
                counts[call.method] = counts.get(call.method, 0) + 1
            return counts

    def refused_by_limits(self) -> int:
        """How many requests the limits answered with 429."""
        with self._cond:
            return self._limit_refusals

    def _bucket_level(self, key: Any, limit: tuple[float, float], now: float) -> float:
        """What is in ``key``'s bucket now (it leaks at the limit's rate)."""
        size, period = limit
        level, last = self._buckets.get(key, (0.0, now))
        return max(0.0, level - max(0.0, now - last) * size / period)

    def _over_limit(self, method: str, params: dict[str, Any], arrived: float | None = None) -> Failure | None:
        """A 429 when ``method`` would pass Telegram's limits (only with :meth:`enforce_limits`); a request
        that passes takes its place in every bucket it counts against, a refused one in none."""
        if self._limits is None or not method.startswith(LIMITED_PREFIXES):
            return None
        now = arrived if arrived is not None else time.monotonic()
        buckets: list[tuple[Any, tuple[float, float]]] = [("overall", self._limits["overall"])]
        chat = params.get("chat_id")
        if chat is not None and method.startswith("send"):
            chat_id = int(chat)
            buckets.append((chat_id, self._limits["private" if chat_id > 0 else "group"]))
        levels = [self._bucket_level(key, limit, now) for key, limit in buckets]
        limits = [limit for _key, limit in buckets]
        waits = [(level + 1 - size) * period / size for level, (size, period) in zip(levels, limits, strict=True)
                 if level + 1 > size + LIMIT_SLACK]
        if waits:
            self._limit_refusals += 1
            for level, (key, (size, _period)) in zip(levels, buckets, strict=True):
                if level + 1 > size + LIMIT_SLACK:
                    name = key if key == "overall" else "private" if int(key) > 0 else "group"
                    self.limit_refusals_by[name] = self.limit_refusals_by.get(name, 0) + 1
            retry = max(1, int(max(waits) + 0.999))
            return Failure(method, 429, f"Too Many Requests: retry after {retry}", None, None, retry_after=retry)
        for level, (key, _limit) in zip(levels, buckets, strict=True):
            # Requests handled out of their arrival order never move a bucket's clock back.
            self._buckets[key] = (level + 1, max(now, self._buckets.get(key, (0.0, now))[1]))
        return None

    # -- the protocol -----------------------------------------------------------------------------------

    def _new_message(self, chat_id: int, **fields: Any) -> dict[str, Any]:
        message = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"},
            "from": {"id": self.bot_id, "is_bot": True, "first_name": "detbot", "username": self.username},
            **fields,
        }
        self.messages[(chat_id, message["message_id"])] = message
        return message

    def _photo_sizes(self, data: bytes) -> list[dict[str, Any]]:
        w, h = _image_size(data)
        file_id = self.add_file(data)
        return [{"file_id": file_id, "file_unique_id": f"u{file_id}", "width": w, "height": h,
                 "file_size": len(data)}]

    def _keep_markup(self, method: str, params: dict[str, Any], result: Any) -> None:
        """A message sent or edited with an inline keyboard shows it; an edit without one removes it."""
        if not (isinstance(result, dict) and "message_id" in result and method.startswith(("send", "edit"))):
            return
        key = (int(result["chat"]["id"]), int(result["message_id"]))
        message = dict(self.messages.get(key, result))
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        elif method.startswith("edit"):
            message.pop("reply_markup", None)
        self.messages[key] = message

    def _edit(self, method: str, params: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        """editMessageMedia / editMessageCaption / editMessageReplyMarkup of a message the bot sent."""
        key = (int(params["chat_id"]), int(params["message_id"]))
        if key not in self.messages or key in self.deleted:
            raise _ApiError(400, "Bad Request: message to edit not found")
        message = dict(self.messages[key])
        if method == "editMessageMedia":
            media = params.get("media") or {}
            name = str(media.get("media", "")).removeprefix("attach://")
            if name not in files:
                raise _ApiError(400, "Bad Request: wrong file attachment")
            message["photo"] = self._photo_sizes(files[name])
            message["caption"] = media.get("caption") or ""
        if method == "editMessageCaption":
            message["caption"] = params.get("caption") or ""
        message.pop("reply_markup", None)
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        self.messages[key] = message
        return message

    def _failure(self, method: str, params: dict[str, Any]) -> Failure | None:
        chat = params.get("chat_id")
        for rule in self._failures:
            if rule.method != method or (rule.chat_id is not None and rule.chat_id != chat):
                continue
            if rule.remaining is not None:
                if rule.remaining <= 0:
                    continue
                rule.remaining -= 1
            return rule
        return None

    def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        deadline = time.monotonic() + min(float(params.get("timeout") or 0), MAX_LONG_POLL)
        with self._cond:
            self._polls += 1
            if self.webhook:
                raise _ApiError(409, "Conflict: can't use getUpdates method while webhook is active; use "
                                     "deleteWebhook to delete the webhook first")
            self._poll_generation += 1
            mine = self._poll_generation
            self._cond.notify_all()  # an older long poll still waiting ends with 409
            if offset:
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
            while not self._updates and not self._closing:
                if self._poll_generation != mine:
                    self.conflicts += 1
                    raise _ApiError(409, "Conflict: terminated by other getUpdates request; make sure that only "
                                         "one bot instance is running")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return list(self._updates[:limit])

    @staticmethod
    def _check_markup(params: dict[str, Any]) -> None:
        """Telegram's rules for inline buttons the bot relies on: a ``web_app`` button only in a private chat
        (a group's gets BUTTON_TYPE_INVALID) and only with an HTTPS URL; a ``url`` button with a URL."""
        markup = params.get("reply_markup")
        rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
        for button in (b for row in rows or [] for b in row):
            web_app = button.get("web_app")
            if web_app is not None:
                if int(params.get("chat_id") or 0) < 0:
                    raise _ApiError(400, "Bad Request: BUTTON_TYPE_INVALID")
                if not str(web_app.get("url", "")).startswith("https://"):
                    raise _ApiError(400, "Bad Request: inline keyboard button Web App URL is invalid: Only HTTPS "
                                         "links are allowed")
            if "url" in button and not str(button["url"]).startswith(("https://", "http://", "tg://")):
                raise _ApiError(400, "Bad Request: inline keyboard button URL is invalid")

    def _dispatch(self, method: str, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        chat_id = params.get("chat_id")
        if method.startswith(("send", "edit")):
            self._check_markup(params)
        reply = params.get("reply_parameters")
        common: dict[str, Any] = {}
        replied = (chat_id, reply.get("message_id")) if isinstance(reply, dict) else None
        if replied in self.messages and replied not in self.deleted:
            common["reply_to_message"] = self.messages[replied]
        elif replied is not None and method.startswith("send") and not reply.get("allow_sending_without_reply"):  # type: ignore[union-attr]
            raise _ApiError(400, "Bad Request: message to be replied not found")
        if params.get("message_thread_id") is not None:
            common["message_thread_id"] = params["message_thread_id"]
        if method == "getMe":
            return {"id": self.bot_id, "is_bot": True, "first_name": "detbot", "username": self.username,
                    "can_join_groups": True, "can_read_all_group_messages": False,
                    "supports_inline_queries": False}
        if method == "getUpdates":
            return self._get_updates(params)
        if method == "getFile":
            file_id = str(params.get("file_id"))
            if file_id not in self.files:
                raise _ApiError(400, "Bad Request: invalid file_id")
            if self.file_sizes[file_id] > FILE_SIZE_LIMIT:
                raise _ApiError(400, "Bad Request: file is too big")
            return {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_size": self.file_sizes[file_id],
                    "file_path": f"photos/{file_id}.jpg"}
        if method == "sendMessage":
            return self._new_message(int(chat_id), text=params.get("text", ""), **common)  # type: ignore[arg-type]
        if method == "sendPhoto":
            photo = files.get("photo")
            if photo is None:
                raise _ApiError(400, "Bad Request: there is no photo in the request")
            fields = {"caption": params["caption"]} if params.get("caption") else {}
            return self._new_message(int(chat_id), photo=self._photo_sizes(photo), **fields, **common)  # type: ignore[arg-type]
        if method == "sendDocument":
            doc = files.get("document", b"")
            file_id = self.add_file(doc)
            return self._new_message(int(chat_id), document={"file_id": file_id, "file_unique_id": f"u{file_id}"},  # type: ignore[arg-type]
                                     **common)
        if method in ("sendVideo", "sendAnimation", "sendVideoNote"):
            field = {"sendVideo": "video", "sendAnimation": "animation", "sendVideoNote": "video_note"}[method]
            clip = files.get(field)
            if clip is None:
                raise _ApiError(400, f"Bad Request: there is no {field} in the request")
            if len(clip) > UPLOAD_LIMIT:
                raise _ApiError(413, "Request Entity Too Large")
            file_id = self.add_file(clip)
            media = {"file_id": file_id, "file_unique_id": f"u{file_id}", "duration": int(params.get("duration") or 0),
                     "file_size": len(clip)}
            if field == "video_note":
                media["length"] = int(params.get("length") or 0)
            else:
                media.update(width=int(params.get("width") or 0), height=int(params.get("height") or 0))
            fields = {"caption": params["caption"]} if params.get("caption") else {}
            return self._new_message(int(chat_id), **{field: media}, **fields, **common)  # type: ignore[arg-type]
        if method == "sendMediaGroup":
            media = params.get("media") or []
            if not 2 <= len(media) <= 10:
                raise _ApiError(400, "Bad Request: media group must have 2-10 items")
            if len({item.get("type") for item in media}) > 1:
                raise _ApiError(400, "Bad Request: documents can't be mixed with other media types")
            group_id = str(next(self._message_ids))
            out = []
            for item in media:
                name = str(item.get("media", "")).removeprefix("attach://")
                if name not in files:
                    raise _ApiError(400, "Bad Request: wrong file attachment")
                fields = {"caption": item["caption"]} if item.get("caption") else {}
                if item.get("type") == "document":  # a group of files (cut-outs): documents, never recompressed
                    file_id = self.add_file(files[name])
                    fields["document"] = {"file_id": file_id, "file_unique_id": f"u{file_id}"}
                else:
                    fields["photo"] = self._photo_sizes(files[name])
                out.append(self._new_message(int(chat_id), media_group_id=group_id, **fields, **common))  # type: ignore[arg-type]
            return out
        if method == "editMessageText":
            key = (int(chat_id), int(params["message_id"]))  # type: ignore[arg-type]
            if key not in self.messages or key in self.deleted:
                raise _ApiError(400, "Bad Request: message to edit not found")
            self.messages[key] = {**self.messages[key], "text": params.get("text", "")}
            return self.messages[key]
        if method in ("editMessageMedia", "editMessageCaption", "editMessageReplyMarkup"):
            return self._edit(method, params, files)
        if method == "answerCallbackQuery":
            return True
        if method == "deleteMessage":
            key = (int(chat_id), int(params["message_id"]))  # type: ignore[arg-type]
            if key not in self.messages or key in self.deleted:
                raise _ApiError(400, "Bad Request: message to delete not found")
            self.deleted.add(key)
            return True
        if method == "getChatMember":
            user_id = int(params["user_id"])
            user = self.user(user_id)
            if user_id in self.admins.get(int(chat_id), set()):  # type: ignore[arg-type]
                flags = ("can_be_edited", "is_anonymous", "can_manage_chat", "can_delete_messages",
                         "can_manage_video_chats", "can_restrict_members", "can_promote_members",
                         "can_change_info", "can_invite_users", "can_post_stories", "can_edit_stories",
                         "can_delete_stories")
                return {"status": "administrator", "user": user, **{f: f == "can_manage_chat" for f in flags}}
            return {"status": "member", "user": user}
        if method == "setWebhook":
            if not str(params.get("url") or "").startswith(("http://", "https://")):
                raise _ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
            self.webhook = {k: params.get(k) for k in ("url", "secret_token", "allowed_updates", "max_connections")}
            self.webhook_error = None
            if self._webhook_thread is None:
                self._webhook_thread = threading.Thread(target=self._deliver_webhook, name="telegram-stub-webhook",
                                                        daemon=True)
                self._webhook_thread.start()
            self._cond.notify_all()
            return True
        if method == "deleteWebhook":
            self.webhook = {}
            return True
        if method in ("sendChatAction", "setMyCommands", "deleteMyCommands", "close", "logOut",
                      "setMyDescription", "setMyShortDescription"):
            return True
        if method == "getMyCommands":
            return []
        if method == "getWebhookInfo":
            info: dict[str, Any] = {"url": self.webhook.get("url") or "", "has_custom_certificate": False,
                                    "pending_update_count": len(self._updates) if self.webhook else 0}
            if self.webhook and self.webhook_error is not None:
                info["last_error_date"] = int(self.webhook_error[0])
                info["last_error_message"] = self.webhook_error[1]
            if self.webhook.get("max_connections"):
                info["max_connections"] = self.webhook["max_connections"]
            if self.webhook.get("allowed_updates"):
                info["allowed_updates"] = self.webhook["allowed_updates"]
            return info
        if method in STICKER_METHODS:
            return self._sticker_method(method, params, files, common)
        raise _ApiError(404, "Not Found: method not found")

    # -- stickers: sendSticker, uploadStickerFile and the sticker sets, with Telegram's refusals -------------

    def _sticker_method(self, method: str, params: dict[str, Any], files: dict[str, bytes],
                        common: dict[str, Any]) -> Any:
        if method == "sendSticker":
            data = files.get("sticker")
            if data is None:
                raise _ApiError(400, "Bad Request: there is no sticker in the request")
            file_id = self.add_file(data)
            w, h = _image_size(data)
            sticker = {"file_id": file_id, "file_unique_id": f"u{file_id}", "type": "regular", "width": w,
                       "height": h, "is_animated": False, "is_video": False, "file_size": len(data)}
            return self._new_message(int(params["chat_id"]), sticker=sticker, **common)
        user_id = int(params.get("user_id") or 0)
        if method in ("uploadStickerFile", "createNewStickerSet", "addStickerToSet") and user_id in self.never_started:
            raise _ApiError(400, "Bad Request: PEER_ID_INVALID")
        if method == "uploadStickerFile":
            data = files.get("sticker")
            if data is None or params.get("sticker_format") not in ("static", "animated", "video"):
                raise _ApiError(400, "Bad Request: sticker file or format is missing")
            file_id = self.add_file(data)
            return {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_size": len(data)}
        name = str(params.get("name") or "")
        if method == "getStickerSet":
            found = self.sticker_sets.get(name)
            if found is None:
                raise _ApiError(400, "Bad Request: STICKERSET_INVALID")
            stickers = [{"file_id": f, "file_unique_id": f"u{f}", "type": "regular", "width": 512, "height": 512,
                         "is_animated": False, "is_video": False} for f in found["stickers"]]
            return {"name": name, "title": found["title"], "sticker_type": "regular", "stickers": stickers}
        if method == "createNewStickerSet":
            if not name.endswith(f"_by_{self.username}") or "__" in name or not name[:1].isalpha():
                raise _ApiError(400, "Bad Request: sticker set name invalid")
            if name in self.sticker_sets or name in self.taken_set_names:
                raise _ApiError(400, "Bad Request: sticker set name is already occupied")
            stickers = params.get("stickers") or []
            if not 1 <= len(stickers) <= 50:
                raise _ApiError(400, "Bad Request: wrong number of stickers")
            title = str(params.get("title") or "")
            if not 1 <= len(title) <= 64:
                raise _ApiError(400, "Bad Request: sticker set title invalid")
            self.sticker_sets[name] = {"user_id": user_id, "title": title, "stickers": []}
            for sticker in stickers:
                self._add_to_set(name, sticker)
            return True
        if method == "addStickerToSet":
            found = self.sticker_sets.get(name)
            if found is None or found["user_id"] != user_id:
                raise _ApiError(400, "Bad Request: STICKERSET_INVALID")
            if len(found["stickers"]) >= self.sticker_set_limit:
                raise _ApiError(400, "Bad Request: STICKERS_TOO_MUCH")
            self._add_to_set(name, params.get("sticker") or {})
            return True
        raise _ApiError(404, "Not Found: method not found")

    def _add_to_set(self, name: str, sticker: Any) -> None:
        """One InputSticker into a set: a known file id (an uploaded one), static format, 1-20 emoji."""
        if not isinstance(sticker, dict) or sticker.get("format") != "static" or \
                not 1 <= len(sticker.get("emoji_list") or []) <= 20:
            raise _ApiError(400, "Bad Request: wrong sticker format or emoji")
        file_id = str(sticker.get("sticker") or "")
        if file_id not in self.files:
            raise _ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
        self.sticker_sets[name]["stickers"].append(file_id)

    def _request(self, method: str, params: dict[str, Any], files: dict[str, bytes],
                 arrived: float | None = None) -> tuple[int, dict[str, Any]]:
        call = Call(method, params, files)
        with self._cond:
            failure = self._failure(method, params)
            if failure is None:
                failure = self._over_limit(method, params, arrived)
        if failure is not None:
            call.ok = False
            body: dict[str, Any] = {"ok": False, "error_code": failure.status, "description": failure.description}
            if failure.retry_after is not None:
                body["parameters"] = {"retry_after": failure.retry_after}
            if failure.migrate_to is not None:
                body["parameters"] = {"migrate_to_chat_id": failure.migrate_to}
            status = failure.status
        else:
            try:
                if method == "getUpdates":
                    result = self._dispatch(method, params, files)
                else:
                    with self._cond:
                        result = self._dispatch(method, params, files)
                        self._keep_markup(method, params, result)
                call.result = result
                body, status = {"ok": True, "result": result}, 200
            except _ApiError as exc:
                call.ok = False
                body, status = {"ok": False, "error_code": exc.status, "description": exc.description}, exc.status
        with self._cond:
            self.calls.append(call)
            self._cond.notify_all()
            held = call.ok and any(m == method and c in (None, call.chat_id) for m, c in self._hangs)
            slow = next((rule for rule in self._slow if rule[0] == method and rule[1] in (None, call.chat_id)), None)
            if slow is not None:
                self._slow.remove(slow)
        if held:
            self._released.wait(MAX_LONG_POLL)
        if slow is not None:
            time.sleep(slow[2])
        return status, body

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                prefix = f"/file/bot{stub.token}/"
                path = urllib.parse.unquote(self.path)
                if not path.startswith(prefix):
                    self._api(b"")
                    return
                file_id = urllib.parse.unquote(path[len(prefix):]).rsplit("/", 1)[-1].rsplit(".", 1)[0]
                with stub._cond:
                    data = stub.files.get(file_id)
                    stub.calls.append(Call("download", {"file_id": file_id}, ok=data is not None))
                    stub._cond.notify_all()
                if data is None:
                    self._reply(404, b'{"ok":false,"error_code":404,"description":"Not Found"}')
                else:
                    self._reply(200, data, "application/octet-stream")

            def do_POST(self) -> None:
                # Telegram counts a request when it arrives, not when a large upload has been read.
                self.arrived = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                self._api(self.rfile.read(length))

            def _api(self, body: bytes) -> None:
                prefix = f"/bot{stub.token}/"
                path = urllib.parse.unquote(self.path)
                if not path.startswith(prefix):
                    self._reply(401, b'{"ok":false,"error_code":401,"description":"Unauthorized"}')
                    return
                method = path[len(prefix):].split("?", 1)[0]
                params, files = _parse_body(self.headers.get("Content-Type", ""), body)
                status, reply = stub._request(method, params, files, getattr(self, "arrived", None))
                self._reply(status, json.dumps(reply).encode())

        return Handler


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up (a bot being stopped mid-poll) is normal here, not worth a traceback."""

    daemon_threads = True
    # A bot opens many connections at once under load (a burst of uploads): the default backlog of 5 makes
    # the kernel reset some of them, which Telegram never does.
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class _ApiError(Exception):
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


def _parse_body(content_type: str, body: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Form-encoded or multipart parameters (PTB's two encodings) and uploaded files."""
    params: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    if content_type.startswith("multipart/form-data"):
        head = f"Content-Type: {content_type}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        for part in message.iter_parts():
            name = str(part.get_param("name", header="content-disposition"))
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
            if part.get_filename() is not None:
                files[name] = data
            else:
                params[name] = _parse_value(name, data.decode())
    elif content_type.startswith("application/json") and body:
        params = json.loads(body)
    elif body:
        for key, value in urllib.parse.parse_qsl(body.decode(), keep_blank_values=True):
            params[key] = _parse_value(key, value)
    return params, files


class BotProcess:
    """``detbot bot`` as a subprocess against a stub and a Redis; its log goes to a file, never a pipe."""

    def __init__(self, stub: TelegramStub, redis_url: str, log_path: Any, **env: str) -> None:
        self.stub = stub
        self.redis_url = redis_url
        self.log_path = log_path
        self.env = env
        self.proc: Any = None

    def start(self, timeout: float = 60.0, ready: str | None = None) -> BotProcess:
        """Start and wait until the bot long-polls the stub (its handlers and delivery loop are up), or, with
        ``ready``, until that line shows in its log (a standby replica, a webhook bot)."""
        import subprocess

        from tests.conftest import DETBOT, ROOT, detbot_env

        env = detbot_env(TELEGRAM_BOT_TOKEN=self.stub.token, TELEGRAM_API_BASE_URL=self.stub.url,
                         REDIS_URL=self.redis_url, **self.env)
        with self.stub._cond:
            polls_before = self.stub._polls
        logged_before = len(self.log())
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*DETBOT, "bot"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bot exited with {self.proc.returncode}:\n{self.log()}")
            if ready is not None:
                return ready in self.log()[logged_before:]
            with self.stub._cond:
                return self.stub._polls > polls_before

        self.stub.wait_for(up, timeout, f"the bot to {'log ' + repr(ready) if ready else 'poll for updates'}")
        return self

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM: a graceful stop (answers being sent are finished)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
        return int(self.proc.wait(timeout)) if self.proc is not None else 0

    def kill(self) -> None:
        """SIGKILL: a crash; nothing is acknowledged or confirmed on the way out."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def rss_bytes(self) -> int:
        import psutil

        return int(psutil.Process(self.proc.pid).memory_info().rss)


# -- helpers for the bot's tests -------------------------------------------------------------------------

STATUS_PREFIX = "⏳"
# Static stickers a set takes (Telegram's limit).
STATIC_SET_LIMIT = 120
STICKER_METHODS = frozenset({"sendSticker", "uploadStickerFile", "getStickerSet", "createNewStickerSet",
                             "addStickerToSet"})
# A video's progress message (bot/video.py): a status message too, never an answer.
PROGRESS_PREFIX = "🎞"
_BOX_LINE = r"^(\d+)\. (\w+) (\d\.\d\d) \[(-?\d+), (-?\d+), (-?\d+), (-?\d+)\]$"


def bot_id(token: str) -> int:
    """The bot id in a token: its numeric part."""
    return int(token.split(":", 1)[0])


def delivered(redis: Any, bot: int) -> bool:
    """Every completion of bot ``bot``'s jobs delivered and acknowledged (acknowledged events are deleted),
    on its own stream and on the queue's stream of before namespaces."""
    from jobs.defaults import EVENTS_GROUP, QUEUE_NAME
    from jobs.keys import EVENTS_STREAM, events

    for stream in (events(QUEUE_NAME, bot), EVENTS_STREAM):
        if redis.exists(stream) and (redis.xlen(stream) or redis.xpending(stream, EVENTS_GROUP)["pending"]):
            return False
    return True


def inbox_updates(redis: Any, stub: TelegramStub) -> list[int]:
    """Ids of the updates in the bot's inbox (received, not yet handled), oldest first."""
    from jobs.keys import inbox

    return [int(fields[b"id"]) for _entry, fields in redis.xrange(inbox(stub.bot_id))]


def encode(img: Any, ext: str = ".jpg") -> bytes:
    """A BGR array as image-file bytes (JPEG quality 92, like the training images, or PNG)."""
    import cv2

    ok, buf = cv2.imencode(ext, img, [cv2.IMWRITE_JPEG_QUALITY, 92] if ext == ".jpg" else [])
    assert ok
    return bytes(buf.tobytes())


def answers_to(stub: TelegramStub, chat_id: int, message_id: int) -> list[Call]:
    """The bot's answers (photos, albums, texts; not status messages) replying to one message."""
    return [c for c in stub.answers(chat_id)
            if c.reply_to == message_id and not c.text.startswith((STATUS_PREFIX, PROGRESS_PREFIX))]


def wait_answer(stub: TelegramStub, chat_id: int, message_id: int, timeout: float = 90.0) -> Call:
    """The first answer to ``message_id`` in ``chat_id``."""
    return stub.wait_for(lambda: answers_to(stub, chat_id, message_id), timeout,
                         f"an answer to message {message_id} in chat {chat_id}")[0]


def full_text(stub: TelegramStub, chat_id: int, message_id: int) -> str:
    """Caption and follow-up messages of an answer, joined: the whole text a person reads."""
    return "\n".join(c.text for c in answers_to(stub, chat_id, message_id))


def box_lines(text: str) -> list[tuple[int, str, float, tuple[int, int, int, int]]]:
    """``(index, class, confidence, (x1, y1, x2, y2))`` for every box line of an answer."""
    import re

    out = []
    for line in text.splitlines():
        m = re.match(_BOX_LINE, line)
        if m:
            x1, y1, x2, y2 = (int(v) for v in m.group(4, 5, 6, 7))
            out.append((int(m.group(1)), m.group(2), float(m.group(3)), (x1, y1, x2, y2)))
    return out


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height of a real, fully decodable image (fails on anything else)."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.size
