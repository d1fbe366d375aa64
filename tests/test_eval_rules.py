"""The rules of a split to score (issue 27): objects of classes outside the class list are not scored but their
images are (as the VOC devkit and pycocotools score a subset of classes), in get_map.py and in training's
evaluation alike; invalid ground truth stops scoring like an unreadable image, or is counted with
--skip-unreadable. A split to train on keeps its rules: such images are skipped, invalid boxes warned about."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import get_map
import train
from tests.helpers.voc import TINY_CLASSES as CLASSES, write_tiny_voc, write_xml
from utils.data.voc import UnreadableImagesError, load_eval_samples, load_samples


pytestmark = pytest.mark.usefixtures("scan_cache")

OTHER = "img99"  # holds one object of a class outside CLASSES only


def add_image(root: Path, stem: str, objects) -> None:
    """One more grey 128x128 image with `objects` (name, xmin, ymin, xmax, ymax), in both splits."""
    Image.new("RGB", (128, 128), (120, 120, 120)).save(root / "JPEGImages" / f"{stem}.png")
    write_xml(root / "Annotations" / f"{stem}.xml", f"{stem}.png", (128, 128), [(*o, 0) for o in objects])
    for split in ("train", "val"):
        with open(root / "ImageSets" / "Main" / f"{split}.txt", "a") as f:
            f.write(f"{stem}\n")


@pytest.fixture
def voc(tmp_path):
    root = write_tiny_voc(tmp_path / "VOCtiny", 4)
    add_image(root, OTHER, [("green", 30, 30, 90, 90)])
    return root


def ground_truth_results(root: Path, stems):
    """A COCO results file's rows: every ground-truth box of `stems`, detected with score 0.9."""
    rows = []
    for stem in stems:
        text = (root / "Annotations" / f"{stem}.xml").read_text()
        for name, *box in re.findall(r"<name>(\w+)</name>.*?<xmin>(\d+)</xmin><ymin>(\d+)</ymin>"
                                     r"<xmax>(\d+)</xmax><ymax>(\d+)</ymax>", text):
            if name in CLASSES:
                x1, y1, x2, y2 = map(int, box)
                rows.append({"image_id": stem, "category_name": name, "bbox": [x1, y1, x2 - x1, y2 - y1],
                             "score": 0.9})
    return rows


def run_get_map(argv, capsys):
    rc = get_map.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_an_image_of_other_classes_only_is_scored_and_its_false_positives_count(voc, tmp_path, capsys):
    stems = [f"img{i:02d}" for i in range(4)]
    rows = ground_truth_results(voc, stems) + [{"image_id": OTHER, "category_name": "red",
                                                "bbox": [30, 30, 60, 60], "score": 0.95}]
    results = tmp_path / "results.json"
    results.write_text(json.dumps(rows))
    out = tmp_path / "map"
    rc, text, err = run_get_map(["--detections", results, "--data", voc, "--split", "val", "--classes",
                                 voc / "classes.txt", "--out", out, "--no-plots", "--metric", "voc"], capsys)
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["images"] == 5
    red = summary["per_class"][CLASSES.index("red")]
    # the false positive outranks the red ground truths: precision n/(n+1) at every recall, AP n/(n+1)
    assert red["ap"] == pytest.approx(red["gts"] / (red["gts"] + 1)) and red["fp"] == 1
    assert summary["left_out"]["classes"] == {"green": 1} and summary["left_out"]["other_class_images"] == 1
    assert summary["left_out"]["images"] == 0
    assert "1 objects of classes outside the class list are not scored (green 1)" in text


def test_the_scan_to_train_on_skips_the_image_the_scan_to_score_keeps(voc, capsys):
    train_split = load_samples(voc, "train", CLASSES, use_cache=False)
    scored, left_out = load_eval_samples(voc, "val", CLASSES, use_cache=False)
    assert OTHER not in {Path(s.image_path).stem for s in train_split}
    [other] = [s for s in scored if Path(s.image_path).stem == OTHER]
    assert len(other.labels) == 0 and left_out == []
    out = capsys.readouterr().out
    assert "1 no objects of known classes" in out and "green (1)" in out


@pytest.mark.slow
def test_training_and_get_map_print_the_same_map_on_a_split_with_an_image_of_other_classes(voc, tmp_path, capsys):
    args = ["--data", voc, "--classes", voc / "classes.txt", "--input-size", 64, "--batch-size", 2, "--workers", 0,
            "--save-dir", tmp_path, "--quiet", "--epochs", 1, "--eval-period", 1]
    assert train.main([str(a) for a in args]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"\[val\]: 5 images used \(1 background", printed), printed
    trained = float(re.search(r"last evaluation .*?mAP@0\.5 ([0-9.]+)", printed).group(1))
    rc, text, err = run_get_map(["--weights", tmp_path / "exp" / "last.pth", "--data", voc, "--split", "val",
                                 "--out", tmp_path / "map", "--no-plots"], capsys)
    assert rc == 0, err
    assert float(re.search(r"mAP@0\.5 VOC all-point: ([0-9.]+)", text).group(1)) == pytest.approx(trained, abs=5e-5)
    assert json.loads((tmp_path / "map" / "summary.json").read_text())["settings"]["images"] == 5


BAD_BOXES = {"units": ("70px", 10, 90, 60, "xmin '70px'"), "reversed": (90, 10, 40, 60, "xmin > xmax"),
             "nan": ("nan", 10, 40, 60, "not four finite numbers")}


