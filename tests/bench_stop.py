"""How long a SIGTERM takes to stop `detbot run`, `detbot worker` and `detbot bot`, signalled at several
instants of their lives (issue 22 item 6). Real processes on the shapes model, a real Redis, the Bot API
stand-in; a stop is complete when every process the command started has exited (tests/stopping.py).

    python -m tests.bench_stop [--rounds 3] [--only run worker bot]

Not collected by pytest (figures, not pass/fail): tests/test_stop.py holds the bounds. Prints one row per
(command, instant): the stop times of the rounds, and for a job in hand the part of it that was the job's
remaining work (the time from the signal to its completion), which the bound adds to its 5 s.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from redis import Redis

from detector.params import DetectParams
from jobs.client import DetectionClient, make_queue
from jobs.defaults import QUEUE_NAME
from jobs.recovery import running_jobs
from ops.shapes import make_images
from tests.conftest import ROOT, RedisServer, detbot_env, free_port
from tests.images import png_bytes
from tests.stopping import Completions, ProcessTree, launch, terminate
from tests.telegram_stub import TelegramStub, encode
from tests.workers import READY_TIMEOUT, wait_for

TOKEN = "777000222:STOP-bench-token"
# Past this, a stop is stuck, not slow: the row shows it and the processes are killed.
GIVE_UP = 90.0
# A job made slow on purpose (DETBOT_TEST_JOB_DELAY_MS) so that a signal surely lands in the middle of it.
JOB_DELAY_MS = 3000
# The instants after the command started (seconds): imports, Redis, model load, warm-up.
EARLY = (0.3, 1.5, 3.0)
# "idle": this long after ready.
IDLE_AFTER = 3.0


@dataclass
class Result:
    seconds: float  # SIGTERM to the last process gone
    job_left: float | None  # SIGTERM to the job's completion, when a job was in hand
    status: int | None
    note: str = ""


def _stop(proc: subprocess.Popen[bytes], tree: ProcessTree) -> tuple[float, float, int | None]:
    """SIGTERM; the time it was sent and how long until every process of the tree was gone."""
    sent = terminate(proc)
    if not tree.wait_gone(GIVE_UP):
        tree.kill()
        return sent, float("inf"), proc.poll()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    return sent, tree.last_gone() - sent, proc.poll()


def _submit(url: str, delay: bool) -> str:
    img, _ = make_images(7000, 1)[0]
    client = DetectionClient(Redis.from_url(url), consumer="bench")
    return client.submit(png_bytes(img), DetectParams(0.5), routing={"bench": delay})


def _busy(url: str, queue: str = QUEUE_NAME) -> Callable[[], bool]:
    redis = Redis.from_url(url)
    return lambda: bool(running_jobs(redis, queue))


def one(command: str, instant: str, work: Path) -> Result:
    """Start ``command``, wait for ``instant``, SIGTERM it, time the stop."""
    log = work / f"{command}-{instant}-{time.monotonic_ns()}.log"
    delay = instant == "mid-job"
    env = detbot_env(PYTHONPATH=str(ROOT), DETBOT_TEST_JOB_DELAY_MS=str(JOB_DELAY_MS if delay else 0))
    redis_server: RedisServer | None = None
    stub: TelegramStub | None = None
    if command == "run":
        port = free_port()
        url = f"redis://127.0.0.1:{port}/0"
        args = ["run", "--no-bot", "--workers", "2", "--redis-port", str(port), "--data-dir", str(work / "data")]
        ready_text = "ready:"
    else:
        redis_server = RedisServer(work / f"redis-{time.monotonic_ns()}")
        redis_server.start()
        url = redis_server.url
        env["REDIS_URL"] = url
        if command == "worker":
            args, ready_text = ["worker", "--name", "bench"], " ready on queue "
        else:
            stub = TelegramStub(TOKEN).start()
            env.update(TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_BASE_URL=stub.url)
            args, ready_text = ["bot"], ""
    proc, tree = launch(args, env, log)
    completions: Completions | None = None
    job_id = None
    note = ""
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{command} exited {proc.returncode}:\n{log.read_text()}")
            if stub is not None:
                return stub.polling()
            return ready_text in log.read_text(errors="replace")

        if instant.startswith("start+"):
            time.sleep(float(instant.removeprefix("start+")))
        else:
            wait_for(ready, READY_TIMEOUT, f"{command} to be ready")
            if command != "bot":
                completions = Completions(url)
            if instant == "idle":
                time.sleep(IDLE_AFTER)
            elif instant in ("mid-job", "after-job") and command != "bot":
                job_id = _submit(url, delay)
                if delay:
                    wait_for(_busy(url), 60, "the job to start")
                else:
                    assert completions is not None
                    wait_for(lambda: job_id in completions.seen, 60, "the job's completion")
            elif instant == "after-photo" and stub is not None:
                chat = stub.private_chat(4242)
                img, _ = make_images(7001, 1)[0]
                message = stub.photo(chat, 4242, encode(img))
                queue = make_queue(Redis.from_url(url))
                wait_for(lambda: queue.count > 0, 60, "the bot to queue the photo")
                note = f"message {message['message_id']}"
        sent, seconds, status = _stop(proc, tree)
        job_left = None
        if job_id is not None and completions is not None:
            done = completions.seen.get(job_id, [])
            note = f"{len(done)} completion(s)"
            if delay and done:
                job_left = done[0] - sent
        return Result(seconds, job_left, status, note)
    finally:
        tree.kill()
        tree.close()
        if completions is not None:
            completions.close()
        if stub is not None:
            stub.stop()
        if redis_server is not None:
            redis_server.stop()


INSTANTS = {
    "run": [*(f"start+{t}" for t in EARLY), "ready", "idle", "mid-job", "after-job"],
    "worker": [*(f"start+{t}" for t in EARLY), "ready", "idle", "mid-job", "after-job"],
    "bot": ["start+0.3", "start+1.0", "ready", "idle", "after-photo"],
}


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="bench-stop-") as tmp:
        yield Path(tmp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=list(INSTANTS), default=list(INSTANTS))
    parser.add_argument("--instants", nargs="*", help="only these instants")
    args = parser.parse_args()
    print("| command | instant | stop s (each round) | of which the job in hand | exit | note |")
    print("|---|---|---|---|---|---|")
    with workdir() as work:
        for command in args.only:
            for instant in INSTANTS[command]:
                if args.instants and instant not in args.instants:
                    continue
                results = [one(command, instant, work) for _ in range(args.rounds)]
                stops = ", ".join(f"{r.seconds:.2f}" for r in results)
                left = ", ".join(f"{r.job_left:.2f}" for r in results if r.job_left is not None) or "-"
                codes = ",".join(str(r.status) for r in results)
                notes = "; ".join(sorted({r.note for r in results if r.note}))
                print(f"| {command} | {instant} | {stops} | {left} | {codes} | {notes} |", flush=True)


if __name__ == "__main__":
    main()
