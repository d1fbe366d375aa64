"""The pictures of the data (labels.png, train_batch0.jpg) and the F1 curve of get_map.py."""
from itertools import combinations

import numpy as np
import pytest
import torch
from PIL import Image

from utils.core.config import read_anchors
from utils.core.plotting import plt
from utils.data.annotations import Sample
from utils.data.batch_picture import MAX_SIDE, batch_picture, class_color, save_batch_picture
from utils.data.label_plots import label_figure, label_statistics, plot_labels
from utils.eval.evaluator import evaluate_detections
from utils.eval.plots import best_mean_f1, f1_by_threshold, plot_f1_curve
from tests.conftest import ROOT


def make_sample(boxes, labels, width, height, difficult=None) -> Sample:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    difficult = np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult, bool)
    return Sample("unused.jpg", boxes, np.asarray(labels, np.int64), difficult, width, height)


def assert_image(path, fmt: str) -> None:
    with Image.open(path) as image:
        assert image.format == fmt and min(image.size) > 0
        image.verify()


def test_label_statistics_on_hand_made_samples():
    samples = [make_sample([[0, 0, 50, 25], [20, 10, 100, 50]], [2, 0], width=100, height=50, difficult=[0, 1]),
               make_sample([], [], width=300, height=300),
               make_sample([[30, 60, 90, 120]], [2], width=300, height=200)]
    stats = label_statistics(samples, 4)
    assert stats.num_images == 3
    assert stats.counts.tolist() == [1, 0, 2, 0] and stats.difficult.tolist() == [1, 0, 0, 0]
    np.testing.assert_allclose(stats.centres, [[0.25, 0.25], [0.6, 0.6], [0.2, 0.45]])
    np.testing.assert_allclose(stats.sizes, [[0.5, 0.5], [0.8, 0.8], [0.2, 0.3]])


def test_label_statistics_refuse_a_class_index_outside_the_classes():
    with pytest.raises(ValueError, match=r"expected 0\.\.1"):
        label_statistics([make_sample([[0, 0, 5, 5]], [2], 10, 10)], 2)


def random_samples(n: int, num_classes: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(0, 4))
        xy = rng.uniform(0, 60, (k, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(2, 40, (k, 2))], axis=1)
        out.append(make_sample(boxes, rng.integers(0, num_classes, k), 100, 80, rng.random(k) < 0.2))
    return out


ANCHORS = read_anchors(ROOT / "model_data/yolo_anchors.txt").numpy()


@pytest.mark.parametrize("samples, num_classes", [
    (random_samples(30, 3), 3),
    ([make_sample([], [], 64, 48), make_sample([], [], 32, 32)], 2),  # background images only
    (random_samples(40, 80), 80),
])
def test_labels_png_is_a_valid_image(tmp_path, samples, num_classes):
    names = [f"class {i}" for i in range(num_classes)]
    plot_labels(samples, names, tmp_path / "labels.png", 128, ANCHORS)
    assert_image(tmp_path / "labels.png", "PNG")


def overlapping(texts) -> list:
    boxes = [t.get_window_extent() for t in texts if t.get_text()]
    return [(a, b) for a, b in combinations(boxes, 2) if a.overlaps(b)]


def test_80_class_names_and_counts_do_not_overlap():
    names = [f"traffic light {i}" for i in range(80)]
    many = make_sample(np.tile([[10, 10, 50, 40]], (80 * 12345, 1)), np.repeat(np.arange(80), 12345), 100, 80)
    fig = label_figure([many] + random_samples(20, 80), names, 128, ANCHORS)  # 5-digit counts
    fig.canvas.draw()
    counts_axes = fig.axes[0]
    ticks = counts_axes.get_xticklabels()
    assert [t.get_text() for t in ticks] == names
    assert not overlapping(ticks) and not overlapping(counts_axes.texts)
    assert min(t.get_fontsize() for t in ticks) >= 7
    plt.close(fig)


# Hand-worked: class a has 2 ground truths and detections at 0.9 (hit), 0.8 (miss), 0.3 (hit);
# class b has no ground truth and one miss at 0.6; class c has 1 ground truth, hit at 0.6.
CURVES = [
    {"recall": [0.5, 0.5, 1.0], "precision": [1.0, 0.5, 2 / 3], "scores": [0.9, 0.8, 0.3]},
    {"recall": [0.0], "precision": [0.0], "scores": [0.6]},
    {"recall": [1.0], "precision": [1.0], "scores": [0.6]},
]
PER_CLASS = [{"class": "a", "gts": 2}, {"class": "b", "gts": 0}, {"class": "c", "gts": 1}]


