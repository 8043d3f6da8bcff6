"""The shapes test model: where it is, and the recipe that made it.

Run ``python -m tests.shapes train`` from the repository root to regenerate the data set and retrain
``tests/assets/shapes.pt`` exactly as it was made (same seeds; training is deterministic up to torch's
CPU kernels). The images themselves come from the product's generator, :mod:`ops.shapes`.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2

from ops.shapes import make_images, write_dataset

ASSETS = Path(__file__).parent / "assets"
MODEL_PATH = ASSETS / "shapes.pt"

IMGSZ = 256
EPOCHS = 30


def train(workdir: Path, epochs: int = EPOCHS) -> None:
    """Generate the data, train YOLO26n from scratch on it and copy the best weights to tests/assets."""
    from ultralytics import YOLO

    data = write_dataset(workdir / "data")
    model = YOLO("yolo26n.yaml")
    model.train(
        data=str(data), imgsz=IMGSZ, epochs=epochs, batch=16, workers=2, device="cpu", seed=0,
        deterministic=True, project=str(workdir / "runs"), name="shapes", exist_ok=True, plots=False,
        amp=False, mosaic=1.0, close_mosaic=3, patience=100,
    )
    best = workdir / "runs" / "shapes" / "weights" / "best.pt"
    ASSETS.mkdir(exist_ok=True)
    shutil.copyfile(best, MODEL_PATH)
    print(f"wrote {MODEL_PATH} ({MODEL_PATH.stat().st_size / 1e6:.1f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="regenerate the data and retrain tests/assets/shapes.pt")
    t.add_argument("--workdir", type=Path, default=Path("/tmp/detbot-shapes"))
    t.add_argument("--epochs", type=int, default=EPOCHS)
    d = sub.add_parser("draw", help="write a few fresh shapes images (seed chosen by you) to a folder")
    d.add_argument("out", type=Path)
    d.add_argument("--seed", type=int, default=1234)
    d.add_argument("--count", type=int, default=4)
    args = parser.parse_args()
    if args.cmd == "train":
        train(args.workdir, args.epochs)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        for i, (img, shapes) in enumerate(make_images(args.seed, args.count)):
            cv2.imwrite(str(args.out / f"shapes_{i}.png"), img)
            print(f"shapes_{i}.png", [(s.name, [round(v) for v in s.box]) for s in shapes])


if __name__ == "__main__":
    main()
