"""``detbot doctor`` on a healthy installation and on installations broken on purpose.

Each broken part is real where it can be: a second OpenCV distribution really on the import path (a
``dist-info`` folder, exactly what pip leaves behind), a Redis port nobody listens on, a weights file that
does not exist, a GPU index no machine has. A torchvision that does not match torch is reproduced by a
``torchvision`` package that fails on import the way a mismatched build does. The doctor runs as a
subprocess, as a person runs it; secrets given to it must never appear in its output.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from tests.conftest import DETBOT, ROOT, RedisServer, detbot_env, free_port
from tests.telegram_stub import TelegramStub

# The doctor imports torch and loads the model once: seconds, more on a busy 2-core CI box.
DOCTOR_TIMEOUT = 180
TOKEN = "424242424:DOCTOR-secret-token-value"
PASSWORD = "doctor-redis-password-5e1f"


def doctor(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``detbot doctor`` in ``cwd`` (no stray .env), with the shapes model and the given variables."""
    return subprocess.run([*DETBOT, "doctor", *args], cwd=cwd, env=detbot_env(**{"PYTHONPATH": str(ROOT), **env}),
                          capture_output=True, text=True, timeout=DOCTOR_TIMEOUT)


def line(out: str, name: str) -> str:
    """The result line of one check (and its fix line, if any)."""
    lines = out.splitlines()
    for i, text in enumerate(lines):
        if text.split()[1:2] == [name]:
            follow = lines[i + 1] if i + 1 < len(lines) and lines[i + 1].strip().startswith("fix:") else ""
            return f"{text}\n{follow}".strip()
    raise AssertionError(f"no {name} line in:\n{out}")


def with_path(*folders: Path) -> str:
    return ":".join([*(str(f) for f in folders), str(ROOT)])


def fake_opencv(root: Path) -> Path:
    """A second OpenCV distribution as pip records one: its dist-info folder on the import path."""
    info = root / "opencv_python-4.10.0.84.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: opencv-python\nVersion: 4.10.0.84\n")
    (info / "RECORD").write_text("")
    return root


def mismatched_torchvision(root: Path) -> Path:
    """A torchvision whose compiled ops do not match torch: its import fails like a real mismatched build."""
    pkg = root / "torchvision"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "import torch\n"
        "raise RuntimeError('operator torchvision::nms does not exist')\n"
    )
    return root


def test_a_healthy_installation_passes_every_check(tmp_path: Path, shapes_model: Path) -> None:
    # Redis as `detbot run` and compose start it (README, "Durability"; docs/state.md).
    redis = RedisServer(tmp_path / "redis", appendonly=True,
                        config=("--appendfsync", "always", "--maxmemory", "64mb", "--maxmemory-policy", "noeviction"))
    redis.start()
    url = f"redis://:{PASSWORD}@127.0.0.1:{redis.port}/0"
    try:
        admin = Redis.from_url(redis.url)
        admin.config_set("requirepass", PASSWORD)  # the doctor must authenticate, and never show the password
        admin.close()
        out = doctor("--offline", cwd=tmp_path, REDIS_URL=url, TELEGRAM_BOT_TOKEN=TOKEN)
    finally:
        redis.stop()
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("python", "opencv", "torch", "device", "model", "redis"):
        assert line(out.stdout, name).startswith("ok"), out.stdout
    assert "smoke inference on bus.jpg" in line(out.stdout, "model")
    assert "shapes.pt: 3 classes" in line(out.stdout, "model")
    assert "append-only persistence on, appendfsync always" in line(out.stdout, "redis")
    assert "maxmemory 64 MB, noeviction" in line(out.stdout, "redis")
    assert line(out.stdout, "telegram").startswith("skip") and "--offline" in line(out.stdout, "telegram")
    assert out.stdout.rstrip().endswith("all checks passed")
    for secret in (PASSWORD, TOKEN.split(":")[1]):
        assert secret not in out.stdout + out.stderr


