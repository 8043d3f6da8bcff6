"""The ``detbot`` command. Subcommands import their code only when run: ``detbot --help`` loads no torch."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

# How detbot starts its own subcommands as child processes: this interpreter, this code, no PATH lookup.
DETBOT = [sys.executable, "-m", "ops.cli"]
# A shell's status for a command ended by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130

# name -> (module:function taking argv, one-line help). Dotted paths keep this module free of heavy imports.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "detect": ("detector.cli:main", "detect objects in image files and print the boxes"),
    "worker": ("jobs.worker:main", "run a YOLO worker that takes jobs from the Redis queue"),
    "bot": ("bot.main:main", "run the Telegram bot (long polling)"),
    "web": ("web.main:main", "serve the web page and the HTTP API on the queue"),
    "run": ("ops.run:main", "run everything on this machine: Redis (embedded if needed), workers and the bot"),
    "doctor": ("ops.doctor:main", "check the installation and print a fix for each problem"),
    "bench": ("ops.bench:main", "measure speed and memory of the detector, backends and the queue"),
}


def _load(target: str) -> Callable[[list[str]], int | None]:
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="detbot", description="A Telegram bot that finds objects in photos.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in SUBCOMMANDS:
        parser.parse_args(argv or ["--help"])
        return 2
    target = SUBCOMMANDS[argv[0]][0]
    try:
        func = _load(target)
    except (ImportError, AttributeError):
        print(f"detbot: '{argv[0]}' is not available in this installation.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C while the subcommand's modules load (seconds for torch): nothing started
        return EXIT_INTERRUPTED
    return int(func(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
