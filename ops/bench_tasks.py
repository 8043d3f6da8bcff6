"""``detbot bench tasks``: what a segmentation or pose answer costs against a detection answer of a same-size
model on the same photos — time per photo, objects, bytes kept per answer, RSS per worker.

Each task's model runs in a worker process of its own, as ``detbot worker`` runs it (``detect_adjustable``:
every object down to the floor, outlines or keypoints included, the answer drawn and encoded, and the stored
result serialised), on a warm export cache; the photos go one per task in turn, so a busy moment of the machine
hits every task alike, and the ratios come from one run. Beside each task's worker runs its *floor*
(:mod:`ops.floor`: decoding the photo, the engine alone on its input, encoding a JPEG — same runtime and
precision, on every core as a worker with idle neighbours infers): the floor's ratio is what an answer's ratio
would be if everything around the network cost nothing, so a ratio above the target that the floor shares is
the network's, not the pipeline's.

Models: the shapes test models by default (``tests/assets/shapes.pt``, ``shapes-seg.pt``, ``shapes-pose.pt``:
YOLO26n of each task, trained) on fresh shapes photos; or ``--coco DETECTION.pt`` (e.g. the official
``yolo11n.pt``): its architecture's segmentation and pose siblings (``yolo11n-seg.yaml``, ``yolo11n-pose.yaml``,
80 classes) are built with the detection model's weights moved in — the same backbone and boxes, so the same
objects on real photos, with random mask and keypoint heads: for speed only (no official segmentation or pose
weights are reachable offline).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ops.bench import ChildSpec, Worker, close_all, percentile, photos, run_block, start_pool

TASKS = ("detect", "segment", "pose")
# Fresh shapes photos for the default run: seeds the shapes models never saw (training used 1 and 2).
SHAPES_SEED = 5000
SHAPES_PHOTOS = 40
SHAPES_IMGSZ = 256
# The target of issue 19: a segmentation answer costs at most this many detection answers.
MAX_SEGMENT_RATIO = 1.3
# Seed of the random mask and keypoint heads of the transplanted models.
HEAD_SEED = 0


@dataclass
class TaskRow:
    """One task's figures over the run."""

    task: str
    model: str
    backend: str = ""
    precision: str = ""
    mean_ms: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    stages_ms: dict[str, float] = field(default_factory=dict)
    objects_mean: float = 0.0  # objects kept per answer (down to the floor)
    stored_bytes_mean: float = 0.0  # the stored result's JSON (boxes shown, every object kept, outlines)
    stored_bytes_max: int = 0
    jpeg_bytes_mean: float = 0.0
    rss_mb: float = 0.0  # peak RSS of the worker on a warm cache
    ratios: dict[str, float] = field(default_factory=dict)
    # The task's floor (ops.floor): decode + the engine alone + encode, per photo, and its ratio to detect's.
    floor_mean_ms: float = 0.0
    floor_p50_ms: float = 0.0


def transplant(detection: Path, task: str, out: Path) -> Path:
    """``detection``'s architecture for ``task`` (``-seg``/``-pose``, its classes), with every weight the two
    share moved in; the task's own head is seeded random. Saved as a .pt detbot loads like any other."""
    from detector.runtime import disable_analytics, quiet_ultralytics

    quiet_ultralytics()
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import PoseModel, SegmentationModel, yaml_model_load

    disable_analytics()
    source: Any = YOLO(str(detection))
    suffix = {"segment": "seg", "pose": "pose"}[task]
    architecture = str(source.model.yaml["yaml_file"]).replace(".yaml", f"-{suffix}.yaml")
    cfg = yaml_model_load(architecture)
    cfg["nc"] = len(source.names)
    torch.manual_seed(HEAD_SEED)
    model = (SegmentationModel if task == "segment" else PoseModel)(cfg, nc=len(source.names), verbose=False)
    theirs, ours = source.model.float().state_dict(), model.state_dict()
    model.load_state_dict({k: v for k, v in theirs.items() if k in ours and ours[k].shape == v.shape}, strict=False)
    model.names = dict(source.names)
    setattr(model, "task", task)  # noqa: B010 (what ultralytics reads the task from; not a declared attribute)
    yolo: Any = YOLO(architecture)
    yolo.model = model
    path = out / f"{Path(architecture).stem}-from-{detection.stem}.pt"
    yolo.save(str(path))
    return path


