"""Every Redis key detbot writes beside RQ's own, named in one place.

The queue's keys (jobs, images, results, events, worker liveness and recovery) and the bot's (chat
settings, bookkeeping) share the ``detbot:`` prefix, so ``redis-cli --scan --pattern 'detbot:*'`` shows
all of detbot's state and nothing else. Lifetimes are in :mod:`jobs.defaults` and where each key is written.
"""

from __future__ import annotations

from jobs.defaults import KEY_PREFIX, QUEUE_NAME


def events(queue_name: str) -> str:
    """The stream of completion events of one queue (a stream, so events wait while the bot restarts).

    One per queue, so a bench or a test on a queue of its own never reads, acknowledges or deletes the
    bot's events; the default queue keeps the name it always had, so events pending at an upgrade stay.
    """
    return f"{KEY_PREFIX}:events" if queue_name == QUEUE_NAME else f"{KEY_PREFIX}:events:{queue_name}"


# The default queue's stream: the one the bot consumes unless DETBOT_QUEUE says otherwise.
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


# -- the bot ---------------------------------------------------------------------------------------------

def chat(chat_id: int) -> str:
    """Hash of a chat's settings (threshold, auto, ...)."""
    return f"{KEY_PREFIX}:chat:{chat_id}"


def handled(chat_id: int, message_id: int) -> str:
    """A message already queued or answered (Telegram may deliver an update twice)."""
    return f"{KEY_PREFIX}:bot:handled:{chat_id}:{message_id}"


def inbox(bot_id: int) -> str:
    """Hash update id -> the raw update (JSON) a bot fetched and has not finished handling.

    Written before Telegram is told the update arrived (the next getUpdates offset), removed when its
    handler finished: a bot killed in between handles it after its restart. Bounded by the poller
    (bot.polling.INBOX_LIMIT updates). One per bot, so two bots on one Redis never take each other's.
    """
    return f"{KEY_PREFIX}:bot:inbox:{bot_id}"


def inbox_offset(bot_id: int) -> str:
    """The next getUpdates offset, written with the updates it confirms (what the inbox already holds)."""
    return f"{KEY_PREFIX}:bot:offset:{bot_id}"


def status(unit: str) -> str:
    """Chat and message id of the "queued" status message of a job or album."""
    return f"{KEY_PREFIX}:bot:status:{unit}"


def status_retry() -> str:
    """Sorted set of "queued" messages whose deletion failed, ``chat:message:attempts`` by the time of the
    next try; bounded by bot.status.RETRY_LIMIT."""
    return f"{KEY_PREFIX}:bot:status-retry"


def migrated(chat_id: int) -> str:
    """The id a supergroup had as a group before Telegram migrated it (its settings and allow-list entry)."""
    return f"{KEY_PREFIX}:bot:migrated:{chat_id}"


# -- adjustable answers (buttons) -----------------------------------------------------------------------

def answer(answer_id: str) -> str:
    """Hash of one adjustable answer: where it is, who asked, the boxes down to the floor, the current view."""
    return f"{KEY_PREFIX}:bot:answer:{answer_id}"


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
