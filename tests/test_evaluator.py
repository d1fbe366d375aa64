"""The evaluator against hand-worked AP values, a slow devkit-style reference, and pycocotools itself."""
import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.eval.evaluator import confusion_matrix, evaluate_detections, evaluate_model, gather_detections, \
    gather_ground_truth, voc_ap
from tests.helpers.samples import reference_ap, sample, write_samples


def dets(*rows):
    return np.asarray(rows, dtype=np.float32).reshape(-1, 6)


A, B, C = [0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 90, 90]
MISS = [60, 0, 70, 10]  # overlaps nothing


def test_perfect_detections_score_one():
    samples = [sample([A, B], [0, 1]), sample([C], [0])]
    found = [dets([*A, 0.9, 0], [*B, 0.8, 1]), dets([*C, 0.7, 0])]
    r = evaluate_detections(found, samples, ["a", "b"])
    assert r["map"] == pytest.approx(1.0) and r["map_voc07"] == pytest.approx(1.0)
    assert r["map50_95"] == pytest.approx(1.0) and r["map50"] == pytest.approx(1.0)
    assert [row["f1"] for row in r["per_class"]] == [1.0, 1.0]


def test_false_positive_ranked_first():
    # FP, TP, TP with 2 ground truths: precision 1/2 at recall 1/2, 2/3 at recall 1; envelope 2/3 throughout
    samples = [sample([A], [0]), sample([B], [0])]
    found = [dets([*MISS, 0.9, 0], [*A, 0.8, 0]), dets([*B, 0.7, 0])]
    r = evaluate_detections(found, samples, ["a"], metric="voc")
    assert r["map"] == pytest.approx(2 / 3)
    assert r["map50_95"] is None and r["coco"] is None


