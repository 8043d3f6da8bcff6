"""Sharing a machine's cores between worker processes: a photo runs on every core nobody else is using.

A worker's own share is one core (``DETBOT_THREADS``), so N workers on N cores never oversubscribe. But a
lone photo on an otherwise idle machine would then run on one core while the others sleep. Each core is
therefore a lock file in a folder every worker on the machine shares (beside the export cache). A worker
holds one core for the whole of a photo (decode, inference, drawing); for the inference it also takes every
other core if none of them is held at that moment, and then runs the model compiled for that many threads.
A neighbour with a photo in hand, even one still decoding it, keeps its core: busy workers each stay on one.

Each process also holds a presence file there for its lifetime, so a worker can tell whether it is alone on
the machine (:meth:`CoreLocks.neighbours`). Locks are ``flock``\\ s: the kernel drops them when a process
dies, even by SIGKILL, so a crashed worker never keeps a core or seems present.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

# Waiting for a core lasts one inference of a neighbour (milliseconds to about a second); past this a
# holder is stuck (a stopped process), and running on a shared core beats stalling every photo behind it.
CORE_WAIT_S = 10.0
# How often a worker with no free core looks again: a fraction of the shortest inference.
CORE_POLL_S = 0.001
LOCK_PREFIX = "core-"
# One such file per process using the locks, held for its lifetime: who else shares this machine's cores.
PRESENCE_PREFIX = "worker-"
# A container's CPU limit (cgroup v2), e.g. ``docker run --cpus 2``: "max 100000" when there is none.
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cores() -> int:
    """Cores this process may use: a taskset's or container's cpuset and its CPU quota, not the machine's."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, quota) if quota else cores)


def _cgroup_quota(path: Path = CGROUP_CPU_MAX) -> int | None:
    """Whole cores of a cgroup v2 CPU limit (``docker run --cpus``), rounded up; None when unlimited."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, -(-int(quota) // int(period)))


class CoreLocks:
    """One lock file per core in ``folder``: :meth:`own` for a photo, :meth:`borrow` for its inference."""

    def __init__(self, folder: Path, cores: int, wait_s: float = CORE_WAIT_S) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.cores = cores
        self.wait_s = wait_s
        self._fds = [os.open(folder / f"{LOCK_PREFIX}{i}", os.O_RDWR | os.O_CREAT, 0o666) for i in range(cores)]
        # Each process starts looking at a different core, so workers rarely try the same lock first.
        self._first = os.getpid() % cores
        self._own: int | None = None
        self._presence, self._presence_name = self._join()

    def _join(self) -> tuple[int, str]:
        """Hold the first free presence file for as long as this object lives."""
        for slot in itertools.count():
            name = f"{PRESENCE_PREFIX}{slot}"
            fd = os.open(self.folder / name, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return fd, name
        raise AssertionError("unreachable")

    def neighbours(self) -> int:
        """How many other processes use these cores now (each holds a presence file; a dead one holds none)."""
        count = 0
        for name in os.listdir(self.folder):
            if not name.startswith(PRESENCE_PREFIX) or name == self._presence_name:
                continue
            try:
                fd = os.open(self.folder / name, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                count += 1
            finally:
                os.close(fd)  # closing also drops the lock if the probe took it
        return count

    def close(self) -> None:
        for fd in [*self._fds, self._presence]:
            os.close(fd)
        self._fds, self._presence = [], -1

    def _try(self, index: int) -> bool:
        try:
            fcntl.flock(self._fds[index], fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _release(self, held: list[int]) -> None:
        for index in held:
            fcntl.flock(self._fds[index], fcntl.LOCK_UN)

    def _take_one(self) -> int | None:
        order = [(self._first + k) % self.cores for k in range(self.cores)]
        deadline = time.monotonic() + self.wait_s
        while True:
            for index in order:
                if self._try(index):
                    return index
            if time.monotonic() >= deadline:
                log.warning("no free CPU core after %.0f s (a worker stuck holding one?); running anyway", self.wait_s)
                return None
            time.sleep(CORE_POLL_S)

    @contextlib.contextmanager
    def own(self) -> Iterator[int | None]:
        """Hold one core for a whole photo, waiting for one if every core is busy; yields its index (None
        when none came free in time)."""
        self._own = self._take_one()
        try:
            yield self._own
        finally:
            if self._own is not None:
                self._release([self._own])
            self._own = None

    @contextlib.contextmanager
    def borrow(self) -> Iterator[bool]:
        """Inside :meth:`own`: every other core too, for one inference, if none of them is busy right now;
        yields whether they were taken. All or nothing: a neighbour with a photo keeps its core."""
        others: list[int] = []
        if self._own is not None:
            others = [i for i in range(self.cores) if i != self._own and self._try(i)]
            if len(others) < self.cores - 1:
                self._release(others)
                others = []
        try:
            yield bool(others)
        finally:
            self._release(others)


def open_core_locks(folder: Path, cores: int) -> CoreLocks | None:
    """The machine's core locks, or None (one warning) when the folder cannot be used: a worker then simply
    keeps to its own share."""
    try:
        return CoreLocks(folder, cores)
    except OSError as exc:
        log.warning("cannot share idle cores through %s (%s): each photo runs on its own share only", folder,
                    exc.strerror or type(exc).__name__)
        return None
