"""The shapes test models: where they are, and the recipes that made them.

Run ``python -m tests.shapes train`` (detection), ``train-seg`` (instance segmentation) or ``train-pose`` (pose)
from the repository root to regenerate the data set and retrain ``tests/assets/shapes.pt``, ``shapes-seg.pt`` or
``shapes-pose.pt`` exactly as they were made (same seeds; training is deterministic up to torch's CPU kernels).
The images, outlines and keypoints come from the product's generator, :mod:`ops.shapes`; the data sets are written
under ``--workdir`` (a temporary folder), never into the repository.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import cv2

from ops.shapes import SKELETON, Task, make_images, write_dataset

ASSETS = Path(__file__).parent / "assets"
MODEL_PATH = ASSETS / "shapes.pt"
SEG_MODEL_PATH = ASSETS / "shapes-seg.pt"
POSE_MODEL_PATH = ASSETS / "shapes-pose.pt"

IMGSZ = 256
EPOCHS = 30

# Per task: the architecture (YOLO26n, the default model's, built from scratch: nothing to download), the
# shipped weights and the command that makes them.
RECIPES: dict[Task, tuple[str, Path, str]] = {
    "detect": ("yolo26n.yaml", MODEL_PATH, "train"),
    "segment": ("yolo26n-seg.yaml", SEG_MODEL_PATH, "train-seg"),
    "pose": ("yolo26n-pose.yaml", POSE_MODEL_PATH, "train-pose"),
}


def train(workdir: Path, epochs: int = EPOCHS, task: Task = "detect", workers: int = 2) -> None:
    """Generate the data, train the task's YOLO26n from scratch on it and copy the best weights to tests/assets."""
    from ultralytics import YOLO

    architecture, target, _command = RECIPES[task]
    name = "shapes" if task == "detect" else f"shapes-{task}"
    data = write_dataset(workdir / name, task)
    model = YOLO(architecture)
    if task == "pose":
        # The skeleton rides in the architecture's YAML, which the checkpoint keeps: detbot draws it
        # (detector.export_cache.model_task); ultralytics ignores the key.
        model.model.yaml["skeleton"] = [list(pair) for pair in SKELETON]
    model.train(
        data=str(data), imgsz=IMGSZ, epochs=epochs, batch=16, workers=workers, device="cpu", seed=0,
        deterministic=True, project=str(workdir / "runs"), name=name, exist_ok=True, plots=False,
        amp=False, mosaic=1.0, close_mosaic=3, patience=100,
    )
    # best.pt as the trainer leaves it: optimizer state stripped, task, names and kpt_shape kept.
    best = workdir / "runs" / name / "weights" / "best.pt"
    ASSETS.mkdir(exist_ok=True)
    shutil.copyfile(best, target)
    print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB)")


def draw(out: Path, seed: int, count: int) -> None:
    """Write ``count`` fresh images of ``seed`` to ``out``, each with a JSON of its true shapes."""
    out.mkdir(parents=True, exist_ok=True)
    for i, (img, shapes) in enumerate(make_images(seed, count)):
        cv2.imwrite(str(out / f"shapes_{i}.png"), img)
        truth = [
            {"name": s.name, "box": list(s.box), "polygon": [list(p) for p in s.polygon],
             "keypoints": [list(k) for k in s.keypoints]}
            for s in shapes
        ]
        (out / f"shapes_{i}.json").write_text(json.dumps(truth))
        print(f"shapes_{i}.png", [(s.name, [round(v) for v in s.box]) for s in shapes])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for task, (_architecture, target, command) in RECIPES.items():
        t = sub.add_parser(command, help=f"regenerate the data and retrain {target.relative_to(ASSETS.parent.parent)}")
        t.set_defaults(task=task)
        t.add_argument("--workdir", type=Path, default=Path("/tmp/detbot-shapes"))
        t.add_argument("--epochs", type=int, default=EPOCHS)
        t.add_argument("--workers", type=int, default=2, help="data loader processes (0-1 on a busy machine)")
    d = sub.add_parser("draw", help="write fresh shapes images (seed chosen by you) and their true shapes (JSON)")
    d.add_argument("out", type=Path)
    d.add_argument("--seed", type=int, default=1234)
    d.add_argument("--count", type=int, default=4)
    args = parser.parse_args()
    if args.cmd == "draw":
        draw(args.out, args.seed, args.count)
    else:
        train(args.workdir, args.epochs, args.task, args.workers)


if __name__ == "__main__":
    main()
