"""Watching a process and everything it starts, to tell when a stop is complete, and when each job
completed (tests/test_stop.py and tests/bench_stop.py).

A :class:`ProcessTree` polls ``/proc`` from the moment a command is started, so a child started and gone
between two full looks at the tree is the only one it can miss; a child orphaned when its parent dies
(reparented to init) stays known, because it was seen before. A zombie counts as gone: it has exited, only its exit
status waits to be collected.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from jobs import keys
from tests.conftest import DETBOT, ROOT

# How often the processes of the tree are looked at: fine enough to time a stop to a few tens of ms.
SCAN_INTERVAL = 0.02
# Every this many looks, all of /proc is read for new children (a few ms on a 2-core box: not every time).
DISCOVER_EVERY = 5


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state letter) of ``pid``, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0].decode()


def _table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) of every process now."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (entry := _stat(int(name))) is not None:
            out[int(name)] = entry
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class ProcessTree:
    """``root`` and its descendants, followed in a thread until :meth:`close`."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.names: dict[int, str] = {}  # every pid seen in the tree -> its command line, as last seen running
        self.parents: dict[int, int] = {}  # pid -> the parent it was started by
        self.gone_at: dict[int, float] = {}  # pid -> time.monotonic() when it was first seen gone
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._scan(discover=True)
        self._thread = threading.Thread(target=self._follow, name="process-tree", daemon=True)
        self._thread.start()

    def _scan(self, discover: bool) -> None:
        """Note which processes of the tree have exited; with ``discover``, also its new processes."""
        with self._lock:
            known = set(self.names) | {self.root}
            running = [pid for pid in known if pid not in self.gone_at]
            table = _table() if discover else {pid: e for pid in running if (e := _stat(pid)) is not None}
            now = time.monotonic()
            grew = discover
            while grew:  # children of known processes, then their children, ...
                grew = False
                for pid, (ppid, state) in table.items():
                    if ppid in known and pid not in known and state != "Z":
                        known.add(pid)
                        self.parents[pid] = ppid
                        grew = True
            for pid in known:
                entry = table.get(pid)
                if entry is None or entry[1] == "Z":
                    self.gone_at.setdefault(pid, now)
                    self.names.setdefault(pid, "")
                elif discover or pid not in self.names:  # read again while it runs: a child seen between
                    self.names[pid] = cmdline(pid) or self.names.get(pid, "")  # fork and exec changes it

    def _follow(self) -> None:
        looks = 0
        while not self._closed.wait(SCAN_INTERVAL):
            looks += 1
            self._scan(discover=looks % DISCOVER_EVERY == 0)

    def children(self, parent: int, word: str) -> list[int]:
        """The pids ``parent`` started whose command line has ``word`` (not a library's short-lived helper)."""
        with self._lock:
            return [pid for pid, ppid in self.parents.items() if ppid == parent and word in self.names[pid].split()]

    def alive(self) -> list[int]:
        """The pids of the tree that have not exited."""
        with self._lock:
            return [pid for pid in self.names if pid not in self.gone_at]

    def wait_gone(self, timeout: float) -> bool:
        """True once every process of the tree has exited; False if some still run after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                self._scan(discover=True)  # a child started since the last full look counts too
                if not self.alive():
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(SCAN_INTERVAL)

    def last_gone(self) -> float:
        """When the last process of the tree exited (time.monotonic())."""
        with self._lock:
            return max(self.gone_at.values())

    def describe(self) -> str:
        with self._lock:
            return "; ".join(f"{pid} {'gone' if pid in self.gone_at else 'ALIVE'}: {name[:80]}"
                             for pid, name in self.names.items())

    def kill(self) -> None:
        """SIGKILL whatever of the tree still runs (a test's clean-up)."""
        for pid in self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        self._closed.set()
        self._thread.join()


def launch(args: list[str], env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], ProcessTree]:
    """``detbot ARGS`` with its output in ``log`` (never a pipe that could fill up), and its tree watched."""
    with open(log, "ab") as out:
        proc = subprocess.Popen([*DETBOT, *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return proc, ProcessTree(proc.pid)


def terminate(proc: subprocess.Popen[bytes]) -> float:
    """SIGTERM; returns when it was sent (time.monotonic())."""
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    return sent


class Completions:
    """Follows a queue's completion events in a thread: each job's completions and when they came."""

    def __init__(self, url: str, queue: str = "detbot") -> None:
        self.redis = Redis.from_url(url, socket_timeout=5)
        self.stream = keys.events(queue)
        self.seen: dict[str, list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="completions", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        last = "0"
        while not self._stop.is_set():
            try:
                reply = self.redis.xread({self.stream: last}, count=100, block=100)
            except (RedisError, OSError):
                return  # Redis stopped (with `detbot run`)
            for _stream, entries in reply or []:
                for event_id, fields in entries:
                    last = event_id.decode()
                    self.seen.setdefault(fields[b"job_id"].decode(), []).append(time.monotonic())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.redis.close()
