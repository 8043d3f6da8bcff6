"""``detbot bench video``: a clip through the whole path — decode, detect, track, draw, encode — in frames/s.

The clip is made here: a camera panning and zooming slowly over a photo (default: ultralytics' ``bus.jpg``)
at 30 fps, 1280×720, H.264, as a phone records it; it is answered span by span exactly as the workers do
(:func:`detector.clip.annotate_clip`, one process, the Detector's idle-core sharing on). Printed: frames/s,
milliseconds per stage, the answer's time against the clip's length (the target: 1.5×), and one span's time
against one photo's (a span holds a worker about as long as a photo does, or the queue's turns are uneven).

``--queue N``: then the same clip through the real queue — a throwaway redis-server, N ``detbot worker``
processes, the clip submitted as the bot submits it (:func:`jobs.video.submit`) — timed from submit to its
completion; and a photo of another chat submitted while the clip is worked on, its latency against the same
photo on idle workers (what a clip costs other chats).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

# The target: a 10 s clip answered within 1.5 times its length.
TARGET_RATIO = 1.5
# Through the queue, another chat sends a photo this often while the clip is worked on (a busy group's pace).
PHOTO_EVERY = 1.0
# The same photo on idle workers this many times (after one that warms the path): their median.
PHOTOS_ALONE = 8


def panning_clip(photo: np.ndarray, seconds: float, fps: float, size: tuple[int, int]) -> bytes:
    """``seconds`` of a camera moving over ``photo`` (zooming from the whole of it to its centre and back),
    H.264 at ``fps``."""
    import cv2

    from ops.shapes import encode_frames

    width, height = size
    h, w = photo.shape[:2]
    frames = round(seconds * fps)

    def views() -> Iterator[np.ndarray]:
        for i in range(frames):
            k = 0.5 - 0.5 * np.cos(2 * np.pi * i / max(frames, 1))  # 0 -> 1 -> 0: in and out again
            scale = 1.0 - 0.35 * k
            cw, ch = min(w, h * width / height) * scale, min(h, w * height / width) * scale
            x0, y0 = (w - cw) * (0.5 + 0.3 * np.sin(2 * np.pi * i / frames)), (h - ch) / 2
            crop = photo[int(y0):int(y0 + ch), int(x0):int(x0 + cw)]
            yield cv2.resize(crop, size, interpolation=cv2.INTER_AREA)

    return encode_frames(views(), fps, "mp4", crf=23)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="detbot bench video", description=__doc__)
    parser.add_argument("--model", help="weights (default: $DETBOT_MODEL)")
    parser.add_argument("--photo", type=Path, help="the photo the camera pans over (default: ultralytics' bus.jpg)")
    parser.add_argument("--seconds", type=float, default=10.0, help="the clip's length (default 10)")
    parser.add_argument("--fps", type=float, default=10.0, help="frames per second sampled (DETBOT_VIDEO_FPS)")
    parser.add_argument("--size", default="1280x720", help="the clip's size (default 1280x720)")
    parser.add_argument("--runs", type=int, default=2, help="times the clip is answered (the best counts)")
    parser.add_argument("--queue", type=int, default=0, metavar="N",
                        help="also through the queue with N workers (1 inference thread each, at least the cores "
                             "over N); 0: off")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def _wait_done(redis: Any, job_id: str, timeout: float = 600.0) -> tuple[float, Any]:
    """Poll a job's completion (the bench reads the record, not the stream): when it came, and what."""
    from jobs import store

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = store.read_completion(redis, job_id, image=False)
        if done is not None:
            return time.perf_counter(), done
        time.sleep(0.01)
    raise SystemExit(f"detbot bench video: job {job_id} not done in {timeout:.0f} s")


