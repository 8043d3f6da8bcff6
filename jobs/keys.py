"""Every Redis key detbot writes beside RQ's own, named in one place.

The queue's keys (jobs, images, results, events, worker liveness and recovery) and the bot's (chat
settings, bookkeeping) share the ``detbot:`` prefix, so ``redis-cli --scan --pattern 'detbot:*'`` shows
all of detbot's state and nothing else. Every key's lifetime or bound, RQ's included, is in :data:`LIFETIMES`
(docs/state.md); the values are in :mod:`jobs.defaults` and where each key is written.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from jobs.defaults import KEY_PREFIX, QUEUE_NAME


def events(queue_name: str, bot_id: int | None = None) -> str:
    """The stream of completion events of one bot's jobs on one queue (a stream, so events wait while the
    bot restarts).

    Workers serve every bot of a queue: each job's record names the stream its completion goes to, so it
    reaches the bot that submitted it, never another bot on the same Redis and queue. ``bot_id`` None: the
    queue's own stream, as before bots had namespaces (a bench's or a test's consumer, and the events of
    jobs queued before an upgrade, which the bot still drains).
    """
    if bot_id is not None:
        return f"{_bot(bot_id)}:events:{queue_name}"
    return f"{KEY_PREFIX}:events" if queue_name == QUEUE_NAME else f"{KEY_PREFIX}:events:{queue_name}"


# The default queue's stream without a bot: where jobs queued before bots had namespaces complete.
EVENTS_STREAM = events(QUEUE_NAME)


# -- one job ---------------------------------------------------------------------------------------------

def job(job_id: str) -> str:
    """Hash: routing, params, status, code, message, detection, attempts."""
    return f"{KEY_PREFIX}:job:{job_id}"


def image(job_id: str) -> str:
    """The photo's bytes while the job waits or runs."""
    return f"{KEY_PREFIX}:image:{job_id}"


def annotated(job_id: str) -> str:
    """The annotated JPEG of a successful job, until the bot delivered it."""
    return f"{KEY_PREFIX}:annotated:{job_id}"


# -- workers and recovery -------------------------------------------------------------------------------

def alive(worker_name: str) -> str:
    """A worker's liveness (short TTL, renewed by its heartbeat)."""
    return f"{KEY_PREFIX}:alive:{worker_name}"


def running(queue_name: str) -> str:
    """Hash job id -> name of the worker running it."""
    return f"{KEY_PREFIX}:running:{queue_name}"


def reaper_lock(queue_name: str) -> str:
    return f"{KEY_PREFIX}:reaper:{queue_name}"


def orphan(queue_name: str, job_id: str) -> str:
    """First sighting of a job id left in RQ's intermediate list."""
    return f"{KEY_PREFIX}:orphan:{queue_name}:{job_id}"


def class_names(queue_name: str) -> str:
    """JSON list of the class names of the model the queue's workers run, written by each worker at start.

    One key per queue, no TTL: bounded, and it must outlive a restart of every worker so the bot can
    still check the names people write. All workers of one queue run the same model.
    """
    return f"{KEY_PREFIX}:classes:{queue_name}"


def model_info(queue_name: str) -> str:
    """JSON of what the queue's workers run (task, weights' file name), written by each worker at start.

    One key per queue, no TTL, like :func:`class_names`: the bot reads it to find ``/segment``'s model.
    """
    return f"{KEY_PREFIX}:model:{queue_name}"


def queue_workers(queue_name: str) -> str:
    """Sorted set of a queue's workers: name -> the Redis time its liveness lapses (``jobs.models``)."""
    return f"{KEY_PREFIX}:workers:{queue_name}"


# -- the bot ---------------------------------------------------------------------------------------------
# Every key of a bot carries its id (the numeric part of its token, never the token): two bots on one Redis
# and one queue never see each other's updates, completions, answers or settings.

def _bot(bot_id: int) -> str:
    return f"{KEY_PREFIX}:bot:{bot_id}"


# Every bot's keys, as a ``redis-cli --scan`` glob prefix.
BOTS = f"{KEY_PREFIX}:bot:*"


def chat(bot_id: int, chat_id: int) -> str:
    """Hash of a chat's settings (threshold, auto, ...)."""
    return f"{_bot(bot_id)}:chat:{chat_id}"


def handled(bot_id: int, chat_id: int, message_id: int) -> str:
    """A message already queued or answered (Telegram may deliver an update twice)."""
    return f"{_bot(bot_id)}:handled:{chat_id}:{message_id}"


def inbox(bot_id: int) -> str:
    """Stream of the updates a bot received (polled, or posted to its webhook) and has not finished handling.

    Written before Telegram is told the update arrived (the next getUpdates offset, or the webhook's 200),
    deleted when its handler finished: a bot killed in between handles it after its restart, or another
    replica does. Read by the one replica holding :func:`lease` (consumer group ``bot.inbox.GROUP``).
    """
    return f"{_bot(bot_id)}:inbox"


