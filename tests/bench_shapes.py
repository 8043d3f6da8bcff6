"""How OpenVINO should meet photos of many shapes: the measurement behind detbot's canvases.

Run: ``python -m tests.bench_shapes --images coco128/images/train2017 [--model yolo11n.pt] [--threads 1]``
(not collected by pytest). Each strategy runs in a process of its own (its RSS is its own), all started
first, then driven in turn a few photos at a time over the same shuffled stream, so a busy moment of the
machine hits them alike. Per strategy: start-up (compiles and warm-up), RSS after start-up and after the
stream, the cost per photo (letterbox + inference: mean, p50, p95), and the stream's mean cost in a shuffled
order against the same photos grouped by shape, in alternate blocks (a strategy that stalls on shape
changes pays in the first).

Strategies:
- ``lru8``: before — each new shape compiled static when first seen, 8 kept (3 compiled at start);
- ``dynamic``: the dynamic-shape model, run once at every shape a letterbox can give during start-up;
- ``static-all``: a static model for every one of those shapes (39 at 640), compiled at start-up;
- ``canvases``: detbot — static models for the square and the common aspects (7 at 640), each photo padded
  into the smallest that holds it;
- ``canvases-5``: the same without 16:9 (5 shapes).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

STRATEGIES = ("lru8", "dynamic", "static-all", "canvases", "canvases-5")
# Photos each strategy answers before the next strategy's turn.
BLOCK = 8
SEED = 0


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Strategy:
    """One way to run the OpenVINO export on letterboxed photos of any shape."""

    def __init__(self, name: str, xml: Path, threads: int, imgsz: int, stride: int) -> None:
        import openvino as ov

        from detector import engines, processing

        self.name, self.imgsz, self.stride = name, imgsz, stride
        self.core = ov.Core()
        self.model = engines._bgr_u8_model(self.core, xml)
        self.config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                       "ENABLE_CPU_PINNING": False,
                       "INFERENCE_PRECISION_HINT": engines.choose_precision("auto").name}
        self.requests: OrderedDict[tuple[int, int], Any] = OrderedDict()
        self.canvases: tuple[tuple[int, int], ...] | None = None
        every = processing.rect_shapes(imgsz, stride)
        if name == "lru8":
            side, short = imgsz, imgsz * 3 // 4
            for shape in ((side, side), (short, side), (side, short)):
                self.static(shape)
        elif name == "dynamic":
            self.dynamic = self.core.compile_model(self.model, "CPU", self.config).create_infer_request()
            for shape in every:
                self.dynamic.infer({0: self.blank(shape)})
        elif name == "static-all":
            for shape in every:
                self.static(shape)
        else:
            canvases = processing.canvases(imgsz, stride)
            self.canvases = canvases[:5] if name == "canvases-5" else canvases
            for shape in self.canvases:
                self.static(shape)

    @staticmethod
    def blank(shape: tuple[int, int]) -> Any:
        import numpy as np

        return np.full((1, *shape, 3), 114, np.uint8)

    def static(self, shape: tuple[int, int]) -> Any:
        model = self.model.clone()
        model.reshape({0: [1, *shape, 3]})
        request = self.core.compile_model(model, "CPU", self.config).create_infer_request()
        request.infer({0: self.blank(shape)})
        self.requests[shape] = request
        return request

    def __call__(self, image: Any) -> None:
        from detector import processing

        rect = processing.rect_shape(image.shape[0], image.shape[1], self.imgsz, self.stride)
        canvas = processing.cover(rect, self.canvases)
        fitted = processing.letterbox(image, self.imgsz, self.stride, canvas=canvas)[0][None]
        if self.name == "dynamic":
            self.dynamic.infer({0: fitted})
            return
        request = self.requests.get(canvas)
        if request is None:
            request = self.static(canvas)
            if self.name == "lru8" and len(self.requests) > 8:
                self.requests.popitem(last=False)
        self.requests.move_to_end(canvas)
        request.infer({0: fitted})


def child(name: str, xml: str, threads: int, imgsz: int, stride: int, folder: str) -> None:
    import cv2

    paths = sorted(Path(folder).glob("*.jpg"))
    images = [image for image in (cv2.imread(str(p)) for p in paths) if image is not None]
    random.Random(SEED).shuffle(images)
    grouped = sorted(images, key=lambda im: (im.shape[0] / im.shape[1]))
    t0 = time.perf_counter()
    run = Strategy(name, Path(xml), threads, imgsz, stride)
    print("READY " + json.dumps({"start_s": time.perf_counter() - t0, "rss_start_mb": rss_mb()}), flush=True)
    for line in sys.stdin:
        kind, first, count = line.split()
        stream = images if kind == "shuffled" else grouped
        times = []
        for image in stream[int(first):int(first) + int(count)]:
            t = time.perf_counter()
            run(image)
            times.append((time.perf_counter() - t) * 1e3)
        print("DONE " + json.dumps({"ms": times, "rss_mb": rss_mb()}), flush=True)


def read(proc: subprocess.Popen[str], tag: str) -> dict[str, Any]:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(tag + " "):
            result: dict[str, Any] = json.loads(line[len(tag) + 1:])
            return result
    raise RuntimeError(f"a strategy's process ended before {tag}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True, help="folder of JPEG photos (coco128's train2017)")
    parser.add_argument("--model", default="/work/shared/models/yolo11n.pt")
    parser.add_argument("--export-dir", help="export cache (default: detbot's own)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--passes", type=int, default=2, help="times through the stream, each way")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        name, xml, threads, imgsz, stride, folder = args.child
        child(name, xml, int(threads), int(imgsz), int(stride), folder)
        return 0

    from detector import export_cache

    cache = Path(args.export_dir) if args.export_dir else export_cache.default_export_dir()
    export = export_cache.ensure_export(export_cache.ExportSpec(Path(args.model), "openvino"), cache)
    count = len(list(Path(args.images).glob("*.jpg")))
    names = args.strategies.split(",")
    print(f"{count} photos, {args.threads} thread(s), {args.passes} passes each way, load {os.getloadavg()[0]:.2f}")
    procs, ready = {}, {}
    for name in names:  # one at a time: start-up times are not each other's
        cmd = [sys.executable, "-m", "tests.bench_shapes", "--images", args.images, "--child", name,
               str(export.path), str(args.threads), str(export.imgsz), str(export.stride), args.images]
        procs[name] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready[name] = read(procs[name], "READY")
    results: dict[str, dict[str, list[float]]] = {n: {"shuffled": [], "grouped": []} for n in names}
    rss: dict[str, float] = {}
    try:
        for _ in range(args.passes):
            for first in range(0, count, BLOCK):  # the two orders in alternate blocks: the same moments
                for kind in ("shuffled", "grouped"):
                    for name in names:
                        proc = procs[name]
                        assert proc.stdin is not None
                        proc.stdin.write(f"{kind} {first} {BLOCK}\n")
                        proc.stdin.flush()
                        done = read(proc, "DONE")
                        results[name][kind] += done["ms"]
                        rss[name] = done["rss_mb"]
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
    print("| strategy | start-up s | RSS MB after start-up | RSS MB after the stream | mean ms | p50 ms | p95 ms "
          "| max ms | shuffled ÷ grouped (mean) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        shuffled, grouped = results[name]["shuffled"], results[name]["grouped"]
        q = statistics.quantiles(shuffled, n=20)
        print(f"| {name} | {ready[name]['start_s']:.1f} | {ready[name]['rss_start_mb']:.0f} | {rss[name]:.0f} "
              f"| {statistics.fmean(shuffled):.1f} | {statistics.median(shuffled):.1f} | {q[18]:.1f} "
              f"| {max(shuffled):.0f} | {statistics.fmean(shuffled) / statistics.fmean(grouped):.2f} |")
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
