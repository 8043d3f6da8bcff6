"""Why a lone photo on PyTorch's all-cores path could be 5× slower than plain ultralytics: thread pools
under a busy core.

Run: ``python -m tests.bench_threads [--model W] [--image PHOTO] [--runs 20]`` (not collected by pytest).
Times one photo's inference (and plain ultralytics' whole predict), interleaved, on PyTorch with 1
thread, with every core (the old wide path, ``set_num_threads`` switched around each call) and with every
core fixed, and on OpenVINO with 1 thread and every core — first on the machine as it is, then with one
CPU-bound process (``while True: pass``, default priority) on the last core, as another program or the
export running beside a cold worker would be. Under ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``
PyTorch takes its AVX2 code paths on an AVX-512 CPU (add ``--precision f32``: OpenVINO has no bf16 then).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2

BURNER = "while True: pass"


def timings(variants: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """Median milliseconds per call, the variants interleaved (each one call per round)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for run in variants.values():  # first calls: lazy initialisation, not timed
        run()
    for _ in range(runs):
        for name, run in variants.items():
            t = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - t) * 1e3)
    return {name: statistics.median(v) for name, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="/work/shared/models/yolo11n.pt")
    parser.add_argument("--image", help="photo (default: ultralytics' bus.jpg)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--export-dir", help="export cache (default: detbot's own)")
    parser.add_argument("--precision", default="auto", help="OpenVINO's precision: auto, bf16, f32")
    args = parser.parse_args(argv)

    from detector import engines, export_cache
    from detector.model import load_yolo
    from detector.processing import letterbox
    from detector.runtime import configure_threads

    cores = os.cpu_count() or 1
    yolo = load_yolo(args.model)
    import torch
    from ultralytics.utils import ASSETS

    image = cv2.imread(str(args.image or ASSETS / "bus.jpg"))
    fitted = letterbox(image, 640, 32)[0]
    configure_threads(1)
    one = engines.TorchEngine(yolo, "cpu")
    switched = engines.WideTorchEngine(one, cores)
    cache = Path(args.export_dir) if args.export_dir else export_cache.default_export_dir()
    export = export_cache.ensure_export(export_cache.ExportSpec(Path(args.model), "openvino"), cache)
    shape = [fitted.shape[:2]]
    precision = engines.choose_precision(args.precision).name
    ov1 = engines.OpenVINOEngine(export.path, 1, shape, precision)
    ovn = engines.OpenVINOEngine(export.path, cores, shape, precision)

    from ultralytics.utils import NUM_THREADS

    def on_threads(threads: int, run: Callable[[], object]) -> Callable[[], object]:
        def call() -> object:
            torch.set_num_threads(threads)
            try:
                return run()
            finally:
                torch.set_num_threads(1)
        return call

    variants: dict[str, Callable[[], object]] = {
        f"ultralytics predict ({NUM_THREADS} thread{'s' if NUM_THREADS > 1 else ''}: its default here)":
            on_threads(NUM_THREADS, lambda: yolo.predict(image, device="cpu", verbose=False)),
        "torch 1 thread": lambda: one(fitted),
        f"torch {cores} threads, switched per call": lambda: switched(fitted),
        f"torch {cores} threads": on_threads(cores, lambda: one(fitted)),
        "openvino 1 thread": lambda: ov1(fitted),
        f"openvino {cores} threads": lambda: ovn(fitted),
    }
    print(f"{cores} cores, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
          f"OpenVINO {precision}, photo {fitted.shape[1]}×{fitted.shape[0]}, load {os.getloadavg()[0]:.2f}")
    quiet = timings(variants, args.runs)
    burner = subprocess.Popen([sys.executable, "-c", BURNER])
    try:
        os.sched_setaffinity(burner.pid, {cores - 1})
        busy = timings(variants, args.runs)
    finally:
        burner.kill()
        burner.wait()
    print("| inference, median ms | machine as it is | one core busy with another process |")
    print("|---|---|---|")
    for name in variants:
        print(f"| {name} | {quiet[name]:.1f} | {busy[name]:.1f} |")
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
