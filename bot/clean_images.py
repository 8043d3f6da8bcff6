"""The clean photo a button's re-drawing (or crops) starts from: bounded in bytes, cached in the bot's memory.

Never kept in Redis for the answer's lifetime: it is fetched again from Telegram by its ``file_id`` on an
answer's first press. Telegram's own photos are at most 2560 px and rarely above a megabyte, and ride in a
render request as they are; an image sent as a file may be 20 MB: a worker down-scales it once
(``jobs.render.KIND_CLEAN``) and that copy, at most ``CLEAN_MAX_BYTES``, is what every later render
carries. The boxes, in pixels of the original, are scaled to the copy (:meth:`Clean.fit`).
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image
from telegram import Bot

from bot.answers import Photo
from bot.telegram_io import fetch_file
from detector.result import Box
from jobs.render import CLEAN_MAX_BYTES, KIND_CLEAN, RenderClient

log = logging.getLogger(__name__)

# Clean images kept in the bot's memory after a press, so the next presses skip Telegram's download (and a
# large file's down-scaling); only a cache (a restart costs one download per answer), bounded in bytes: a
# few dozen photos, at most this much beside the bot's ~100 MB.
CLEAN_CACHE_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Clean:
    """A clean image for a render, and its scale against the original the boxes are measured in."""

    data: bytes
    scale_x: float = 1.0
    scale_y: float = 1.0

    def fit(self, boxes: Sequence[Box]) -> tuple[Box, ...]:
        """``boxes`` in this image's pixels."""
        if (self.scale_x, self.scale_y) == (1.0, 1.0):
            return tuple(boxes)
        return tuple(b.scaled(self.scale_x, self.scale_y) for b in boxes)  # outlines and keypoints too


def _size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return img.size


class CleanImages:
    """Clean images by Telegram ``file_id``: fetched, down-scaled when large, the recent ones kept."""

    def __init__(self, renderer: RenderClient, cache_bytes: int = CLEAN_CACHE_BYTES) -> None:
        self.renderer = renderer
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, Clean] = OrderedDict()
        self.downscaled = 0  # large originals down-scaled by a worker (each once while cached)

    async def get(self, bot: Bot, photo: Photo) -> Clean:
        """The photo's clean image for a render request; raises TelegramError, RenderError, RedisError."""
        cached = self._cache.get(photo.file_id)
        if cached is not None:
            self._cache.move_to_end(photo.file_id)
            return cached
        data = await fetch_file(bot, photo.file_id)
        clean = Clean(data) if len(data) <= CLEAN_MAX_BYTES else await self._downscale(data, photo)
        self._cache[photo.file_id] = clean
        while sum(len(c.data) for c in self._cache.values()) > self.cache_bytes and len(self._cache) > 1:
            self._cache.popitem(last=False)
        return clean

    async def _downscale(self, data: bytes, photo: Photo) -> Clean:
        """A worker's down-scaled copy of a large original (the one time it crosses Redis)."""
        (small,) = await self.renderer.render(KIND_CLEAN, data, (), "")
        self.downscaled += 1
        log.info("clean image %s down-scaled by a worker for the buttons: %d -> %d bytes", photo.file_id,
                 len(data), len(small))
        width, height = await asyncio.to_thread(_size, small)
        base = photo.detection()
        return Clean(small, width / max(1, base.width), height / max(1, base.height))
