"""The web face as the bot's Telegram Mini App: who opened the page, the answer they opened, and what they
ask the bot to do with it.

- **Who**: the ``Authorization: tma <initData>`` header, checked against the key derived from the bot's
  token (:mod:`web.initdata`); anything that does not check out is 401. The process keeps that key and the
  bot's id, never the token itself: it cannot act as the bot.
- **The answer**: the bot's kept answer (:class:`bot.answers.AnswerBook`, under the bot's id), shown to the
  person of a private chat, or to anyone who opened a group's 🎚 link (:func:`bot.mini_app.may_view`).
- **What they ask**: applying a view, or the answer's clean photo. Neither is done here: the request goes to
  the bot's inbox (:mod:`bot.mini_app`), the bot applies it with its buttons' code — including who may
  apply (the asker, or a group's admin: a ``getChatMember`` only the bot can make) — and the web waits a
  few seconds for the verdict. The photo comes back the same way: the web never calls Telegram, so a file
  is fetched with the token only in the bot, and only for a person allowed to see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from redis.asyncio import Redis

from bot import mini_app
from bot.answers import Answer, AnswerBook
from bot.inbox import Inbox
from bot.mini_app import MiniAppRequest
from web.initdata import WebAppUser, check_signed, secret_key

log = logging.getLogger(__name__)

# How long a request waits for the bot's verdict (seconds). An apply's verdict comes once the answer in
# the chat is edited (a re-drawing on a worker, an edit: about a second); past this the web answers 202
# "sent": the request is in the bot's inbox and is applied once the bot reaches it.
VERDICT_WAIT = 15.0
# The consumer name the inbox is opened with here: the web only adds to it.
INBOX_WRITER = "web"


class MiniApp:
    """One bot's Mini App (``bot_id``, its token's key); Redis through ``redis.asyncio``, whose socket waits
    longer than VERDICT_WAIT."""

    def __init__(self, redis: Redis, bot_token: str, answer_ttl: int) -> None:
        self.redis = redis
        self.bot_id = int(bot_token.split(":", 1)[0])
        self._key = secret_key(bot_token)
        self.answers = AnswerBook(redis, answer_ttl, self.bot_id)
        self.inbox = Inbox(redis, self.bot_id, INBOX_WRITER)
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """The server stops: requests waiting for a verdict answer now ("sent": the bot has them)."""
        self._stopping.set()

    def user(self, init_data: str) -> WebAppUser:
        """The person the initData was signed for; raises InitDataError."""
        return check_signed(init_data, self._key, time.time())

    async def answer(self, answer_id: str) -> Answer | None:
        return await self.answers.load(answer_id)

    async def ask(self, kind: str, answer_id: str, answer: Answer, user: WebAppUser, *,
                  view: dict[str, Any] | None = None, index: int = 0) -> tuple[str, bytes] | None:
        """A request into the bot's inbox and the bot's verdict with its data; None when no verdict came
        within VERDICT_WAIT (the request stays in the inbox). Raises InboxFull or a RedisError."""
        request = MiniAppRequest.new(kind, answer_id, answer.chat_id, user.id, view=view, index=index,
                                     language_code=user.language_code)
        await self.inbox.add_request(request.to_dict())
        verdict = await self._verdict(request.request_id)
        if verdict is None:
            log.info("Mini App %s request %s on answer %s: no verdict within %.0f s", kind, request.request_id,
                     answer_id, VERDICT_WAIT)
        return verdict

    async def _verdict(self, request_id: str) -> tuple[str, bytes] | None:
        if self._stopping.is_set():
            return None
        waiting = asyncio.ensure_future(mini_app.wait_verdict(self.redis, self.bot_id, request_id, VERDICT_WAIT))
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if waiting.done():
            return waiting.result()
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        return None
