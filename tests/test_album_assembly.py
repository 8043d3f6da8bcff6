"""Albums assembled in Redis across replicas (bot.assembly), on a real Redis with a hand-moved clock: one
replica answers an album whatever replica read each part; no fixed wait for an album whose lane holds part
of it (stalled albums are checked in Redis: held photos waited for, lost ones listed, results gone elsewhere
given up after a few checks); a late result goes alone; a dead taker's album is taken over."""

from __future__ import annotations

from typing import Any

from redis import Redis

from bot import replies
from bot.albums import AssembledAlbum, album_answer, queued_album
from bot.assembly import (
    ALBUM_GIVE_UP,
    ALBUM_WAIT,
    ALONE,
    ANSWERED,
    COLLECTING,
    COMPLETE,
    DUE,
    ELSEWHERE_CHECKS,
    NOT_DUE,
    AlbumParts,
    HeldAlbums,
    album_of,
)
from bot.i18n import ENGLISH, catalog
from bot.outcome import Wording
from detector.result import Box, Detection
from jobs.store import Completion

BOT = 42
STREAM = "detbot:bot:42:events:detbot"
CHECK = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def result(routing: dict[str, Any], job: str, event: str) -> Completion:
    det = Detection((Box(0, "circle", 0.9, 10, 20, 110, 220),), 640, 480, 0.25)
    return Completion(job, ok=True, routing=routing, detection=det.to_dict(), annotated=b"jpeg-" + job.encode(),
                      event_id=event, stream=STREAM)


def replicas(redis: Redis, clock: Clock) -> tuple[AlbumParts, AlbumParts]:
    return (AlbumParts(redis, BOT, "replica-a", check=CHECK, clock=clock),
            AlbumParts(redis, BOT, "replica-b", check=CHECK, clock=clock))


def test_the_replica_whose_part_completes_an_album_takes_every_part(redis: Redis) -> None:
    clock = Clock()
    a, b = replicas(redis, clock)
    album_id, routings = queued_album([{"chat_id": 5, "message_id": m} for m in (1, 2, 3)], reply_to=1,
                                      job_ids=["j1", "j2", "j3"])
    first = a.add(result(routings[0], "j1", "1-1"), STREAM, reclaimed=False)
    assert first.state == COLLECTING and first.due == clock.now + ALBUM_GIVE_UP  # no fixed 240 s wait
    assert b.add(result(routings[2], "j3", "1-3"), STREAM, reclaimed=False).state == COLLECTING
    done = a.add(result(routings[1], "j2", "1-2"), STREAM, reclaimed=False)
    assert done.state == COMPLETE and done.parts is not None
    assert done.parts.found == {1: (STREAM, "1-1"), 2: (STREAM, "1-2"), 3: (STREAM, "1-3")}
    assert done.parts.lost == ()
    assert b.stalled(album_id) == (ANSWERED, set())  # the other replica lets go of it
    # The same part read again by a live replica (not reclaimed), or any later part: answered on its own.
    assert b.add(result(routings[2], "j3", "1-3"), STREAM, reclaimed=False).state == ALONE
    # ... but a part the taker held, reclaimed from it after it died, takes the album over.
    again = b.add(result(routings[1], "j2", "1-2"), STREAM, reclaimed=True)
    assert again.state == COMPLETE and again.parts == done.parts


def test_an_album_whose_lane_holds_part_of_it_waits_for_every_photo_redis_still_has(redis: Redis) -> None:
    """No fixed wait: a stalled album is checked in Redis once per ALBUM_CHECK by one replica; photos still
    queued are waited for (past ALBUM_WAIT too); a photo whose job is gone is given up and its line says it
    was lost; a result of an answered album is answered on its own, never as a second album."""
    clock = Clock()
    a, b = replicas(redis, clock)
    album_id, routings = queued_album([{"chat_id": 5, "message_id": m} for m in (1, 2, 3)], reply_to=1,
                                      job_ids=["j1", "j2", "j3"])
    assert routings[0]["album"]["jobs"] == ["j1", "j2", "j3"]
    a.add(result(routings[0], "j1", "1-1"), STREAM, reclaimed=False)
    assert a.stalled(album_id) == (NOT_DUE, set())  # a photo came just now
    clock.now += CHECK + 1
    b.add(result(routings[1], "j2", "1-2"), STREAM, reclaimed=False)
    clock.now += CHECK + 1
    assert a.stalled(album_id) == (DUE, {1, 2})  # j3 is a's to ask about
    assert b.stalled(album_id) == (NOT_DUE, set())  # checked just now, by a: not asked again before ALBUM_CHECK
    waiting = a.settle(album_id, [])  # Redis: j3 is still held in its chat's lane
    assert waiting.parts is None and waiting.awaited == 1
    clock.now += ALBUM_WAIT + 1  # an older bot's album would have gone by now; this one waits
    assert b.stalled(album_id)[0] == DUE
    settled = b.settle(album_id, [3])  # j3's job is gone from Redis
    assert settled.lost == 1 and settled.parts is not None
    assert settled.parts.found == {1: (STREAM, "1-1"), 2: (STREAM, "1-2")} and settled.parts.lost == (3,)
    assert a.stalled(album_id) == (ANSWERED, set())
    assert a.add(result(routings[2], "j3", "1-3"), STREAM, reclaimed=False).state == ALONE  # late: alone


