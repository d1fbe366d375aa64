"""How long scoring takes next to producing the detections.

Times evaluate_detections on synthetic detections for --images images x --classes classes (VOC
alone; VOC + COCO with the fast evaluator; VOC + COCO through pycocotools itself, unless
--skip-pycocotools), and, in the same run, detect_samples (read, letterbox, YoloBody forward, decode, NMS) on
--model-images generated images at --input-size, batch 1, extrapolated to --images. The metric
should cost under 5% of the model time.

  python bench/bench_map.py
"""
import argparse
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nets.yolo import YoloBody  # noqa: E402
from utils.core.config import DEFAULT_ANCHORS_MASK, read_anchors  # noqa: E402
from utils.eval.detect import detect_samples  # noqa: E402
from utils.eval.evaluator import evaluate_detections  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--images", type=int, default=5000, help="images to score (default 5000)")
    a("--classes", type=int, default=20, help="classes (default 20)")
    a("--dets-per-image", type=int, default=100, help="synthetic detections per image (default 100)")
    a("--model-images", type=int, default=20, help="images the model runs on, extrapolated (default 20)")
    a("--input-size", type=int, default=416, help="network input size (default 416)")
    a("--threads", type=int, default=2, help="torch threads (default 2)")
    a("--seed", type=int, default=0, help="random seed (default 0)")
    a("--skip-pycocotools", action="store_true", help="do not time pycocotools (it takes ~20 s)")
    return p


def random_boxes(rng, n, h, w):
    wh = rng.uniform(0.05, 0.6, (n, 2)) * (w, h)
    xy = rng.uniform(0, 1, (n, 2)) * ((w, h) - wh)
    return np.concatenate([xy, xy + wh], axis=1)


def synthetic_split(n_images, n_classes, dets_per_image, seed):
    """VOC-like ground truth (1-6 objects, 10% difficult) and detections: jittered hits, then noise."""
    rng = np.random.default_rng(seed)
    samples, detections = [], []
    for _ in range(n_images):
        h, w = rng.integers(300, 501, 2)
        n = int(rng.integers(1, 7))
        boxes = random_boxes(rng, n, h, w)
        labels = rng.integers(0, n_classes, n)
        samples.append(types.SimpleNamespace(boxes=boxes.astype(np.float32), labels=labels, width=int(w), height=int(h),
                                             difficult=rng.random(n) < 0.1))
        hits = np.repeat(boxes, 3, axis=0) + rng.normal(0, 6, (3 * n, 4))
        m = max(dets_per_image - 3 * n, 0)
        all_boxes = np.concatenate([hits, random_boxes(rng, m, h, w)])
        cls = np.concatenate([np.repeat(labels, 3), rng.integers(0, n_classes, m)])
        scores = np.concatenate([rng.uniform(0.3, 1.0, 3 * n), rng.uniform(0.001, 0.5, m)])
        detections.append(np.column_stack([all_boxes, scores, cls]).astype(np.float32))
    return samples, detections


def time_metric(samples, detections, class_names, metric, coco_backend="fast"):
    t = time.perf_counter()
    result = evaluate_detections(detections, samples, class_names, metric=metric, coco_backend=coco_backend)
    return time.perf_counter() - t, result


def time_model(n_images, input_size, seed):
    """Seconds per image for detect_samples at batch 1 on generated VOC-sized JPEGs."""
    import cv2
    rng = np.random.default_rng(seed)
    model = YoloBody(DEFAULT_ANCHORS_MASK, 20)
    anchors = read_anchors(ROOT / "model_data/yolo_anchors.txt")
    with tempfile.TemporaryDirectory() as tmp:
        samples = []
        for i in range(n_images + 2):
            path = Path(tmp) / f"{i}.jpg"
            cv2.imwrite(str(path), rng.integers(0, 255, (375, 500, 3), dtype=np.uint8))
            samples.append(types.SimpleNamespace(image_path=str(path), exif_transpose=True))
        detect_samples(model, samples[:2], input_size, anchors, DEFAULT_ANCHORS_MASK, batch_size=1, progress=False)
        t = time.perf_counter()
        detect_samples(model, samples[2:], input_size, anchors, DEFAULT_ANCHORS_MASK, batch_size=1, progress=False)
        return (time.perf_counter() - t) / n_images


def main(args):
    torch.set_num_threads(args.threads)
    names = [f"class{i}" for i in range(args.classes)]
    samples, detections = synthetic_split(args.images, args.classes, args.dets_per_image, args.seed)
    n_dets = sum(len(d) for d in detections)
    print(f"synthetic: {args.images} images, {args.classes} classes, "
          f"{sum(len(s.labels) for s in samples)} ground truths, {n_dets} detections")
    t_voc, r = time_metric(samples, detections, names, "voc")
    print(f"VOC (all-point + 11-point + P/R/F1 + confusion matrix): {t_voc:.2f} s  mAP@0.5 {r['map']:.4f}")
    t_all, r = time_metric(samples, detections, names, "all")
    print(f"VOC + COCO (fast): {t_all:.2f} s  mAP@[.5:.95] {r['map50_95']:.6f}")
    timings = [("VOC", t_voc), ("VOC + COCO (fast)", t_all)]
    if not args.skip_pycocotools:
        t_ref, ref = time_metric(samples, detections, names, "all", coco_backend="pycocotools")
        same = ref["coco"] == r["coco"]
        print(f"VOC + COCO (pycocotools): {t_ref:.2f} s  mAP@[.5:.95] {ref['map50_95']:.6f}  "
              f"all 12 COCO numbers {'equal' if same else 'DIFFER'}; COCO part {(t_ref - t_voc) / max(t_all - t_voc, 1e-9):.1f}x "
              "slower than fast")
        timings.append(("VOC + COCO (pycocotools)", t_ref))
    per_image = time_model(args.model_images, args.input_size, args.seed)
    t_model = per_image * args.images
    print(f"model: {per_image * 1000:.1f} ms/image at {args.input_size}, batch 1, {args.threads} threads "
          f"({args.model_images} images) -> {t_model:.0f} s for {args.images} images")
    for what, t in timings:
        print(f"{what} metric / model time: {t / t_model:.2%} (limit 5%) {'OK' if t / t_model < 0.05 else 'OVER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(make_parser().parse_args()))
