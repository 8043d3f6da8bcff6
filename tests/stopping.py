"""Watching a process and everything it starts, to tell when a stop is complete (tests/test_stop.py and
tests/bench_stop.py).

A :class:`ProcessTree` polls ``/proc`` from the moment a command is started, so a child started and gone
between two looks at the tree is the only one it can miss; a child orphaned when its parent dies (reparented
to init) stays known, because it was seen before. A zombie counts as gone: it has exited, only its exit
status waits to be collected.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

# How often /proc is read: fine enough to time a stop to a few tens of milliseconds, cheap on a 2-core box.
SCAN_INTERVAL = 0.02


def _table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) of every process now."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        out[int(stat.parent.name)] = (int(fields[1]), fields[0])
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
        self.names: dict[int, str] = {}  # every pid seen in the tree -> its command line when first seen
        self.gone_at: dict[int, float] = {}  # pid -> time.monotonic() when it was first seen gone
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._scan()
        self._thread = threading.Thread(target=self._follow, name="process-tree", daemon=True)
        self._thread.start()

    def _scan(self) -> None:
        table = _table()
        now = time.monotonic()
        with self._lock:
            known = set(self.names) | {self.root}
            grew = True
            while grew:  # children of known processes, then their children, ...
                grew = False
                for pid, (ppid, state) in table.items():
                    if ppid in known and pid not in known and state != "Z":
                        known.add(pid)
                        grew = True
            for pid in known:
                if pid not in self.names:
                    self.names[pid] = cmdline(pid)
                entry = table.get(pid)
                if (entry is None or entry[1] == "Z") and pid not in self.gone_at:
                    self.gone_at[pid] = now

    def _follow(self) -> None:
        while not self._closed.wait(SCAN_INTERVAL):
            self._scan()

    def alive(self) -> list[int]:
        """The pids of the tree that have not exited."""
        with self._lock:
            return [pid for pid in self.names if pid not in self.gone_at]

    def wait_gone(self, timeout: float) -> bool:
        """True once every process of the tree has exited; False if some still run after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(SCAN_INTERVAL)
        return True

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