def test_duplicate_counts_as_false_positive():
    # TP, duplicate of the same box, TP: precision 1 at recall 1/2, then 2/3 at recall 1
    samples = [sample([A], [0]), sample([B], [0])]
    found = [dets([*A, 0.9, 0], [*A, 0.8, 0]), dets([*B, 0.7, 0])]
    r = evaluate_detections(found, samples, ["a"], metric="voc")
    assert r["map"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert (r["per_class"][0]["tp"], r["per_class"][0]["fp"]) == (2, 1)


def test_detection_on_difficult_box_is_ignored():
    # difficult B hit first, then a FP, then A: ignoring the hit leaves FP, TP -> AP 1/2;
    # counting it as TP would give 5/6, as FP 1/3
    found = [dets([*B, 0.9, 0], [*MISS, 0.8, 0], [*A, 0.7, 0])]
    r = evaluate_detections(found, [sample([A, B], [0, 0], difficult=[False, True])], ["a"], metric="voc")
    row = r["per_class"][0]
    assert r["map"] == pytest.approx(0.5)
    assert (row["gts"], row["difficult"], row["tp"], row["fp"]) == (1, 1, 1, 1)
    plain = evaluate_detections(found, [sample([A, B], [0, 0])], ["a"], metric="voc")
    assert plain["map"] == pytest.approx(5 / 6)


def test_eleven_point_differs_from_all_point():
    # 3 ground truths; TP .9, FP .8, TP .7, FP .6, TP .5 -> recall 1/3 1/3 2/3 2/3 1, precision 1 1/2 2/3 1/2 3/5
    samples = [sample([A], [0]), sample([B], [0]), sample([C], [0])]
    found = [dets([*A, 0.9, 0], [*MISS, 0.8, 0]), dets([*B, 0.7, 0], [0, 60, 10, 70, 0.6, 0]), dets([*C, 0.5, 0])]
    r = evaluate_detections(found, samples, ["a"], metric="voc07")
    all_point = (1 / 3) * (1 + 2 / 3 + 3 / 5)
    eleven = (4 * 1 + 3 * (2 / 3) + 4 * (3 / 5)) / 11  # recall points 0-.3, .4-.6, .7-1
    assert r["map_voc"] == pytest.approx(all_point) and r["map_voc07"] == pytest.approx(eleven)
    assert r["map"] == pytest.approx(eleven) and abs(all_point - eleven) > 0.005


def test_iou_must_exceed_threshold():
    found = [dets([0, 0, 10, 5, 0.9, 0])]  # IoU with A is exactly 0.5
    samples = [sample([A], [0])]
    assert evaluate_detections(found, samples, ["a"], metric="voc")["map"] == 0.0
    assert evaluate_detections(found, samples, ["a"], metric="voc", iou_thres=0.4)["map"] == pytest.approx(1.0)


def test_images_without_ground_truth_and_classes_without_detections():
    samples = [sample([A], [0]), sample([], []), sample([B], [1])]
    found = [dets([*A, 0.9, 0]), dets([*B, 0.95, 0]), dets()]
    r = evaluate_detections(found, samples, ["a", "b", "c"])
    a, b, c = r["per_class"]
    assert a["ap"] == pytest.approx(0.5) and a["fp"] == 1  # FP on the empty image ranked first
    assert b["ap"] == 0.0 and b["dets"] == 0  # ground truth, no detections
    assert c["ap"] is None and c["gts"] == 0  # no ground truth: left out of the mean
    assert r["map"] == pytest.approx(0.25)
    empty = evaluate_detections([dets() for _ in samples], samples, ["a", "b", "c"])
    assert empty["map"] == 0.0 and empty["map50_95"] == 0.0


@pytest.mark.parametrize("backend", ["fast", "pycocotools"])
def test_no_detections_leave_size_ranges_without_ground_truth_absent(backend):
    """Small (10x10) and medium (40x40) ground truths, no large one: the large stats do not exist (None), with
    detections or without; the others are 0 without detections."""
    samples = [sample([A], [0]), sample([C], [1])]
    none = evaluate_detections([dets(), dets()], samples, ["a", "b"], metric="coco", coco_backend=backend)
    some = evaluate_detections([dets([*A, 0.9, 0]), dets()], samples, ["a", "b"], metric="coco", coco_backend=backend)
    absent = {"map_large", "mar_large"}
    assert {k for k, v in some["coco"].items() if v is None} == absent
    assert {k for k, v in none["coco"].items() if v is None} == absent
    assert all(v == 0.0 for k, v in none["coco"].items() if k not in absent)
    assert [r["ap50_95"] for r in none["per_class"]] == [0.0, 0.0]
    nothing = evaluate_detections([dets()], [sample([], [])], ["a"], metric="coco", coco_backend=backend)
    assert all(v is None for v in nothing["coco"].values()) and nothing["per_class"][0]["ap50_95"] is None


def test_voc_ap_known_curves():
    rec, prec = np.array([0.5, 1.0]), np.array([1.0, 0.5])
    assert voc_ap(rec, prec) == pytest.approx(0.75)
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx((6 * 1.0 + 5 * 0.5) / 11)
    assert voc_ap(np.array([]), np.array([])) == 0.0


def random_split(seed, n_images=30, n_classes=3):
    rng = np.random.default_rng(seed)
    samples, found = [], []
    for _ in range(n_images):
        n = rng.integers(0, 5)
        xy = rng.uniform(0, 150, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 60, (n, 2))], axis=1)
        labels = rng.integers(0, n_classes, n)
        samples.append(sample(boxes, labels, difficult=rng.random(n) < 0.2, size=(220, 220)))
        jitter = np.repeat(boxes, 2, axis=0) + rng.normal(0, 4, (2 * n, 4))
        m = rng.integers(0, 6)
        noise_xy = rng.uniform(0, 150, (m, 2))
        noise = np.concatenate([noise_xy, noise_xy + rng.uniform(10, 60, (m, 2))], axis=1)
        all_boxes = np.concatenate([jitter, noise])
        cls = np.concatenate([np.repeat(labels, 2), rng.integers(0, n_classes, m)])
        cls = np.where(rng.random(len(cls)) < 0.1, rng.integers(0, n_classes, len(cls)), cls)
        found.append(np.column_stack([all_boxes, rng.random(len(cls)), cls]).astype(np.float32))
    return samples, found


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("iou", [0.5, 0.7])
def test_fast_matching_equals_reference_loop(seed, iou):
    samples, found = random_split(seed)
    r = evaluate_detections(found, samples, ["a", "b", "c"], metric="voc", iou_thres=iou)
    for c, row in enumerate(r["per_class"]):
        assert row["ap"] == pytest.approx(reference_ap(found, samples, c, iou), abs=1e-12)


@pytest.mark.parametrize("backend", ["fast", "pycocotools"])
def test_coco_path_equals_pycocotools_directly(backend):
    samples, found = random_split(3, n_images=40)
    ours = evaluate_detections(found, samples, ["a", "b", "c"], metric="coco", coco_backend=backend)
    stats = pycocotools_stats(found, samples, 3)
    assert ours["map50_95"] == pytest.approx(stats[0], abs=1e-9)
    assert coco_stats_list(ours) == pytest.approx(stats.tolist(), abs=1e-9)  # all 12
    assert len(COCO_STAT_NAMES) == 12 and min(v for v in stats if v >= 0) > 0.05
    assert [ours["coco"][k] for k in ("map_large", "mar_large")] == [None, None]  # no box over 96x96: -1
    assert 0.1 < ours["map50_95"] < 0.9


