"""``detbot detect IMAGE|CLIP [...]``: detection from the command line, no Telegram, no queue."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from detector.clip import VIDEO_SUFFIXES
from detector.errors import DetectorError, InvalidConfidenceError, ModelLoadError
from detector.params import DetectParams, check_confidence
from detector.render import format_text
from detector.settings import DEFAULT_CONFIDENCE, DetectorSettings

# Exit status when at least one file could not be processed (argparse uses 2 for usage errors too).
EXIT_BAD_INPUT = 2
# Exit status when the model itself cannot be loaded: nothing could be processed.
EXIT_NO_MODEL = 3


def confidence_arg(text: str) -> float:
    """argparse type: a float in (0, 1]; ``40%`` is accepted too."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    try:
        return check_confidence(value)
    except InvalidConfidenceError:
        raise argparse.ArgumentTypeError(f"{text} is outside (0, 1]") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE",
                        help="images, or clips (.mp4 .mov .webm .mkv .avi): objects tracked over the clip")
    parser.add_argument("--confidence", "-c", type=confidence_arg, default=DEFAULT_CONFIDENCE)
    parser.add_argument("--classes", help="comma-separated class names to keep, e.g. person,dog")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image")
    parser.add_argument("--out", type=Path, help="write annotated JPEGs to this folder")
    parser.add_argument("--model", help="weights path or ultralytics model name (default: $DETBOT_MODEL)")


def run(args: argparse.Namespace) -> int:
    from detector.model import Detector

    settings = DetectorSettings()
    if args.model:
        settings = settings.model_copy(update={"model": args.model})
    try:
        detector = Detector.from_settings(settings)
    except ModelLoadError as exc:
        print(f"detbot: {exc}", file=sys.stderr)
        return EXIT_NO_MODEL
    try:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
        params = DetectParams(args.confidence, classes)
    except DetectorError as exc:
        print(f"detbot: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    status = 0
    for path in args.images:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            status = _clip(detector, path, params, args) or status
            continue
        try:
            det, jpeg = detector.detect_annotated(path, params)
        except DetectorError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            status = EXIT_BAD_INPUT
            continue
        if args.out:
            (args.out / f"{path.stem}.jpg").write_bytes(jpeg)
        if args.json:
            print(json.dumps({"image": str(path), **det.to_dict()}, ensure_ascii=False))
        else:
            print(f"{path}: {format_text(det)}")
    return status


def _clip(detector: Any, path: Path, params: DetectParams, args: argparse.Namespace) -> int:
    """A video file: tracked objects over the clip (:mod:`detector.clip`), the annotated clip to ``--out``."""
    from detector.clip import annotate_clip, clip_report

    try:
        clip, summary, answer, times = annotate_clip(detector, path.read_bytes(), params)
    except (DetectorError, OSError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.out:
        (args.out / f"{path.stem}.mp4").write_bytes(answer)
    text, data = clip_report(clip, summary, params, detector.model_name, times)
    print(json.dumps({"video": str(path), **data}, ensure_ascii=False) if args.json else f"{path}: {text}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="detbot detect", description=__doc__)
    add_arguments(parser)
    logging.basicConfig(level=logging.WARNING)
    return run(parser.parse_args(argv))
