"""Samples for the evaluator and the augmentation tests, the devkit's AP loop, train.py's argv, the scripts."""
import types
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from utils.data.voc import Sample
from utils.eval.evaluator import voc_ap


def sample(boxes, labels, difficult=None, size=(100, 100)):
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    difficult = np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult, bool)
    return types.SimpleNamespace(image_path="", boxes=boxes, labels=np.asarray(labels, np.int64),
                                 difficult=difficult, height=size[0], width=size[1], exif_transpose=True)


def reference_ap(found, samples, cls, iou_thres=0.5):
    """The devkit's loop: global score order, best-IoU ground truth, difficult ignored, each box once."""
    rows = sorted(((d[4], i, d[:4]) for i, ds in enumerate(found) for d in ds if d[5] == cls), key=lambda t: -t[0])
    taken = {}
    tp, fp = [], []
    npos = sum(int(np.sum((s.labels == cls) & ~s.difficult)) for s in samples)
    for _, i, box in rows:
        s = samples[i]
        best, best_j = 0.0, -1
        for j in np.flatnonzero(s.labels == cls):
            g = s.boxes[j]
            iw = max(0.0, min(box[2], g[2]) - max(box[0], g[0]))
            ih = max(0.0, min(box[3], g[3]) - max(box[1], g[1]))
            union = (box[2] - box[0]) * (box[3] - box[1]) + (g[2] - g[0]) * (g[3] - g[1]) - iw * ih
            if iw * ih / union > best:
                best, best_j = iw * ih / union, j
        if best > iou_thres and s.difficult[best_j]:
            continue
        hit = best > iou_thres and not taken.get((i, best_j))
        taken[(i, best_j)] = taken.get((i, best_j)) or hit
        tp.append(hit)
        fp.append(not hit)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    return voc_ap(tp / npos, tp / np.maximum(tp + fp, 1))


def write_samples(folder, sizes, boxes):
    """One random image per size with one ground truth each (class i % 2), as evaluate_model's samples."""
    samples = []
    for i, ((h, w), box) in enumerate(zip(sizes, boxes)):
        path = folder / f"{i}.png"
        cv2.imwrite(str(path), np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8))
        s = sample([box], [i % 2], size=(h, w))
        s.image_path = str(path)
        samples.append(s)
    return samples


SIZES = [(60, 40), (48, 64), (80, 50), (40, 40), (64, 36), (50, 70)]


def make_colour_samples(folder: Path, sizes=SIZES, seed: int = 0):
    """PNG images on black with solid boxes; class k is pure colour channel k (red, green, blue)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for i, (w, h) in enumerate(sizes):
        image = np.zeros((h, w, 3), np.uint8)
        boxes, labels = [], []
        for k, (x1, x2) in enumerate(((0, w // 3), (w // 3, 2 * w // 3), (2 * w // 3, w))):  # side by side
            if k and rng.random() < 0.3:
                continue
            bx1 = int(rng.integers(x1, x1 + 3))
            bx2 = int(rng.integers(max(bx1 + 6, x2 - 3), x2 + 1))
            by1 = int(rng.integers(0, h // 3))
            by2 = int(rng.integers(by1 + 8, h + 1))
            cls = int(rng.integers(3))
            image[by1:by2, bx1:bx2, cls] = 255
            boxes.append((bx1, by1, bx2, by2))
            labels.append(cls)
        path = folder / f"img{i}.png"
        Image.fromarray(image).save(path)
        samples.append(Sample(str(path), np.array(boxes, np.float32), np.array(labels, np.int64),
                              np.zeros(len(labels), bool), w, h, False))
    return samples


def run_args(data, save_dir, *extra) -> list:
    """train.py's argv for a short run on `data` at input 64 (batch 2, no workers, quiet)."""
    return ["--data", str(data), "--classes", str(data / "classes.txt"), "--input-size", "64", "--batch-size", "2",
            "--workers", "0", "--save-dir", str(save_dir), "--quiet", *map(str, extra)]


SCRIPTS = ("train", "predict", "get_map", "ablate", "yolo")  # the top-level scripts (layer 7 of tests/test_layers.py)
