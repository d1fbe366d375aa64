"""get_map.py on a COCO JSON against pycocotools' COCOeval run on the same two files.

The ground truth is what real COCO files hold and in-memory comparisons never built: `area` fields smaller than
w*h (the segment's area), crowd regions, category ids 1, 3, 7, image ids that are not file stems, boxes
crossing the image edge and boxes of zero width or height; the results file is in the COCO convention (the
JSON's image and category ids, no category_name).
"""
import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import get_map
from utils.eval.coco_metric import CocoBoxes, coco_evaluate

# COCOeval.stats order, written out here so that a wrong name in the evaluator cannot hide
STATS = ("map50_95", "map50", "map75", "map_small", "map_medium", "map_large",
         "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")
CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 7, "name": "bird"}]
IMAGES = [(11, "a.png", 160, 140), (25, "b.png", 160, 140), (40, "c.png", 120, 100), (7, "d.png", 100, 100)]
# (image id, category id, bbox, area or None (no field), iscrowd)
ANNOTATIONS = [
    (11, 1, [10, 10, 120, 100], 8000, 0),  # large by w*h (12000), medium by its area
    (11, 3, [100, 60, 80, 90], 5000, 0),  # crosses the right and bottom edges
    (11, 7, [5, 5, 0, 20], None, 0),  # zero width: a ground truth nothing can match
    (11, 1, [0, 0, 160, 140], 15000, 1),  # crowd
    (25, 3, [20, 30, 40, 30], 1000, 0),  # medium by w*h (1200), small by its area
    (25, 1, [-10, 50, 50, 40], 1500, 0),  # crosses the left edge
    (25, 7, [60, 60, 110, 90], 9300, 0),  # crosses the right edge; large either way
    (25, 3, [5, 100, 30, 0], 0, 0),  # zero height
    (40, 7, [10, 10, 30, 30], None, 0),  # no area field: w*h
    (40, 3, [50, 20, 60, 70], 3000, 1),  # crowd
    (40, 1, [70, 5, 45, 40.5], 1700.25, 0),
]
# (image id, category id, bbox, score)
RESULTS = [
    (11, 1, [10, 10, 120, 100], 0.9), (11, 1, [12, 10, 118, 100], 0.85), (11, 3, [100, 60, 80, 90], 0.8),
    (11, 3, [100, 60, 60, 80], 0.5), (11, 7, [5, 5, 2, 20], 0.7), (11, 1, [30, 100, 50, 30], 0.6),
    (11, 1, [140, 120, 15, 15], 0.4), (25, 3, [20, 30, 40, 30], 0.95), (25, 1, [-10, 50, 50, 40], 0.7),
    (25, 7, [60, 60, 100, 80], 0.65), (25, 3, [0, 95, 40, 10], 0.3), (25, 1, [0, 50, 40, 40], 0.5),
    (40, 7, [10, 10, 30, 30], 0.88), (40, 3, [55, 25, 40, 40], 0.77), (40, 3, [0, 60, 20, 20], 0.5),
    (40, 7, [12, 12, 28, 28], 0.45), (40, 1, [72, 6, 40, 38], 0.62), (7, 1, [10, 10, 50, 50], 0.99),
    (7, 3, [0, 0, 30, 30], 0.2),
]


def write_coco(folder, images=IMAGES, annotations=ANNOTATIONS, categories=CATEGORIES, fill_area=False):
    """The images (blank, of their sizes) and instances.json beside them. pycocotools needs an `area` in every
    annotation: `fill_area` writes w*h where ANNOTATIONS has none, the rule get_map.py follows."""
    folder.mkdir(parents=True, exist_ok=True)
    anns = []
    for n, (image_id, cid, bbox, area, crowd) in enumerate(annotations, 1):
        area = bbox[2] * bbox[3] if area is None and fill_area else area
        anns.append({"id": n, "image_id": image_id, "category_id": cid, "bbox": bbox, "iscrowd": crowd,
                     **({} if area is None else {"area": area})})
    for _, name, w, h in images:
        Image.new("RGB", (w, h), (90, 120, 150)).save(folder / name)
    gt = {"images": [{"id": i, "file_name": name, "width": w, "height": h} for i, name, w, h in images],
          "annotations": anns, "categories": categories}
    (folder / "instances.json").write_text(json.dumps(gt))
    return folder / "instances.json"


def write_results(path, rows=RESULTS, **extra):
    path.write_text(json.dumps([{"image_id": i, "category_id": c, "bbox": b, "score": s, **extra} for i, c, b, s in rows]))
    return path


