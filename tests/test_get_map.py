"""get_map.py end to end on a tiny generated VOC dataset: a random checkpoint, and saved results files."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import get_map
from tests.helpers.models import save_random_checkpoint
from tests.helpers.voc import MAP_CLASSES as CLASSES, perfect_results, split_samples


def run_cli(argv, capsys):
    rc = get_map.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("by_name,backend", [(False, "fast"), (True, "pycocotools")])
def test_perfect_results_file_scores_one(map_voc, tmp_path, capsys, by_name, backend):
    results = tmp_path / "results.json"
    results.write_text(json.dumps(perfect_results(by_name)))
    out = tmp_path / "out"
    rc, text, err = run_cli(["--detections", str(results), "--data", str(map_voc),
                             "--classes", str(tmp_path / "classes.txt"),
                             "--out", str(out), "--no-plots", "--coco-backend", backend], capsys)
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["map"] == pytest.approx(1.0) and summary["map50_95"] == pytest.approx(1.0)
    assert summary["settings"]["coco_backend"] == backend
    assert summary["settings"]["split"] == "VOC2007/test"
    assert [r["gts"] for r in summary["per_class"]] == [2, 2]  # the difficult cat is not counted
    assert "mAP@0.5 VOC all-point: 1.0000" in text and (out / "per_class.csv").is_file()
    # every counted object is medium-sized (32² to 96² px; the small cat is difficult): no APs, no APl
    assert [summary["coco"][k] for k in ("map_small", "map_medium", "map_large")] == [None, pytest.approx(1.0), None]
    assert "APs n/a  APm 1.0000  APl n/a" in text


def test_a_results_file_covering_part_of_the_split_is_flagged(map_voc, tmp_path, capsys):
    """Rows for 1 of the 3 test images: scored (the other 2 as images with no detections), with a warning and
    a line in the summary naming the 2 images without a row; summary.json counts them."""
    results = tmp_path / "results.json"
    results.write_text(json.dumps([r for r in perfect_results() if r["image_id"] == "000001"]))
    args = ["--detections", str(results), "--data", str(map_voc), "--classes", str(tmp_path / "classes.txt"),
            "--out", str(tmp_path / "out"), "--no-plots"]
    with pytest.warns(UserWarning, match="no results row for 2 of the 3 images") as caught:
        rc, text, err = run_cli(args, capsys)
    assert rc == 0, err
    assert "scored as images with no detections" in str(caught[0].message)
    assert "WARNING: 2 of the 3 images have no row in" in text
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["settings"]["images_without_results"] == 2 and summary["map"] < 1


def test_results_file_errors_are_one_line(map_voc, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": "000001", "category_id": 0, "bbox": [0, 0, 5, 5], "score": 0.5}]))
    args = ["--data", str(map_voc), "--classes", str(tmp_path / "classes.txt"), "--out", str(tmp_path / "o")]
    rc, _, err = run_cli(["--detections", str(bad)] + args, capsys)
    assert rc == 1 and "category_id 0" in err and str(bad) in err and "Traceback" not in err
    rc, _, err = run_cli(["--detections", str(tmp_path / "missing.json")] + args, capsys)
    assert rc == 1 and "missing.json does not exist" in err


def independent_map50(weights, samples):
    """mAP@0.5 of YOLO's own per-image path (fp32, get_map's conf and NMS) scored by the slow devkit loop."""
    from tests.helpers.samples import reference_ap
    from yolo import YOLO
    yolo = YOLO(weights, conf=0.001, nms=0.5, amp="off", device="cpu")
    found = []
    for s in samples:
        det = yolo.detect(s.image_path)
        found.append(np.column_stack([det.boxes, det.scores, det.class_ids]))
    aps = [reference_ap(found, samples, c) for c in range(len(CLASSES))]
    return float(np.mean(aps)), aps


def test_get_map_script_on_random_checkpoint(map_voc, tmp_path, root, capsys):
    weights = tmp_path / "run" / "best.pth"
    save_random_checkpoint(weights, CLASSES)
    env = dict(os.environ, YOLO_SCAN_CACHE=str(tmp_path / "scan_cache"), OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, str(root / "get_map.py"), "--weights", str(weights), "--data", str(map_voc),
                           "--amp", "off"], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = weights.parent / "map"  # default: a new folder in the weights' run folder
    summary = json.loads((out / "summary.json").read_text())
    expected, aps = independent_map50(weights, split_samples(map_voc))
    assert min(aps) > 0.05  # both classes are found sometimes: the number says something
    assert summary["map50"] == pytest.approx(expected, abs=1e-6)
    assert [r["ap"] for r in summary["per_class"]] == pytest.approx(aps, abs=1e-6)
    assert summary["settings"]["conf_thres"] == 0.001
    assert summary["settings"]["nms_thres"] == 0.5 and summary["settings"]["input_size"] == [64, 64]
    for png in ("ap_per_class.png", "confusion_matrix.png", "f1_curve.png", "pr_curves/00_cat.png", "pr_curves/01_dog.png"):
        assert (out / png).stat().st_size > 1000, png
    assert "COCO mAP@[.5:.95]" in proc.stdout and "dog" in proc.stdout and "conf_thres 0.001" in proc.stdout
    detections = json.loads((out / "detections.json").read_text())
    assert detections and {"image_id", "category_id", "bbox", "score"} <= set(detections[0])
    # the saved detections, scored without the model, give the same numbers
    rc, _, err = run_cli(["--detections", str(out / "detections.json"), "--data", str(map_voc), "--classes",
                          str(tmp_path / "classes.txt"), "--out", str(tmp_path / "again"), "--no-plots"], capsys)
    assert rc == 0, err
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["map"] == pytest.approx(summary["map"], abs=1e-6)
    assert again["map50_95"] == pytest.approx(summary["map50_95"], abs=1e-6)


def test_classes_that_do_not_match_are_refused(map_voc, tmp_path, capsys):
    weights = tmp_path / "run" / "best.pth"
    save_random_checkpoint(weights, ["circle", "square", "star"])
    three = ["--weights", str(weights), "--data", str(map_voc), "--out", str(tmp_path / "o")]
    rc, _, err = run_cli(three, capsys)
    assert rc == 1 and "do not match the dataset's" in err and "circle" in err and "Traceback" not in err
    rc, _, err = run_cli(three + ["--classes", str(tmp_path / "classes.txt")], capsys)
    assert rc == 1 and "differs from the 3 classes" in err


def test_no_weights_says_how_to_get_them(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the newest best.pth is looked for under ./logs: there is none
    rc, _, err = run_cli([], capsys)
    assert rc == 1 and "python train.py" in err and "--weights" in err


def test_without_weights_a_best_pth_then_a_last_pth_is_scored_and_named(map_voc, tmp_path, capsys, monkeypatch):
    """No --weights: the newest best.pth under ./logs; a run that left none (stopped before its first
    evaluation) is scored from its last.pth, and the line before the table says which file and why."""
    last = save_random_checkpoint(tmp_path / "logs" / "short" / "last.pth", CLASSES)
    best = save_random_checkpoint(tmp_path / "best.pth", CLASSES)  # (the anchors file is read from the repo root)
    monkeypatch.chdir(tmp_path)
    args = ["--data", str(map_voc), "--classes", str(tmp_path / "classes.txt"), "--no-plots"]
    rc, out, err = run_cli(args + ["--out", "o1"], capsys)
    assert rc == 0, err
    assert "weights logs/short/last.pth (no best.pth under logs/" in out
    assert json.loads((tmp_path / "o1" / "summary.json").read_text())["settings"]["weights"] == "logs/short/last.pth"
    (tmp_path / "logs" / "old").mkdir()
    best = best.rename(tmp_path / "logs" / "old" / "best.pth")
    os.utime(best, (1, 1))  # older than last.pth, still preferred
    rc, out, err = run_cli(args + ["--out", "o2"], capsys)
    assert rc == 0 and "weights logs/old/best.pth (the newest best.pth under logs/)" in out, err
    assert last.is_file()


def test_dataset_classes_the_weights_lack_are_not_scored_and_named(map_voc, tmp_path, capsys):
    weights = tmp_path / "run" / "best.pth"
    save_random_checkpoint(weights, ["cat", "horse"])  # the dataset also annotates dog, which these weights lack
    out = tmp_path / "o"
    rc, text, err = run_cli(["--weights", str(weights), "--data", str(map_voc), "--out", str(out), "--no-plots"],
                            capsys)
    assert rc == 0, err
    assert "2 objects of classes outside the class list are not scored (dog 2)" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["left_out"]["classes"] == {"dog": 2} and summary["settings"]["images"] == 3


def break_images(map_voc, stems):
    for stem in stems:
        (map_voc / "VOC2007" / "JPEGImages" / f"{stem}.jpg").write_bytes(b"\xff\xd8 not a jpeg any more")


def perfect_file(tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps(perfect_results()))
    return ["--detections", str(results), "--classes", str(tmp_path / "classes.txt")]


@pytest.mark.parametrize("source", ["detections", "weights"])
def test_unreadable_images_stop_the_evaluation(map_voc, tmp_path, capsys, source):
    break_images(map_voc, ["000001", "000003"])
    weights = tmp_path / "run" / "best.pth"
    save_random_checkpoint(weights, CLASSES)
    flags = perfect_file(tmp_path) if source == "detections" else ["--weights", str(weights)]
    rc, _, err = run_cli([*flags, "--data", str(map_voc), "--out", str(tmp_path / "o"), "--no-plots"], capsys)
    assert rc == 1 and "Traceback" not in err
    assert "000001.jpg (unreadable image)" in err and "000003.jpg (unreadable image)" in err
    assert "2 images of" in err and "3 ground-truth objects" in err and "--skip-unreadable" in err
    assert not (tmp_path / "o" / "summary.json").exists()


def test_skip_unreadable_says_what_was_left_out(map_voc, tmp_path, capsys):
    break_images(map_voc, ["000001", "000003"])
    out = tmp_path / "o"
    rc, text, err = run_cli([*perfect_file(tmp_path), "--data", str(map_voc), "--out", str(out), "--no-plots",
                             "--skip-unreadable"], capsys)
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["images"] == 1
    assert (summary["left_out"]["images"], summary["left_out"]["objects"]) == (2, 3)  # cat + dog, and a cat
    assert sorted(f["image"].rsplit("/", 1)[-1] for f in summary["left_out"]["files"]) == ["000001.jpg", "000003.jpg"]
    assert text.count("2 unreadable images with 3 ground-truth objects left out (--skip-unreadable); "
                      "1 images scored") == 2  # under the table and above the mAP
    assert "WARNING: 2 unreadable" in text


def test_missing_images_and_split_files_are_not_blamed_on_the_classes(map_voc, tmp_path, capsys):
    args = [*perfect_file(tmp_path), "--data", str(map_voc), "--out", str(tmp_path / "o")]
    rc, _, err = run_cli([*args, "--split", "VOC2007/nosuch"], capsys)
    assert rc == 1 and "nosuch.txt does not exist" in err and "trainval" in err
    assert "classes" not in err
    for image in (map_voc / "VOC2007" / "JPEGImages").iterdir():
        image.unlink()
    rc, _, err = run_cli(args, capsys)
    assert rc == 1 and "no usable image" in err and "000002.xml (image missing)" in err
    assert "classes" not in err


def test_a_coco_copy_with_its_images_elsewhere_scores_as_the_voc_original(map_voc, tmp_path, capsys):
    from utils.data.convert import convert
    weights = tmp_path / "run" / "best.pth"
    save_random_checkpoint(weights, CLASSES)
    convert(map_voc / "VOC2007", tmp_path / "coco", "voc", "coco", classes=tmp_path / "classes.txt", splits=["test"])
    images = tmp_path / "moved"
    (tmp_path / "coco" / "test").rename(images)
    coco_json = tmp_path / "coco" / "annotations" / "instances_test.json"
    summaries = []
    for name, flags in (("voc", ["--data", str(map_voc), "--split", "VOC2007/test"]),
                        ("coco", ["--data", str(coco_json), "--data-format", "coco", "--images", str(images),
                                  "--split", "all"])):
        rc, _, err = run_cli(["--weights", str(weights), *flags, "--amp", "off", "--no-plots",
                              "--out", str(tmp_path / name)], capsys)
        assert rc == 0, err
        summaries.append(json.loads((tmp_path / name / "summary.json").read_text()))
    voc_summary, coco_summary = summaries
    assert 0 < voc_summary["map50"] < 1
    assert coco_summary["map50"] == pytest.approx(voc_summary["map50"], abs=1e-6)
    assert coco_summary["map50_95"] == pytest.approx(voc_summary["map50_95"], abs=1e-6)
    rc, _, err = run_cli(["--weights", str(weights), "--data", str(coco_json), "--split", "all", "--amp", "off",
                          "--no-plots", "--out", str(tmp_path / "lost")], capsys)
    assert rc == 1 and "instances_test.json" in err  # without --images the images are not found: named, and stopped
