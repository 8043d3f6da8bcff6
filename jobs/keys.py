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


def status(unit: str) -> str:
    """Chat and message id of the "queued" status message of a job or album."""
    return f"{KEY_PREFIX}:bot:status:{unit}"


def migrated(chat_id: int) -> str:
    """The id a supergroup had as a group before Telegram migrated it (its settings and allow-list entry)."""
    return f"{KEY_PREFIX}:bot:migrated:{chat_id}"


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
