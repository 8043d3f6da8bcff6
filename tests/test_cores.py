"""Idle cores: a lone photo runs on every core, a busy neighbour keeps its own, and no core is lost."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from redis import Redis

from detector import cores
from detector.cores import CoreLocks, usable_cores
from detector.model import Detector
from detector.params import DetectParams
from jobs import store
from jobs.client import DetectionClient
from ops.shapes import iou, make_images
from tests.conftest import ROOT, TEST_EXPORT_DIR, RedisServer
from tests.images import encode
from tests.workers import start_worker, wait_for

# A holder process answers within this; far beyond it something hangs.
HOLDER_TIMEOUT = 30
# A job on the shapes model takes well under a second; this only bounds a broken test.
COMPLETION_TIMEOUT = 60
CORES = 2
# Holds the named core locks until a line arrives on stdin; prints the (system-wide) monotonic clock just
# before letting go, so the test can tell whether its own lock was taken only afterwards.
HOLDER = """
import fcntl, os, sys, time
folder, indices = sys.argv[1], [int(i) for i in sys.argv[2:]]
fds = [os.open(os.path.join(folder, f"core-{i}"), os.O_RDWR | os.O_CREAT) for i in indices]
for fd in fds:
    fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()
print(time.monotonic(), flush=True)
for fd in fds:
    fcntl.flock(fd, fcntl.LOCK_UN)
"""


class Holder:
    """Another process holding some cores, as a busy worker does."""

    def __init__(self, folder: Path, indices: list[int]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(folder), *map(str, indices)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "held"

    def release(self) -> float:
        """Let go; returns the monotonic time just before the locks were dropped."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        released = float(self.proc.stdout.readline())
        assert self.proc.wait(HOLDER_TIMEOUT) == 0
        return released

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(HOLDER_TIMEOUT)


@pytest.fixture
def locks(tmp_path: Path) -> Iterator[CoreLocks]:
    pool = CoreLocks(tmp_path / "cores", CORES, wait_s=HOLDER_TIMEOUT)
    yield pool
    pool.close()