def queue_runs(model: str, data: bytes, jpeg: bytes, limits: Any, params: Any, workers: int, runs: int,
               seconds: float) -> dict[str, Any]:
    """The clip through the real queue and workers: its answer time; a photo of another chat meanwhile."""
    import tempfile

    from redis import Redis

    from detector.video import plan, probe
    from jobs.client import DetectionClient
    from ops.bench_queue import redis_url, start_workers, stop_workers

    clip = plan(probe(data, limits), limits)
    threads = max(1, (os.cpu_count() or 1) // workers)
    with redis_url(None) as url, tempfile.TemporaryDirectory(prefix="detbot-bench-video-") as logs:
        redis = Redis.from_url(url)
        client = DetectionClient(redis, queue_name="bench-video")
        procs = start_workers(url, "bench-video", workers, model, threads, Path(logs))
        try:
            alone = []
            for i in range(PHOTOS_ALONE + 1):  # the photo on idle workers (the first warms the path)
                t0 = time.perf_counter()
                job = client.submit(jpeg, params, routing={"chat_id": 2, "n": i})
                alone.append(_wait_done(redis, job)[0] - t0)
            rows = [one_clip(redis, client, data, clip, limits, params, jpeg, photos=False) for _ in range(runs)]
            busy = one_clip(redis, client, data, clip, limits, params, jpeg, photos=True)
        finally:
            stop_workers(procs)
            redis.close()
    best = min(rows, key=lambda r: r["wall_s"])
    for row in (*rows, busy):
        print(f"  queue ({workers} worker(s), {threads} thread(s) each){' with photos' if row['photos'] else ''}: "
              f"answered in {row['wall_s']:.2f} s = {row['wall_s'] / seconds:.2f}× the clip's length, "
              f"{row['fps']:.1f} frames/s" + (f"; {row['photos']} photos of other chats meanwhile: median "
                                              f"{row['photo_median_s']:.2f} s, max {row['photo_max_s']:.2f} s"
                                              if row["photos"] else ""), flush=True)
    return {**best, "ratio": best["wall_s"] / seconds, "workers": workers, "threads": threads,
            "photo_alone_s": sorted(alone[1:])[len(alone[1:]) // 2], "with_photos": busy}


def one_clip(redis: Any, client: Any, data: bytes, clip: Any, limits: Any, params: Any, jpeg: bytes,
             photos: bool) -> dict[str, Any]:
    """The clip submitted as the bot does and timed to its completion; with ``photos``, another chat sends a
    photo every PHOTO_EVERY s meanwhile (at any point of a span, not only between two), each timed."""
    from jobs import store, video

    t0 = time.perf_counter()
    video_id = video.submit(client, data, clip, limits, params, {"chat_id": 1})
    waiting: dict[str, float] = {}
    latencies: list[float] = []
    next_photo, done = t0, None
    while done is None:
        now = time.perf_counter()
        if photos and now >= next_photo:
            chat = 3 + len(latencies) + len(waiting)
            waiting[client.submit(jpeg, params, routing={"chat_id": chat})] = now
            next_photo = now + PHOTO_EVERY
        for job, at in list(waiting.items()):
            if store.read_completion(redis, job, image=False) is not None:
                latencies.append(time.perf_counter() - at)
                del waiting[job]
        done = store.read_completion(redis, video_id, image=False)
        time.sleep(0.005)
    wall = time.perf_counter() - t0
    latencies += [_wait_done(redis, job)[0] - at for job, at in waiting.items()]
    if not done.ok:
        raise SystemExit(f"detbot bench video: the clip failed: {done.code} {done.message}")
    latencies.sort()
    return {"wall_s": wall, "fps": len(clip.times) / wall, "photos": len(latencies),
            "photo_median_s": latencies[len(latencies) // 2] if latencies else 0.0,
            "photo_max_s": latencies[-1] if latencies else 0.0}


def main(argv: list[str] | None = None) -> int:
    import cv2

    from detector.clip import annotate_clip, run_span, tracker_at
    from detector.engines import choose_precision, cpu_summary
    from detector.model import Detector
    from detector.params import DetectParams
    from detector.settings import DetectorSettings
    from detector.video import VideoLimits, plan, probe
    from ops.bench import _default_image

    args = _parse(argv if argv is not None else sys.argv[1:])
    width, height = (int(v) for v in args.size.lower().split("x"))
    settings = DetectorSettings()
    if args.model:
        settings = settings.model_copy(update={"model": args.model})
    detector = Detector.from_settings(settings)
    detector.warmup()
    photo_path = args.photo or _default_image()
    photo: Any = cv2.imread(str(photo_path))
    if photo is None:
        print(f"detbot bench video: cannot read {photo_path}", file=sys.stderr)
        return 2
    data = panning_clip(photo, args.seconds, 30.0, (width, height))
    limits = VideoLimits(sample_fps=args.fps)
    params = DetectParams(0.25)
    precision = choose_precision(settings.precision)
    print(f"model: {settings.model}; CPU: {cpu_summary()}; {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}\n"
          f"OpenVINO precision: {precision.name} ({precision.reason})\n"
          f"clip: {args.seconds:g} s, {width}×{height} at 30 fps over {photo_path.name}, {len(data) / 1e6:.1f} MB; "
          f"sampled at {args.fps:g} fps", flush=True)
    best: dict[str, Any] = {}
    for run in range(args.runs):
        started = time.perf_counter()
        clip, summary, answer, times = annotate_clip(detector, data, params, limits)
        wall = time.perf_counter() - started
        frames = len(clip.times)
        row = {"run": run + 1, "wall_s": wall, "frames": frames, "fps": frames / wall, "ratio": wall / args.seconds,
               "answer_mb": len(answer) / 1e6, "answer_size": list(clip.size), "tracks": len(summary.tracks),
               "counts": summary.counts(), **{k: v / frames for k, v in asdict(times).items()}}
        print(f"  run {run + 1}: {frames} frames in {wall:.2f} s = {row['fps']:.1f} frames/s, "
              f"{row['ratio']:.2f}× the clip's length; per frame: " +
              ", ".join(f"{k.removesuffix('_ms')} {v / frames:.1f} ms" for k, v in asdict(times).items()) +
              f"; answer {row['answer_mb']:.2f} MB {clip.size[0]}×{clip.size[1]}, {len(summary.tracks)} tracks "
              f"{summary.counts()}", flush=True)
        if not best or wall < best["wall_s"]:
            best = row
    # One span (what a worker holds at a time) against one photo (the same photo, as a JPEG).
    clip = plan(probe(data, limits), limits)
    count = clip.spans()[0][1]
    span_s = []
    for _ in range(3):
        tracker = tracker_at(clip, params, 0, [])
        t0 = time.perf_counter()
        run_span(detector, data, clip, limits, 0, count, params, tracker)
        span_s.append(time.perf_counter() - t0)
    jpeg = cv2.imencode(".jpg", photo)[1].tobytes()
    photo_s = []
    for _ in range(5):
        t0 = time.perf_counter()
        detector.detect_annotated(jpeg, params)
        photo_s.append(time.perf_counter() - t0)
    span, one_photo = min(span_s), min(photo_s)
    verdict = "met" if best["ratio"] <= TARGET_RATIO else "NOT met"
    print(f"best: {best['fps']:.1f} frames/s; the {args.seconds:g} s clip answered in {best['wall_s']:.1f} s = "
          f"{best['ratio']:.2f}× its length (target ≤ {TARGET_RATIO}×: {verdict})\n"
          f"one span ({count} frames): {span * 1e3:.0f} ms; one photo ({photo.shape[1]}×{photo.shape[0]} JPEG): "
          f"{one_photo * 1e3:.0f} ms — a span holds a worker {span / one_photo:.1f}× as long as a photo")
    queued: dict[str, Any] = {}
    if args.queue > 0:
        queued = queue_runs(str(settings.model), data, jpeg, limits, params, args.queue, args.runs, args.seconds)
        verdict = "met" if queued["ratio"] <= TARGET_RATIO else "NOT met"
        print(f"through the queue ({args.queue} worker(s)): best {queued['wall_s']:.1f} s = {queued['ratio']:.2f}× "
              f"the clip's length ({verdict}), {queued['fps']:.1f} frames/s; another chat's photo: "
              f"{queued['photo_alone_s']:.2f} s (median) on idle workers; while the clip is worked on, median "
              f"{queued['with_photos']['photo_median_s']:.2f} s, max {queued['with_photos']['photo_max_s']:.2f} s; "
              f"load {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"best": best, "span_ms": span * 1e3, "photo_ms": one_photo * 1e3,
                                         "queue": queued, "cpu": cpu_summary(), "precision": precision.name,
                                         "load": os.getloadavg()[0]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