def shapes_photos(out: Path, count: int = SHAPES_PHOTOS) -> Path:
    """``count`` fresh shapes photos as JPEGs (as people send photos) in ``out``."""
    import cv2

    from ops.shapes import make_images

    out.mkdir(parents=True, exist_ok=True)
    for i, (img, _shapes) in enumerate(make_images(SHAPES_SEED, count)):
        cv2.imwrite(str(out / f"shapes_{i:03d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return out


def models(args: argparse.Namespace, work: Path) -> dict[str, Path]:
    """The model of each task: given, transplanted from ``--coco``, or the shapes test models."""
    if args.models:
        given = dict(part.split("=", 1) for part in args.models.split(","))
        return {task: Path(given[task]) for task in TASKS if task in given}
    if args.coco:
        return {"detect": args.coco, **{task: transplant(args.coco, task, work) for task in TASKS[1:]}}
    root = Path(__file__).resolve().parent.parent / "tests" / "assets"
    return {"detect": root / "shapes.pt", "segment": root / "shapes-seg.pt", "pose": root / "shapes-pose.pt"}


def floor_label(task: str) -> str:
    return f"{task}-floor"


def measure(specs: dict[str, ChildSpec], runs: int, log_dir: Path) -> dict[str, TaskRow]:
    """Every task's worker and its floor on the warm cache, one photo each in turn (each round starting one
    worker later)."""
    from detector.engines import resolve_backend

    workers: list[Worker] = []
    try:
        for task, spec in specs.items():
            print(f"  starting the {task} worker ({Path(spec.weights).name}) and its floor ...", flush=True)
            workers += start_pool(spec, 1, log_dir)
            # On every core: a worker whose neighbours are idle infers on every core too (detector.cores), and
            # here the workers take turns, so each answer does.
            floor = replace(spec, backend=resolve_backend(spec.backend, "cpu"), threads=os.cpu_count() or 1,
                            floor=True, name=floor_label(task))
            workers += start_pool(floor, 1, log_dir)
        latencies: dict[str, list[float]] = {w.label: [] for w in workers}
        stages: dict[str, list[dict[str, float]]] = {w.label: [] for w in workers}
        for i in range(runs):
            for worker in workers[i % len(workers):] + workers[:i % len(workers)]:
                block = run_block([worker], 1)
                latencies[worker.label] += block.latencies_ms
                stages[worker.label] += block.stages
        by_label = {w.label: w for w in workers}
        rows = {}
        for task, spec in specs.items():
            worker, lat, st = by_label[task], latencies[task], stages[task]
            floor_ms = latencies[floor_label(task)]
            rows[task] = TaskRow(
                task, Path(spec.weights).name, worker.ready.get("backend", ""), worker.ready.get("precision", ""),
                mean_ms=statistics.fmean(lat), p50_ms=statistics.median(lat), p95_ms=percentile(lat, 0.95),
                stages_ms={k: statistics.median(s[k] for s in st) for k in ("decode_ms", "inference_ms",
                                                                           "annotate_ms")},
                objects_mean=statistics.fmean(s["objects"] for s in st),
                stored_bytes_mean=statistics.fmean(s["stored_bytes"] for s in st),
                stored_bytes_max=int(max(s["stored_bytes"] for s in st)),
                jpeg_bytes_mean=statistics.fmean(s["jpeg_bytes"] for s in st),
                rss_mb=worker.finish()["peak_rss_mb"],
                floor_mean_ms=statistics.fmean(floor_ms), floor_p50_ms=statistics.median(floor_ms),
            )
        return rows
    finally:
        close_all(workers)


def table(rows: dict[str, TaskRow]) -> str:
    head = ("| task | model | backend | ms/photo mean | p50 | p95 | ×detect mean | ×detect p50 | inference ms "
            "(p50, outlines incl.) | drawing + JPEG ms | objects kept | stored answer bytes (mean, max) "
            "| worker RSS MB | floor ms (mean, p50) | floor ×detect (mean, p50) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows.values():
        lines.append(
            f"| {r.task} | {r.model} | {r.backend}{f', {r.precision}' if r.precision else ''} | {r.mean_ms:.1f} "
            f"| {r.p50_ms:.1f} | {r.p95_ms:.1f} | {r.ratios.get('mean', 0):.2f}× | {r.ratios.get('p50', 0):.2f}× "
            f"| {r.stages_ms['inference_ms']:.1f} | {r.stages_ms['annotate_ms']:.1f} | {r.objects_mean:.1f} "
            f"| {r.stored_bytes_mean:.0f}, {r.stored_bytes_max} | {r.rss_mb:.0f} "
            f"| {r.floor_mean_ms:.1f}, {r.floor_p50_ms:.1f} "
            f"| {r.ratios.get('floor_mean', 0):.2f}×, {r.ratios.get('floor_p50', 0):.2f}× |")
    return "\n".join(lines)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="detbot bench tasks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--models", help="detect=W,segment=W,pose=W (default: the shapes test models)")
    which.add_argument("--coco", type=Path, metavar="DETECTION.pt",
                       help="a detection checkpoint; its -seg and -pose siblings are built from it (speed only)")
    parser.add_argument("--images", type=Path, metavar="FOLDER",
                        help="the photos (default: fresh shapes photos; with --coco give real photos)")
    parser.add_argument("--imgsz", type=int, help="inference size (default: the model's own)")
    parser.add_argument("--backend", default="auto", help="torch, onnx, openvino or auto (default)")
    parser.add_argument("--runs", type=int, help="photos per task (default: the folder's count)")
    parser.add_argument("--export-dir", type=Path, help="export cache to reuse (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=Path("detbot-bench-tasks.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from detector.engines import cpu_summary

    args = _parse(list(sys.argv[1:] if argv is None else argv))
    with tempfile.TemporaryDirectory(prefix="detbot-bench-tasks-") as tmp:
        work = Path(tmp)
        chosen = models(args, work)
        folder = args.images or shapes_photos(work / "photos")
        count = len(photos(folder))
        runs = args.runs or count
        imgsz = args.imgsz or (SHAPES_IMGSZ if not (args.models or args.coco) else None)
        cache = str(args.export_dir or work / "exports")
        specs = {task: ChildSpec(args.backend, str(path), str(folder), runs, imgsz, cache, threads=1, seed=0,
                                 name=task)
                 for task, path in chosen.items()}
        print(f"models: {', '.join(f'{t}={p.name}' for t, p in chosen.items())}; {count} photos of {folder}, "
              f"{runs} per task\nCPU: {cpu_summary()}; load {os.getloadavg()[0]:.2f}", flush=True)
        for task, spec in specs.items():  # exports made once, so the timed workers load as warm workers do
            print(f"  exporting the {task} model ...", flush=True)
            close_all(start_pool(spec, 1, work))
        rows = measure(specs, runs, work)
    base = rows.get("detect")
    for row in rows.values():
        if base is not None:
            row.ratios = {"mean": row.mean_ms / base.mean_ms, "p50": row.p50_ms / base.p50_ms,
                          "floor_mean": row.floor_mean_ms / base.floor_mean_ms,
                          "floor_p50": row.floor_p50_ms / base.floor_p50_ms}
    print(table(rows))
    segment = rows.get("segment")
    if base is not None and segment is not None:
        verdict = "within" if segment.ratios["mean"] <= MAX_SEGMENT_RATIO else "ABOVE"
        print(f"segment answer: {segment.ratios['mean']:.2f}× a detection answer (mean; p50 "
              f"{segment.ratios['p50']:.2f}×): {verdict} the {MAX_SEGMENT_RATIO}× target; its floor (decode, the "
              f"network alone, encode) {segment.ratios['floor_mean']:.2f}× detect's (p50 "
              f"{segment.ratios['floor_p50']:.2f}×)")
        extra = (segment.p50_ms - segment.floor_p50_ms) - (base.p50_ms - base.floor_p50_ms)
        print(f"segment's answer beyond its floor costs {extra:+.1f} ms/photo more than detect's (p50)")
    print(f"load after: {os.getloadavg()[0]:.2f}")
    report: dict[str, Any] = {"cpu": cpu_summary(), "photos": str(folder), "runs": runs, "imgsz": imgsz,
                              "load_after": os.getloadavg()[0], "rows": [asdict(r) for r in rows.values()]}
    args.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
