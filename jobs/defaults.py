"""Every timeout, TTL and limit of the queue, each with the reason for its value."""

from __future__ import annotations

# One queue for all detection work; workers on any machine listen on it.
QUEUE_NAME = "detbot"
# Key prefix for everything detbot stores beside RQ's own keys.
KEY_PREFIX = "detbot"
# The bot's consumer group on its completion streams (jobs.keys.events): every replica is a consumer of its own,
# and what a dead one read and left unacknowledged is taken over by a live one (jobs.client.CLAIM_IDLE_MS).
EVENTS_GROUP = "bot"
# Jobs waiting beyond this are refused at once ("busy"): minutes of backlog helps nobody in a chat.
MAX_QUEUED_JOBS = 100
# A CPU inference takes well under a second; a minute means something is wrong with the worker.
JOB_TIMEOUT = 60
# A job whose worker died this many times is given up with an error event instead of looping.
MAX_ATTEMPTS = 3
# Image bytes wait for a worker at most this long; a person has given up on the answer by then.
IMAGE_TTL = 60 * 60
# Results wait this long for the bot to deliver them, long enough to cover a bot restart or outage.
RESULT_TTL = 24 * 60 * 60
# A submit's "once" marker lives this long: Telegram re-sends an unconfirmed update for at most a day, and
# a bot handles its inbox's leftovers at its next start, so a replayed submit is always caught.
ONCE_TTL = 24 * 60 * 60
# How long a completed job's record (and its done-marker) stays once delivered: guards against replays.
DELIVERED_TTL = 10 * 60
# RQ's own record of a job that ran to its end (its hash and its result): nothing in detbot reads it — the
# outcome lives in detbot's record — so it stays only as long as a delivered record does, for an operator's
# rq-dashboard. At 24 h it was ~3 KB per photo of the day's traffic (tests/bench_soak.py).
RQ_RESULT_TTL = DELIVERED_TTL
# Bounded stream: older acknowledged events are trimmed; far above any realistic backlog.
EVENTS_MAXLEN = 10_000
# A worker's liveness key lives this long after its last heartbeat: a SIGKILLed worker is noticed this fast.
LIVENESS_TTL = 10
# Heartbeats come this often: a live worker must miss several in a row before it looks dead.
HEARTBEAT_INTERVAL = 2.0
# The reaper (abandoned jobs) runs at most this often across all workers: detection within ~15 s of a kill.
REAP_INTERVAL = 5
# A job id left this long in RQ's intermediate list with no worker recording it was dropped mid-dequeue.
ORPHAN_GRACE = 5
# A job running this long past its timeout means the worker is stuck in native code: it exits, the job is retried.
WEDGED_GRACE = 30
# Workers keep every box down to this confidence in a result, so buttons re-draw any threshold at or above
# it without running the model again; lower would store mostly noise (and more bytes per answer).
DETECTION_FLOOR = 0.05
