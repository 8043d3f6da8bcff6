"""``detbot worker`` refuses to start with one clear line when it cannot work, and leaves no trace in Redis."""

from __future__ import annotations

import subprocess

from redis import Redis

from tests.conftest import DETBOT, ROOT, RedisServer, detbot_env, free_port

# Exit statuses documented in docs/worker.md.
EXIT_CONFIG, EXIT_NO_MODEL = 2, 3
# Importing torch and failing to load a model takes seconds; this only bounds a hang.
START_TIMEOUT = 120


def run_worker(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DETBOT, "worker"], cwd=ROOT, env=detbot_env(**env), capture_output=True, text=True, timeout=START_TIMEOUT
    )


def test_unreachable_redis_exits_2_with_one_line() -> None:
    result = run_worker(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == EXIT_CONFIG
    output = result.stdout + result.stderr
    assert "cannot reach Redis" in output
    assert "Traceback" not in output


def test_missing_model_exits_3_saying_how_to_fix_it(redis: Redis, redis_server: RedisServer) -> None:
    result = run_worker(REDIS_URL=redis_server.url, DETBOT_MODEL="/nonexistent/weights.pt", DETBOT_WORKER_NAME="w")
    assert result.returncode == EXIT_NO_MODEL
    output = result.stdout + result.stderr
    assert "DETBOT_MODEL" in output
    assert "Traceback" not in output
    assert redis.keys("detbot:alive:*") == []  # never announced itself ready
    assert redis.keys("rq:worker:*") == []  # never registered with RQ


def test_worker_lines_are_written_while_openvino_quiets_the_root_logger() -> None:
    """OpenVINO's converter sets the root logger to ERROR during a worker's first export; the photos answered
    meanwhile still get their line."""
    import logging

    from jobs.worker import OWN_LOGGERS, configure_logging

    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    try:
        configure_logging("INFO")
        root.setLevel(logging.ERROR)  # what openvino.tools.ovc.logger.init_logger does
        assert logging.getLogger("detbot.worker").isEnabledFor(logging.INFO)
        assert logging.getLogger("detector.model").isEnabledFor(logging.INFO)
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        for own in OWN_LOGGERS:
            logging.getLogger(own).setLevel(logging.NOTSET)
