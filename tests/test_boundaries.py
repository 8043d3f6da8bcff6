"""The package boundaries hold: detector/ knows no Telegram/RQ/Redis; bot/ and `detbot --help` load no torch;
jobs/ (the queue) knows neither the bot nor the ops tools, which sit on top of everything; the web face (web/)
loads no torch, ultralytics, cv2 or detector model code, and of bot/ only its Telegram-free modules."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.conftest import ROOT, detbot_env

FORBIDDEN_IN_DETECTOR = ("telegram", "rq", "redis", "bot", "jobs", "ops")
FORBIDDEN_IN_BOT = (
    "torch", "torchvision", "ultralytics", "cv2", "detector.model", "jobs.tasks", "jobs.worker", "jobs.recovery", "ops",
)
FORBIDDEN_IN_JOBS = ("bot", "ops", "telegram")
FORBIDDEN_IN_WEB = (
    "torch", "torchvision", "ultralytics", "cv2", "telegram", "detector.model", "detector.engines",
    "detector.processing", "detector.draw", "detector.labels", "detector.export_cache", "detector.cores",
    "jobs.tasks", "jobs.worker", "jobs.recovery", "ops",
)
# What the web face may use of bot/: texts, parsing, class names, limits, settings, kept answers, logging, the
# inbox and the Mini App's requests it puts there — nothing that talks to Telegram.
BOT_MODULES_FOR_WEB = {"bot", "bot.i18n", "bot.replies", "bot.parsing", "bot.classes", "bot.limits", "bot.settings",
                       "bot.answers", "bot.logs", "bot.inbox", "bot.mini_app"}


def imported_modules(package: str) -> dict[str, set[str]]:
    """Every module each file of a package imports, read from the source (lazy imports included)."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
        found[str(path.relative_to(ROOT))] = names
    return found


def offending(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{file}: {name}"
        for file, names in imported_modules(package).items()
        for name in names
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    )


def test_detector_source_imports_nothing_of_telegram_rq_redis() -> None:
    assert offending("detector", FORBIDDEN_IN_DETECTOR) == []


def test_bot_source_imports_no_torch_or_detector_model() -> None:
    assert (ROOT / "bot").is_dir()
    assert offending("bot", FORBIDDEN_IN_BOT) == []


def test_jobs_source_imports_neither_the_bot_nor_ops() -> None:
    assert offending("jobs", FORBIDDEN_IN_JOBS) == []


def test_web_source_imports_no_model_code_and_only_telegram_free_bot_modules() -> None:
    assert (ROOT / "web").is_dir()
    assert offending("web", FORBIDDEN_IN_WEB) == []
    from_bot = {name for names in imported_modules("web").values() for name in names
                if name == "bot" or name.startswith("bot.")}
    # `from bot.x import y` names both bot.x and bot.x.y: the module is what counts.
    modules = {name if name in BOT_MODULES_FOR_WEB else name.rpartition(".")[0] for name in from_bot}
    assert modules <= BOT_MODULES_FOR_WEB, modules - BOT_MODULES_FOR_WEB


def loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print('\\nMODULES', ' '.join(sys.modules))"],
        capture_output=True, text=True, timeout=120, env=detbot_env(), cwd=ROOT, check=True,
    ).stdout
    return set(out.rsplit("\nMODULES ", 1)[1].split())


def test_importing_every_bot_module_loads_no_torch() -> None:
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "bot").rglob("*.py")
    )
    loaded = loaded_after("\n".join(f"import {m}" for m in modules))
    assert "bot" in loaded
    assert not {"torch", "ultralytics", "cv2"} & loaded


def test_importing_every_web_module_loads_no_torch_cv2_or_telegram() -> None:
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "web").rglob("*.py")
    )
    loaded = loaded_after("\n".join(f"import {m}" for m in modules))
    assert "web.app" in loaded and "fastapi" in loaded
    assert not {"torch", "ultralytics", "cv2", "telegram"} & loaded


def test_importing_detector_loads_no_telegram_rq_redis() -> None:
    loaded = loaded_after("import detector, detector.model, detector.image, detector.render, detector.cli")
    assert not {"telegram", "rq", "redis"} & loaded


@pytest.mark.parametrize("args", [["--help"], ["detect", "--help"]])
def test_detbot_help_loads_no_torch(args: list[str]) -> None:
    code = (
        f"import sys; sys.argv=['detbot', *{args!r}]\n"
        "from ops.cli import main\ntry:\n    main()\nexcept SystemExit: pass"
    )
    loaded = loaded_after(code)
    assert "ops.cli" in loaded and "torch" not in loaded and "ultralytics" not in loaded
