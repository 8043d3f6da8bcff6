"""Segmentation and pose answers on real photos, against detection, with COCO-sized models built offline.

No official segmentation or pose weights are reachable here, so (``detbot bench tasks --coco``) the official
``yolo11n.pt`` is moved into ``yolo11n-seg.yaml`` and ``yolo11n-pose.yaml`` (same backbone and boxes, so the same
objects on every photo). Random mask heads give noise masks, whose outlines cost more than real ones, so the
segmentation model's mask head is then fine-tuned on coco128's own instance outlines for a few epochs: masks
shaped like objects, for timing only (the model is scored on the photos it was tuned on, which says nothing of
its accuracy). The pose head stays random: keypoints cost the same wherever they land.

    python -m tests.bench_coco_tasks --coco /path/to/coco128 --detection /path/to/yolo11n.pt --work DIR

then ``detbot bench tasks --models detect=...,segment=DIR/...,pose=DIR/... --images coco128/images/train2017``
(the command prints it). Nothing is written into the repository.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from ops.bench_tasks import transplant

EPOCHS = 10
IMGSZ = 640


def yolo_segments(coco: Path, out: Path) -> Path:
    """coco128's instance outlines (COCO JSON) as a YOLO segmentation data set under ``out`` (images linked,
    one outline per object: its largest polygon); returns the data YAML."""
    data = json.loads((coco / "annotations" / "instances_train2017.json").read_text())
    index = {c["id"]: i for i, c in enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
    images = {img["id"]: img for img in data["images"]}
    lines: dict[int, list[str]] = {i: [] for i in images}
    for ann in data["annotations"]:
        if ann.get("iscrowd") or not isinstance(ann["segmentation"], list) or not ann["segmentation"]:
            continue
        img = images[ann["image_id"]]
        polygon = max(ann["segmentation"], key=len)
        coords = " ".join(f"{v / (img['width'] if k % 2 == 0 else img['height']):.6f}" for k, v in enumerate(polygon))
        lines[ann["image_id"]].append(f"{index[ann['category_id']]} {coords}")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    for image_id, img in images.items():
        source = coco / "images" / "train2017" / img["file_name"]
        target = out / "images" / img["file_name"]
        if not target.exists():
            target.symlink_to(source)
        (out / "labels" / f"{Path(img['file_name']).stem}.txt").write_text("\n".join(lines[image_id]) + "\n")
    names = "\n".join(f"  {i}: {c['name']}" for i, c in enumerate(sorted(data["categories"], key=lambda c: c["id"])))
    yaml = out / "coco128-seg.yaml"
    yaml.write_text(f"path: {out}\ntrain: images\nval: images\nnames:\n{names}\n")
    return yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coco", type=Path, required=True, help="coco128 (images/train2017, annotations/)")
    parser.add_argument("--detection", type=Path, required=True, help="yolo11n.pt")
    parser.add_argument("--work", type=Path, default=Path("/tmp/detbot-coco-tasks"))
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args()
    from ultralytics import YOLO

    args.work.mkdir(parents=True, exist_ok=True)
    data = yolo_segments(args.coco, args.work / "coco128-seg")
    seg = transplant(args.detection, "segment", args.work)
    pose = transplant(args.detection, "pose", args.work)
    model = YOLO(str(seg))
    model.train(data=str(data), imgsz=IMGSZ, epochs=args.epochs, batch=8, workers=1, device="cpu", seed=0,
                project=str(args.work / "runs"), name="seg", exist_ok=True, plots=False, amp=False, val=False)
    tuned = args.work / "yolo11n-seg-coco128-tuned.pt"
    shutil.copyfile(args.work / "runs" / "seg" / "weights" / "last.pt", tuned)
    print(f"detbot bench tasks --models detect={args.detection},segment={tuned},pose={pose} "
          f"--images {args.coco / 'images' / 'train2017'}")


if __name__ == "__main__":
    main()
