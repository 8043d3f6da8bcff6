"""``detbot bench``: speed and memory of every inference backend against plain ultralytics, in one run.

For each backend (and the baseline, ``YOLO(weights).predict(image)`` then ``.plot()`` then JPEG encoding):
model load + export time with an empty cache, first answer after a worker starts with a warm cache,
per-image latency p50/p95 of decode → detect → annotate → encode, images per second with one worker and
with one worker per core (separate processes, as ``detbot worker`` runs), and peak RSS per worker. Every
figure is also given as a ratio against the baseline. Prints a table and writes JSON.

Offline by design: without real weights the COCO-sized model is built from its architecture
(``yolo26n.yaml``, random weights, 80 classes); speed does not depend on the weights' values.
``--accuracy`` checks, on the shapes test model, that every backend finds what PyTorch finds.

``detbot bench queue ...`` measures the queue instead (see ``ops.bench_queue``), ``detbot bench accuracy
--model M --data DATASET.yaml`` mAP50 and mAP50-95 per backend on a dataset (see ``ops.accuracy``; masks and
keypoints too), ``detbot bench tasks`` a segmentation and a pose answer against a detection answer (see
``ops.bench_tasks``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import random
import resource
import select
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

# A worker that has not answered its first image after this long (an export of a large model on a slow
# CPU included) is broken, not slow.
CHILD_START_TIMEOUT = 900.0
# The timed images of one worker: a few seconds each on a CPU; far beyond that something hangs.
CHILD_RUN_TIMEOUT = 900.0
# Images timed per worker: enough for a stable p95 on a busy 2-core machine, short enough to run often.
DEFAULT_RUNS = 30
# The many-worker run is timed in this many blocks, alternating between the variants.
WARM_BLOCKS = 5
# Seed of the random COCO-sized model: the same architecture and weights in every bench run.
RANDOM_MODEL_SEED = 0
BASELINE = "baseline"
# Label prefix of a backend's floor row (ops.floor): decode + the engine alone + encode.
FLOOR = "floor"
# The photos of ``--images`` are shuffled with this seed unless ``--in-order``: the same stream every run.
SHUFFLE_SEED = 0
ALL_BACKENDS = ("torch", "onnx", "openvino")
# What ``--images FOLDER`` times: the photo formats people send.
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
# ``detbot bench NAME ...``: the benchmarks with their own arguments, imported only when asked for.
SUBBENCHES = {"queue": "ops.bench_queue", "accuracy": "ops.accuracy", "tasks": "ops.bench_tasks",
              "video": "ops.bench_video"}


# --- the child: one worker process ---------------------------------------------------------------------


@dataclass
class ChildSpec:
    backend: str
    weights: str
    image: str
    runs: int
    imgsz: int | None
    export_dir: str
    threads: int
    int8: bool = False
    int8_data: str | None = None
    spawned_at: float = 0.0
    precision: str = "auto"
    # The photos' order: shuffled with this seed (every variant the same sequence), or None: by name.
    seed: int | None = None
    # The engine's floor for this backend (ops.floor) instead of detbot's whole path.
    floor: bool = False
    # Told apart by their precision when one run times several (``--precision bf16,f32``).
    tagged: bool = False
    # The variant's own name (several models in one run, ``detbot bench tasks``); default: from the backend.
    name: str = ""

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        name = f"{self.backend}-int8" if self.int8 else self.backend
        name += f"-{self.precision}" if self.tagged else ""
        return f"{FLOOR}-{name}" if self.floor else name


def _baseline_runner(spec: ChildSpec) -> Any:
    """Plain ultralytics, as its docs show it: predict, plot, encode. Its own thread defaults."""
    import cv2
    import numpy as np

    from detector.runtime import disable_analytics, quiet_ultralytics

    quiet_ultralytics()  # offline and silent; changes nothing about speed
    from ultralytics import YOLO

    disable_analytics()
    model: Any = YOLO(spec.weights)
    kwargs: dict[str, Any] = {"device": "cpu", "verbose": False}
    if spec.imgsz:
        kwargs["imgsz"] = spec.imgsz

    def run(data: bytes, waiting: int) -> dict[str, float]:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        result = model.predict(image, **kwargs)[0]
        ok, _ = cv2.imencode(".jpg", result.plot())
        assert ok
        return {}

    return run, {}, None


def _detbot_runner(spec: ChildSpec) -> Any:
    from detector.model import Detector
    from detector.params import DetectParams
    from detector.render import boxes_to_rows
    from detector.runtime import configure_threads
    from jobs.defaults import DETECTION_FLOOR

    configure_threads(spec.threads)
    detector = Detector(
        spec.weights, device="cpu", imgsz=spec.imgsz, backend=spec.backend, threads=spec.threads,
        export_dir=spec.export_dir, int8=spec.int8, int8_data=spec.int8_data, precision=spec.precision,
    )
    params = DetectParams()

    def run(data: bytes, waiting: int) -> dict[str, float]:
        # What detbot worker does with a photo (jobs.tasks): every box down to the floor (outlines, keypoints),
        # the answer drawn, the result to store serialised.
        det, jpeg, kept = detector.detect_adjustable(data, params, DETECTION_FLOOR, waiting=waiting)
        stored = json.dumps({**det.to_dict(), "candidates": boxes_to_rows(kept), "floor": DETECTION_FLOOR},
                            separators=(",", ":"))  # as the result and the answer are kept in Redis
        t = det.timings
        return {"decode_ms": t.decode_ms, "inference_ms": t.inference_ms, "annotate_ms": t.annotate_ms,
                "objects": len(kept), "stored_bytes": len(stored), "jpeg_bytes": len(jpeg)}

    export = detector.export
    info = {
        "backend": detector.backend,
        "export_s": round(export.seconds, 3) if export else None,
        "export_reused": export.reused if export else None,
        "precision": detector.precision.name if detector.backend == "openvino" else "f32",
        "precision_reason": detector.precision.reason,
    }
    # Timed photos start once every input shape is compiled (the first answer above did not wait for it).
    return run, info, detector.prepared.wait


def _peak_rss_mb() -> float:
    """Peak RSS of this process. VmHWM, not ru_maxrss: Linux carries ru_maxrss over ``exec`` from the
    parent, so every worker would report at least the bench's own peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def photos(source: Path, seed: int | None = None) -> list[Path]:
    """The photo itself, or every photo of a folder: in name order, or shuffled with ``seed`` (a varied
    stream, as people send them; every variant sees the same sequence)."""
    if not source.is_dir():
        return [source]
    found = sorted(p for p in source.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    if seed is not None:
        random.Random(seed).shuffle(found)
    return found


def _runner(spec: ChildSpec, datas: list[bytes]) -> Any:
    if spec.floor:
        from ops.floor import floor_runner

        run, info = floor_runner(spec.backend, spec.weights, spec.imgsz, spec.export_dir, spec.threads, spec.int8,
                                 spec.int8_data, spec.precision, datas)
        return run, info, None
    return _baseline_runner(spec) if spec.backend == BASELINE else _detbot_runner(spec)


def child_main(spec: ChildSpec) -> None:
    """Load and answer one image, say READY; then ``RUN n`` times n images (DONE), anything else ends (RESULT).
    With a folder, the images are its photos in turn, continuing across blocks."""
    datas = [p.read_bytes() for p in photos(Path(spec.image), spec.seed)]
    t0 = time.perf_counter()
    run, info, settled = _runner(spec, datas)
    run(datas[0], 0)
    ready = {**info, "load_s": time.perf_counter() - t0, "first_answer_s": time.time() - spec.spawned_at}
    print("READY " + json.dumps(ready), flush=True)
    if settled is not None:
        settled()
    served = 0
    for line in sys.stdin:
        command = line.split()
        if len(command) != 2 or command[0] != "RUN":
            break
        latencies, stages = [], []
        start = time.time()
        count = int(command[1])
        for i in range(count):
            data = datas[served % len(datas)]
            served += 1
            t = time.perf_counter()
            stages.append(run(data, count - 1 - i))  # the rest of the block waits behind this image
            latencies.append((time.perf_counter() - t) * 1e3)
        block = {"latencies_ms": latencies, "stages": stages, "start": start, "end": time.time()}
        print("DONE " + json.dumps(block), flush=True)
    print("RESULT " + json.dumps({"peak_rss_mb": _peak_rss_mb()}), flush=True)


# --- the parent: spawning workers and reading their results -------------------------------------------


class BenchError(Exception):
    """A worker process failed; the message is one line."""


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("YOLO_OFFLINE", "1")
    return env


class Worker:
    """One worker process of the bench, driven over its stdin/stdout."""

    def __init__(self, spec: ChildSpec, log: Path) -> None:
        self.label, self.log = spec.label, log
        spec.spawned_at = time.time()
        self._err = log.open("wb")
        cmd = [sys.executable, "-m", "ops.bench", "--child", json.dumps(asdict(spec))]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
                                     env=_child_env())
        self._buf = bytearray()
        self.ready: dict[str, Any] = {}

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def read(self, tag: str, timeout: float) -> dict[str, Any]:
        """The JSON after the first stdout line starting with ``tag``; other lines (library noise) skipped."""
        assert self.proc.stdout is not None
        prefix, deadline = tag.encode() + b" ", time.monotonic() + timeout
        while True:
            while b"\n" in self._buf:
                line, _, rest = bytes(self._buf).partition(b"\n")
                self._buf[:] = rest
                if line.startswith(prefix):
                    result: dict[str, Any] = json.loads(line[len(prefix):])
                    return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"{self.label}: worker gave no {tag} in {timeout:.0f} s")
            if select.select([self.proc.stdout], [], [], remaining)[0]:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise BenchError(f"{self.label}: worker exited before {tag}: {_last_line(self.log)}")
                self._buf += chunk

    def finish(self) -> dict[str, Any]:
        self.send("EXIT")
        return self.read("RESULT", CHILD_RUN_TIMEOUT)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._err.close()


