"""The bot's keys from before they carried its id, adopted by the first bot that starts after the upgrade.

Chat settings, the "handled" markers of recent messages, status messages, migrated groups and the buttons'
answers were one set for the whole Redis; now each bot has its own (:mod:`jobs.keys`). One bot takes the
old ones over, once (a marker key decides which: the first to start); a second bot on the same Redis starts
from its own, empty set — as it should, since it never had settings of its own. The old inbox is moved by
the replica that first handles updates (``Inbox.adopt_legacy``), the old completion stream is drained by
every replica (``DetectionClient.streams``).
"""

from __future__ import annotations

import logging

from redis import Redis
from redis.exceptions import RedisError

from jobs import keys

log = logging.getLogger(__name__)

# Keys renamed per SCAN page.
SCAN_COUNT = 1000


def _moves(bot_id: int) -> list[tuple[str, str]]:
    """(old prefix, new prefix) of every kind of key that moves; the rest of the name stays."""
    new = keys.chat(bot_id, 0)[: -len(":chat:0")]
    return [
        (f"{keys.KEY_PREFIX}:chat:", f"{new}:chat:"),
        (f"{keys.KEY_PREFIX}:bot:handled:", f"{new}:handled:"),
        (f"{keys.KEY_PREFIX}:bot:status:", f"{new}:status:"),
        (f"{keys.KEY_PREFIX}:bot:migrated:", f"{new}:migrated:"),
        (f"{keys.KEY_PREFIX}:bot:answer:", f"{new}:answer:"),
    ]


def adopt_legacy_keys(redis: Redis, bot_id: int) -> int:
    """Move the old keys into ``bot_id``'s names if no bot did yet; returns how many moved. With Redis
    unreachable nothing happens (the next start tries again)."""
    try:
        if not redis.set(keys.LEGACY_ADOPTED, bot_id, nx=True):
            return 0
        moved = 0
        for old_prefix, new_prefix in _moves(bot_id):
            for key in redis.scan_iter(match=f"{old_prefix}*", count=SCAN_COUNT):
                name = key.decode() if isinstance(key, bytes) else str(key)
                moved += int(redis.renamenx(name, new_prefix + name[len(old_prefix):]))
        if redis.exists(keys.LEGACY_STATUS_RETRY):
            moved += int(redis.renamenx(keys.LEGACY_STATUS_RETRY, keys.status_retry(bot_id)))
    except (RedisError, OSError) as exc:
        log.info("keys of the previous version not checked now (%s)", exc)
        return 0
    if moved:
        log.info("%d key(s) of the previous version (chat settings, answers, ...) now belong to bot %s", moved,
                 bot_id)
    return moved