def pycocotools_stats(gt_path, results_path) -> list:
    """COCOeval('bbox').stats on the two files, as a researcher would run it."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        e = COCOeval(gt, gt.loadRes(str(results_path)), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e.stats.tolist()


def get_map_summary(gt_path, results_path, out, *flags) -> dict:
    argv = ["--data", str(gt_path), "--detections", str(results_path), "--out", str(out), "--no-plots", *flags]
    assert get_map.main(argv) == 0
    return json.loads((out / "summary.json").read_text())


def stats_of(summary) -> list:
    return [-1.0 if summary["coco"][k] is None else summary["coco"][k] for k in STATS]


@pytest.mark.parametrize("backend", ["fast", "pycocotools"])
def test_get_map_gives_pycocotools_twelve_stats_on_the_same_files(tmp_path, scan_cache, backend):
    gt, results = write_coco(tmp_path / "coco"), write_results(tmp_path / "results.json")
    ours = stats_of(get_map_summary(gt, results, tmp_path / "out", "--coco-backend", backend))
    ref = pycocotools_stats(write_coco(tmp_path / "filled", fill_area=True), results)
    assert ours == pytest.approx(ref, abs=1e-12)
    assert len([v for v in ref if 0 < v < 1]) >= 9  # a case where the matching decides the numbers
    again = stats_of(get_map_summary(gt, results, tmp_path / "again", "--coco-backend", backend))
    assert again == ours  # the scan cache keeps the annotations as given


def test_area_edges_and_zero_sizes_alone(tmp_path, scan_cache):
    """The same ground truth with ids that the old reading also maps (category ids 1, 2, 3 and image files named
    by their ids): only the area fields, crowds, edge-crossing and zero-size boxes are left to decide."""
    renumber = {1: 1, 3: 2, 7: 3}
    images = [(i, f"{i}.png", w, h) for i, _, w, h in IMAGES]
    anns = [(i, renumber[c], b, a, crowd) for i, c, b, a, crowd in ANNOTATIONS]
    categories = [{"id": renumber[c["id"]], "name": c["name"]} for c in CATEGORIES]
    gt = write_coco(tmp_path / "coco", images, anns, categories)
    results = write_results(tmp_path / "results.json", [(i, renumber[c], b, s) for i, c, b, s in RESULTS])
    ours = stats_of(get_map_summary(gt, results, tmp_path / "out"))
    ref = pycocotools_stats(write_coco(tmp_path / "filled", images, anns, categories, fill_area=True), results)
    assert ours == pytest.approx(ref, abs=1e-12)


def test_each_difference_from_the_clipped_boxes_changes_the_numbers(tmp_path):
    """The case above is only a test if scoring the boxes as VOC AP and training see them (clipped, zero sizes
    dropped, area w*h) gives other numbers: pycocotools on such a copy of the ground truth differs."""
    gt, results = write_coco(tmp_path / "coco", fill_area=True), write_results(tmp_path / "results.json")
    clipped = []
    for image_id, cid, (x, y, w, h), _, crowd in ANNOTATIONS:
        iw, ih = next((w_, h_) for i, _, w_, h_ in IMAGES if i == image_id)
        x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + w, iw), min(y + h, ih)
        if x2 > x1 and y2 > y1:
            clipped.append((image_id, cid, [x1, y1, x2 - x1, y2 - y1], (x2 - x1) * (y2 - y1), crowd))
    other = pycocotools_stats(write_coco(tmp_path / "clipped", annotations=clipped), results)
    ref = pycocotools_stats(gt, results)
    assert sum(abs(a - b) > 1e-3 for a, b in zip(other, ref)) >= 6


def random_case(seed, num_images=20):
    """Ground truth with area fields below w*h, crowds, zero sizes and boxes at and past the edges; detections."""
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for i in range(num_images):
        own = []
        for _ in range(rng.integers(0, 7)):
            w, h = rng.choice([rng.uniform(2, 30), rng.uniform(30, 100), rng.uniform(100, 200)], 2)
            w, h = (0.0, h) if rng.random() < 0.1 else (w, h)
            box = [float(rng.uniform(-20, 150)), float(rng.uniform(-20, 150)), float(w), float(h)]
            area = float(w * h * rng.uniform(0.3, 1.0)) if rng.random() < 0.8 else float(w * h)
            own.append((i, int(rng.integers(0, 3)), box, int(rng.random() < 0.15), area))
        gts += own
        for _ in range(rng.integers(0, 30)):
            if own and rng.random() < 0.7:
                _, c, box, _, _ = own[rng.integers(len(own))]
                box = np.abs(np.array(box) + rng.normal(0, 4, 4))
            else:
                box, c = np.array([*rng.uniform(0, 200, 2), *rng.uniform(1, 150, 2)]), int(rng.integers(0, 3))
            dets.append((i, c, box.tolist(), float(rng.integers(0, 8)) / 8 if rng.random() < 0.3 else float(rng.random())))
    return gts, dets, num_images


@pytest.mark.parametrize("seed", range(4))
def test_fast_metric_uses_the_area_field_as_pycocotools_does(seed):
    gts, dets, num_images = random_case(seed)
    anns = [{"id": j + 1, "image_id": i, "category_id": c + 1, "bbox": b, "area": a, "iscrowd": crowd}
            for j, (i, c, b, crowd, a) in enumerate(gts)]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": [{"id": i} for i in range(num_images)], "annotations": anns,
                      "categories": [{"id": k + 1} for k in range(3)]}
        gt.createIndex()
        e = COCOeval(gt, gt.loadRes([{"image_id": i, "category_id": c + 1, "bbox": b, "score": s}
                                     for i, c, b, s in dets]), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    truth = CocoBoxes(np.array([g[0] for g in gts]), np.array([g[1] for g in gts]), np.array([g[2] for g in gts]),
                      np.ones(len(gts)), np.array([bool(g[3]) for g in gts]), np.array([g[4] for g in gts]))
    found = CocoBoxes(np.array([d[0] for d in dets]), np.array([d[1] for d in dets]), np.array([d[2] for d in dets]),
                      np.array([d[3] for d in dets]), np.zeros(len(dets), dtype=bool))
    ours = coco_evaluate(truth, found, 3)
    assert np.array_equal(ours["precision"], e.eval["precision"])
    assert np.array_equal(ours["recall"], e.eval["recall"])
    assert np.array_equal(ours["stats"], np.asarray(e.stats))


def three_images(tmp_path):
    """Categories 1 a, 3 b, 7 c, one object each on images 1.png, 2.png, 3.png (ids 1, 2, 3)."""
    images = [(i, f"{i}.png", 64, 64) for i in (1, 2, 3)]
    categories = [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}, {"id": 7, "name": "c"}]
    return write_coco(tmp_path / "coco", images, [(1, 1, [8, 8, 40, 40], 1600, 0), (2, 3, [8, 8, 40, 40], 1600, 0),
                                                  (3, 7, [8, 8, 40, 40], 1600, 0)], categories)


def test_category_ids_are_the_jsons_own(tmp_path, scan_cache):
    """a and b found by results in the JSON's ids (1 and 3), c missed: 2/3 as pycocotools says; reading 3 as
    class index + 1 (c) gave 1/3."""
    gt = three_images(tmp_path)
    results = write_results(tmp_path / "results.json", [(1, 1, [8, 8, 40, 40], 0.9), (2, 3, [8, 8, 40, 40], 0.8)])
    summary = get_map_summary(gt, results, tmp_path / "out")
    assert summary["map50"] == pytest.approx(2 / 3) and summary["coco"]["map50"] == pytest.approx(2 / 3)
    assert stats_of(summary) == pytest.approx(pycocotools_stats(gt, results), abs=1e-12)
    assert [r["dets"] for r in summary["per_class"]] == [1, 1, 0]
    # predict.py's form (class index + 1 with category_name) still reads, to the same numbers
    own = tmp_path / "own.json"
    own.write_text(json.dumps([{"image_id": 1, "category_id": 1, "category_name": "a", "bbox": [8, 8, 40, 40],
                                "score": 0.9}, {"image_id": 2, "category_id": 2, "category_name": "b",
                                                "bbox": [8, 8, 40, 40], "score": 0.8}]))
    assert get_map_summary(gt, own, tmp_path / "out_own")["coco"] == summary["coco"]


@pytest.mark.parametrize("row, found", [
    ({"category_id": 2}, "result 1 has category_id 2, which is not one of the JSON's category ids"),
    ({"category_id": 3, "category_name": "a"}, "result 1 has category_id 3 ('b' in the JSON) with category_name 'a'"),
])
def test_category_ids_that_need_a_guess_stop(tmp_path, scan_cache, capsys, row, found):
    gt = three_images(tmp_path)
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [8, 8, 40, 40], "score": 0.9},
                                   {"image_id": 2, "bbox": [8, 8, 40, 40], "score": 0.8, **row}]))
    capsys.readouterr()
    assert get_map.main(["--data", str(gt), "--split", "all", "--detections", str(results), "--out",
                         str(tmp_path / "out"), "--no-plots"]) == 1
    err = capsys.readouterr().err
    assert found in err and "1 a, 3 b, 7 c" in err and "cannot be mapped without guessing" in err
    assert not (tmp_path / "out" / "summary.json").exists()


@pytest.mark.parametrize("bad, shown", [("score", "score nan"), ("bbox", "bbox [8, 8, inf, 40]")])
def test_results_with_nan_or_inf_are_refused_naming_the_row(tmp_path, scan_cache, capsys, bad, shown):
    """Five false positives of class a on image 3 (which has none) with NaN scores, above the true positive:
    class a's AP was 1.0."""
    gt = three_images(tmp_path)
    rows = [{"image_id": 3, "category_id": 1, "bbox": [40, 40, 20, 20], "score": 0.9}] * 5
    rows = [{**r, "score": float("nan")} if bad == "score" else {**r, "bbox": [8, 8, float("inf"), 40]} for r in rows]
    rows.append({"image_id": 1, "category_id": 1, "bbox": [8, 8, 40, 40], "score": 0.5})
    results = tmp_path / "results.json"
    results.write_text(json.dumps(rows))  # NaN and Infinity, as Python's json writes them
    capsys.readouterr()
    assert get_map.main(["--data", str(gt), "--split", "all", "--detections", str(results), "--out",
                         str(tmp_path / "out"), "--no-plots"]) == 1
    err = capsys.readouterr().err
    assert f"{results}: result 0 has" in err and shown in err and "expected finite numbers" in err