@pytest.fixture
def detector(shapes_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Detector:
    """An OpenVINO detector that sees two cores (the CI machine's count, whatever this one has)."""
    monkeypatch.setattr("detector.model.usable_cores", lambda: CORES)
    return Detector(str(shapes_model), backend="openvino", device="cpu", export_dir=TEST_EXPORT_DIR,
                    cores_dir=tmp_path / "cores")


def test_lone_photo_takes_every_core(locks: CoreLocks, tmp_path: Path) -> None:
    neighbour = CoreLocks(tmp_path / "cores", CORES, wait_s=0)  # another worker, one that will not wait
    try:
        with locks.own() as mine:
            assert mine is not None
            with locks.borrow() as wide:
                assert wide
                with neighbour.own() as theirs:
                    assert theirs is None  # every core is taken while the lone photo runs
            with locks.borrow() as wide_again:  # given back after the inference, taken again for the next
                assert wide_again
            with neighbour.own() as theirs, locks.borrow() as wide_now:
                assert theirs is not None and theirs != mine and not wide_now  # the neighbour got the other
    finally:
        neighbour.close()


def test_busy_neighbour_keeps_its_core(locks: CoreLocks, tmp_path: Path) -> None:
    holder = Holder(tmp_path / "cores", [1])
    try:
        with locks.own() as mine:
            assert mine == 0  # the free one, without waiting
            with locks.borrow() as wide:
                assert not wide
    finally:
        holder.release()
    with locks.own(), locks.borrow() as wide:
        assert wide


def test_all_cores_busy_waits_for_one(locks: CoreLocks, tmp_path: Path) -> None:
    holder = Holder(tmp_path / "cores", [0, 1])
    taken: list[float] = []

    def photo() -> None:
        with locks.own() as mine:
            assert mine is not None
            taken.append(time.monotonic())

    thread = threading.Thread(target=photo)
    thread.start()
    released = holder.release()
    thread.join(HOLDER_TIMEOUT)
    assert taken and taken[0] >= released  # it waited for the neighbour, then ran


def test_stuck_neighbour_does_not_stall_forever(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    holder = Holder(tmp_path / "cores", [0, 1])
    pool = CoreLocks(tmp_path / "cores", CORES, wait_s=0.05)
    try:
        with pool.own() as mine, pool.borrow() as wide:
            assert mine is None and not wide  # runs anyway, on no borrowed core
        assert "no free CPU core" in caplog.text
    finally:
        pool.close()
        holder.release()


def test_killed_neighbour_frees_its_cores(tmp_path: Path) -> None:
    holder = Holder(tmp_path / "cores", [0, 1])
    holder.kill()  # SIGKILL: no clean-up in the holder, the kernel drops its locks
    pool = CoreLocks(tmp_path / "cores", CORES, wait_s=0)
    try:
        with pool.own() as mine, pool.borrow() as wide:
            assert mine is not None and wide
    finally:
        pool.close()


def test_detector_uses_idle_cores_and_answers_the_same(detector: Detector, tmp_path: Path) -> None:
    images = make_images(seed=3100, count=4)
    wide = [detector.detect(img, DetectParams(0.3)) for img, _ in images]
    assert detector.last_threads == CORES
    holder = Holder(tmp_path / "cores", [0])
    try:
        narrow = [detector.detect(img, DetectParams(0.3)) for img, _ in images]
        assert detector.last_threads == 1
    finally:
        holder.release()
    _, jpeg = detector.detect_annotated(images[0][0], DetectParams(0.3))
    assert detector.last_threads == CORES and jpeg[:2] == b"\xff\xd8"
    for a, b in zip(wide, narrow, strict=True):
        assert [x.class_name for x in a.boxes] == [x.class_name for x in b.boxes]
        assert all(iou(x.xyxy, y.xyxy) > 0.99 for x, y in zip(a.boxes, b.boxes, strict=True))
    assert sum(len(d.boxes) for d in wide) >= sum(len(s) for _, s in images)  # really found the shapes


def test_a_photo_with_others_waiting_keeps_to_its_own_core(detector: Detector, tmp_path: Path) -> None:
    img = make_images(seed=3102, count=1)[0][0]
    alone = detector.detect(img, DetectParams(0.3), waiting=2)  # the machine's only worker: its backlog spreads
    assert alone.timings.threads == CORES
    neighbour = CoreLocks(tmp_path / "cores", CORES)  # another worker of this machine, idle
    try:
        narrow = detector.detect(img, DetectParams(0.3), waiting=2)
        assert detector.last_threads == 1 and narrow.timings.threads == 1
        wide, _ = detector.detect_annotated(img, DetectParams(0.3))
        assert detector.last_threads == CORES and wide.timings.threads == CORES
    finally:
        neighbour.close()
    assert [b.class_name for b in wide.boxes] == [b.class_name for b in narrow.boxes]


def private_export_dir(tmp_path: Path) -> Path:
    """A copy of the warm export cache whose core locks no other test process uses."""
    folder = tmp_path / "exports"
    shutil.copytree(TEST_EXPORT_DIR, folder, ignore=shutil.ignore_patterns("cores", ".*"))
    return folder


def run_jobs(redis: Redis, redis_server: RedisServer, exports: Path, log_dir: Path, count: int) -> list[int]:
    """``count`` photos queued before one worker starts, then one more alone: the threads each ran on."""
    client = DetectionClient(redis)
    photos = [encode(img, "JPEG") for img, _ in make_images(seed=3103, count=count)]
    job_ids = [client.submit(p, DetectParams(0.3)) for p in photos]  # all queued before the worker starts
    worker = start_worker(redis_server.url, log_dir=log_dir, env={"DETBOT_EXPORT_DIR": str(exports)})
    try:
        threads = []
        for job_id in [*job_ids, None]:
            if job_id is None:  # the backlog is done: now a photo that arrives alone
                job_id = client.submit(photos[0], DetectParams(0.3))
            done = wait_for(lambda j=job_id: store.read_completion(redis, j), COMPLETION_TIMEOUT, job_id)
            assert done.ok and done.detection is not None, done
            threads.append(done.detection["timings"]["threads"])
        return threads
    finally:
        worker.close()


def test_worker_with_neighbours_spreads_only_a_lone_photo(
    redis: Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Queued photos each keep to the worker's own core (the other workers will want theirs); the last of
    the backlog, and a photo that arrives alone, run on every idle core of the machine."""
    exports = private_export_dir(tmp_path)
    neighbour = CoreLocks(exports / "cores", usable_cores())  # another worker of this machine, idle
    try:
        threads = run_jobs(redis, redis_server, exports, tmp_path, 3)
    finally:
        neighbour.close()
    machine = usable_cores()  # the worker's own view of this machine
    assert threads == [1, 1, machine, machine]


def test_only_worker_of_the_machine_spreads_its_backlog_too(
    redis: Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Alone on the machine, nobody else will use the idle cores: every photo runs on all of them."""
    threads = run_jobs(redis, redis_server, private_export_dir(tmp_path), tmp_path, 3)
    assert threads == [usable_cores()] * 4


def test_neighbours_are_the_live_processes_sharing_the_cores(locks: CoreLocks, tmp_path: Path) -> None:
    assert locks.neighbours() == 0
    other = CoreLocks(tmp_path / "cores", CORES)
    assert locks.neighbours() == 1 and other.neighbours() == 1
    other.close()
    assert locks.neighbours() == 0
    code = ("import sys; from pathlib import Path; from detector.cores import CoreLocks; "
            f"c = CoreLocks(Path({str(tmp_path / 'cores')!r}), {CORES}); print('ready', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert locks.neighbours() == 1
    finally:
        proc.kill()  # SIGKILL: the kernel drops its presence with its locks
        proc.wait(HOLDER_TIMEOUT)
    assert locks.neighbours() == 0


def test_wide_engine_is_compiled_for_every_core(detector: Detector) -> None:
    assert detector._engine.compiled.get_property("INFERENCE_NUM_THREADS") == 1  # type: ignore[union-attr]
    assert detector._wide_engine.compiled.get_property("INFERENCE_NUM_THREADS") == CORES  # type: ignore[union-attr]


def test_idle_cores_can_be_turned_off(shapes_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("detector.model.usable_cores", lambda: CORES)
    d = Detector(str(shapes_model), backend="openvino", device="cpu", export_dir=TEST_EXPORT_DIR,
                 cores_dir=tmp_path / "cores", use_idle_cores=False)
    d.detect(np.full((64, 64, 3), 255, np.uint8))
    assert d._wide_engine is None and d.last_threads == 1
    assert not (tmp_path / "cores").exists()


def test_torch_runs_wide_on_all_cores_but_one_and_gives_its_threads_back(
    shapes_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PyTorch's OpenMP pool waits at every operator for a thread whose core another process took, so a
    lone photo leaves one core to the rest of the machine (as ultralytics does): 3 threads on 4 cores."""
    import torch

    monkeypatch.setattr("detector.model.usable_cores", lambda: 4)
    d = Detector(str(shapes_model), backend="torch", device="cpu", cores_dir=tmp_path / "cores")
    seen: list[int] = []
    inner = d._wide_engine._engine  # type: ignore[union-attr]
    model = inner._model

    def counting_model(blob: torch.Tensor) -> object:
        seen.append(torch.get_num_threads())
        return model(blob)

    monkeypatch.setattr(inner, "_model", counting_model)
    torch.set_num_threads(1)
    d.detect(make_images(seed=3101, count=1)[0][0])
    assert seen == [3] and torch.get_num_threads() == 1 and d.last_threads == 3


def test_torch_on_two_cores_keeps_to_one_thread(shapes_model: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """On two cores "all but one" is the worker's own one: no wide PyTorch engine, the other core stays free
    (for the export running beside it on a cold start, or another process); an export still goes wide."""
    monkeypatch.setattr("detector.model.usable_cores", lambda: CORES)
    d = Detector(str(shapes_model), backend="torch", device="cpu", cores_dir=tmp_path / "cores")
    assert d._wide_engine is None
    assert d.detect(make_images(seed=3101, count=1)[0][0]).timings.threads == 1
    ov = Detector(str(shapes_model), backend="openvino", device="cpu", export_dir=TEST_EXPORT_DIR,
                  cores_dir=tmp_path / "cores")
    assert ov.detect(make_images(seed=3101, count=1)[0][0]).timings.threads == CORES


def test_onnx_sessions_do_not_spin(shapes_model: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A spinning ORT pool thread burns the core a neighbouring worker is inferring on."""
    monkeypatch.setattr("detector.model.usable_cores", lambda: CORES)
    d = Detector(str(shapes_model), backend="onnx", device="cpu", export_dir=TEST_EXPORT_DIR,
                 cores_dir=tmp_path / "cores")
    for engine, threads in ((d._engine, 1), (d._wide_engine, CORES)):
        options = engine._session.get_session_options()  # type: ignore[union-attr]
        assert options.intra_op_num_threads == threads
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


@pytest.mark.parametrize(("cpu_max", "expected"), [("max 100000", None), ("150000 100000", 2), ("50000 100000", 1)])
def test_cgroup_cpu_limit_in_whole_cores(tmp_path: Path, cpu_max: str, expected: int | None) -> None:
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max + "\n")
    assert cores._cgroup_quota(path) == expected


def test_usable_cores_follows_the_cgroup_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    affinity = len(cores.os.sched_getaffinity(0))
    monkeypatch.setattr(cores, "_cgroup_quota", lambda: 1)
    assert cores.usable_cores() == 1
    monkeypatch.setattr(cores, "_cgroup_quota", lambda: None)
    assert cores.usable_cores() == affinity


def test_unusable_lock_folder_means_own_share_only(
    shapes_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("detector.model.usable_cores", lambda: CORES)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the lock folder should be")
    d = Detector(str(shapes_model), backend="openvino", device="cpu", export_dir=TEST_EXPORT_DIR,
                 cores_dir=blocker / "cores")
    det = d.detect(make_images(seed=3104, count=1)[0][0], DetectParams(0.3))
    assert det.boxes and det.timings.threads == 1 and d._wide_engine is None
    assert "cannot share idle cores" in caplog.text
