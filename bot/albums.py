"""Albums: several photos sent at once, answered with one media group of annotated photos and one summary.

An album goes through three stages, all of them here:

- **collecting** (:class:`AlbumCollector`): Telegram sends each photo of an album as an update of its own,
  sharing a ``media_group_id``; they are gathered until no further one came for ``ALBUM_COLLECT_DELAY``.
- **queueing** (:func:`queued_album`): the intake first decides how many of the album's photos the queue
  has room for, then submits those together, all or none (``DetectionClient.submit_many``). Every photo's
  routing carries the album's id, the photo's index, that number and every photo's job id: the album knows
  its own size and its photos from any one of its results, also after a restart of the bot.
- **assembly** (:class:`PendingAlbums`, :func:`album_answer`): the delivery side holds an album's results
  until all of them are in, and turns them into one answer. The chat's lane (:mod:`jobs.fair`) may hold
  part of an album behind other chats' photos for as long as the queue is long, so there is no fixed wait:
  an album none of whose photos completed for ``ALBUM_CHECK`` is checked in Redis
  (:meth:`PendingAlbums.stalled`, :meth:`PendingAlbums.settle`): photos queued, held or running are
  waited for; only a photo whose job is gone (lost: the summary says so), or whose result went to another
  reader (completed, yet not here after ``ELSEWHERE_CHECKS`` checks), stops being waited for. A result of an
  album answered already is answered on its own, never as a second album.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from telegram import Message

from bot import replies
from bot.i18n import Catalog
from bot.outcome import Wording, detection_of
from bot.text import split_caption
from jobs.defaults import IMAGE_TTL, JOB_TIMEOUT, MAX_ATTEMPTS
from jobs.store import Completion

log = logging.getLogger(__name__)

# Telegram sends an album's photos as separate updates within a moment; wait this long for stragglers.
ALBUM_COLLECT_DELAY = 1.0
# A photo of an album already handed over (it came later than ALBUM_COLLECT_DELAY after the others) is
# answered on its own, as asked as its album was (in a group only one photo carries the "/detect"
# caption): albums are remembered this long, at most ALBUMS_REMEMBERED of them.
ALBUM_REMEMBER = 600.0
ALBUMS_REMEMBERED = 10_000
# An album of an older bot (its routings name no job ids) waits this long after its last result, then is
# answered with what is there; a worker gives up on a job after MAX_ATTEMPTS timeouts.
ALBUM_WAIT = JOB_TIMEOUT * MAX_ATTEMPTS + 60
# An album none of whose photos completed for this long is checked in Redis: are its other photos still
# queued, held or running? A check is a few HGETs; a lane's round through a long queue takes longer.
ALBUM_CHECK = 10.0
# A photo whose job completed but whose result has not come here in this many checks in a row went to
# another reader (a bot process before a restart, or another replica): the album goes out without it.
ELSEWHERE_CHECKS = 3
# The last resort: past this, what has not come will not (a held photo's image expires after IMAGE_TTL, and
# its job is then answered at once with image_expired).
ALBUM_GIVE_UP = IMAGE_TTL + 600.0
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


@dataclass
class _Assembling:
    count: int
    first_seen: float
    last_seen: float
    jobs: list[str]  # every photo's job id by place (empty: the routing of an older bot names none)
    parts: dict[int, Completion] = field(default_factory=dict)
    lost: set[int] = field(default_factory=set)  # places whose job Redis no longer has
    elsewhere: set[int] = field(default_factory=set)  # completed, their result read by another reader
    finished_checks: int = 0  # checks in a row that found completed photos whose result is not here
    checked: float = 0.0

    def complete(self) -> bool:
        return len(self.parts) + len(self.lost) + len(self.elsewhere) >= self.count

    def missing(self) -> list[tuple[int, str]]:
        done = self.parts.keys() | self.lost | self.elsewhere
        return [(index, job) for index, job in enumerate(self.jobs, 1) if index not in done]


class PendingAlbums:
    """Results of albums whose other photos have not all completed yet."""

    def __init__(self, wait: float = ALBUM_WAIT, clock: Callable[[], float] = time.monotonic,
                 check: float = ALBUM_CHECK, give_up: float = ALBUM_GIVE_UP) -> None:
        self.wait = wait
        self.check = check
        self.give_up = give_up
        self.clock = clock
        self._albums: dict[str, _Assembling] = {}
        # Albums answered (oldest first; bounded): a later result of one is answered on its own.
        self._answered: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        """Albums held now: each leaves when complete, or once Redis says the rest is not coming."""
        return len(self._albums)

    def add(self, completion: Completion) -> bool:
        """Hold a result of an album; False for a result that belongs to no album (answered on its own),
        or to an album answered already (answered on its own too: never a second album)."""
        album = completion.routing.get(ROUTING_FIELD)
        if not (isinstance(album, dict) and album.get("id")):
            return False
        album_id = str(album["id"])
        if album_id in self._answered:
            log.warning("a result of album %s came after the album was answered: answered on its own", album_id)
            return False
        now = self.clock()
        jobs = album.get("jobs")
        state = self._albums.setdefault(album_id, _Assembling(
            int(album.get("count", 1)), now, now, [str(j) for j in jobs] if isinstance(jobs, list) else []))
        state.parts[int(album.get("index", len(state.parts) + 1))] = completion
        state.last_seen = now
        return True

    def ready(self) -> list[AssembledAlbum]:
        """The albums to answer now, no longer pending: those complete (counting the photos Redis said are
        lost), an older bot's album ``wait`` after its last result, and any album past ``give_up``."""
        now = self.clock()
        due = [album_id for album_id, state in self._albums.items()
               if state.complete() or now - state.first_seen > self.give_up
               or (not state.jobs and now - state.last_seen > self.wait)]
        out = []
        for album_id in due:
            state = self._albums.pop(album_id)
            self._answered[album_id] = None
            while len(self._answered) > ALBUMS_REMEMBERED:
                self._answered.popitem(last=False)
            out.append(AssembledAlbum(album_id, sorted(state.parts.items()), tuple(sorted(state.lost))))
        return out

    def stalled(self) -> list[tuple[str, list[tuple[int, str]]]]:
        """Albums none of whose photos completed for ``check`` (and not checked within it): their id and
        the (place, job id) of each photo still awaited, to ask Redis about (:meth:`settle`)."""
        now = self.clock()
        out = []
        for album_id, state in self._albums.items():
            if state.jobs and now - max(state.last_seen, state.checked) > self.check:
                state.checked = now
                out.append((album_id, state.missing()))
        return out

    def settle(self, album_id: str, vanished: Sequence[int], finished: Sequence[int] = ()) -> None:
        """What Redis said of an album's awaited photos: the places in ``vanished`` have no job any more
        (lost) and are no longer waited for; those in ``finished`` completed, and if their results still have
        not come after ELSEWHERE_CHECKS checks in a row, another reader has them and they are no longer waited
        for either; the others are queued, held or running."""
        state = self._albums.get(album_id)
        if state is None:
            return
        state.lost.update(i for i in vanished if i not in state.parts)
        late = [i for i in finished if i not in state.parts]
        state.finished_checks = state.finished_checks + 1 if late else 0
        if state.finished_checks >= ELSEWHERE_CHECKS:
            state.elsewhere.update(late)
            log.warning("album %s: %d photo(s) completed but their results went to another reader (a restart "
                        "or another bot process); answered without them", album_id, len(late))
        awaited = len(state.missing())
        if vanished:
            log.warning("album %s: %d photo(s) lost in Redis; %d still awaited", album_id, len(vanished), awaited)
        elif awaited:
            log.info("album %s: still waiting for %d photo(s), queued or running", album_id, awaited)


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
