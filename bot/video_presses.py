"""Presses under a clip's messages: cancel (under its progress message) and JSON (under its answer). They go
through the same gate as the photos' buttons (:mod:`bot.press_gate`): bound to their message, the per-person
limits, the person who asked or an admin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from telegram import Bot, CallbackQuery, InputFile
from telegram.error import TelegramError

from bot import replies
from bot.buttons import Buttons, answer_press
from bot.i18n import N_, Catalog, catalog, language_for
from bot.press_gate import PressLimits, arriving, just_sent
from bot.settings import BotSettings
from bot.telegram_io import describe, reply_to
from bot.video import CANCEL, JSON_DOC, parse_callback
from bot.video_answers import VideoAnswers
from jobs import keys
from jobs import video as clips

log = logging.getLogger(__name__)

VIDEO_CANCELLING = N_("video.cancelling")
VIDEO_NOT_YOURS = N_("video.not_yours")
VIDEO_OVER = N_("video.over")


class VideoPresses:
    """A clip's buttons pressed: checked like any press, then the clip cancelled or its JSON sent."""

    def __init__(self, settings: BotSettings, redis: Redis, buttons: Buttons, answers: VideoAnswers) -> None:
        self.settings = settings
        self.redis = redis
        self.buttons = buttons
        self.answers = answers
        self.bot_id = settings.bot_id

    @property
    def presses(self) -> PressLimits:
        return self.buttons.limits

    async def press(self, bot: Bot, query: CallbackQuery) -> None:
        """Cancel (under the progress message) or JSON (under the answer): checked like any press first."""
        parsed = parse_callback(query.data)
        if parsed is None:
            await answer_press(query)
            return
        video_id, action = parsed
        fallback = catalog(language_for(None, query.from_user.language_code, self.settings.default_language))
        if not self.presses.allow_press(query.from_user.id):
            await answer_press(query, fallback.gettext("buttons.too_fast"))
            return
        try:
            place = await asyncio.to_thread(self._place, video_id, action)
            if place is None and just_sent(query):  # its state follows the message by a moment
                place = await arriving(lambda: asyncio.to_thread(self._place, video_id, action))
        except (RedisError, OSError) as exc:
            log.warning("button of video %s: Redis unreachable (%s)", video_id, describe(exc))
            await answer_press(query, fallback.gettext(replies.UNAVAILABLE))
            return
        if place is None:
            await answer_press(query, fallback.gettext(VIDEO_OVER))
            return
        tr = catalog(str(place.get("language") or fallback.language))
        message = query.message
        if message is None or (message.chat.id, message.message_id) != (place.get("chat"), place.get("message")):
            log.warning("button of video %s refused: pressed under another message", video_id)
            await answer_press(query, tr.gettext("buttons.not_here"), show_alert=True)
            return
        user = query.from_user.id
        if not (place.get("private") or user == place.get("asker") or
                await self.buttons.admins.is_admin(bot, int(place["chat"]), user)):
            await answer_press(query, tr.gettext(VIDEO_NOT_YOURS), show_alert=True)
            return
        if action == CANCEL:
            await self._cancel(bot, query, tr, video_id, place)
        else:
            await self._json(bot, query, tr, video_id, place)

    def _place(self, video_id: str, action: str) -> dict[str, Any] | None:
        """Where a press may come from, who may press and in which language: the progress message (cancel,
        from the clip's record and its status message) or the answer (JSON, from its stored state)."""
        if action == JSON_DOC:
            return self.answers.kept(video_id)
        found: list[Any] = self.redis.mget([keys.status(self.bot_id, video_id)])
        routing_raw: Any = self.redis.hget(keys.job(video_id), "routing")
        if not found[0] or not routing_raw:
            return None
        chat, _, message_id = found[0].decode().partition(":")
        routing = json.loads(routing_raw)
        return {"chat": int(chat), "message": int(message_id), "asker": routing.get("user_id"),
                "private": routing.get("chat_type") == "private", "language": routing.get("language") or ""}

    async def _cancel(self, bot: Bot, query: CallbackQuery, tr: Catalog, video_id: str, place: dict[str, Any],
                      ) -> None:
        try:
            cancelled = await asyncio.to_thread(clips.cancel, self.redis, video_id)
        except (RedisError, OSError) as exc:
            log.warning("video %s not cancelled: %s", video_id, describe(exc))
            await answer_press(query, tr.gettext(replies.UNAVAILABLE))
            return
        if not cancelled:
            await answer_press(query, tr.gettext(VIDEO_OVER))
            return
        log.info("video %s cancelled by user %s", video_id, query.from_user.id)
        await answer_press(query, tr.gettext(VIDEO_CANCELLING))
        with contextlib.suppress(TelegramError):
            await bot.edit_message_text(tr.gettext(VIDEO_CANCELLING), chat_id=int(place["chat"]),
                                        message_id=int(place["message"]))

    async def _json(self, bot: Bot, query: CallbackQuery, tr: Catalog, video_id: str, place: dict[str, Any]) -> None:
        if not self.presses.allow_send(query.from_user.id):
            await answer_press(query, tr.gettext("buttons.too_fast"))
            return
        await answer_press(query)
        data = str(place.get("document") or "{}").encode()
        try:
            await bot.send_document(int(place["chat"]), InputFile(data, filename="tracks.json"),
                                    reply_parameters=reply_to(int(place["message"])),
                                    message_thread_id=place.get("thread"))
        except TelegramError as exc:
            log.warning("JSON of video %s not sent: %s", video_id, describe(exc))
