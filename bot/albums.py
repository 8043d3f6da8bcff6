"""Albums: several photos sent at once, answered with one media group of annotated photos and one summary.

An album goes through three stages (the third one with :mod:`bot.assembly`):

- **collecting** (:class:`AlbumCollector`): Telegram sends each photo of an album as an update of its own,
  sharing a ``media_group_id``; they are gathered until no further one came for ``ALBUM_COLLECT_DELAY``.
- **queueing** (:func:`queued_album`): the intake first decides how many of the album's photos the queue
  has room for, then submits those together, all or none (``DetectionClient.submit_many``). Every photo's
  routing carries the album's id, the photo's index, that number and every photo's job id: the album knows
  its own size and its photos from any one of its results, also after a restart of the bot.
- **assembly** (:mod:`bot.assembly`, :func:`album_answer`): the delivery side gathers an album's results in
  Redis, across the bot's replicas, until all of them are in (or Redis says the rest is lost or will not
  come), and turns them into one answer; a result of an album answered already is answered on its own.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from telegram import Message

from bot import replies
from bot.i18n import Catalog
from bot.outcome import Wording, detection_of
from bot.text import split_caption
from jobs.store import Completion

log = logging.getLogger(__name__)

# Telegram sends an album's photos as separate updates within a moment; wait this long for stragglers.
ALBUM_COLLECT_DELAY = 1.0
# A photo of an album already handed over (it came later than ALBUM_COLLECT_DELAY after the others) is
# answered on its own, as asked as its album was (in a group only one photo carries the "/detect"
# caption): albums are remembered this long, at most ALBUMS_REMEMBERED of them.
ALBUM_REMEMBER = 600.0
ALBUMS_REMEMBERED = 10_000
# Media groups hold 2-10 items (Telegram's limit); Telegram albums never have more than 10 photos.
MEDIA_GROUP_MAX = 10
# The routing field that makes a job part of an album (the routing travels with the job and its result).
ROUTING_FIELD = "album"


# -- collecting -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Collected:
    """An album's photo messages in the order they were sent, and whether any of them asked the bot."""

    photos: list[Message]
    explicit: bool


@dataclass
class _Gathering:
    photos: list[Message]
    explicit: bool
    last_seen: float


class AlbumCollector:
    """Gathers the updates of each album (per chat and ``media_group_id``) until it is complete."""

    def __init__(self, delay: float = ALBUM_COLLECT_DELAY) -> None:
        self.delay = delay
        self._open: dict[tuple[int, str], _Gathering] = {}
        # Albums handed over: whether they were asked, and when (oldest first; bounded).
        self._done: OrderedDict[tuple[int, str], tuple[bool, float]] = OrderedDict()

    async def collect(self, message: Message, explicit: bool) -> Collected | None:
        """The whole album for the update that brought its first photo, None for the album's other updates.

        That first update waits until no further photo came for ``delay`` (each one starts the wait again),
        so an album is answered once, with all of its photos.
        """
        key = (message.chat_id, str(message.media_group_id))
        clock = asyncio.get_running_loop().time
        gathering = self._open.get(key)
        straggler = self._straggler(key, message, explicit, clock())
        if straggler is not None:
            return straggler
        if gathering is not None:
            gathering.photos.append(message)
            gathering.explicit = gathering.explicit or explicit
            gathering.last_seen = clock()
            return None
        gathering = self._open[key] = _Gathering([message], explicit, clock())
        try:
            while (left := gathering.last_seen + self.delay - clock()) > 0:
                await asyncio.sleep(left)
        finally:
            del self._open[key]
        self._done[key] = (gathering.explicit, clock())
        while len(self._done) > ALBUMS_REMEMBERED:
            self._done.popitem(last=False)
        return Collected(sorted(gathering.photos, key=lambda m: m.message_id), gathering.explicit)

    def _straggler(self, key: tuple[int, str], message: Message, explicit: bool, now: float) -> Collected | None:
        """A late photo of an album already handed over: answered alone, asked if its album was."""
        while self._done and now - next(iter(self._done.values()))[1] > ALBUM_REMEMBER:
            self._done.popitem(last=False)
        done = self._done.get(key)
        if done is None or key in self._open:
            return None
        log.info("late photo of an album in chat %s (msg %s): answered on its own", key[0], message.message_id)
        return Collected([message], done[0] or explicit)


# -- queueing -------------------------------------------------------------------------------------------

def queued_album(routings: list[dict[str, Any]], reply_to: int, job_ids: list[str] | None = None,
                 ) -> tuple[str, list[dict[str, Any]]]:
    """A new album id, and the routings of the photos that are queued as that album.

    Its size is the number of routings: the caller submits them together (``submit_many``, all or none),
    so it is exactly the number of results the delivery side will see. Answers reply to ``reply_to``.
    ``job_ids``: the photos' jobs, in order (``submit_many(job_ids=...)``): the delivery side asks Redis
    about those it waits for.
    """
    album_id = uuid.uuid4().hex
    count = len(routings)
    jobs = {"jobs": list(job_ids)} if job_ids is not None else {}
    return album_id, [
        {**routing, ROUTING_FIELD: {"id": album_id, "index": index, "count": count, "reply_to": reply_to, **jobs}}
        for index, routing in enumerate(routings, 1)
    ]


def album_reply_to(routing: dict[str, Any]) -> int | None:
    """The message an album's answer replies to (its first photo); None outside an album."""
    album = routing.get(ROUTING_FIELD)
    return album.get("reply_to") if isinstance(album, dict) else None


# -- assembly -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AssembledAlbum:
    """An album's results, ordered by the photos' places in the album (1-based); ``lost``: the places of
    photos whose job Redis no longer has (their line says so)."""

    album_id: str
    parts: list[tuple[int, Completion]]
    lost: tuple[int, ...] = ()

    @property
    def completions(self) -> list[Completion]:
        return [c for _, c in self.parts]


@dataclass(frozen=True)
class AlbumAnswer:
    """An album's answer: its annotated photos with their captions (1: a photo, more: a media group), and
    the summary's lines, one block per photo, failed ones included."""

    photos: list[tuple[bytes, str]]
    lines: list[str]
    ok: int
    failed: int


def album_answer(album: AssembledAlbum, wording: Wording) -> AlbumAnswer:
    """In the language of the album's routing (all its photos share one)."""
    tr = wording.catalog(album.parts[0][1])
    good: list[tuple[int, bytes, str]] = []
    lines: list[str] = []
    results: list[tuple[int, Completion | None]] = [*album.parts, *((index, None) for index in album.lost)]
    for index, c in sorted(results, key=lambda part: part[0]):
        if c is None:
            lines.append(replies.album_item(tr, index, tr.gettext(replies.LOST)))
            continue
        det = detection_of(c)
        if det is None:
            lines.append(replies.album_item(tr, index, wording.error_text(c)))
            continue
        summary, *boxes = wording.detection_lines(c, det)
        good.append((index, c.annotated or b"", summary))
        lines += [replies.album_item(tr, index, summary), *boxes]
    return AlbumAnswer(_captioned(good, tr), lines, ok=len(good), failed=len(results) - len(good))


def _captioned(good: list[tuple[int, bytes, str]], tr: Catalog) -> list[tuple[bytes, str]]:
    if len(good) == 1:
        # A lone photo goes out as a photo of its own; the summary below it tells what it holds.
        index, image, _summary = good[0]
        return [(image, replies.album_photo(tr, index))]
    return [(image, split_caption([replies.album_item(tr, index, summary)])[0])
            for index, image, summary in good[:MEDIA_GROUP_MAX]]