# COCOeval.stats order, written out here so that a wrong name in the evaluator cannot hide
COCO_STAT_NAMES = ("map50_95", "map50", "map75", "map_small", "map_medium", "map_large",
                   "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")


def coco_stats_list(result):
    """The 12 COCO stats of an evaluate_detections result in COCOeval.stats order, None back to -1."""
    return [-1.0 if result["coco"][k] is None else result["coco"][k] for k in COCO_STAT_NAMES]


def pycocotools_stats(found, samples, num_classes):
    """COCOeval.stats of detections [K, 6] per sample, difficult boxes as crowd, run from plain dicts."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    images, anns, results = [], [], []
    for i, (s, d) in enumerate(zip(samples, found)):
        images.append({"id": i})
        for b, c, diff in zip(s.boxes.tolist(), s.labels.tolist(), s.difficult.tolist()):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c + 1, "bbox": [b[0], b[1], w, h],
                         "area": w * h, "iscrowd": int(diff)})
        for x1, y1, x2, y2, score, c in d.tolist():
            results.append({"image_id": i, "category_id": int(c) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns,
                      "categories": [{"id": k + 1} for k in range(num_classes)]}
        gt.createIndex()
        e = COCOeval(gt, gt.loadRes(results), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return np.asarray(e.stats)


def test_confusion_matrix_counts():
    samples = [sample([A, B, C], [0, 1, 1], difficult=[False, False, True]), sample([A], [1])]
    found = [dets([*A, 0.9, 0], [*B, 0.8, 0], [*C, 0.9, 1], [*MISS, 0.7, 1], [*B, 0.3, 1]), dets()]
    cm = confusion_matrix(gather_detections(found), gather_ground_truth(samples), 2, 2, score_thr=0.5)
    expected = [[1, 0, 0],   # a seen as a
                [1, 0, 1],   # b seen as a; b of image 2 missed (background column)
                [0, 1, 0]]   # MISS: a 'b' on background; C is difficult and counts nowhere
    assert cm.tolist() == expected


def test_bad_detections_rejected():
    with pytest.raises(ValueError, match="one per sample"):
        evaluate_detections([dets()], [sample([A], [0])] * 2, ["a"])
    with pytest.raises(ValueError, match="class id 3"):
        evaluate_detections([dets([*A, 0.9, 3])], [sample([A], [0])], ["a"])
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_detections([dets()], [sample([A], [0])], ["a"], metric="voc12")


def test_evaluate_model_equals_yolo_detections_scored_by_pycocotools(tmp_path):
    """evaluate_model (batched loader, unfused model) against YOLO's own per-image path (BN folded,
    channels-last) scored by the devkit loop and by pycocotools itself."""
    from tests.helpers.models import save_random_checkpoint
    from utils.engine.checkpoint import model_from_weights
    from yolo import YOLO

    weights = tmp_path / "c.pth"
    save_random_checkpoint(weights, ["a", "b"])
    sizes = [(60, 90), (80, 50), (64, 64), (100, 40)]
    samples = write_samples(tmp_path, sizes, [[5, 5, 40, 40], [10, 20, 45, 70], [0, 0, 30, 20], [8, 30, 36, 90]])
    model, meta = model_from_weights(weights)
    model.train()
    r = evaluate_model(model, samples, ["a", "b"], meta["input_size"], meta["anchors"], meta["anchors_mask"],
                       progress=False)
    assert model.training, "evaluation must restore the training mode"
    yolo = YOLO(weights, conf=0.001, nms=0.5, amp="off", device="cpu")
    found = []
    for s in samples:
        det = yolo.detect(s.image_path)
        found.append(np.column_stack([det.boxes, det.scores, det.class_ids]).astype(np.float32))
    assert all(len(d) for d in found)
    assert r["map50"] == pytest.approx(np.mean([reference_ap(found, samples, c) for c in (0, 1)]), abs=1e-6)
    stats = pycocotools_stats(found, samples, 2)
    assert coco_stats_list(r) == pytest.approx(stats.tolist(), abs=1e-6)
    assert r["map50"] > 0.05 and r["map50_95"] > 0.01
    assert sum(len(d) for d in r["detections"]) == sum(len(d) for d in found)


def test_evaluate_model_names_unreadable_images(tmp_path):
    from nets.yolo import YoloBody
    from utils.core.config import DEFAULT_ANCHORS_MASK, read_anchors
    from utils.data.voc import UnreadableImagesError

    samples = write_samples(tmp_path, [(60, 90), (80, 50), (40, 40)], [[5, 5, 30, 30]] * 3)
    for s in samples[1:]:
        (tmp_path / Path(s.image_path).name).write_bytes(b"broken after the scan")
    torch.manual_seed(0)
    model = YoloBody(DEFAULT_ANCHORS_MASK, 2)
    args = (model, samples, ["a", "b"], 64, read_anchors("model_data/yolo_anchors.txt"), DEFAULT_ANCHORS_MASK)
    with pytest.raises(UnreadableImagesError, match="2 images of the 3 evaluated cannot be read") as caught:
        evaluate_model(*args, progress=False)
    assert "1.png" in str(caught.value) and "2.png" in str(caught.value) and "2 ground-truth objects" in str(caught.value)
    with pytest.warns(UserWarning, match="left out of scoring"):
        r = evaluate_model(*args, progress=False, skip_unreadable=True)
    assert r["settings"]["images"] == 1 and len(r["detections"]) == 1
    assert (r["left_out"]["images"], r["left_out"]["objects"]) == (2, 2)
    assert [f["image"] for f in r["left_out"]["files"]] == [s.image_path for s in samples[1:]]


def test_detect_samples_keeps_only_boxes_with_area(tmp_path):
    from tests.helpers.models import make_checkpoint
    from utils.engine.checkpoint import model_from_weights
    from utils.eval.detect import detect_samples

    model, meta = model_from_weights(make_checkpoint(tmp_path / "c.pth", input_size=(64, 64)))
    samples = write_samples(tmp_path, [(1, 1), (1, 30), (20, 1)], [[0, 0, 1, 1]] * 3)
    found = detect_samples(model, samples, 64, meta["anchors"], meta["anchors_mask"], progress=False)
    for d, s in zip(found, samples):
        assert len(d) > 0 and (d[:, 2] > d[:, 0]).all() and (d[:, 3] > d[:, 1]).all()
        assert (d[:, [0, 2]] <= s.width).all() and (d[:, [1, 3]] <= s.height).all() and (d[:, :4] >= 0).all()


@pytest.mark.parametrize("backend", ["fast", "pycocotools"])
def test_coco_truth_is_scored_as_given(backend):
    """A COCO sample's coco_truth (unclipped box, its `area`, iscrowd) decides COCO mAP; its clipped boxes decide
    VOC AP. A 100x100 box whose area field says 5000 is medium, not large; the part of a box past the image
    edge counts for IoU; a zero-width box is a ground truth that nothing can find."""
    s = sample([[0, 0, 100, 100], [50, 50, 100, 100]], [0, 0], size=(100, 100))
    s.coco_truth = np.array([[0, 0, 100, 100, 5000, 0, 0], [50, 50, 100, 100, 10000, 0, 0], [5, 5, 0, 20, 0, 0, 0]])
    found = [dets([0, 0, 100, 100, 0.9, 0], [50, 50, 150, 150, 0.8, 0])]  # the second: IoU 0.25 with the clipped box
    r = evaluate_detections(found, [s], ["a"], metric="coco", coco_backend=backend)
    assert r["coco"]["map_medium"] == pytest.approx(1.0) and r["coco"]["map_small"] == 0.0
    assert r["coco"]["map_large"] == pytest.approx(1.0)  # the unclipped 100x100 box (area 10000) is found
    assert r["coco"]["mar_100"] == pytest.approx(2 / 3)  # 2 of 3 ground truths, at every IoU threshold
    assert r["map50"] == pytest.approx(0.5)  # VOC: the clipped box (50x50) is missed, the detection a false positive


def test_non_finite_detections_refused():
    """A NaN score would rank anywhere (a false positive with it above the true positives left AP at 1.0)."""
    samples = [sample([A], [0]), sample([B], [0])]
    with pytest.raises(ValueError, match=r"detection of .* is not finite"):
        evaluate_detections([dets([*MISS, np.nan, 0], [*A, 0.8, 0]), dets([*B, 0.7, 0])], samples, ["a"])
    with pytest.raises(ValueError, match="not finite"):
        evaluate_detections([dets([*A, 0.8, 0]), dets([0, 0, np.inf, 10, 0.7, 0])], samples, ["a"])
