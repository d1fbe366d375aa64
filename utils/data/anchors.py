"""Anchor boxes by k-means with IoU distance on the dataset's boxes at the training input size.

    python -m utils.data.anchors --data VOCdevkit --input-size 416 [--write model_data/my_anchors.txt]
    python -m utils.data.anchors --data coco/annotations/instances_train2017.json --images coco/train2017

Prints the new anchors beside the current ones with each set's average best IoU; writes a file only
with --write.
"""
import argparse
from typing import List, Sequence

import numpy as np

from utils.ops.boxes import letterbox_params, wh_iou
from utils.core.config import parse_input_size, read_anchors, read_classes
from utils.core.paths import MODEL_DATA
from utils.core.fileio import write_text_atomic
from utils.data.layouts import dataset_of
from utils.data.voc import Sample, load_samples, resolve_classes
from utils.core.cli import run_main
from utils.core.settings import add_flags


def avg_best_iou(wh: np.ndarray, anchors: np.ndarray) -> float:
    """Mean over boxes [N, 2] of the IoU (boxes and anchors aligned at one corner) with their best anchor [K, 2]."""
    return float(wh_iou(wh, anchors).max(axis=1).mean())


def _kmeans_once(wh: np.ndarray, k: int, rng: np.random.Generator, iterations: int) -> np.ndarray:
    centres = wh[rng.choice(len(wh), size=k, replace=False)].copy()
    assign = np.full(len(wh), -1)
    for _ in range(iterations):
        new_assign = wh_iou(wh, centres).argmax(axis=1)
        if (new_assign == assign).all():
            break
        assign = new_assign
        for j in range(k):
            members = wh[assign == j]
            centres[j] = np.median(members, axis=0) if len(members) else wh[rng.integers(len(wh))]
    return centres


def kmeans_anchors(wh: np.ndarray, k: int, seed: int = 0, iterations: int = 300, restarts: int = 5) -> np.ndarray:
    """k anchors [k, 2] (w, h) sorted by area; the best of `restarts` seeded runs by average best IoU."""
    if len(np.unique(wh, axis=0)) < k:
        raise ValueError(f"k-means needs at least {k} distinct box sizes, found {len(np.unique(wh, axis=0))}")
    rng = np.random.default_rng(seed)
    runs = [_kmeans_once(wh, k, rng, iterations) for _ in range(restarts)]
    best = max(runs, key=lambda a: avg_best_iou(wh, a))
    return best[np.argsort(best.prod(axis=1))]


def refit_anchors(wh: np.ndarray, current: np.ndarray, used: Sequence[int], seed: int = 0):
    """Anchors for the boxes `wh` [N, 2]: k-means at the `used` indices of `current` [A, 2] (sorted by area,
    so each head keeps its share of sizes), the others unchanged. Returns (anchors, their average best
    IoU over the used anchors, current's); the anchors are `current` when the refit does not fit better."""
    used = sorted(used)
    old_iou = avg_best_iou(wh, current[used])
    fitted = current.astype(np.float64).copy()
    fitted[used] = kmeans_anchors(wh, len(used), seed)
    new_iou = avg_best_iou(wh, fitted[used])
    return (fitted if new_iou > old_iou else current), new_iou, old_iou


def box_sizes(samples: Sequence[Sample], input_size, letterbox: bool = True) -> np.ndarray:
    """(w, h) [N, 2] of every box, scaled into the input (an int or (h, w)) as letterbox resizing would."""
    sizes: List[np.ndarray] = []
    hw = parse_input_size(input_size)
    for s in samples:
        lb = letterbox_params((s.height, s.width), hw, letterbox)
        wh = s.boxes[:, 2:] - s.boxes[:, :2]
        sizes.append(wh * np.array([lb.scale_x, lb.scale_y]))
    wh = np.concatenate(sizes) if sizes else np.zeros((0, 2))
    return wh[(wh > 0).all(axis=1)]


def format_anchors(anchors: np.ndarray) -> str:
    """The anchors file format: `w,h, w,h, ...` rounded to whole pixels."""
    return ", ".join(f"{int(round(w))},{int(round(h))}" for w, h in anchors)


def make_parser() -> argparse.ArgumentParser:
    """The command's flags, generated from the schema (utils/core/settings.py)."""
    p = argparse.ArgumentParser(prog="python -m utils.data.anchors", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(p, "anchors", grouped=False)
    return p


def run(args: argparse.Namespace) -> np.ndarray:
    """Print the new anchors for the parsed `args` beside the current ones (and write them with --write);
    returns the new anchors [K, 2]."""
    data = dataset_of(args)  # its layout detected once
    classes = args.classes or MODEL_DATA / "voc_classes.txt"
    names = read_classes(resolve_classes(data, classes))
    samples = load_samples(data, args.split or data.default_split("train"), names)
    wh = box_sizes(samples, args.input_size, args.letterbox)
    current = read_anchors(args.anchors).numpy()
    anchors = kmeans_anchors(wh, args.clusters or len(current), args.seed, args.iterations, args.restarts)
    print(f"{len(wh)} boxes at input size {args.input_size}")
    print(f"{'new anchors':>30}  |  current anchors ({args.anchors})")
    for i in range(max(len(anchors), len(current))):
        new = f"{anchors[i, 0]:.1f} x {anchors[i, 1]:.1f}" if i < len(anchors) else ""
        old = f"{current[i, 0]:.0f} x {current[i, 1]:.0f}" if i < len(current) else ""
        print(f"{new:>30}  |  {old}")
    print(f"{'avg best IoU ' + format(avg_best_iou(wh, anchors), '.3f'):>30}  |  avg best IoU {avg_best_iou(wh, current):.3f}")
    print(f"anchors: {format_anchors(anchors)}")
    if args.write:
        write_text_atomic(args.write, format_anchors(anchors) + "\n")
        print(f"wrote {args.write}")
    return anchors


def main(argv=None) -> int:
    """`python -m utils.data.anchors` with `argv` (default: the command line); the exit code (utils/core/cli.py)."""

    def body() -> None:
        run(make_parser().parse_args(argv))
    return run_main("python -m utils.data.anchors", body)


if __name__ == "__main__":
    raise SystemExit(main())