@pytest.mark.parametrize("case", list(BAD_BOXES))
def test_invalid_ground_truth_stops_scoring_naming_the_file(voc, tmp_path, capsys, case):
    *box, reason = BAD_BOXES[case]
    add_image(voc, "bad", [("red", 5, 5, 40, 40), ("blue", *box)])
    results = tmp_path / "results.json"
    results.write_text(json.dumps(ground_truth_results(voc, [f"img{i:02d}" for i in range(4)])))
    flags = ["--detections", results, "--data", voc, "--split", "val", "--classes", voc / "classes.txt",
             "--no-plots", "--metric", "voc"]
    for _ in range(2):  # the second scan reads the cache
        rc, _, err = run_get_map([*flags, "--out", tmp_path / "stopped"], capsys)
        assert rc == 1 and "Traceback" not in err
        assert "bad.xml" in err and "invalid ground truth" in err and reason in err and "--skip-unreadable" in err
    out = tmp_path / "skipped"
    rc, text, err = run_get_map([*flags, "--out", out, "--skip-unreadable"], capsys)
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["left_out"]["images"], summary["left_out"]["objects"]) == (1, 2)
    assert summary["left_out"]["files"][0]["image"].endswith("bad.png")
    assert "1 images (unreadable or with invalid ground truth) with 2 ground-truth objects left out" in text


def test_invalid_ground_truth_in_a_split_to_train_on_is_dropped_with_a_warning(voc, capsys):
    add_image(voc, "bad", [("red", 5, 5, 40, 40), ("blue", 90, 10, 40, 60)])
    samples = load_samples(voc, "train", CLASSES, use_cache=False)
    [bad] = [s for s in samples if Path(s.image_path).stem == "bad"]
    assert bad.labels.tolist() == [CLASSES.index("red")]
    assert "bad.xml: box [90.0, 10.0, 40.0, 60.0] has xmin > xmax or ymin > ymax; dropped" in capsys.readouterr().err


def yolo_dataset(root: Path, label: str) -> Path:
    """A data YAML whose split holds a.png (labelled `label`) and b.png (one blue box)."""
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    for stem, text in (("a", label), ("b", "1 0.5 0.5 0.2 0.2\n")):
        Image.new("RGB", (100, 50), (90, 90, 90)).save(root / "images" / f"{stem}.png")
        (root / "labels" / f"{stem}.txt").write_text(text)
    (root / "data.yaml").write_text(f"train: images\nval: images\nnames: {json.dumps(CLASSES)}\n")
    return root / "data.yaml"


@pytest.mark.parametrize("label,reason", [("0 0.5 0.5 0.2\n", "4 fields"), ("0 0.5 nan 0.2 0.2\n", "finite"),
                                          ("0 0.5 0.5 -0.2 0.2\n", "negative width"), ("0 0.5 0.5 0.2 0.2px\n",
                                                                                      "not numeric")])
def test_invalid_yolo_labels_stop_scoring_or_are_left_out(tmp_path, capsys, label, reason):
    data = yolo_dataset(tmp_path / "yolo", "1 0.2 0.2 0.1 0.1\n" + label)
    with pytest.raises(UnreadableImagesError, match=rf"a\.png \(invalid ground truth: .*a\.txt.*{reason}"):
        load_eval_samples(data, "val", CLASSES, use_cache=False)
    samples, left_out = load_eval_samples(data, "val", CLASSES, skip_unreadable=True, use_cache=False)
    assert [Path(s.image_path).name for s in samples] == ["b.png"]
    assert [(Path(e.image).name, e.objects) for e in left_out] == [("a.png", 2)]


def test_invalid_labelme_shape_stops_scoring(tmp_path):
    root = tmp_path / "lm"
    root.mkdir()
    for stem, corner in (("a", ["20px", 20]), ("b", [20, 20])):
        Image.new("RGB", (100, 50), (90, 90, 90)).save(root / f"{stem}.png")
        shapes = [{"label": "red", "points": [[1, 1], corner], "shape_type": "rectangle"}]
        (root / f"{stem}.json").write_text(json.dumps({"shapes": shapes, "imagePath": f"{stem}.png"}))
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    with pytest.raises(UnreadableImagesError, match=r"a\.json shape 0 \(red\): points .* are not \[x, y\] pairs"):
        load_eval_samples(root, "all", CLASSES, use_cache=False)


def test_zero_area_boxes_are_dropped_not_invalid(voc, capsys):
    """A box of valid numbers without area is dropped with a warning, not invalid ground truth; an image left
    with no box is scored without ground truth, and skipped for training."""
    add_image(voc, "thin", [("red", 5, 5, 40, 40), ("blue", 20, 10, 20, 60)])
    add_image(voc, "line", [("blue", 20, 10, 20, 60)])
    samples, left_out = load_eval_samples(voc, "val", CLASSES, use_cache=False)
    scored = {Path(s.image_path).stem: s for s in samples}
    assert scored["thin"].labels.tolist() == [CLASSES.index("red")] and left_out == []
    np.testing.assert_allclose(scored["thin"].boxes, [[5, 5, 40, 40]])
    assert len(scored["line"].labels) == 0
    assert "has no area" in capsys.readouterr().err
    assert "line" not in {Path(s.image_path).stem for s in load_samples(voc, "train", CLASSES, use_cache=False)}