def test_f1_at_known_thresholds():
    thresholds, f1 = f1_by_threshold(CURVES, [0.1, 0.3, 0.5, 0.8, 0.85, 0.95])
    # class a at 0.3: P 2/3, R 1 -> 0.8; at 0.8 (the miss counts, score >= threshold): P 1/2, R 1/2 -> 0.5;
    # at 0.85: P 1, R 1/2 -> 2/3; at 0.95 nothing passes -> 0
    np.testing.assert_allclose(f1[0], [0.8, 0.8, 0.5, 0.5, 2 / 3, 0.0])
    np.testing.assert_allclose(f1[1], 0.0)
    np.testing.assert_allclose(f1[2], [1, 1, 1, 0, 0, 0])
    mean, best, at = best_mean_f1(thresholds, f1, PER_CLASS)
    np.testing.assert_allclose(mean, [0.9, 0.9, 0.75, 0.25, 1 / 3, 0.0])  # class b (no ground truth) left out
    assert best == pytest.approx(0.9) and at == 0.3  # the highest threshold of the best F1


def test_f1_of_a_class_without_detections_is_zero():
    _, f1 = f1_by_threshold([{"recall": [], "precision": [], "scores": []}], [0.0, 0.5])
    assert f1.tolist() == [[0.0, 0.0]]


def test_f1_default_thresholds_span_zero_to_one():
    thresholds, f1 = f1_by_threshold(CURVES)
    assert thresholds[0] == 0 and thresholds[-1] == 1 and len(thresholds) == 1001 and f1.shape == (3, 1001)
    _, best, at = best_mean_f1(thresholds, f1, PER_CLASS)
    assert best == pytest.approx(0.9) and at == pytest.approx(0.3)


def test_f1_at_the_score_threshold_equals_the_evaluator_table():
    samples = [make_sample([[0, 0, 10, 10], [50, 50, 90, 90]], [0, 1], 100, 100),
               make_sample([[20, 20, 40, 40]], [0], 100, 100)]
    found = [np.array([[0, 0, 10, 10, 0.9, 0], [60, 0, 70, 10, 0.7, 0], [50, 50, 90, 90, 0.4, 1]], np.float32),
             np.array([[20, 20, 40, 40, 0.6, 0], [0, 60, 9, 70, 0.55, 1]], np.float32)]
    result = evaluate_detections(found, samples, ["a", "b"], score_thr=0.5)
    _, f1 = f1_by_threshold(result["curves"], [0.5])
    expected = [row["f1"] for row in result["per_class"]]
    assert expected[0] > 0 and expected[1] == 0
    np.testing.assert_allclose(f1[:, 0], expected)


@pytest.mark.parametrize("num_classes", [3, 80])
def test_f1_curve_png_is_a_valid_image(tmp_path, num_classes):
    curves = (CURVES * num_classes)[:num_classes]
    per_class = [{"class": f"c{i}", "gts": PER_CLASS[i % 3]["gts"]} for i in range(num_classes)]
    plot_f1_curve(per_class, curves, tmp_path / "f1_curve.png")
    assert_image(tmp_path / "f1_curve.png", "PNG")


def one_box_batch():
    """Two black 64x96 images; image 1 holds one box of class 0 centred, half the image's width and height."""
    images = torch.zeros(2, 3, 64, 96, dtype=torch.uint8)
    targets = torch.tensor([[1, 0, 0.5, 0.5, 0.5, 0.5]], dtype=torch.float32)
    return images, targets


def test_batch_picture_draws_the_target_box_in_its_tile():
    images, targets = one_box_batch()
    grid = batch_picture(images, targets, ["red"])
    assert grid.shape == (64, 192, 3)  # one row of two 96-wide tiles
    color = class_color(0)
    x1, y1, x2, y2 = 96 + 24, 16, 96 + 72, 48  # the box in tile 1: (48 +- 24, 32 +- 16)
    assert (grid[y2, x1:x2 + 1] == color).all()  # bottom edge
    assert (grid[y1:y2 + 1, x2] == color).all()  # right edge
    assert (grid[y1 + 4:y2 + 1, x1] == color).all()  # left edge, below the class name
    assert (grid[y1 + 1:y2, x1 + 1:x2] == 0).all()  # inside untouched
    assert not (grid[1:63, 1:95] == color).all(axis=-1).any()  # nothing drawn in tile 0


def test_batch_picture_leaves_the_batch_unchanged():
    images, targets = one_box_batch()
    images[:, :, 10:20] = 200
    before = images.clone(), targets.clone()
    batch_picture(images, targets, ["red"])
    assert torch.equal(images, before[0]) and torch.equal(targets, before[1])


def test_batch_picture_keeps_16_images_and_fits_the_size_limit():
    images = torch.zeros(17, 3, 640, 640, dtype=torch.uint8)
    targets = torch.tensor([[16, 0, 0.5, 0.5, 0.2, 0.2]])  # image 17 is not drawn
    grid = batch_picture(images, targets, ["a"])
    assert grid.shape == (MAX_SIDE, MAX_SIDE, 3)  # 4 x 4 tiles of 640 scaled to 480
    assert not (grid == class_color(0)).all(axis=-1).any()


def test_train_batch0_jpg_is_a_valid_image(tmp_path):
    images, targets = one_box_batch()
    save_batch_picture(tmp_path / "train_batch0.jpg", images, targets, ["red"])
    assert_image(tmp_path / "train_batch0.jpg", "JPEG")
    with Image.open(tmp_path / "train_batch0.jpg") as image:
        assert image.size == (192, 64)
