"""``detbot run`` as a person runs it: a real subprocess with an embedded redis-server and real workers.

The embedded Redis's data folder persists between two runs, so "nothing lost" is checked the hard way:
photos queued while no worker runs survive a SIGTERM of everything and are answered by the next run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from detector.params import DetectParams
from detector.result import Detection
from jobs import keys
from jobs.client import DetectionClient
from jobs.store import Completion
from ops.shapes import make_images
from tests.conftest import DETBOT, ROOT, RedisServer, detbot_env, free_port
from tests.images import png_bytes
from tests.telegram_stub import TelegramStub, box_lines, encode, full_text, wait_answer
from tests.workers import READY_TIMEOUT, wait_for

# Redis and the summary come up in a second or two; the rest is a cold worker on a busy CI box.
START_TIMEOUT = READY_TIMEOUT
# Workers finish the job in hand, then Redis flushes: seconds on the shapes model.
STOP_TIMEOUT = 90.0
# A photo on the shapes model takes well under a second once a worker is up.
ANSWER_TIMEOUT = 120.0


class Run:
    """One ``detbot run`` subprocess; its output goes to a file, never a pipe that could fill up."""

    def __init__(self, cwd: Path, args: list[str], env: dict[str, str]) -> None:
        self.log_path = cwd / f"run-{len(list(cwd.glob('run-*.log')))}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen([*DETBOT, "run", *args], cwd=cwd, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_output(self, text: str, timeout: float = START_TIMEOUT) -> None:
        def seen() -> bool:
            if text in self.output():
                return True
            if self.proc.poll() is not None:
                raise AssertionError(f"detbot run exited {self.proc.returncode} before {text!r}:\n{self.output()}")
            return False

        wait_for(seen, timeout, f"{text!r} from detbot run")

    def children(self) -> list[int]:
        """Pids of the processes this run started (Linux /proc)."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                pids.append(int(stat.parent.name))
        return pids

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        """Teardown: SIGKILL the supervisor and whatever it started, so a failed test leaves no process."""
        children = self.children() if self.proc.poll() is None else []
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._log.close()


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        run.kill()