def inbox_seen(bot_id: int) -> str:
    """Sorted set of the latest update ids put into the inbox: an update Telegram sends twice goes in once."""
    return f"{_bot(bot_id)}:seen"


def inbox_offset(bot_id: int) -> str:
    """The next getUpdates offset, written with the updates it confirms (what the inbox already holds)."""
    return f"{_bot(bot_id)}:offset"


def lease(bot_id: int) -> str:
    """Which replica of a bot polls Telegram and handles the inbox (its name; a short TTL it renews)."""
    return f"{_bot(bot_id)}:lease"


def flow(bot_id: int) -> str:
    """Hash: whether updates reach the bot (the last good poll, the webhook's last error); every replica's
    /healthz reads it."""
    return f"{_bot(bot_id)}:flow"


def status(bot_id: int, unit: str) -> str:
    """Chat and message id of the "queued" status message of a job or album."""
    return f"{_bot(bot_id)}:status:{unit}"


def status_retry(bot_id: int) -> str:
    """Sorted set of "queued" messages whose deletion failed, ``chat:message:attempts`` by the time of the
    next try; bounded by bot.status.RETRY_LIMIT."""
    return f"{_bot(bot_id)}:status-retry"


def migrated(bot_id: int, chat_id: int) -> str:
    """The id a supergroup had as a group before Telegram migrated it (its settings and allow-list entry)."""
    return f"{_bot(bot_id)}:migrated:{chat_id}"


def mini_app_reply(bot_id: int, request_id: str) -> str:
    """List the bot pushes its verdict on a Mini App request onto (``bot.mini_app``); the web waits on it."""
    return f"{_bot(bot_id)}:reply:{request_id}"


def album(bot_id: int, album_id: str) -> str:
    """Hash of an album's results read so far by any replica (``bot.assembly``): which one answers it."""
    return f"{_bot(bot_id)}:album:{album_id}"


# The bot's keys before they carried its id: adopted by the first bot that starts (``bot.legacy``).
LEGACY_STATUS_RETRY = f"{KEY_PREFIX}:bot:status-retry"
# Which bot adopted them (written once, by the first bot that starts after the upgrade).
LEGACY_ADOPTED = f"{KEY_PREFIX}:bot:legacy-adopted"


def legacy_inbox(bot_id: int) -> str:
    """The inbox as a hash (update id -> JSON), before it was a stream."""
    return f"{KEY_PREFIX}:bot:inbox:{bot_id}"


def legacy_offset(bot_id: int) -> str:
    return f"{KEY_PREFIX}:bot:offset:{bot_id}"


# -- fairness between chats (jobs.fair) ------------------------------------------------------------------

def lane_in_flight(queue_name: str, chat_id: int) -> str:
    """Set of a chat's job ids in RQ's list (waiting or running): at most ``fair.MAX_IN_FLIGHT_PER_CHAT``.

    No TTL: bounded by the jobs that wait; a member whose job vanished is swept out (``fair.sweep``).
    """
    return f"{KEY_PREFIX}:lane:{queue_name}:{chat_id}:in_flight"


def lane_held(queue_name: str, chat_id: int) -> str:
    """List of a chat's job ids held back, oldest first; each goes to RQ's list as one of the chat's
    completes. No TTL: bounded by the queue's limit on waiting jobs."""
    return f"{KEY_PREFIX}:lane:{queue_name}:{chat_id}:held"


def held(queue_name: str) -> str:
    """Set of every held job id of a queue: how many photos wait beyond RQ's list (counted as waiting)."""
    return f"{KEY_PREFIX}:held:{queue_name}"


# -- adjustable answers (buttons) -----------------------------------------------------------------------

def answer(bot_id: int, answer_id: str) -> str:
    """Hash of one adjustable answer: where it is, who asked, the boxes down to the floor, the current view."""
    return f"{_bot(bot_id)}:answer:{answer_id}"


def renders(queue_name: str) -> str:
    """List of render requests of one queue's workers: taken before any photo, by a thread of their own."""
    return f"{KEY_PREFIX}:render:{queue_name}"


def render_request(render_id: str) -> str:
    """Hash: the clean image and what to draw on it (short TTL: the bot waits seconds, not minutes)."""
    return f"{KEY_PREFIX}:render:req:{render_id}"


def render_done(render_id: str) -> str:
    """List the worker pushes a render's outcome onto (the bot waits on it with BLPOP)."""
    return f"{KEY_PREFIX}:render:done:{render_id}"


def render_output(render_id: str) -> str:
    """Hash of a render's images: ``0``, ``1``, ... (one for a re-drawing, up to ten crops)."""
    return f"{KEY_PREFIX}:render:out:{render_id}"


