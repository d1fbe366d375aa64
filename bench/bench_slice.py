"""Sliced inference (--slice) against plain inference on a generated large image: recall and time.

    python bench/bench_slice.py --weights logs/demo160/best.pth      # a model trained on the demo dataset

The large image is a G x G grid (--grid, default 10) of the demo dataset's validation images, each resized
to fit a cell of the network's input size, so its objects keep about the size the model was trained on
(16-45% of a cell) while the whole image is G times the input: shrunk to the input, as plain inference does,
they become G times smaller. --images such images are made (different validation images in each). Trains
nothing; the validation images were not trained on.

Rows, each run on the same images with the same thresholds (--conf, --nms):
  whole image: YOLO.detect(image)
  sliced: YOLO.detect(image, slice=Slicing(tile, --overlap, full=True)), tile = the input size
  sliced, tiles only: the same with full=False
Recall: ground-truth objects matched by a detection of their class at IoU >= 0.5 (each detection matches
once, best score first); precision: matched detections / detections. Time: the best of --runs calls, each
image, seconds per image. The CPU, its load (os.getloadavg) and the thread count are printed: on a shared
machine the times move with the load, the recalls do not.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.core.amp import cpu_name  # noqa: E402
from utils.data.demo_data import STYLES, ensure_demo_dataset, read_demo_splits  # noqa: E402
from utils.ops.boxes import box_iou_np  # noqa: E402
from utils.ops.slicing import Slicing  # noqa: E402
from yolo import YOLO  # noqa: E402


def grid_image(samples, cell: int, grid: int):
    """(G*cell square RGB image, boxes [N, 4] xyxy, labels [N]) of G*G samples, each resized to fit its cell."""
    image = np.full((grid * cell, grid * cell, 3), 114, np.uint8)
    boxes, labels = [], []
    for k, sample in enumerate(samples[:grid * grid]):
        picture = cv2.cvtColor(cv2.imread(str(sample.image_path)), cv2.COLOR_BGR2RGB)
        scale = cell / max(picture.shape[:2])
        h, w = int(picture.shape[0] * scale), int(picture.shape[1] * scale)
        y0, x0 = (k // grid) * cell, (k % grid) * cell
        image[y0:y0 + h, x0:x0 + w] = cv2.resize(picture, (w, h), interpolation=cv2.INTER_AREA)
        boxes.append(np.asarray(sample.boxes, np.float64).reshape(-1, 4) * scale + [x0, y0, x0, y0])
        labels.append(np.asarray(sample.labels, np.int64).reshape(-1))
    return image, np.concatenate(boxes), np.concatenate(labels)


def matches(det, boxes, labels, iou: float = 0.5) -> int:
    """Ground truths matched by a detection of their class at IoU >= iou, detections best score first."""
    taken = np.zeros(len(boxes), bool)
    for k in np.argsort(-det.scores, kind="stable"):
        overlap = box_iou_np(det.boxes[k][None].astype(np.float64), boxes)
        overlap[(labels != det.class_ids[k]) | taken] = 0
        if overlap.size and overlap.max() >= iou:
            taken[overlap.argmax()] = True
    return int(taken.sum())


def timed(call, runs: int):
    best, found = float("inf"), None
    for _ in range(runs):
        start = time.perf_counter()
        found = call()
        best = min(best, time.perf_counter() - start)
    return found, best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="a checkpoint trained on the demo dataset")
    p.add_argument("--grid", type=int, default=10, help="cells per side of the large image")
    p.add_argument("--images", type=int, default=2, help="large images made")
    p.add_argument("--overlap", type=float, default=0.2)
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--nms", type=float, default=0.3)
    p.add_argument("--runs", type=int, default=2, help="timed calls per image and row; the best counts")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's choice)")
    p.add_argument("--out", default=None, help="also write the table as JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    yolo = YOLO(args.weights, conf=args.conf, nms=args.nms)
    cell = min(yolo.input_hw)
    voc = ensure_demo_dataset()
    val = read_demo_splits(voc, STYLES["demo"].classes)["val"]
    rows = {"whole image": None, "sliced": Slicing(None, args.overlap, True),
            "sliced, tiles only": Slicing(None, args.overlap, False)}
    totals = {name: {"objects": 0, "matched": 0, "detections": 0, "seconds": 0.0} for name in rows}
    for i in range(args.images):
        picked = [val[(i * args.grid ** 2 + k) % len(val)] for k in range(args.grid ** 2)]
        image, boxes, labels = grid_image(picked, cell, args.grid)
        yolo.detect(image[:cell, :cell])  # warm-up
        for name, slicing in rows.items():
            det, seconds = timed(lambda: yolo.detect(image, slice=slicing if slicing else 0), args.runs)
            row = totals[name]
            row["objects"] += len(boxes)
            row["matched"] += matches(det, boxes, labels)
            row["detections"] += len(det)
            row["seconds"] += seconds / args.images
    sizes = f"{args.grid * cell}x{args.grid * cell}"
    print(f"{args.images} images {sizes} ({args.grid}x{args.grid} demo val images), input {yolo.input_hw}, tiles "
          f"{yolo.input_hw} overlap {args.overlap}, conf {args.conf}, nms {args.nms}; CPU {cpu_name()}, "
          f"{torch.get_num_threads()} torch threads, load {os.getloadavg()[0]:.1f}")
    print(f"{'':20s} {'recall':>7s} {'precision':>9s} {'objects':>8s} {'detections':>10s} {'s/image':>8s}")
    for name, row in totals.items():
        row["recall"] = row["matched"] / max(1, row["objects"])
        row["precision"] = row["matched"] / max(1, row["detections"])
        print(f"{name:20s} {row['recall']:7.3f} {row['precision']:9.3f} {row['objects']:8d} {row['detections']:10d} "
              f"{row['seconds']:8.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(totals, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