def start_pool(spec: ChildSpec, count: int, log_dir: Path) -> list[Worker]:
    """``count`` workers started at once, each loaded and past its first answer."""
    pool = [Worker(spec, log_dir / f"{spec.label}-{count}w-{i}.log") for i in range(count)]
    try:
        for worker in pool:
            worker.ready = worker.read("READY", CHILD_START_TIMEOUT)
    except BaseException:
        close_all(pool)
        raise
    return pool


def close_all(workers: list[Worker]) -> None:
    for worker in workers:
        worker.close()


@dataclass
class Block:
    """What a pool did in one timed block: every image's latency and stages, and the wall-clock span."""

    latencies_ms: list[float]
    stages: list[dict[str, float]]
    span_s: float


def run_block(pool: list[Worker], images: int) -> Block:
    """Every worker of the pool times ``images`` images, all at once."""
    for worker in pool:
        worker.send(f"RUN {images}")
    done = [worker.read("DONE", CHILD_RUN_TIMEOUT) for worker in pool]
    span = max(d["end"] for d in done) - min(d["start"] for d in done)
    return Block([x for d in done for x in d["latencies_ms"]], [x for d in done for x in d["stages"]], span)


def _last_line(path: Path) -> str:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()] if path.exists() else []
    return lines[-1][:300] if lines else "no output"