def test_the_lost_photo_is_listed_in_the_album_answer() -> None:
    _, routings = queued_album([{"chat_id": 5, "message_id": m} for m in (1, 2, 3)], reply_to=1,
                               job_ids=["x", "y", "z"])
    album = AssembledAlbum("a", [(1, result(routings[0], "x", "1-1")), (2, result(routings[1], "y", "1-2"))], (3,))
    answer = album_answer(album, Wording())
    assert answer.lines[-1] == "Photo 3: " + catalog(ENGLISH).gettext(replies.LOST)
    assert (answer.ok, answer.failed) == (2, 1)


def test_a_result_that_reaches_no_replica_is_given_up_after_a_few_checks(redis: Redis) -> None:
    """Completed, but its result went to another reader (a bot of before the replicas): a few checks in a
    row, then the album goes out without it (not listed as lost: that reader answers it)."""
    clock = Clock()
    a, b = replicas(redis, clock)
    album_id, routings = queued_album([{"chat_id": 6, "message_id": m} for m in (1, 2)], reply_to=1,
                                      job_ids=["k1", "k2"])
    a.add(result(routings[0], "k1", "2-1"), STREAM, reclaimed=False)
    for n in range(ELSEWHERE_CHECKS):
        clock.now += CHECK + 1
        checker = (a, b)[n % 2]  # whichever replica checks, the checks in a row add up in Redis
        assert checker.stalled(album_id) == (DUE, {1})
        settled = checker.settle(album_id, [], [2])
        if n < ELSEWHERE_CHECKS - 1:
            assert settled.parts is None and settled.awaited == 1
    assert settled.elsewhere == 1 and settled.parts is not None
    assert settled.parts.found == {1: (STREAM, "2-1")} and settled.parts.lost == ()


def test_a_check_that_finds_the_result_on_its_way_starts_the_count_again(redis: Redis) -> None:
    clock = Clock()
    a, _ = replicas(redis, clock)
    album_id, routings = queued_album([{"chat_id": 6, "message_id": m} for m in (1, 2)], reply_to=1,
                                      job_ids=["k1", "k2"])
    a.add(result(routings[0], "k1", "3-1"), STREAM, reclaimed=False)
    for finished in ([2], [], [2], [2]):  # running, then completed: never ELSEWHERE_CHECKS in a row
        clock.now += CHECK + 1
        assert a.stalled(album_id)[0] == DUE
        assert a.settle(album_id, [], finished).parts is None
    done = a.add(result(routings[1], "k2", "3-2"), STREAM, reclaimed=False)
    assert done.state == COMPLETE and done.parts is not None and set(done.parts.found) == {1, 2}


def test_an_older_bots_album_is_taken_once_after_the_wait(redis: Redis) -> None:
    """Routings naming no jobs (queued by a bot of before): ALBUM_WAIT, then one replica takes what is there."""
    clock = Clock()
    a, b = replicas(redis, clock)
    routing = {"chat_id": 7, "album": {"id": "old", "index": 2, "count": 3, "reply_to": 1}}
    added = a.add(result(routing, "o2", "4-2"), STREAM, reclaimed=False)
    assert added.state == COLLECTING and added.due == clock.now + ALBUM_WAIT
    parts = b.take("old")
    assert parts is not None and parts.found == {2: (STREAM, "4-2")}
    assert a.take("old") is None  # taken already: the other replica answers it


def test_held_albums_are_offered_for_checks_and_leave_once_due() -> None:
    clock = Clock()
    held = HeldAlbums(CHECK, clock)
    _, routings = queued_album([{"chat_id": 8, "message_id": 1}], reply_to=1, job_ids=["m1"])
    ref = album_of(result(routings[0], "m1", "5-1"))
    assert ref is not None and ref.jobs == ["m1"]
    held.hold(ref, clock.now + 100)
    assert held.to_check() == [] and held.due() == []
    clock.now += CHECK
    assert held.to_check() == [(ref.album_id, ["m1"])]
    assert held.to_check() == []  # once per ALBUM_CHECK
    clock.now += 100
    assert held.due() == [ref.album_id]
    held.drop(ref.album_id)
    assert len(held) == 0
