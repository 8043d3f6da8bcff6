"""Videos, animations (GIFs) and round video notes: a message to a queued clip, its progress message with a
cancel button, its answer (the annotated clip, the objects it held, a JSON button).

- **Intake** (:meth:`Videos.handle`), in the photos' order: the per-minute limits (a clip counts one photo per
  ``SECONDS_PER_PHOTO`` begun), the queue's and the chat's room, then Telegram's own metadata (size, length,
  frames at the sampling rate) — all before any download; then the download, the header checked
  (:func:`detector.video.probe`) and the clip queued (:func:`jobs.video.submit`).
- **Progress:** one status message, sent at once, edited at most every ``PROGRESS_EVERY`` seconds with the
  share done, with a cancel button for the person who sent the clip (or a group's admin); the answer deletes
  it (:class:`bot.status.StatusBoard`, which keeps its id in Redis for any replica).
- **The answer** (:meth:`Videos.answer`, sent by :mod:`bot.delivery`): an animation answers an animation, a
  round note a round note, any other clip a video; the caption counts unique objects per class over the clip
  and its busiest moment; the tracks follow in text, and a JSON button sends them as a file.
- **Presses** (cancel, JSON) go through the same gate as the photos' buttons (:mod:`bot.press_gate`): bound to
  their message, the per-person limits, the person who asked or an admin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from telegram import Bot, CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Message
from telegram.error import BadRequest, TelegramError

from bot import replies
from bot.buttons import BUTTON_JSON, Buttons, answer_press
from bot.i18n import N_, Catalog, catalog, language_for
from bot.intake import Intake, Request, thread_of
from bot.press_gate import PressLimits
from bot.settings import BotSettings
from bot.telegram_io import describe, fetch_file, reply_to
from bot.text import MESSAGE_LIMIT, pack_lines, split_caption
from detector.names import ClassNames
from detector.params import DetectParams
from detector.render import format_confidence
from detector.tracking import ID_PREFIX
from detector.video import MAX_VIDEO_BYTES, VideoError, VideoLimits, plan, probe
from jobs import keys
from jobs import video as clips
from jobs.exceptions import AlreadyQueuedError, ChatQueueFullError, JobsError, QueueFullError, QueueUnavailableError
from jobs.store import Completion

log = logging.getLogger(__name__)

# A clip counts against the per-minute limits as one photo per this many seconds begun (a minute: 6), at most
# the whole limit, so the longest clip a person may send still fits their minute.
SECONDS_PER_PHOTO = 10
# The progress message is edited at most this often (Telegram's edits count against the chat's budget).
PROGRESS_EVERY = 3.0
# A progress message no longer edited after this long: the answer is surely on its way (or lost: the status
# board says so).
PROGRESS_GIVE_UP = 15 * 60.0
CALLBACK_PREFIX = "v"
CANCEL, JSON_DOC = "x", "j"
KIND_VIDEO, KIND_ANIMATION, KIND_NOTE = "video", "animation", "note"

VIDEO_QUEUED = N_("video.queued")
VIDEO_PROGRESS = N_("video.progress")
VIDEO_CANCELLING = N_("video.cancelling")
VIDEO_CANCELLED = N_("video.cancelled")
BUTTON_CANCEL = N_("video.button.cancel")
VIDEO_NOTHING = N_("video.nothing")
VIDEO_BUSIEST = N_("video.busiest")
VIDEO_TRACK = N_("video.track")
VIDEO_TOO_LONG = N_("video.too_long")
VIDEO_TOO_BIG = N_("video.too_big")
VIDEO_TOO_LARGE = N_("video.too_large")
VIDEO_NOT_A_VIDEO = N_("video.not_a_video")
VIDEO_CORRUPT = N_("video.corrupt")
VIDEO_NOT_YOURS = N_("video.not_yours")
VIDEO_OVER = N_("video.over")
VIDEO_DOWNLOAD_FAILED = N_("video.download_failed")
_ERRORS = {
    "video_too_long": VIDEO_TOO_LONG, "video_too_large": VIDEO_TOO_LARGE, "not_a_video": VIDEO_NOT_A_VIDEO,
    "corrupt_video": VIDEO_CORRUPT, "bad_video": VIDEO_CORRUPT, clips.CODE_CANCELLED: VIDEO_CANCELLED,
}


@dataclass(frozen=True)
class VideoRef:
    """The clip a message holds, as Telegram describes it (nothing downloaded yet)."""

    kind: str
    file_id: str
    file_size: int | None
    duration: float | None


def video_of(message: Message | None) -> VideoRef | None:
    """A video, an animation (GIF), a round video note or a video sent as a file; None otherwise."""
    if message is None:
        return None
    if message.video_note is not None:
        note = message.video_note
        return VideoRef(KIND_NOTE, note.file_id, note.file_size, _seconds(note.duration))
    if message.animation is not None:
        anim = message.animation
        return VideoRef(KIND_ANIMATION, anim.file_id, anim.file_size, _seconds(anim.duration))
    if message.video is not None:
        clip = message.video
        return VideoRef(KIND_VIDEO, clip.file_id, clip.file_size, _seconds(clip.duration))
    doc = message.document
    if doc is not None and (doc.mime_type or "").lower().startswith("video/"):
        return VideoRef(KIND_VIDEO, doc.file_id, doc.file_size, None)
    return None


def _seconds(value: Any) -> float:
    """A duration as PTB gives it (seconds, or a timedelta in its newer mode)."""
    return float(value.total_seconds()) if hasattr(value, "total_seconds") else float(value or 0)


def photo_units(seconds: float | None, *limits: int) -> int:
    """What a clip counts against the per-minute limits: a photo per SECONDS_PER_PHOTO begun, at most the
    smallest limit in force (0: off)."""
    units = max(1, math.ceil((seconds or 0) / SECONDS_PER_PHOTO))
    return min([units, *(limit for limit in limits if limit > 0)])


def video_limits(settings: BotSettings) -> VideoLimits:
    return VideoLimits(max_seconds=settings.max_video_seconds, sample_fps=settings.video_fps,
                       max_frames=settings.max_video_frames)


def error_text(tr: Catalog, code: str, details: dict[str, Any] | None = None, limits: VideoLimits | None = None,
               ) -> str:
    """A clip's refusal or failure in the person's language (the queue's codes as for a photo)."""
    if code not in _ERRORS:
        return replies.error_reply(tr, code)
    limit = round((details or {}).get("limit") or (limits.max_seconds if limits else 0))
    return tr.gettext(_ERRORS[code], seconds=limit, megabytes=MAX_VIDEO_BYTES // replies.BYTES_PER_MB)


def callback(video_id: str, action: str) -> str:
    return f"{CALLBACK_PREFIX}:{video_id}:{action}"


def parse_callback(data: str | None) -> tuple[str, str] | None:
    parts = (data or "").split(":")
    if len(parts) != 3 or parts[0] != CALLBACK_PREFIX or not parts[1] or parts[2] not in (CANCEL, JSON_DOC):
        return None
    return parts[1], parts[2]


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


class Videos:
    """Clips from intake to answer; shares the photos' intake checks, status board and press gate."""

    def __init__(self, bot: Bot, settings: BotSettings, intake: Intake, redis: Redis, buttons: Buttons,
                 names: ClassNames) -> None:
        self.bot = bot
        self.settings = settings
        self.intake = intake
        self.redis = redis
        self.buttons = buttons
        self.names = names
        self.limits = video_limits(settings)
        self.bot_id = settings.bot_id

    @property
    def presses(self) -> PressLimits:
        return self.buttons.limits

    # -- intake -----------------------------------------------------------------------------------------

    async def handle(self, request: Request) -> None:
        """Never raises: an unexpected error still gets the person a reply, and one log line."""
        message = request.photos[0]
        try:
            await self._handle(request, message)
        except Exception as exc:
            log.error("video in chat %s failed before queueing: %s", request.chat.id, describe(exc), exc_info=exc)
            self.intake.metrics.refuse("internal")
            await self._reply(message, request.tr.gettext(replies.SOMETHING_WRONG))

    async def _reply(self, message: Message, text: str, markup: InlineKeyboardMarkup | None = None) -> Message:
        return await self.bot.send_message(message.chat_id, text, reply_parameters=reply_to(message.message_id),
                                           message_thread_id=thread_of(message), reply_markup=markup)

    async def _handle(self, request: Request, message: Message) -> None:
        intake, chats, chat_id = self.intake, self.intake.chats, request.chat.id
        ref = video_of(message)
        if ref is None:
            return
        ids = [request.asked_by.message_id, message.message_id]
        if await asyncio.to_thread(chats.was_handled, chat_id, request.asked_by.message_id):
            log.info("skipped chat=%s msg=%s: already handled (update sent again)", chat_id, ids[0])
            return
        units = photo_units(ref.duration, self.settings.rate_limit_user, self.settings.rate_limit_chat)
        refusal = intake.limits.take(request.user_id, chat_id, units)
        if refusal is not None:
            await intake.slow_down(request, refusal)
            return
        refused = await self._before_download(request, message, ref)
        if refused:
            await asyncio.to_thread(chats.mark_handled, chat_id, ids)
            return
        data = await self._download(request, message, ref)
        if data is not None:
            await self._submit(request, message, ref, data)
        await asyncio.to_thread(chats.mark_handled, chat_id, ids)

    async def _before_download(self, request: Request, message: Message, ref: VideoRef) -> bool:
        """Room in the queue and the chat, Telegram's size and length: True when the clip was refused."""
        tr = request.tr
        try:
            room = await asyncio.to_thread(self.intake.client_for(request).room)
            chat_room = await asyncio.to_thread(self.intake.client_for(request).chat_room, request.chat.id)
        except QueueUnavailableError:
            await self.intake.refuse(message, "redis_unreachable", tr.gettext(replies.UNAVAILABLE))
            return True
        if min(room, chat_room) < 1:
            await self.intake.no_room(request, message, 1, chat_room < room)
            return True
        if ref.file_size is not None and ref.file_size > MAX_VIDEO_BYTES:
            await self.intake.refuse(message, "too_big", tr.gettext(VIDEO_TOO_BIG, megabytes=MAX_VIDEO_BYTES //
                                                                    replies.BYTES_PER_MB),
                                     detail=f"{ref.file_size} bytes")
            return True
        if ref.duration is not None:
            try:
                self.limits.check_length(ref.duration)
            except VideoError as exc:
                await self.intake.refuse(message, exc.code, error_text(tr, exc.code, exc.details, self.limits),
                                         detail=f"{ref.duration:.0f} s")
                return True
        return False

    async def _download(self, request: Request, message: Message, ref: VideoRef) -> bytes | None:
        tr = request.tr
        try:
            data = await fetch_file(self.bot, ref.file_id, 3, 1.0)
        except BadRequest as exc:
            too_big = "too big" in str(exc).lower()
            text = tr.gettext(VIDEO_TOO_BIG, megabytes=MAX_VIDEO_BYTES // replies.BYTES_PER_MB) if too_big else \
                tr.gettext(VIDEO_DOWNLOAD_FAILED)
            await self.intake.refuse(message, "download_failed", text, detail=describe(exc))
            return None
        except TelegramError as exc:
            await self.intake.refuse(message, "download_failed", tr.gettext(VIDEO_DOWNLOAD_FAILED),
                                     detail=describe(exc))
            return None
        return data

    async def _submit(self, request: Request, message: Message, ref: VideoRef, data: bytes) -> None:
        tr = request.tr
        try:
            # Off the event loop: the header's checks cost milliseconds, but they are every other chat's.
            info = await asyncio.to_thread(probe, data, self.limits)
        except VideoError as exc:
            await self.intake.refuse(message, exc.code, error_text(tr, exc.code, exc.details, self.limits),
                                     detail=str(exc))
            return
        clip = plan(info, self.limits, note=ref.kind == KIND_NOTE)
        params = DetectParams.layered(request.args, request.settings.params, self.intake.default_params)
        routing = {**self.intake.routing_of(request, message), "kind": ref.kind}
        once = self.intake.chats.handled_key(request.chat.id, request.asked_by.message_id)
        try:
            video_id = await asyncio.to_thread(clips.submit, self.intake.client_for(request), data, clip, self.limits,
                                               params, routing, tr.language, once=once)
        except AlreadyQueuedError:
            log.info("skipped chat=%s msg=%s: queued before (update handled again)", request.chat.id,
                     request.asked_by.message_id)
            return
        except QueueFullError as exc:
            await self.intake.no_room(request, message, 1, isinstance(exc, ChatQueueFullError))
            return
        except QueueUnavailableError:
            await self.intake.refuse(message, "redis_unreachable", tr.gettext(replies.UNAVAILABLE))
            return
        self.intake.metrics.received.inc()
        log.info("queued video chat=%s msg=%s job=%s kind=%s %.1f s %dx%d frames=%d conf=%.2f", request.chat.id,
                 message.message_id, video_id, ref.kind, info.duration, info.width, info.height, len(clip.times),
                 params.threshold)
        self.intake.spawn(self._progress(video_id, message, tr))

    # -- progress ---------------------------------------------------------------------------------------

    def _cancel_markup(self, tr: Catalog, video_id: str) -> InlineKeyboardMarkup:
        return InlineKeyboardMarkup([[InlineKeyboardButton(tr.gettext(BUTTON_CANCEL),
                                                           callback_data=callback(video_id, CANCEL))]])

    async def _progress(self, video_id: str, message: Message, tr: Catalog) -> None:
        """The status message: sent at once, edited with the share done at most every PROGRESS_EVERY seconds
        until the answer (which deletes it) or the clip's end."""
        status = self.intake.status
        markup = self._cancel_markup(tr, video_id)
        try:
            sent = await self._reply(message, tr.gettext(VIDEO_QUEUED), markup)
        except TelegramError as exc:
            log.info("progress message in chat %s failed: %s", message.chat_id, describe(exc))
            return
        try:
            await asyncio.to_thread(self.intake.chats.save_status, video_id, message.chat_id, sent.message_id)
        except (RedisError, JobsError) as exc:
            log.info("could not remember the progress message in chat %s: %s", message.chat_id, describe(exc))
        shown = ""
        waited = 0.0
        while waited < PROGRESS_GIVE_UP:
            await asyncio.sleep(PROGRESS_EVERY)
            waited += PROGRESS_EVERY
            if status.answered(video_id):
                return
            try:
                found = await asyncio.to_thread(clips.progress, self.redis, video_id)
            except (RedisError, OSError):
                continue
            if found is None or found[2] != "queued":
                return  # done: its answer deletes this message (whichever replica sends it)
            done, frames, _ = found
            text = tr.gettext(VIDEO_PROGRESS, percent=100 * done // max(frames, 1)) if done else \
                tr.gettext(VIDEO_QUEUED)
            if text == shown:
                continue
            try:
                await self.bot.edit_message_text(text, chat_id=message.chat_id, message_id=sent.message_id,
                                                 reply_markup=markup)
                shown = text
            except BadRequest as exc:
                if "not modified" not in str(exc).lower():
                    return  # deleted: the answer is out
            except TelegramError as exc:
                log.info("progress of %s not shown: %s", video_id, describe(exc))

    # -- the answer -------------------------------------------------------------------------------------

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

    # -- presses ----------------------------------------------------------------------------------------

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
            raw: dict[bytes, bytes] = self.redis.hgetall(keys.video_answer(self.bot_id, video_id))  # type: ignore[assignment]
            return {k.decode(): json.loads(v) for k, v in raw.items()} if raw else None
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