def test_an_opencv_clash_a_missing_gpu_a_missing_model_and_an_unreachable_redis_are_each_named(
    tmp_path: Path,
) -> None:
    extra = fake_opencv(tmp_path / "site")
    missing = tmp_path / "weights" / "best.pt"
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    out = doctor("--check", "opencv", "--check", "device", "--check", "model", "--check", "redis", cwd=tmp_path,
                 PYTHONPATH=with_path(extra), DETBOT_MODEL=str(missing), REDIS_URL=url, DETBOT_DEVICE="cuda:99")
    assert out.returncode == 1
    opencv = line(out.stdout, "opencv")
    assert opencv.startswith("FAIL") and "opencv-python 4.10.0.84" in opencv and "opencv-python-headless" in opencv
    assert "fix: pip uninstall -y opencv-python opencv-python-headless" in opencv
    device = line(out.stdout, "device")  # no machine has a hundred GPUs
    assert device.startswith("FAIL") and "DETBOT_DEVICE=cuda:99" in device and "fix: set DETBOT_DEVICE=auto" in device
    model = line(out.stdout, "model")
    assert model.startswith("FAIL") and str(missing) in model and "fix: set DETBOT_MODEL" in model
    redis = line(out.stdout, "redis")
    assert redis.startswith("FAIL") and "unreachable" in redis and "fix:" in redis
    assert "4 problem(s): opencv, device, model, redis" in out.stdout
    assert PASSWORD not in out.stdout + out.stderr and "Traceback" not in out.stdout + out.stderr


def test_a_torchvision_that_does_not_match_torch_is_named(tmp_path: Path) -> None:
    out = doctor("--check", "torch", cwd=tmp_path, PYTHONPATH=with_path(mismatched_torchvision(tmp_path / "site")))
    assert out.returncode == 1
    torch = line(out.stdout, "torch")
    assert torch.startswith("FAIL") and "operator torchvision::nms does not exist" in torch
    assert "fix: install both in one command" in torch


def test_redis_without_persistence_is_a_warning_not_a_failure(tmp_path: Path, redis_server: RedisServer) -> None:
    out = doctor("--check", "redis", cwd=tmp_path, REDIS_URL=redis_server.url)
    assert out.returncode == 0
    assert line(out.stdout, "redis").startswith("warn") and "append-only persistence OFF" in out.stdout


def test_redis_that_may_lose_or_overflow_is_named_with_its_fixes(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis", appendonly=True, config=("--appendfsync", "everysec"))
    redis.start()
    try:
        out = doctor("--check", "redis", cwd=tmp_path, REDIS_URL=redis.url)
    finally:
        redis.stop()
    assert out.returncode == 0
    found = line(out.stdout, "redis")
    assert found.startswith("warn") and "appendfsync everysec" in found and "no maxmemory" in found
    assert "--appendfsync always" in out.stdout and "--maxmemory 1gb" in out.stdout


@pytest.fixture
def stub() -> Iterator[TelegramStub]:
    server = TelegramStub(TOKEN).start()
    yield server
    server.stop()


def test_the_token_is_checked_with_getme_and_never_printed(tmp_path: Path, stub: TelegramStub) -> None:
    good = doctor("--check", "telegram", cwd=tmp_path, TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_BASE_URL=stub.url)
    assert good.returncode == 0, good.stdout
    assert "token valid: @detbot_test_bot" in good.stdout and "privacy mode on" in good.stdout
    assert [c.method for c in stub.sent()] == ["getMe"]
    wrong_token = "424242424:WRONG-secret-token-value"
    bad = doctor("--check", "telegram", cwd=tmp_path, TELEGRAM_BOT_TOKEN=wrong_token, TELEGRAM_API_BASE_URL=stub.url)
    assert bad.returncode == 1
    assert "rejected the token 424242424:***" in bad.stdout and "fix: copy the token again" in bad.stdout
    for out in (good, bad):
        assert "secret-token-value" not in out.stdout + out.stderr


def test_offline_mode_does_not_touch_the_network_and_reads_dotenv(tmp_path: Path, stub: TelegramStub) -> None:
    (tmp_path / ".env").write_text(f"TELEGRAM_BOT_TOKEN={TOKEN}\nTELEGRAM_API_BASE_URL={stub.url}\n")
    out = doctor("--offline", "--check", "telegram", cwd=tmp_path)
    assert out.returncode == 0
    assert "token 424242424:*** set; getMe not tried (--offline)" in out.stdout
    assert stub.sent() == []


def test_redis_older_than_6_2_is_refused() -> None:
    """Bot replicas take each other's answers over with XAUTOCLAIM (Redis 6.2): doctor and the bot name an
    older Redis (the redis-server shipped here is 6.2, so the check itself is tested on version strings)."""
    from jobs.client import MIN_REDIS, redis_version_ok

    assert MIN_REDIS == (6, 2)
    assert [redis_version_ok(v) for v in ("7.2.4", "6.2.0", "6.2.912183", "6.0.16", "5.0.7", "unknown")] == [
        True, True, True, False, False, True]
