"""Augmentation moves boxes exactly with pixels: coloured boxes through mosaic, mixup, flip and jitter."""
import cv2
import numpy as np
import pytest

from tests.helpers.samples import make_colour_samples
from utils.data.augment import AugmentConfig, filter_boxes, hflip, hsv_jitter
from utils.data.dataloader import YoloDataset


def check_boxes_follow_colours(image: np.ndarray, targets: np.ndarray, min_size: float, threshold: int = 60) -> None:
    """Each box of class k covers colour k inside; colour k outside every box only in specks below min_size."""
    h, w = image.shape[:2]
    boxes = np.stack([(targets[:, 1] - targets[:, 3] / 2) * w, (targets[:, 2] - targets[:, 4] / 2) * h,
                      (targets[:, 1] + targets[:, 3] / 2) * w, (targets[:, 2] + targets[:, 4] / 2) * h], axis=1)
    for k in range(3):
        colour = image[..., k] > threshold
        covered = np.zeros((h, w), bool)
        for (x1, y1, x2, y2), cls in zip(boxes, targets[:, 0]):
            if cls != k:
                continue
            covered[max(0, int(y1) - 2):int(np.ceil(y2)) + 2, max(0, int(x1) - 2):int(np.ceil(x2)) + 2] = True
            inner = colour[int(np.ceil(y1)) + 2:int(y2) - 2, int(np.ceil(x1)) + 2:int(x2) - 2]
            assert inner.all(), f"box {(x1, y1, x2, y2)} of class {k} does not cover its colour"
        count, _, stats, _ = cv2.connectedComponentsWithStats((colour & ~covered).astype(np.uint8))
        for left, top, cw, ch, area in stats[1:]:
            assert min(cw, ch) <= min_size + 2, f"colour {k} at x={left} y={top} ({cw}x{ch}) lies outside every box"


@pytest.mark.parametrize("mosaic,mixup", [(1.0, 1.0), (1.0, 0.0), (0.0, 0.0)])
def test_boxes_follow_pixels(tmp_path, mosaic, mixup):
    cfg = AugmentConfig(hsv=(0.0, 0.0, 0.0), fill=0, jitter=0.3, flip=0.5)
    ds = YoloDataset(make_colour_samples(tmp_path), 64, train=True, mosaic=mosaic, mixup=mixup, augment=cfg, seed=3)
    boxes_seen = 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            image, targets = ds[i]
            assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and targets.dtype == np.float32
            check_boxes_follow_colours(image, targets, cfg.min_box_size)
            boxes_seen += len(targets)
    assert boxes_seen > 3 * len(ds)


def test_the_checker_catches_a_misplaced_box(tmp_path):
    cfg = AugmentConfig(hsv=(0.0, 0.0, 0.0), fill=0)
    ds = YoloDataset(make_colour_samples(tmp_path), 64, train=True, mosaic=1.0, mixup=0.0, augment=cfg)
    image, targets = ds[0]
    targets = targets.copy()
    targets[:, 1] = 1.0 - targets[:, 1]  # mirrored boxes on an unmirrored image
    with pytest.raises(AssertionError):
        check_boxes_follow_colours(image, targets, cfg.min_box_size)


def test_hflip_mirrors_boxes_exactly():
    image = np.zeros((10, 20, 3), np.uint8)
    image[2:5, 1:4] = 255
    flipped, boxes = hflip(image, np.array([[1, 2, 4, 5]], np.float32))
    assert boxes.tolist() == [[16, 2, 19, 5]] and flipped[2:5, 16:19].min() == 255 and flipped.sum() == image.sum()


def test_filter_boxes_clips_and_drops_tiny():
    boxes = np.array([[-5, 0, 10, 10], [30, 30, 31, 40], [5, 5, 50, 50]], np.float32)
    kept, labels = filter_boxes(boxes, np.array([0, 1, 2]), (0, 0, 32, 32), 2.0)
    assert kept.tolist() == [[0, 0, 10, 10], [5, 5, 32, 32]] and labels.tolist() == [0, 2]


def test_hsv_jitter_is_seeded_and_changes_colours():
    image = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    a = hsv_jitter(image, (0.1, 0.7, 0.4), np.random.default_rng(1))
    b = hsv_jitter(image, (0.1, 0.7, 0.4), np.random.default_rng(1))
    assert np.array_equal(a, b) and not np.array_equal(a, image) and a.shape == image.shape
    assert hsv_jitter(image, (0, 0, 0), np.random.default_rng(1)) is image
