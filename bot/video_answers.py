"""A clip's answer (sent by :mod:`bot.delivery`): an animation answers an animation, a round note a round note,
any other clip a video; the caption counts unique objects per class over the clip and its busiest moment; the
tracks follow in text, and a JSON button sends them as a file (its state kept here, for DETBOT_ANSWER_TTL).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.buttons import BUTTON_JSON
from bot.i18n import N_, Catalog, catalog
from bot.settings import BotSettings
from bot.telegram_io import describe, reply_to
from bot.text import MESSAGE_LIMIT, pack_lines, split_caption
from bot.video import JSON_DOC, KIND_ANIMATION, KIND_NOTE, KIND_VIDEO, callback, error_text
from detector.names import ClassNames
from detector.params import DetectParams
from detector.render import format_confidence
from detector.tracking import ID_PREFIX
from jobs import keys
from jobs.store import Completion

log = logging.getLogger(__name__)

VIDEO_NOTHING = N_("video.nothing")
VIDEO_BUSIEST = N_("video.busiest")
VIDEO_TRACK = N_("video.track")


def seconds_text(value: float) -> str:
    """Times in a clip, as people read them: ``7.5``."""
    return f"{value:.1f}"


@dataclass
class VideoAnswer:
    """What delivery sends for a clip's completion: the clip (None for an error) and its words."""

    unit: str  # the clip's id: its status message, its buttons
    kind: str
    clip: bytes | None
    lines: list[str]
    markup: InlineKeyboardMarkup | None = None
    width: int = 0
    height: int = 0
    duration: int = 0
    document: dict[str, Any] | None = None  # the JSON of the JSON button

    def caption_and_rest(self) -> tuple[str, list[str]]:
        """The media's caption and the text after it (a round note takes no caption: all of it follows)."""
        if self.kind == KIND_NOTE:
            return "", pack_lines(self.lines, MESSAGE_LIMIT)
        return split_caption(self.lines)


class VideoAnswers:
    """A clip's completion in words and in kind, sent; what its JSON button needs, kept and read back."""

    def __init__(self, bot: Bot, settings: BotSettings, redis: Redis, names: ClassNames) -> None:
        self.bot = bot
        self.settings = settings
        self.redis = redis
        self.names = names
        self.bot_id = settings.bot_id

    def answer(self, c: Completion, default_language: str) -> VideoAnswer:
        """The answer to a clip's completion (its own, or a span's that failed)."""
        tr = catalog(str(c.routing.get("language") or default_language))
        unit = str(c.routing.get("video_id") or c.job_id)
        kind = str(c.routing.get("kind") or KIND_VIDEO)
        if not (c.ok and c.detection and c.annotated):
            return VideoAnswer(unit, kind, None, [error_text(tr, c.code or "internal_error", c.details)])
        det = c.detection
        lines = self.summary_lines(tr, det)
        plan_ = det.get("video") or {}
        size = plan_.get("size") or [0, 0]
        document = {"video": f"{kind} {unit}", **{k: v for k, v in det.items() if k != "video"},
                    "width": size[0], "height": size[1]}
        markup = InlineKeyboardMarkup([[InlineKeyboardButton(tr.gettext(BUTTON_JSON),
                                                             callback_data=callback(unit, JSON_DOC))]])
        return VideoAnswer(unit, kind, c.annotated, lines, markup, int(size[0]), int(size[1]),
                           round(float(det.get("duration_s") or 0)), document)

    def summary_lines(self, tr: Catalog, det: dict[str, Any]) -> list[str]:
        """The caption's lines (unique objects per class, the busiest moment), then one line per track."""
        tracks = det.get("tracks") or []
        seconds = seconds_text(float(det.get("duration_s") or 0))
        params = DetectParams.from_dict(det.get("confidence") or {})
        if not tracks:
            return [tr.gettext(VIDEO_NOTHING, seconds=seconds, confidence=format_confidence(params.threshold))]
        counts = det.get("counts") or {}
        classes = ", ".join(f"{self._name(tr, name)} ×{n}" for name, n in counts.items())
        lines = [tr.ngettext("video.summary", "video.summary.plural", len(tracks), seconds=seconds, classes=classes,
                             confidence=format_confidence(params.threshold))]
        busiest = det.get("busiest") or {}
        lines.append(tr.gettext(VIDEO_BUSIEST, objects=int(busiest.get("objects") or 0),
                                time=seconds_text(float(busiest.get("time_s") or 0))))
        for t in tracks:
            lines.append(tr.gettext(VIDEO_TRACK, id=f"{ID_PREFIX}{t['id']}",
                                    name=self.names.display(t.get("class_id"), str(t["class_name"]), tr.language),
                                    first=seconds_text(float(t["first_seen_s"])),
                                    last=seconds_text(float(t["last_seen_s"])),
                                    confidence=f"{float(t['confidence']):.2f}"))
        return lines

    def _name(self, tr: Catalog, name: str) -> str:
        return self.names.display(None, name, tr.language)

    async def send(self, chat_id: int, thread: int | None, reply: int | None, answer: VideoAnswer) -> Message:
        """The clip, as what it answers: an animation, a round video note, or a video (streamable)."""
        assert answer.clip is not None
        caption, _ = answer.caption_and_rest()
        common: dict[str, Any] = {"reply_parameters": reply_to(reply), "message_thread_id": thread,
                                  "reply_markup": answer.markup}
        if answer.kind == KIND_NOTE:
            return await self.bot.send_video_note(chat_id, answer.clip, duration=answer.duration,
                                                  length=answer.width, **common)
        if answer.kind == KIND_ANIMATION:
            return await self.bot.send_animation(chat_id, answer.clip, caption=caption, duration=answer.duration,
                                                 width=answer.width, height=answer.height,
                                                 filename="detbot.mp4", **common)
        return await self.bot.send_video(chat_id, answer.clip, caption=caption, duration=answer.duration,
                                         width=answer.width, height=answer.height, supports_streaming=True,
                                         filename="detbot.mp4", **common)

    async def keep(self, answer: VideoAnswer, routing: dict[str, Any], message: Message) -> None:
        """The answer is out: what its JSON button needs, for DETBOT_ANSWER_TTL (a failure costs the button)."""
        state = {"chat": message.chat.id, "message": message.message_id, "thread": routing.get("thread_id"),
                 "asker": routing.get("user_id"), "private": routing.get("chat_type") == "private",
                 "language": routing.get("language") or "", "document": json.dumps(answer.document, ensure_ascii=False)}
        key = keys.video_answer(self.bot_id, answer.unit)

        def save() -> None:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hset(key, mapping={k: json.dumps(v) for k, v in state.items()})
            pipe.expire(key, self.settings.answer_ttl)
            pipe.execute()

        try:
            await asyncio.to_thread(save)
        except (RedisError, OSError) as exc:
            log.warning("JSON button of video %s not stored: %s", answer.unit, describe(exc))

    def kept(self, video_id: str) -> dict[str, Any] | None:
        """What :meth:`keep` stored for a clip's JSON button (None: gone, or never kept)."""
        raw: dict[bytes, bytes] = self.redis.hgetall(keys.video_answer(self.bot_id, video_id))  # type: ignore[assignment]
        return {k.decode(): json.loads(v) for k, v in raw.items()} if raw else None
