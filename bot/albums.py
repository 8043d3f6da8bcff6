"""Albums: several photos sent at once, answered with one media group of annotated photos and one summary.

An album goes through three stages, all of them here:

- **collecting** (:class:`AlbumCollector`): Telegram sends each photo of an album as an update of its own,
  sharing a ``media_group_id``; they are gathered until no further one came for ``ALBUM_COLLECT_DELAY``.
- **queueing** (:func:`queued_album`): the intake first decides how many of the album's photos the queue
  has room for, then submits those together, all or none (``DetectionClient.submit_many``). Every photo's
  routing carries the album's id, the photo's index and that number: the album knows its own size from any
  one of its results, also after a restart of the bot, and nothing else has to be asked.
- **assembly** (:class:`PendingAlbums`, :func:`album_answer`): the delivery side holds an album's results
  until all of them are in, or ``ALBUM_WAIT`` has passed, and turns them into one answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from telegram import Message

from bot import replies
from bot.i18n import Catalog
from bot.outcome import Wording, detection_of
from bot.text import split_caption
from jobs.defaults import JOB_TIMEOUT, MAX_ATTEMPTS
from jobs.store import Completion

log = logging.getLogger(__name__)

# Telegram sends an album's photos as separate updates within a moment; wait this long for stragglers.
ALBUM_COLLECT_DELAY = 1.0
# A photo of an album already handed over (it came later than ALBUM_COLLECT_DELAY after the others) is
# answered on its own, as asked as its album was (in a group only one photo carries the "/detect"
# caption): albums are remembered this long, at most ALBUMS_REMEMBERED of them.
ALBUM_REMEMBER = 600.0
ALBUMS_REMEMBERED = 10_000
# An album whose photos have not all completed by then is answered with what is there; a worker gives
# up on a job after MAX_ATTEMPTS timeouts, so all of them are done long before.
ALBUM_WAIT = JOB_TIMEOUT * MAX_ATTEMPTS + 60
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

def queued_album(routings: list[dict[str, Any]], reply_to: int) -> tuple[str, list[dict[str, Any]]]:
    """A new album id, and the routings of the photos that are queued as that album.

    Its size is the number of routings: the caller submits them together (``submit_many``, all or none),
    so it is exactly the number of results the delivery side will see. Answers reply to ``reply_to``.
    """
    album_id = uuid.uuid4().hex
    count = len(routings)
    return album_id, [
        {**routing, ROUTING_FIELD: {"id": album_id, "index": index, "count": count, "reply_to": reply_to}}
        for index, routing in enumerate(routings, 1)
    ]


def album_reply_to(routing: dict[str, Any]) -> int | None:
    """The message an album's answer replies to (its first photo); None outside an album."""
    album = routing.get(ROUTING_FIELD)
    return album.get("reply_to") if isinstance(album, dict) else None


# -- assembly -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AssembledAlbum:
    """An album's results, ordered by the photos' places in the album (1-based)."""

    album_id: str
    parts: list[tuple[int, Completion]]

    @property
    def completions(self) -> list[Completion]:
        return [c for _, c in self.parts]


@dataclass
class _Assembling:
    count: int
    first_seen: float
    parts: dict[int, Completion] = field(default_factory=dict)


class PendingAlbums:
    """Results of albums whose other photos have not all completed yet."""

    def __init__(self, wait: float = ALBUM_WAIT, clock: Callable[[], float] = time.monotonic) -> None:
        self.wait = wait
        self.clock = clock
        self._albums: dict[str, _Assembling] = {}

    def __len__(self) -> int:
        """Albums held now: each leaves when complete or after ``wait``, whatever else happens."""
        return len(self._albums)

    def add(self, completion: Completion) -> bool:
        """Hold a result of an album; False for a result that belongs to no album (answered on its own)."""
        album = completion.routing.get(ROUTING_FIELD)
        if not (isinstance(album, dict) and album.get("id")):
            return False
        state = self._albums.setdefault(str(album["id"]), _Assembling(int(album.get("count", 1)), self.clock()))
        state.parts[int(album.get("index", len(state.parts) + 1))] = completion
        return True

    def ready(self) -> list[AssembledAlbum]:
        """The albums to answer now, no longer pending: those complete, and those waited for ``wait``."""
        now = self.clock()
        due = [album_id for album_id, state in self._albums.items()
               if len(state.parts) >= state.count or now - state.first_seen > self.wait]
        return [AssembledAlbum(album_id, sorted(self._albums.pop(album_id).parts.items())) for album_id in due]


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
    for index, c in album.parts:
        det = detection_of(c)
        if det is None:
            lines.append(replies.album_item(tr, index, wording.error_text(c)))
            continue
        summary, *boxes = wording.detection_lines(c, det)
        good.append((index, c.annotated or b"", summary))
        lines += [replies.album_item(tr, index, summary), *boxes]
    return AlbumAnswer(_captioned(good, tr), lines, ok=len(good), failed=len(album.parts) - len(good))


def _captioned(good: list[tuple[int, bytes, str]], tr: Catalog) -> list[tuple[bytes, str]]:
    if len(good) == 1:
        # A lone photo goes out as a photo of its own; the summary below it tells what it holds.
        index, image, _summary = good[0]
        return [(image, replies.album_photo(tr, index))]
    return [(image, split_caption([replies.album_item(tr, index, summary)])[0])
            for index, image, summary in good[:MEDIA_GROUP_MAX]]
