"""From a Telegram message to queued jobs: checks, download, submit; every refusal gets a friendly reply.

Order matters: cheap checks first (size from Telegram's metadata, rate limits, the queue's and the chat's
room) so a refused photo is never downloaded; the image header is checked before queueing so bad files
never take a queue slot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from telegram import Bot, Chat, Message
from telegram.error import BadRequest, TelegramError

from bot import replies
from bot.albums import queued_album
from bot.chat_settings import ChatSettings, ChatStore
from bot.i18n import ENGLISH, Catalog, catalog
from bot.limits import Limits, Refusal
from bot.metrics import BotMetrics
from bot.models import Model
from bot.settings import BotSettings
from bot.status import StatusBoard
from bot.telegram_io import describe, fetch_file, say
from detector.errors import ImageError
from detector.image import read_header
from detector.params import DetectParams
from jobs.client import DetectionClient, new_job_ids
from jobs.exceptions import AlreadyQueuedError, ChatQueueFullError, QueueFullError, QueueUnavailableError

log = logging.getLogger(__name__)

# A photo's download is tried this often before the person is told it failed (network errors, timeouts).
DOWNLOAD_ATTEMPTS = 3
# Pause before the second try (doubled for the third): a busy file server gets a moment.
DOWNLOAD_RETRY_DELAY = 1.0


@dataclass(frozen=True)
class ImageRef:
    """The image a message holds: a photo (largest size) or an image document."""

    file_id: str
    file_size: int | None


def image_of(message: Message | None) -> ImageRef | None:
    if message is None:
        return None
    if message.photo:
        largest = max(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
        return ImageRef(largest.file_id, largest.file_size)
    doc = message.document
    if doc and (doc.mime_type or "").lower().startswith("image/"):
        return ImageRef(doc.file_id, doc.file_size)
    return None


def sender_of(message: Message) -> int:
    """Whom the per-person rate limit counts. Anonymous admins and channels post as a chat: their
    ``from_user`` is one Telegram service account shared by every group, so their chat is the sender."""
    if message.sender_chat is not None:
        return message.sender_chat.id
    return message.from_user.id if message.from_user else message.chat_id


def thread_of(message: Message) -> int | None:
    """The forum topic to answer in (only real topics: a plain reply thread is not a topic)."""
    return message.message_thread_id if message.is_topic_message else None


@dataclass
class Request:
    """One answer to give: the photo messages it covers (1, or an album's), and the message that asked."""

    chat: Chat
    user_id: int
    photos: list[Message]
    asked_by: Message
    args: DetectParams
    settings: ChatSettings = field(default_factory=ChatSettings)
    # The language of every reply to this request, and of the answer (it travels with the jobs).
    tr: Catalog = field(default_factory=lambda: catalog(ENGLISH))
    # The model that answers it (bot.models): its queue takes the jobs. None: the intake's own client.
    model: Model | None = None


class Intake:
    """Turns requests into queued jobs; owns the refusals' replies and metrics."""

    def __init__(
        self,
        bot: Bot,
        settings: BotSettings,
        client: DetectionClient,
        chats: ChatStore,
        limits: Limits,
        metrics: BotMetrics,
        status: StatusBoard,
        spawn: Callable[[Awaitable[Any]], Any],
    ) -> None:
        self.bot = bot
        self.settings = settings
        self.client = client
        self.chats = chats
        self.limits = limits
        self.metrics = metrics
        self.status = status
        self.spawn = spawn
        self.default_params = DetectParams(settings.default_confidence)

    async def refuse(self, message: Message, reason: str, text: str, count: int = 1, detail: str = "") -> None:
        """Reply ``text``; ``reason`` (one of bot.metrics.REFUSED_REASONS) labels the metric, ``detail`` (a
        size, an error's text) goes only to the log line."""
        log.info("refused photo chat=%s msg=%s: %s%s", message.chat_id, message.message_id, reason,
                 f": {detail}" if detail else "")
        self.metrics.refuse(reason, count)
        await say(self.bot, message.chat_id, text, reply=message.message_id, thread=thread_of(message))

    async def handle(self, request: Request) -> None:
        """Never raises: an unexpected error still gets the person a reply, and one log line."""
        try:
            await self._handle(request)
        except Exception as exc:
            log.error("photo in chat %s failed before queueing: %s", request.chat.id, describe(exc))
            self.metrics.refuse("internal", len(request.photos))
            await say(self.bot, request.chat.id, request.tr.gettext(replies.SOMETHING_WRONG),
                      reply=request.photos[0].message_id, thread=thread_of(request.photos[0]))

    async def _handle(self, request: Request) -> None:
        chat_id = request.chat.id
        ids = [request.asked_by.message_id, *(p.message_id for p in request.photos)]
        if await asyncio.to_thread(self.chats.was_handled, chat_id, request.asked_by.message_id):
            log.info("skipped chat=%s msg=%s: already handled (update sent again)", chat_id, ids[0])
            return
        refusal = self.limits.take(request.user_id, chat_id, len(request.photos))
        if refusal is not None:
            await self.slow_down(request, refusal)
            return
        if not await self._admit(request):
            await asyncio.to_thread(self.chats.mark_handled, chat_id, ids)
            return
        images = await self._fetch_all(request)
        if not images:
            await asyncio.to_thread(self.chats.mark_handled, chat_id, ids)
            return
        # Precedence: caption > chat > global default.
        params = DetectParams.layered(request.args, request.settings.params, self.default_params)
        await self._submit(request, images, params)
        await asyncio.to_thread(self.chats.mark_handled, chat_id, ids)

    async def slow_down(self, request: Request, refusal: Refusal) -> None:
        """One "slow down" per chat per minute: a flood's other refused photos are only logged and counted,
        so the refusals never use up the budget the chat's answers need."""
        first = request.photos[0]
        reason = f"rate_limit_{refusal.scope}"
        if self.limits.notices.due(request.chat.id):
            text = replies.rate_limited(request.tr, refusal.limit, refusal.retry_in, refusal.scope)
            await self.refuse(first, reason, text, len(request.photos))
            return
        log.info("refused photo chat=%s msg=%s: %s; already told within the minute", request.chat.id,
                 first.message_id, reason)
        self.metrics.refuse(reason, len(request.photos))

    def client_for(self, request: Request) -> DetectionClient:
        """The queue of the request's model (each model has its own queue, lanes and limits)."""
        return request.model.client if request.model is not None else self.client

    async def _room(self, request: Request) -> tuple[int, bool]:
        """How many photos the queue takes from this chat now, and whether the chat's own limit is what
        bounds it (``jobs.fair.chat_limit``). Raises QueueUnavailableError."""
        client, chat_id = self.client_for(request), request.chat.id

        def rooms() -> tuple[int, int]:
            return client.room(), client.chat_room(chat_id)

        queue_room, chat_room = await asyncio.to_thread(rooms)
        return min(queue_room, chat_room), chat_room < queue_room

    async def _admit(self, request: Request) -> bool:
        """Before any download: the photos the queue and the chat have room for stay in ``request``, the
        others get one reply. False when none is left."""
        first = request.photos[0]
        try:
            room, chat_bound = await self._room(request)
        except QueueUnavailableError:
            await self.refuse(first, "redis_unreachable", request.tr.gettext(replies.UNAVAILABLE), len(request.photos))
            return False
        left_out = request.photos[room:]
        if left_out:
            if room:
                log.warning("album in chat %s: room for %d of %d photos; the others refused before download",
                            request.chat.id, room, len(request.photos))
            await self.no_room(request, left_out[0], len(left_out), chat_bound)
            request.photos = request.photos[:room]
        return bool(request.photos)

    async def no_room(self, request: Request, message: Message, count: int, chat_bound: bool) -> None:
        """"Busy" when the queue is full; when it is this chat that has as many photos waiting as it may, a
        reply saying so, once per chat per minute (a flood's other refusals are logged and counted only)."""
        if not chat_bound:
            await self.refuse(message, "queue_full", request.tr.gettext(replies.BUSY), count)
        elif self.limits.full.due(request.chat.id):
            await self.refuse(message, "chat_queue_full", request.tr.gettext(replies.CHAT_BUSY), count)
        else:
            log.info("refused photo chat=%s msg=%s: chat_queue_full; already told within the minute",
                     request.chat.id, message.message_id)
            self.metrics.refuse("chat_queue_full", count)

    async def _fetch_all(self, request: Request) -> list[tuple[Message, bytes]]:
        """Download and check each photo; a photo that fails gets its own reply and is left out."""
        ok: list[tuple[Message, bytes]] = []
        thread = thread_of(request.photos[0])
        started = False
        for message in request.photos:
            ref = image_of(message)
            if ref is None:
                continue
            if ref.file_size is not None and ref.file_size > replies.MAX_DOWNLOAD_BYTES:
                await self.refuse(message, "too_big", replies.too_big(request.tr), detail=f"{ref.file_size} bytes")
                continue
            if not started:
                # Spawned, never awaited: a chat action must not delay queueing (nor wait for a busy chat).
                self.spawn(self.status.typing(request.chat.id, thread))
                started = True
            data = await self._download(message, ref, request.tr)
            if data is not None:
                ok.append((message, data))
        return ok

    async def _download(self, message: Message, ref: ImageRef, tr: Catalog) -> bytes | None:
        try:
            # Tried again after a network error: a burst of uploads to the bot can keep Telegram's file
            # server busy for a moment.
            data = await fetch_file(self.bot, ref.file_id, DOWNLOAD_ATTEMPTS, DOWNLOAD_RETRY_DELAY)
        except BadRequest as exc:
            too_big = "too big" in str(exc).lower()
            text = replies.too_big(tr) if too_big else tr.gettext(replies.DOWNLOAD_FAILED)
            await self.refuse(message, "download_failed", text, detail=describe(exc))
            return None
        except TelegramError as exc:
            await self.refuse(message, "download_failed", tr.gettext(replies.DOWNLOAD_FAILED), detail=describe(exc))
            return None
        try:
            # Off the event loop: the structural checks bound PIL's work, but even milliseconds per file
            # belong in a thread, not in every other chat's latency.
            await asyncio.to_thread(read_header, data, self.settings.max_pixels)
        except ImageError as exc:
            text = replies.error_reply(tr, exc.code, max_pixels=self.settings.max_pixels)
            await self.refuse(message, exc.code, text, detail=str(getattr(exc, "detail", "") or exc))
            return None
        return data

    async def _submit(self, request: Request, images: list[tuple[Message, bytes]], params: DetectParams) -> None:
        """Queue the photos the queue has room for, together; those beyond its room get the "busy" reply."""
        first = images[0][0]
        chat_bound = False
        try:
            # Checked before the downloads too; other photos may have taken the room meanwhile.
            room, chat_bound = await self._room(request)
            fits, left_out = images[:room], images[room:]
            unit, job_ids = await self._queue(request, fits, params, len(images) > 1) if fits else ("", [])
        except AlreadyQueuedError:
            # Handled again after a crash (the inbox replays it): the first submit's answer is on its way.
            log.info("skipped chat=%s msg=%s: queued before (update handled again)", request.chat.id,
                     request.asked_by.message_id)
            return
        except QueueFullError as exc:
            # Other photos took the room between the check and the submit: nothing of these was queued.
            await self.no_room(request, first, len(images), isinstance(exc, ChatQueueFullError))
            return
        except QueueUnavailableError:
            await self.refuse(first, "redis_unreachable", request.tr.gettext(replies.UNAVAILABLE), len(images))
            return
        if left_out:
            # One reply for the photos left out; an album's queued photos are answered as a smaller album.
            if job_ids:
                log.warning("album in chat %s: %d of %d photos queued", request.chat.id, len(job_ids), len(images))
            await self.no_room(request, left_out[0][0], len(left_out), chat_bound)
        if job_ids:
            self.spawn(self.status.show_later(unit, job_ids[0], request.chat.id, thread_of(first),
                                              first.message_id, request.tr))

    async def _queue(self, request: Request, images: list[tuple[Message, bytes]], params: DetectParams,
                     album: bool) -> tuple[str, list[str]]:
        """Submit ``images`` in one transaction; returns the unit its status message follows, and the job ids.

        An album's size is decided here, before submitting: it is the number of photos queued.
        """
        routings = [self.routing_of(request, message) for message, _ in images]
        album_id = ""
        job_ids = new_job_ids(len(images))
        if album:
            album_id, routings = queued_album(routings, reply_to=images[0][0].message_id, job_ids=job_ids)
        once = self.chats.handled_key(request.chat.id, request.asked_by.message_id)
        job_ids = await asyncio.to_thread(self.client_for(request).submit_many, [data for _, data in images], params,
                                          routings, request.tr.language, once=once, job_ids=job_ids)
        for (message, _), job_id in zip(images, job_ids, strict=True):
            self.metrics.received.inc()
            log.info("queued photo chat=%s msg=%s job=%s conf=%.2f classes=%s%s", request.chat.id,
                     message.message_id, job_id, params.threshold, ",".join(params.classes or []) or "all",
                     f" model={request.model.name}" if request.model is not None and request.model.name else "")
        return album_id or job_ids[0], job_ids

    @staticmethod
    def routing_of(request: Request, message: Message) -> dict[str, Any]:
        """Where the answer goes; it travels with the job, so any bot process can deliver it."""
        return {
            "chat_id": request.chat.id,
            "chat_type": request.chat.type,
            "message_id": message.message_id,
            "thread_id": thread_of(message),
            "user_id": request.user_id,
            "accepted_at": time.time(),
            # The answer's language: delivery writes the text in it, and the worker draws the labels in it.
            "language": request.tr.language,
            # The clean photo on Telegram: the answer's buttons fetch it again to re-draw it.
            "file_id": ref.file_id if (ref := image_of(message)) else "",
            # Which model answers (bot.models): its queue's workers re-draw and cut out the answer later.
            **({"model": request.model.name, "queue": request.model.queue} if request.model is not None else {}),
        }