# -- video (jobs.video) -----------------------------------------------------------------------------------

def video_parts(video_id: str) -> str:
    """Hash of a clip's finished spans while the clip is worked on: ``det:<span>`` (its frames' detections,
    JSON) and ``seg:<span>`` (its H.264 segment). Deleted when the clip completes; ``RESULT_TTL`` meanwhile."""
    return f"{KEY_PREFIX}:video:{video_id}"


def video_answer(bot_id: int, video_id: str) -> str:
    """Hash of a video answer's buttons (where it is, who asked, its tracks as JSON): ``DETBOT_ANSWER_TTL``."""
    return f"{_bot(bot_id)}:video:{video_id}"


# -- the web face (web/) ---------------------------------------------------------------------------------

def web_events(queue_name: str) -> str:
    """The completion stream of the web face's jobs on one queue: the bot never reads it, so a web job is
    never delivered to a chat; its result stays in the job's record, which the web reads. The web only
    listens to it to answer a waiting request at once, and trims it to the last minutes."""
    return f"{KEY_PREFIX}:web:events:{queue_name}"


def web_once(owner: str, token: str) -> str:
    """A web submit's ``Idempotency-Key`` (per API key): a retried request gets the first one's job."""
    return f"{KEY_PREFIX}:web:once:{owner}:{token}"


# -- every key's lifetime --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Lifetime:
    """How long the keys matching ``pattern`` (a ``redis-cli --scan`` glob) live.

    ``expires``: every such key carries a TTL once its job or message is over; otherwise the keys have no
    TTL and ``bound`` says why their number and size cannot grow with time.
    """

    pattern: str
    expires: bool
    bound: str