def test_detections_json_of_a_coco_dataset_uses_its_ids_and_pycocotools_agrees(tmp_path, scan_cache):
    """get_map.py --weights writes detections.json in the JSON's image and category ids: pycocotools scores it
    against the JSON to the numbers get_map.py printed, and get_map.py --detections reads it back to them."""
    from tests.helpers.models import save_random_checkpoint

    gt = write_coco(tmp_path / "coco")
    weights = tmp_path / "run" / "best.pth"
    save_random_checkpoint(weights, ["cat", "dog", "bird"])
    assert get_map.main(["--data", str(gt), "--split", "all", "--weights", str(weights), "--out",
                         str(tmp_path / "model"), "--no-plots", "--device", "cpu", "--amp", "off"]) == 0
    rows = json.loads((tmp_path / "model" / "detections.json").read_text())
    assert rows and {r["category_id"] for r in rows} <= {1, 3, 7} and {r["image_id"] for r in rows} <= {11, 25, 40, 7}
    assert all(r["category_name"] == {1: "cat", 3: "dog", 7: "bird"}[r["category_id"]] for r in rows)
    from_model = json.loads((tmp_path / "model" / "summary.json").read_text())
    ref = pycocotools_stats(write_coco(tmp_path / "filled", fill_area=True), tmp_path / "model" / "detections.json")
    assert stats_of(from_model) == pytest.approx(ref, abs=1e-9)
    again = get_map_summary(gt, tmp_path / "model" / "detections.json", tmp_path / "again")
    assert stats_of(again) == pytest.approx(stats_of(from_model), abs=1e-12)
    assert again["map50"] == pytest.approx(from_model["map50"], abs=1e-12)


def test_image_ids_are_the_jsons_own_and_a_clash_with_a_file_name_is_said(tmp_path, scan_cache):
    """Files 1.png and 2.png with ids 2 and 1: image_id 1 is 2.png, as pycocotools reads it, and a warning says
    that a file is named 1 (predict.py, which knows no JSON, writes file stems)."""
    images = [(2, "1.png", 64, 64), (1, "2.png", 64, 64)]
    gt = write_coco(tmp_path / "coco", images, [(2, 1, [8, 8, 40, 40], 1600, 0), (1, 3, [20, 20, 30, 30], 900, 0)],
                    CATEGORIES[:2])
    results = write_results(tmp_path / "results.json", [(2, 1, [8, 8, 40, 40], 0.9), (1, 3, [20, 20, 30, 30], 0.8)])
    with pytest.warns(UserWarning, match=r"2 results have an image_id that is the COCO JSON's id of one image"):
        summary = get_map_summary(gt, results, tmp_path / "out")
    assert summary["map50"] == 1.0 and stats_of(summary) == pytest.approx(pycocotools_stats(gt, results), abs=1e-12)