def start(runs: list[Run], cwd: Path, *args: str, **env: str) -> Run:
    run = Run(cwd, list(args), detbot_env(PYTHONPATH=str(ROOT), **env))
    runs.append(run)
    return run


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def zombie(pid: int) -> bool:
    """Exited but not yet reaped (by init, once its parent is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def collect(client: DetectionClient, count: int) -> list[Completion]:
    got: list[Completion] = []

    def enough() -> bool:
        for completion in client.wait(block_ms=500):
            got.append(completion)
            client.ack(completion)
        return len(got) >= count

    wait_for(enough, ANSWER_TIMEOUT, f"{count} completions")
    return got


def test_without_a_token_it_refuses_in_one_line_and_starts_nothing(tmp_path: Path, runs: list[Run]) -> None:
    run = start(runs, tmp_path, "--workers", "1")
    assert run.proc.wait(STOP_TIMEOUT) == 2
    lines = run.output().strip().splitlines()
    assert len(lines) == 1, lines
    assert "TELEGRAM_BOT_TOKEN is not set" in lines[0] and "--no-bot" in lines[0]
    assert not (tmp_path / ".detbot").exists()  # no Redis was started


def test_queued_photos_survive_a_stop_and_a_crashed_worker_is_replaced(
    tmp_path: Path, runs: list[Run], shapes_model: Path
) -> None:
    port = free_port()
    data = tmp_path / "data"
    images = make_images(1000, 3)

    # 1. Redis only: photos are queued, then everything is stopped with SIGTERM.
    first = start(runs, tmp_path, "--no-bot", "--workers", "0", "--data-dir", str(data), "--redis-port", str(port))
    first.wait_output("ready: 0 worker(s)")
    assert "append-only" in first.output() and f"redis://127.0.0.1:{port}/0" in first.output()
    redis = Redis.from_url(f"redis://127.0.0.1:{port}/0")
    client = DetectionClient(redis, consumer="test")
    job_ids = [client.submit(png_bytes(img), DetectParams(0.5), routing={"n": i}) for i, (img, _) in enumerate(images)]
    redis.close()
    assert first.stop() == 0
    assert "3 photo(s) still queued" in first.output()
    assert not port_open(port)
    assert (data / "redis" / "appendonly.aof").is_file()

    # 2. Same data folder, one worker: the queued photos are answered.
    second = start(runs, tmp_path, "--no-bot", "--no-web", "--workers", "1", "--data-dir", str(data),
                   "--redis-port", str(port))
    second.wait_output("ready: 1 worker(s)")
    redis = Redis.from_url(f"redis://127.0.0.1:{port}/0")
    client = DetectionClient(redis, consumer="test")
    done = collect(client, 3)
    assert sorted(c.job_id for c in done) == sorted(job_ids)
    for completion in done:
        assert completion.ok, completion
        truth = {shape.name for shape in images[completion.routing["n"]][1]}
        assert completion.detection is not None
        found = {box.class_name for box in Detection.from_dict(completion.detection).boxes}
        assert found & truth, (found, truth)

    # 3. A worker killed outright is replaced, and the replacement answers.
    workers = [pid for pid in second.children() if b"worker" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(workers) == 1
    os.kill(workers[0], signal.SIGKILL)
    second.wait_output("worker-1 exited (signal SIGKILL); restarting it")
    replacement = keys.alive(f"run-{socket.gethostname()}-{second.proc.pid}-1-1").encode()  # worker 1, restart 1
    wait_for(lambda: redis.exists(replacement), START_TIMEOUT, "the replacement worker")
    img, _ = make_images(1001, 1)[0]
    client.submit(png_bytes(img), DetectParams(0.5), routing={"n": 99})
    (again,) = collect(client, 1)
    assert again.ok and again.routing == {"n": 99}
    redis.close()

    # 4. SIGTERM stops every child and Redis, with status 0.
    children = second.children()
    assert len(children) == 2  # redis-server and the worker
    assert second.stop() == 0
    assert not any(alive(pid) for pid in children)
    assert not port_open(port)


def test_a_token_telegram_refuses_stops_everything_with_the_reason(tmp_path: Path, runs: list[Run]) -> None:
    stub = TelegramStub("777000111:the-right-token").start()
    try:
        run = start(runs, tmp_path, "--workers", "0", "--redis-port", str(free_port()),
                    TELEGRAM_BOT_TOKEN="777000111:WRONG-secret-token-value", TELEGRAM_API_BASE_URL=stub.url)
        assert run.proc.wait(START_TIMEOUT) == 1
    finally:
        stub.stop()
    out = run.output()
    assert "bot exited with status 2: a setting must be fixed" in out
    assert "TELEGRAM_BOT_TOKEN" in out  # the bot's own line says which setting
    assert "secret-token-value" not in out and "Traceback" not in out


def test_an_existing_redis_is_used_as_it_is_and_left_running(tmp_path: Path, runs: list[Run]) -> None:
    redis = RedisServer(tmp_path / "external")
    redis.start()
    try:
        admin = Redis.from_url(redis.url)
        admin.config_set("requirepass", "run-redis-password-77")
        url = f"redis://:run-redis-password-77@127.0.0.1:{redis.port}/0"
        run = start(runs, tmp_path, "--no-bot", "--no-web", "--workers", "0", REDIS_URL=url)
        run.wait_output("ready: 0 worker(s)")
        assert run.children() == []  # no embedded redis-server
        assert run.stop() == 0
        assert Redis.from_url(url).ping()  # someone else's Redis is not ours to stop
        admin.close()
    finally:
        redis.stop()
    out = run.output()
    assert f"redis://:***@127.0.0.1:{redis.port}/0 (REDIS_URL)" in out
    assert "run-redis-password-77" not in out
    assert not (tmp_path / ".detbot").exists()


def test_killing_the_supervisor_outright_leaves_no_orphans(tmp_path: Path, runs: list[Run]) -> None:
    port = free_port()
    run = start(runs, tmp_path, "--no-bot", "--no-web", "--workers", "0", "--redis-port", str(port))
    run.wait_output("ready: 0 worker(s)")
    (redis_pid,) = run.children()
    run.proc.kill()  # SIGKILL: no handler runs; the kernel tells the children (PR_SET_PDEATHSIG)
    run.proc.wait()
    wait_for(lambda: not alive(redis_pid) or zombie(redis_pid), STOP_TIMEOUT, "the orphaned redis-server to stop")
    assert not port_open(port)


def test_a_worker_that_cannot_load_its_model_stops_everything_with_the_reason(
    tmp_path: Path, runs: list[Run]
) -> None:
    port = free_port()
    run = start(runs, tmp_path, "--no-bot", "--workers", "1", "--redis-port", str(port),
                DETBOT_MODEL=str(tmp_path / "missing.pt"))
    assert run.proc.wait(START_TIMEOUT) == 1
    out = run.output()
    assert "worker-1 exited with status 3: the model cannot be loaded" in out
    assert "missing.pt" in out  # the worker's own one-line reason is relayed
    assert "Traceback" not in out
    assert not port_open(port)


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def _environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def test_the_one_command_answers_a_photo_in_a_chat(tmp_path: Path, runs: list[Run], shapes_model: Path) -> None:
    """`detbot run` with a token: embedded Redis, a worker and the bot; a person's photo gets its answer."""
    token = "777000111:RUN-secret-token-value"
    stub = TelegramStub(token).start()
    try:
        run = start(runs, tmp_path, "--workers", "1", "--redis-port", str(free_port()),
                    TELEGRAM_BOT_TOKEN=token, TELEGRAM_API_BASE_URL=stub.url)
        run.wait_output("ready: 1 worker(s) listening on queue 'detbot', bot started")
        stub.wait_for(stub.polling, START_TIMEOUT, "the bot to poll Telegram")
        img, shapes = make_images(1002, 1)[0]
        chat = stub.private_chat(4242)
        photo = stub.photo(chat, 4242, encode(img))
        answer = wait_answer(stub, 4242, photo["message_id"], ANSWER_TIMEOUT)
        assert answer.method == "sendPhoto"
        found = {name for _, name, _, _ in box_lines(full_text(stub, 4242, photo["message_id"]))}
        assert found & {shape.name for shape in shapes}
        # Only the bot holds the token, as in compose: not the workers, not Redis.
        holders = {_cmdline(pid): token.encode() in _environ(pid) for pid in run.children()}
        assert [has for cmd, has in holders.items() if " bot" in cmd] == [True], holders
        assert not [cmd for cmd, has in holders.items() if has and " bot" not in cmd], holders
        # The bot alone runs on two malloc arenas (README, soak); torch in the workers keeps glibc's default.
        arenas = {_cmdline(pid): b"MALLOC_ARENA_MAX=2" in _environ(pid).split(b"\0") for pid in run.children()}
        assert [has for cmd, has in arenas.items() if " bot" in cmd] == [True], arenas
        assert run.stop() == 0
    finally:
        stub.stop()
    out = run.output()
    assert "token 777000111:***" in out  # the summary names the bot, masked
    assert "secret-token-value" not in out