# --- figures -------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass
class Row:
    name: str
    backend: str = ""
    load_cold_s: float = 0.0
    export_s: float | None = None
    first_answer_warm_s: float = 0.0
    # Process start to the first annotated JPEG on an empty export cache (the export included).
    first_answer_cold_s: float = 0.0
    precision: str = ""
    mean_ms: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    # Latency while every worker of the many-worker run is busy: each photo on its worker's own core.
    p50_busy_ms: float = 0.0
    stages_ms: dict[str, float] = field(default_factory=dict)
    ips_1: float = 0.0
    ips_n: float = 0.0
    rss_mb: float = 0.0
    rss_cold_mb: float = 0.0
    ratios: dict[str, float] = field(default_factory=dict)


def measure_cold(specs: list[ChildSpec], runs: int, log_dir: Path) -> dict[str, Row]:
    """One worker per variant, each started with an empty cache (load + export timed); then latency,
    one image per variant in turn, so a busy moment of the machine hits every variant alike."""
    workers: list[Worker] = []
    try:
        for spec in specs:
            cache = "export cache given" if Path(spec.export_dir).exists() else "empty cache"
            print(f"  loading {spec.label} ({cache}) ...", flush=True)
            workers += start_pool(spec, 1, log_dir)
        blocks: dict[str, list[Block]] = {w.label: [] for w in workers}
        for i in range(runs):
            # Each round starts one variant later: every variant follows every other equally often (a
            # runtime's threads may still spin for a moment after its photo, slowing whoever comes next).
            for worker in workers[i % len(workers):] + workers[:i % len(workers)]:
                blocks[worker.label].append(run_block([worker], 1))
        rows = {}
        for worker in workers:
            lat = [x for b in blocks[worker.label] for x in b.latencies_ms]
            stages = [x for b in blocks[worker.label] for x in b.stages]
            rows[worker.label] = Row(
                name=worker.label,
                backend=worker.ready.get("backend", worker.label),
                load_cold_s=worker.ready["load_s"],
                first_answer_cold_s=worker.ready["first_answer_s"],
                export_s=worker.ready.get("export_s"),
                precision=worker.ready.get("precision", ""),
                mean_ms=statistics.fmean(lat),
                p50_ms=statistics.median(lat),
                p95_ms=percentile(lat, 0.95),
                stages_ms={k: statistics.median(s[k] for s in stages) for k in (stages[0] if stages else {})},
                ips_1=len(lat) / (sum(lat) / 1e3),
                rss_cold_mb=worker.finish()["peak_rss_mb"],
            )
        return rows
    finally:
        close_all(workers)