# Every key in Redis that detbot and RQ write, first match wins. docs/state.md shows this table (a test
# checks the two are the same) and tests/test_bounded_state.py checks a Redis after a realistic run
# against it: a key matching no row, or one that should expire and does not, fails it.
LIFETIMES: tuple[Lifetime, ...] = (
    Lifetime(job("*"), True, "`RESULT_TTL` (24 h) from submit; `DELIVERED_TTL` (10 min) once answered; a web "
                             "job's `DETBOT_ANSWER_TTL` from its end"),
    Lifetime(image("*"), True, "`IMAGE_TTL` (1 h); deleted when the job completes"),
    Lifetime(annotated("*"), True, "`RESULT_TTL`; deleted once answered; a web job's `DETBOT_ANSWER_TTL`"),
    Lifetime(alive("*"), True, "`LIVENESS_TTL` (10 s), renewed by the worker's heartbeat"),
    Lifetime(reaper_lock("*"), True, "`REAP_INTERVAL` (5 s)"),
    Lifetime(orphan("*", "*"), True, "`ORPHAN_MARK_TTL` (20 s)"),
    Lifetime(running("*"), False, "one hash per queue; one field per job being run now (≤ one per worker)"),
    Lifetime(class_names("*"), False, "one short string per queue, rewritten at each worker's start"),
    Lifetime(model_info("*"), False, "one short string per queue (a model of `DETBOT_MODELS`), rewritten at each "
                                     "worker's start"),
    Lifetime(queue_workers("*"), True, "`LIVENESS_TTL` + `jobs.models.OUTAGE_GRACE` (70 s) from its workers' "
                                       "latest heartbeat; one member per worker of the queue"),
    Lifetime(f"{KEY_PREFIX}:events*", False,
             "one stream per queue (jobs queued before bots had namespaces, and benches); answered events deleted, "
             "at most `EVENTS_MAXLEN` (10,000) entries"),
    Lifetime(web_events("*"), False, "one stream per queue the web face submits to; trimmed by the web to the "
                                      "last `web.jobs.EVENTS_KEPT` (10 min), at most `EVENTS_MAXLEN` entries"),
    Lifetime(web_once("*", "*"), True, "`ONCE_TTL` (24 h)"),
    Lifetime(f"{BOTS}:events:*", False,
             "one stream per bot and queue; answered events deleted, at most `EVENTS_MAXLEN` (10,000) entries"),
    Lifetime(f"{BOTS}:handled:*", True, "`HANDLED_TTL` (24 h): Telegram re-sends updates for less"),
    Lifetime(f"{BOTS}:status:*", True, "`STATUS_TTL` (= `RESULT_TTL`); deleted with its status message"),
    Lifetime(f"{BOTS}:answer:*", True, "`DETBOT_ANSWER_TTL` (24 h) from the answer: its buttons work that long"),
    Lifetime(f"{BOTS}:album:*", True, "`bot.assembly.ALBUM_TTL` (24 h) from its latest result"),
    Lifetime(f"{BOTS}:reply:*", True, "`bot.mini_app.REPLY_TTL` (60 s); deleted when the web reads it"),
    Lifetime(f"{BOTS}:inbox", False,
             "one stream per bot; at most `bot.inbox.INBOX_LIMIT` (5,000) updates and Mini App requests, each "
             "deleted when its handler finished"),
    Lifetime(f"{BOTS}:seen", False, "one sorted set per bot: the last `bot.inbox.SEEN_LIMIT` (10,000) update ids"),
    Lifetime(f"{BOTS}:offset", False, "one integer per bot"),
    Lifetime(f"{BOTS}:lease", True, "`bot.lease.LEASE_TTL` (6 s), renewed by the replica that holds it"),
    Lifetime(f"{BOTS}:flow", True, "`bot.flow.FLOW_TTL` (10 min), rewritten as updates arrive"),
    Lifetime(LEGACY_ADOPTED, False, "one short string: the bot that took over the keys of the one-bot layout"),
    Lifetime(f"{BOTS}:status-retry", False, "at most `bot.status.RETRY_LIMIT` (10,000) members, each dropped after "
                                       "its last try"),
    Lifetime(render_request("*"), True, "`jobs.render.REQUEST_TTL` (30 s); deleted when taken"),
    Lifetime(render_done("*"), True, "`jobs.render.OUTPUT_TTL` (30 s)"),
    Lifetime(render_output("*"), True, "`jobs.render.OUTPUT_TTL` (30 s); deleted when read"),
    Lifetime(renders("*"), True, "`jobs.render.REQUEST_TTL` (30 s) from the last press; emptied by the workers"),
    Lifetime(video_parts("*"), True, "`RESULT_TTL` (24 h) from a clip's submit; deleted when the clip completes"),
    Lifetime(f"{BOTS}:video:*", True, "`DETBOT_ANSWER_TTL` (24 h) from a video answer: its buttons work that long"),
    Lifetime(f"{KEY_PREFIX}:lane:*", False,
             "per chat with photos waiting: its in-flight set (≤ `fair.MAX_IN_FLIGHT_PER_CHAT`) and its held "
             "list (≤ `MAX_QUEUED_JOBS`); Redis deletes each when it empties, as the chat's jobs complete"),
    Lifetime(held("*"), False, "the held photos of one queue: ≤ `MAX_QUEUED_JOBS`, each removed on release"),
    Lifetime(f"{BOTS}:migrated:*", False,
             "one per supergroup that was a group; deleted when the bot leaves or is removed from it"),
    Lifetime(f"{BOTS}:chat:*", False,
             "one hash per chat that changed a setting (a few fields); deleted when the bot leaves, is "
             "removed from or blocked in the chat, and the old group's when it becomes a supergroup"),
    # RQ's own keys.
    Lifetime("rq:job:*", True, "`RQ_RESULT_TTL` (10 min) once run, `RESULT_TTL` once failed or ended by the "
                               "reaper; while waiting, at most `MAX_QUEUED_JOBS` + one per worker"),
    Lifetime("rq:results:*", True, "`RQ_RESULT_TTL` (RQ's result TTL)"),
    Lifetime("rq:execution:*", True, "RQ's heartbeat TTL; deleted when the job ends"),
    Lifetime("rq:executions:*", True, "RQ's heartbeat TTL + 60 s"),
    Lifetime("rq:worker:*", True, "RQ's worker TTL, renewed by its heartbeat; deleted at a clean stop"),
    Lifetime("rq:clean_registries:*", True, "RQ's maintenance interval"),
    Lifetime("rq:queue:*", False, "the waiting jobs (≤ `MAX_QUEUED_JOBS`) and those between dequeue and start"),
    Lifetime("rq:queues", False, "one member per queue"),
    Lifetime("rq:workers*", False, "one member per live worker; RQ's maintenance drops dead ones"),
    Lifetime("rq:wip:*", False, "jobs running now; RQ's maintenance drops expired entries"),
    Lifetime("rq:finished:*", False, "jobs of the last `RESULT_TTL`, ~50 bytes each; expired entries dropped"),
    Lifetime("rq:failed:*", False, "jobs of the last `RESULT_TTL` RQ saw fail; expired entries dropped"),
)


def lifetime(key: str) -> Lifetime | None:
    """The row of :data:`LIFETIMES` a key falls under, None for a key detbot does not know."""
    return next((row for row in LIFETIMES if fnmatch.fnmatchcase(key, row.pattern)), None)


def lifetimes_table() -> str:
    """:data:`LIFETIMES` as the Markdown table of docs/state.md."""
    lines = ["| key | expires | lifetime or bound |", "|---|---|---|"]
    lines += [f"| `{row.pattern}` | {'yes' if row.expires else 'no'} | {row.bound} |" for row in LIFETIMES]
    return "\n".join(lines)
