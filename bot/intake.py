"""From a Telegram message to queued jobs: checks, download, submit; every refusal gets a friendly reply.

Order matters: cheap checks first (size from Telegram's metadata, rate limits) so a refused photo is
never downloaded; the image header is checked before queueing so bad files never take a queue slot.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from telegram import Bot, Chat, Message
from telegram.error import BadRequest, TelegramError

from bot import replies
from bot.chat_settings import ChatSettings, ChatStore
from bot.limits import Limits
from bot.metrics import BotMetrics
from bot.settings import BotSettings
from bot.status import StatusBoard
from bot.telegram_io import describe, say
from detector.errors import ImageError
from detector.image import read_header
from detector.params import DetectParams
from jobs.client import DetectionClient
from jobs.exceptions import QueueFullError, QueueUnavailableError

log = logging.getLogger(__name__)

# Telegram sends an album's photos as separate updates within a moment; wait this long for stragglers.
ALBUM_COLLECT_DELAY = 1.0


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

    async def refuse(self, message: Message, reason: str, text: str, count: int = 1) -> None:
        log.info("refused photo chat=%s msg=%s: %s", message.chat_id, message.message_id, reason)
        self.metrics.refused.labels(reason).inc(count)
        await say(self.bot, message.chat_id, text, reply=message.message_id, thread=thread_of(message))

    async def handle(self, request: Request) -> None:
        """Never raises: an unexpected error still gets the person a reply, and one log line."""
        try:
            await self._handle(request)
        except Exception as exc:
            log.error("photo in chat %s failed before queueing: %s", request.chat.id, describe(exc))
            self.metrics.refused.labels("internal").inc(len(request.photos))
            await say(self.bot, request.chat.id, replies.SOMETHING_WRONG, reply=request.photos[0].message_id,
                      thread=thread_of(request.photos[0]))

    async def _handle(self, request: Request) -> None:
        first = request.photos[0]
        chat_id = request.chat.id
        ids = [request.asked_by.message_id, *(p.message_id for p in request.photos)]
        if await asyncio.to_thread(self.chats.was_handled, chat_id, request.asked_by.message_id):
            log.info("skipped chat=%s msg=%s: already handled (update sent again)", chat_id, ids[0])
            return
        refusal = self.limits.take(request.user_id, chat_id, len(request.photos))
        if refusal is not None:
            per = "per person" if refusal.scope == "user" else "in this chat"
            await self.refuse(first, f"rate limit ({refusal.scope})",
                              replies.rate_limited(refusal.limit, refusal.retry_in, per), len(request.photos))
            return
        images = await self._fetch_all(request)
        if not images:
            await asyncio.to_thread(self.chats.mark_handled, chat_id, ids)
            return
        # Precedence: caption > chat > global default.
        params = DetectParams.layered(request.args, request.settings.params, self.default_params)
        await self._submit(request, images, params)
        await asyncio.to_thread(self.chats.mark_handled, chat_id, ids)

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
                await self.refuse(message, f"too big ({ref.file_size} bytes)", replies.TOO_BIG)
                continue
            if not started:
                await self.status.typing(request.chat.id, thread)
                started = True
            data = await self._download(message, ref)
            if data is not None:
                ok.append((message, data))
        return ok

    async def _download(self, message: Message, ref: ImageRef) -> bytes | None:
        try:
            file = await self.bot.get_file(ref.file_id)
            data = bytes(await file.download_as_bytearray())
        except BadRequest as exc:
            too_big = "too big" in str(exc).lower()
            await self.refuse(message, f"download: {describe(exc)}", replies.TOO_BIG if too_big else
                              replies.DOWNLOAD_FAILED)
            return None
        except TelegramError as exc:
            await self.refuse(message, f"download: {describe(exc)}", replies.DOWNLOAD_FAILED)
            return None
        try:
            read_header(data, self.settings.max_pixels)
        except ImageError as exc:
            await self.refuse(message, f"{exc.code}: {exc}", str(exc))
            return None
        return data

    async def _submit(self, request: Request, images: list[tuple[Message, bytes]], params: DetectParams) -> None:
        first = images[0][0]
        chat_id = request.chat.id
        album = uuid.uuid4().hex if len(images) > 1 else None
        job_ids: list[str] = []
        for index, (message, data) in enumerate(images, 1):
            routing: dict[str, Any] = {
                "chat_id": chat_id,
                "chat_type": request.chat.type,
                "message_id": message.message_id,
                "thread_id": thread_of(message),
                "user_id": request.user_id,
                "accepted_at": time.time(),
            }
            if album:
                routing["album"] = {"id": album, "index": index, "count": len(images),
                                    "reply_to": first.message_id}
            try:
                job_id = await asyncio.to_thread(self.client.submit, data, params, routing=routing)
            except QueueFullError:
                # One reply for the photos left out (of an album: the rest is still answered).
                await self.refuse(message, "queue full", replies.BUSY, len(images) - index + 1)
                break
            except QueueUnavailableError:
                await self.refuse(message, "redis unreachable", replies.UNAVAILABLE, len(images) - index + 1)
                break
            job_ids.append(job_id)
            self.metrics.received.inc()
            log.info("queued photo chat=%s msg=%s job=%s conf=%.2f classes=%s", chat_id, message.message_id,
                     job_id, params.threshold, ",".join(params.classes or []) or "all")
        if album and 0 < len(job_ids) < len(images):
            # Some album photos never made it into the queue: the rest is still answered as a smaller album.
            log.warning("album in chat %s: %d of %d photos queued", chat_id, len(job_ids), len(images))
            await asyncio.to_thread(self.chats.save_album_count, album, len(job_ids))
        if job_ids:
            self.spawn(self.status.show_later(album or job_ids[0], job_ids[0], chat_id, thread_of(first),
                                              first.message_id))