def measure_warm(specs: list[ChildSpec], rows: dict[str, Row], count: int, runs: int, log_dir: Path) -> None:
    """``count`` workers per variant started together on the warm cache (first answer, RSS); throughput
    in blocks that alternate between the variants."""
    pools: dict[str, list[Worker]] = {}
    try:
        for spec in specs:
            print(f"  starting {count} × {spec.label} (warm cache) ...", flush=True)
            # A floor's engine runs on the threads a detbot worker's photo runs on: one each when all are busy.
            busy = replace(spec, threads=1) if spec.floor and count > 1 else spec
            pools[spec.label] = start_pool(busy, count, log_dir)
            rows[spec.label].first_answer_warm_s = max(w.ready["first_answer_s"] for w in pools[spec.label])
        per_block = max(1, -(-runs // WARM_BLOCKS))
        latencies: dict[str, list[float]] = {label: [] for label in pools}
        spans = dict.fromkeys(pools, 0.0)
        order = list(pools.items())
        for i in range(WARM_BLOCKS):
            for label, pool in order[i % len(order):] + order[:i % len(order)]:
                block = run_block(pool, per_block)
                latencies[label] += block.latencies_ms
                spans[label] += block.span_s
        for label, pool in pools.items():
            rows[label].ips_n = len(latencies[label]) / spans[label] if spans[label] else 0.0
            rows[label].p50_busy_ms = statistics.median(latencies[label]) if latencies[label] else 0.0
            rows[label].rss_mb = max(w.finish()["peak_rss_mb"] for w in pool)
    finally:
        for pool in pools.values():
            close_all(pool)


def add_ratios(rows: list[Row]) -> None:
    """Speed-up against the baseline: >1 is better (time ratios inverted so every ratio reads the same);
    and each detbot variant's cost against its engine's floor: >1 is what detbot adds (1.00× is the floor)."""
    by_name = {r.name: r for r in rows}
    for r in rows:
        floor = by_name.get(f"{FLOOR}-{r.name}")
        if floor is not None and floor.mean_ms and r.ips_n:
            r.ratios.update({
                "floor_mean": r.mean_ms / floor.mean_ms,
                "floor_p50": r.p50_ms / floor.p50_ms,
                "floor_ips_n": floor.ips_n / r.ips_n,
            })
    base = by_name.get(BASELINE)
    if base is None:
        return
    for r in rows:
        r.ratios |= {
            "p50": base.p50_ms / r.p50_ms if r.p50_ms else 0.0,
            "p95": base.p95_ms / r.p95_ms if r.p95_ms else 0.0,
            "p50_busy": base.p50_busy_ms / r.p50_busy_ms if r.p50_busy_ms else 0.0,
            "ips_1": r.ips_1 / base.ips_1 if base.ips_1 else 0.0,
            "ips_n": r.ips_n / base.ips_n if base.ips_n else 0.0,
            "load": base.load_cold_s / r.load_cold_s if r.load_cold_s else 0.0,
            "rss": r.rss_mb / base.rss_mb if base.rss_mb else 0.0,
        }


def table(rows: list[Row], workers: int) -> str:
    head = (
        f"| backend | load+export s (cold) | first answer s (cold) | first answer s (warm) | p50 ms | p95 ms "
        f"| ×baseline p50 "
        f"| p50 ms, {workers} busy | ×baseline busy | img/s 1 worker | img/s {workers} workers | ×baseline {workers}w "
        f"| peak RSS MB/worker |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if r.name.startswith(FLOOR):
            continue
        name = r.name if r.name.startswith(r.backend) or r.name == BASELINE else f"{r.name} (→{r.backend})"
        name += f", {r.precision}" if r.precision else ""
        lines.append(
            f"| {name} | {r.load_cold_s:.1f} | {r.first_answer_cold_s:.1f} | {r.first_answer_warm_s:.1f} "
            f"| {r.p50_ms:.1f} | {r.p95_ms:.1f} "
            f"| {r.ratios.get('p50', 0):.2f}× | {r.p50_busy_ms:.1f} | {r.ratios.get('p50_busy', 0):.2f}× "
            f"| {r.ips_1:.1f} | {r.ips_n:.1f} | {r.ratios.get('ips_n', 0):.2f}× "
            f"| {r.rss_mb:.0f} |"
        )
    return "\n".join(lines)


def floor_table(rows: list[Row], workers: int) -> str:
    """Each detbot variant beside its engine's floor measured in the same run (ops.floor): cost per photo
    (mean and p50 over the stream, one worker alone) and img/s with every worker busy."""
    by_name = {r.name: r for r in rows}
    head = (f"| backend | floor ms/photo (mean, p50) | detbot ms/photo (mean, p50) | ×floor (mean, p50) "
            f"| floor img/s {workers}w | detbot img/s {workers}w | ×floor {workers}w |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        floor = by_name.get(f"{FLOOR}-{r.name}")
        if floor is None or not r.ratios.get("floor_mean"):
            continue
        lines.append(
            f"| {r.name}, {r.precision} | {floor.mean_ms:.1f}, {floor.p50_ms:.1f} | {r.mean_ms:.1f}, {r.p50_ms:.1f} "
            f"| {r.ratios['floor_mean']:.2f}×, {r.ratios['floor_p50']:.2f}× | {floor.ips_n:.1f} | {r.ips_n:.1f} "
            f"| {r.ratios['floor_ips_n']:.2f}× |"
        )
    return "\n".join(lines)


# --- the model under test ------------------------------------------------------------------------------


def random_coco_model(out: Path) -> Path:
    """YOLO26n's architecture with seeded random weights (80 classes), saved as a .pt: no download needed."""
    from detector.runtime import disable_analytics, quiet_ultralytics

    quiet_ultralytics()
    import torch
    from ultralytics import YOLO

    disable_analytics()
    torch.manual_seed(RANDOM_MODEL_SEED)
    path = out / "yolo26n-random.pt"
    YOLO("yolo26n.yaml").save(str(path))
    return path


def resolve_model(requested: str | None, work: Path) -> tuple[Path, str]:
    """The weights to time and how they were found: given, on disk, or built from the architecture."""
    if requested:
        path = Path(requested)
        if not path.is_file():
            raise BenchError(f"no weights at {requested}")
        return path, "given"
    for candidate in (Path("yolo26n.pt"), Path.home() / ".config" / "Ultralytics" / "weights" / "yolo26n.pt"):
        if candidate.is_file():
            return candidate, "yolo26n.pt on disk"
    return random_coco_model(work), "yolo26n.yaml architecture, random weights (no yolo26n.pt on disk)"


# --- the command ---------------------------------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="detbot bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="weights to time (default: yolo26n.pt if on disk, else yolo26n.yaml)")
    parser.add_argument("--imgsz", type=int, default=640, help="inference size (default 640)")
    parser.add_argument("--backends", default=",".join(ALL_BACKENDS),
                        help="comma-separated, from torch,onnx,openvino,auto (default: all three)")
    photo = parser.add_mutually_exclusive_group()
    photo.add_argument("--image", type=Path, help="photo to time (default: ultralytics' bus.jpg)")
    photo.add_argument("--images", type=Path, metavar="FOLDER",
                       help="time every photo of this folder in turn (per-image p50/p95 over all of them)")
    parser.add_argument("--runs", type=int,
                        help=f"timed images per worker (default {DEFAULT_RUNS}; with --images, the folder's count)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="workers for the many-worker run")
    parser.add_argument("--json", type=Path, default=Path("detbot-bench.json"), help="where to write the results")
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain-ultralytics baseline")
    parser.add_argument("--accuracy", type=Path, nargs="?", const=Path("tests/assets/shapes.pt"),
                        help="also check agreement across backends and mAP50 on this model (default: shapes.pt)")
    parser.add_argument("--int8", action="store_true",
                        help="also time (and with --accuracy, score) an INT8 OpenVINO export; needs nncf")
    parser.add_argument("--int8-data", metavar="DATASET.yaml",
                        help="INT8 calibration images (default: the shapes training images, for the shapes model)")
    parser.add_argument("--in-order", action="store_true",
                        help="take the folder's photos in name order (default: shuffled, the same order every run)")
    parser.add_argument("--precision", default="auto",
                        help="OpenVINO's precision, or several comma-separated (auto, bf16, f32; default auto: "
                             "bf16 on CPUs with AMX or AVX512_BF16, else f32)")
    parser.add_argument("--export-dir", type=Path,
                        help="reuse this export cache (an INT8 calibration takes minutes) instead of empty ones; "
                             "the load column then times loading, not exporting")
    return parser.parse_args(argv)


def _default_image() -> Path:
    """ultralytics' bus.jpg, found without importing ultralytics (and torch) into the bench process."""
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        raise BenchError("ultralytics is not installed; pass --image")
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "bus.jpg"


def _specs(args: argparse.Namespace, backends: list[str], weights: Path, image: Path, work: Path,
           calibration: str | None) -> list[ChildSpec]:
    """One worker spec per variant: the baseline (unless skipped), each backend, INT8 when calibrated; each
    detbot variant followed by its engine's floor (ops.floor), which shares its export cache."""
    from detector.cores import usable_cores
    from detector.engines import resolve_backend

    precisions = [p.strip() for p in args.precision.split(",") if p.strip()] or ["auto"]
    variants = [(b, False, precisions[0]) for b in ([] if args.no_baseline else [BASELINE]) + backends]
    variants += [("openvino", False, p) for p in precisions[1:] if "openvino" in backends]
    variants += [("openvino", True, precisions[0])] if calibration else []
    seed = None if args.in_order else SHUFFLE_SEED
    specs = []
    for backend, int8, precision in variants:
        spec = ChildSpec(backend, str(weights), str(image), args.runs, args.imgsz, "", threads=1, int8=int8,
                         int8_data=calibration, precision=precision, seed=seed,
                         tagged=len(precisions) > 1 and backend == "openvino")
        # Empty unless given: the first worker exports, the rest reuse.
        spec.export_dir = str(args.export_dir or work / f"cache-{spec.label}")
        specs.append(spec)
        if backend != BASELINE:
            engine = resolve_backend(backend, "cpu")
            # A lone photo runs on every core (PyTorch: all but one, detector.engines.wide_threads).
            lone = max(1, usable_cores() - 1) if engine == "torch" else usable_cores()
            specs.append(replace(spec, backend=engine, floor=True, threads=lone))
    return specs


def auto_choice(rows: list[Row], precision: str) -> str:
    """One line: what ``DETBOT_BACKEND=auto`` runs on this CPU, at which precision and why, and why not INT8,
    from this run's figures."""
    from detector.engines import resolve_backend

    picked = resolve_backend("auto", "cpu")
    line = f"auto picks: {picked}" + (f" in {precision}" if picked == "openvino" else "")
    detbot = [r for r in rows if r.name.startswith("openvino") and not r.name.startswith(FLOOR)]
    fp = next((r for r in detbot if "int8" not in r.name), None)
    q = next((r for r in detbot if "int8" in r.name), None)
    if fp is None or q is None or not q.p50_ms or not fp.ips_n:
        return line + "; never INT8 on its own (opt-in: DETBOT_INT8=true with DETBOT_INT8_DATA)"
    speed, throughput = fp.p50_ms / q.p50_ms, q.ips_n / fp.ips_n
    verdict = "slower" if min(speed, throughput) < 1 else "faster here, yet still opt-in"
    return (f"{line}; not INT8: it ran at {speed:.2f}× the speed of {fp.name} per photo (p50) and "
            f"{throughput:.2f}× its img/s with every worker busy — {verdict} (INT8 also has to stay within "
            f"1 mAP50-95 point: detbot bench accuracy)")


def _setup(args: argparse.Namespace, work: Path) -> tuple[Path, str, Path, str | None]:
    """The weights (and how they were found), the photo or folder, the INT8 calibration data if asked."""
    weights, source = resolve_model(args.model, work)
    image = args.images or args.image or _default_image()
    if args.images and not photos(args.images):
        raise BenchError(f"no photos ({', '.join(PHOTO_SUFFIXES)}) in {args.images}")
    if args.runs is None:
        args.runs = len(photos(args.images)) if args.images else DEFAULT_RUNS
    calibration = None
    if args.int8:
        from ops.agreement import calibration_data

        calibration = args.int8_data or calibration_data(work)
    return weights, source, image, calibration


def run_bench(args: argparse.Namespace) -> int:
    from detector.engines import choose_precision, cpu_summary

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in (*ALL_BACKENDS, "auto")]
    if unknown:
        print(f"detbot bench: unknown backend {', '.join(unknown)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="detbot-bench-") as tmp:
        work = Path(tmp)
        weights, source, image, calibration = _setup(args, work)
        what = f"{len(photos(image))} photos of {image}" if image.is_dir() else f"image {image.name}"
        order = ", in name order" if args.in_order else ", shuffled"
        timed = [choose_precision(p.strip()) for p in args.precision.split(",") if p.strip()]
        precision = timed[0]
        print(f"model: {weights.name} ({source}), imgsz {args.imgsz}, {what}{order if image.is_dir() else ''}\n"
              f"CPU: {cpu_summary()}; load {os.getloadavg()[0]:.2f}\n"
              f"OpenVINO precision: {', '.join(f'{p.name} ({p.reason})' for p in timed)}\n"
              f"{args.runs} images per worker, {args.workers} workers", flush=True)
        specs = _specs(args, backends, weights, image, work, calibration)
        by_label = measure_cold(specs, args.runs, work)
        measure_warm(specs, by_label, args.workers, args.runs, work)
        rows = list(by_label.values())
        add_ratios(rows)
        auto = choose_precision("auto")
        choice = auto_choice(rows, f"{auto.name} ({auto.reason})")
        report: dict[str, Any] = {
            "model": weights.name, "model_source": source, "imgsz": args.imgsz, "image": str(image),
            "order": "name" if args.in_order else f"shuffled (seed {SHUFFLE_SEED})", "cpu": cpu_summary(),
            "cpus": os.cpu_count(), "load_after": os.getloadavg()[0], "runs": args.runs, "workers": args.workers,
            "precision": asdict(precision), "auto": choice, "rows": [asdict(r) for r in rows],
        }
        if args.accuracy:
            from ops.agreement import accuracy

            print(f"  accuracy on {args.accuracy} ...", flush=True)
            report["accuracy"] = accuracy(args.accuracy, work, backends, calibration)
    print(table(rows, args.workers))
    print(floor_table(rows, args.workers))
    print(choice)
    print(f"load after: {report['load_after']:.2f}")
    if "accuracy" in report:
        print("accuracy (shapes model):", json.dumps(report["accuracy"]))
    args.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBBENCHES:
        try:
            sub = importlib.import_module(SUBBENCHES[argv[0]])
        except ImportError:
            print(f"detbot bench: the {argv[0]} benchmark is not available in this installation.", file=sys.stderr)
            return 2
        return int(sub.main(argv[1:]) or 0)
    if argv and argv[0] == "--child":
        child_main(ChildSpec(**json.loads(argv[1])))
        return 0
    try:
        return run_bench(_parse(argv))
    except BenchError as exc:
        print(f"detbot bench: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
