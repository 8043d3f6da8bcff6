"""Videos, animations (GIFs) and round video notes until they are answered: a message to a queued clip, its
progress message with a cancel button; and what the clip's modules share (its kinds, its buttons' data, its
refusals' and failures' words). The answer is :mod:`bot.video_answers`, the presses :mod:`bot.video_presses`.

- **Intake** (:meth:`Videos.handle`), in the photos' order: the per-minute limits (a clip counts one photo per
  ``SECONDS_PER_PHOTO`` begun), the queue's and the chat's room, then Telegram's own metadata (size, length,
  frames at the sampling rate) — all before any download; then the download, the header checked
  (:func:`detector.video.probe`) and the clip queued (:func:`jobs.video.submit`).
- **Progress:** one status message, sent at once, edited at most every ``PROGRESS_EVERY`` seconds with the
  share done, with a cancel button for the person who sent the clip (or a group's admin); the answer deletes
  it (:class:`bot.status.StatusBoard`, which keeps its id in Redis for any replica).
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message
from telegram.error import BadRequest, TelegramError

from bot import replies
from bot.i18n import N_, Catalog
from bot.intake import Intake, Request, thread_of
from bot.settings import BotSettings
from bot.telegram_io import describe, fetch_file, reply_to
from detector.params import DetectParams
from detector.video import MAX_VIDEO_BYTES, VideoError, VideoLimits, plan, probe
from jobs import video as clips
from jobs.exceptions import AlreadyQueuedError, ChatQueueFullError, JobsError, QueueFullError, QueueUnavailableError

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
VIDEO_CANCELLED = N_("video.cancelled")
BUTTON_CANCEL = N_("video.button.cancel")
VIDEO_TOO_LONG = N_("video.too_long")
VIDEO_TOO_BIG = N_("video.too_big")
VIDEO_TOO_LARGE = N_("video.too_large")
VIDEO_NOT_A_VIDEO = N_("video.not_a_video")
VIDEO_CORRUPT = N_("video.corrupt")
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


class Videos:
    """Clips from intake until their answer: the photos' intake checks, the queue, the progress message."""

    def __init__(self, bot: Bot, settings: BotSettings, intake: Intake, redis: Redis) -> None:
        self.bot = bot
        self.settings = settings
        self.intake = intake
        self.redis = redis
        self.limits = video_limits(settings)

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
