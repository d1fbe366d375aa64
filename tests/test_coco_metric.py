"""utils.eval.coco_metric against pycocotools' COCOeval run directly on the same boxes: every array equal."""
import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from utils.eval.coco_metric import CocoBoxes, coco_evaluate, coco_map50_95


def random_case(seed, num_images=25, num_classes=4):
    """Ground truth of every size range with crowds and exact duplicates; detections that hit, miss,
    repeat boxes and share scores; some image/class pairs get more than 100 detections."""
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for i in range(num_images):
        own = []
        for _ in range(rng.integers(0, 8)):
            w, h = rng.choice([rng.uniform(2, 30), rng.uniform(30, 100), rng.uniform(100, 300)], 2)
            box = [*rng.integers(0, 200, 2).astype(float), float(w), float(h)]
            own.append((i, int(rng.integers(0, num_classes)), box, int(rng.random() < 0.15)))
            if rng.random() < 0.2:
                own.append((i, own[-1][1], list(box), int(rng.random() < 0.3)))
        gts += own
        for _ in range(rng.integers(0, 140)):
            if own and rng.random() < 0.6:
                _, c, box, _ = own[rng.integers(len(own))]
                box = np.array(box) + rng.normal(0, 3, 4) * (rng.random() < 0.7)
                box[2:] = np.abs(box[2:]) + 0.1
                c = c if rng.random() < 0.9 else int(rng.integers(0, num_classes))
            else:
                box, c = np.array([*rng.uniform(0, 300, 2), *rng.uniform(1, 200, 2)]), int(rng.integers(0, num_classes))
            score = float(rng.integers(0, 5)) / 4 if rng.random() < 0.3 else float(rng.random())
            dets.append((i, c, box.tolist(), score))
    return gts, dets, num_images, num_classes


def pycocotools_result(gts, dets, num_images, num_classes):
    anns = [{"id": j + 1, "image_id": i, "category_id": c + 1, "bbox": b, "area": b[2] * b[3], "iscrowd": crowd}
            for j, (i, c, b, crowd) in enumerate(gts)]
    results = [{"image_id": i, "category_id": c + 1, "bbox": b, "score": s} for i, c, b, s in dets]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": [{"id": i} for i in range(num_images)], "annotations": anns,
                      "categories": [{"id": k + 1} for k in range(num_classes)]}
        gt.createIndex()
        if results:
            dt = gt.loadRes(results)
        else:  # loadRes cannot take an empty list: an empty results set made by hand
            dt = COCO()
            dt.dataset = {**gt.dataset, "annotations": []}
            dt.createIndex()
        e = COCOeval(gt, dt, "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e


def coco_boxes(gts, dets):
    def boxes(rows, crowd):
        return CocoBoxes(np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=np.int64),
                         np.array([r[2] for r in rows], dtype=np.float64).reshape(-1, 4),
                         np.array([r[3] for r in rows], dtype=np.float64), np.asarray(crowd, dtype=bool))
    return boxes(gts, [g[3] for g in gts]), boxes(dets, np.zeros(len(dets)))


def fast_result(gts, dets, num_images, num_classes):
    return coco_evaluate(*coco_boxes(gts, dets), num_classes)


@pytest.mark.parametrize("seed", range(6))
def test_equals_pycocotools_exactly(seed):
    case = random_case(seed)
    ref, ours = pycocotools_result(*case), fast_result(*case)
    assert np.array_equal(ours["precision"], ref.eval["precision"])
    assert np.array_equal(ours["recall"], ref.eval["recall"])
    assert np.array_equal(ours["stats"], np.asarray(ref.stats))
    assert 0.05 < ours["stats"][0] < 0.95  # a case where matching decides the numbers


def test_class_without_ground_truth_is_absent_and_perfect_detections_score_one():
    gts = [(0, 0, [10.0, 10.0, 50.0, 40.0], 0), (1, 0, [100.0, 20.0, 150.0, 120.0], 0)]
    dets = [(0, 0, [10.0, 10.0, 50.0, 40.0], 0.9), (1, 0, [100.0, 20.0, 150.0, 120.0], 0.8),
            (1, 1, [0.0, 0.0, 20.0, 20.0], 0.7)]  # class 1 has no ground truth
    ours = fast_result(gts, dets, 3, 2)  # image 2 has nothing
    assert np.all(ours["precision"][:, :, 1] == -1)
    assert ours["stats"][0] == pytest.approx(1.0)
    assert ours["stats"][3] == -1  # no small boxes
    assert np.array_equal(ours["stats"], np.asarray(pycocotools_result(gts, dets, 3, 2).stats))


def test_no_detections_score_zero_where_ground_truth_exists_and_minus_one_elsewhere():
    gts = [(0, 0, [10.0, 10.0, 50.0, 40.0], 0), (1, 1, [0.0, 0.0, 10.0, 10.0], 0)]  # medium and small, no large
    ref, ours = pycocotools_result(gts, [], 2, 2), fast_result(gts, [], 2, 2)
    assert np.array_equal(ours["precision"], ref.eval["precision"])
    assert np.array_equal(ours["stats"], np.asarray(ref.stats))
    assert ours["stats"].tolist() == [0, 0, 0, 0, 0, -1, 0, 0, 0, 0, 0, -1]


@pytest.mark.parametrize("seed", range(3))
def test_map50_95_alone_equals_pycocotools_first_stat(seed):
    gts, dets, num_images, num_classes = random_case(seed)
    assert coco_map50_95(*coco_boxes(gts, dets), num_classes) == pycocotools_result(gts, dets, num_images,
                                                                                     num_classes).stats[0]
    assert coco_map50_95(*coco_boxes([], dets), num_classes) == -1  # no ground truth at all
