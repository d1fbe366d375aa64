"""utils.data.convert: round trips keep the Samples, SRC is untouched, DST is all or nothing, formats score alike."""
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import get_map
import train
from tests.conftest import ROOT
from tests.helpers.models import save_random_checkpoint
from tests.helpers.voc import TINY_CLASSES as CLASSES, exif_image, voc_to_labelme, write_tiny_voc, write_xml
from utils.core.config import read_classes
from utils.data import convert, writers
from utils.data.layouts import dataset_of
from utils.data.voc import load_samples
from utils.engine.run import load_data
from utils.eval import scoring
from utils.eval.scoring import load_split


pytestmark = pytest.mark.usefixtures("scan_cache")


def set_xml(voc: Path, stem: str, old: str, new: str) -> None:
    xml = voc / "Annotations" / f"{stem}.xml"
    text = xml.read_text()
    assert old in text
    xml.write_text(text.replace(old, new, 1))


def add_image(voc: Path, stem: str, size, objects) -> None:
    """A grey PNG of `size` (w, h) with its XML; objects (name, x1, y1, x2, y2)."""
    Image.new("RGB", size, (120, 120, 120)).save(voc / "JPEGImages" / f"{stem}.png")
    write_xml(voc / "Annotations" / f"{stem}.xml", f"{stem}.png", size, [(*o, 0) for o in objects])


def varied_voc(root: Path) -> Path:
    """The tiny VOC with a difficult object, float coordinates, a non-square image with a box that touches
    the right and bottom edges, a background image, and a third split (test) of two images."""
    voc = write_tiny_voc(root, 6)
    set_xml(voc, "img01", "<difficult>0</difficult>", "<difficult>1</difficult>")
    set_xml(voc, "img02", "</xmin>", ".37</xmin>")
    set_xml(voc, "img02", "</ymax>", ".61</ymax>")
    add_image(voc, "img06", (160, 96), [("blue", 10.5, 20, 160, 96), ("red", 0, 0, 33.3, 47.9)])
    add_image(voc, "img07", (64, 48), [])
    ids = [f"img{i:02d}" for i in range(8)]
    for split in ("train", "val"):
        (voc / "ImageSets/Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    (voc / "ImageSets/Main/test.txt").write_text("img06\nimg01\n")
    return voc


def run(argv, capsys):
    rc = convert.main([str(a) for a in argv])
    return (rc, *capsys.readouterr())


def converted(src, dst, frm, to, capsys, *extra):
    rc, out, err = run(["--from", frm, "--to", to, src, dst, *extra], capsys)
    assert rc == 0, err
    return out, err


def splits_of(data, names, splits):
    return {s: load_samples(data, s, names, use_cache=False) for s in splits}


def assert_same(got, want, difficult=True, exact=True):
    """The same images (by file name) with the same boxes, labels, sizes, EXIF frame and difficult flags."""
    got = {Path(s.image_path).name: s for s in got}
    want = {Path(s.image_path).name: s for s in want}
    assert sorted(got) == sorted(want)
    for name, w in want.items():
        g = got[name]
        if exact:
            np.testing.assert_array_equal(g.boxes, w.boxes, err_msg=name)
        else:
            np.testing.assert_allclose(g.boxes, w.boxes, rtol=1e-6, atol=0, err_msg=name)
        assert g.labels.tolist() == w.labels.tolist(), name
        assert g.difficult.tolist() == (w.difficult.tolist() if difficult else [False] * len(w.labels)), name
        assert (g.width, g.height, g.exif_transpose) == (w.width, w.height, w.exif_transpose), name


def assert_same_splits(got, want, **kw):
    assert list(got) == list(want)
    for split in want:
        assert_same(got[split], want[split], **kw)


def hashes(root: Path):
    return {p.relative_to(root): hashlib.sha1(p.read_bytes()).digest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_voc_yolo_voc_round_trip(tmp_path, capsys):
    voc = varied_voc(tmp_path / "voc")
    want = splits_of(voc, CLASSES, ["test", "train", "val"])
    before = hashes(voc)
    _, err = converted(voc, tmp_path / "yolo", "voc", "yolo", capsys)
    assert "1 difficult objects are written as ordinary objects" in err
    data = yaml.safe_load((tmp_path / "yolo/data.yaml").read_text())
    assert data["names"] == CLASSES and read_classes(tmp_path / "yolo/classes.txt") == CLASSES
    assert (data["train"], data["val"], data["test"]) == ("images/train", "images/val", "images/test")
    assert_same_splits(splits_of(tmp_path / "yolo", CLASSES, want), want, difficult=False, exact=False)
    assert "clipped" not in capsys.readouterr().err  # img06's box touching the right and bottom edges stays inside
    assert (tmp_path / "yolo/labels/train/img07.txt").read_text() == ""  # background: an empty label file
    converted(tmp_path / "yolo", tmp_path / "back", "yolo", "voc", capsys)
    assert sorted(p.stem for p in (tmp_path / "back/ImageSets/Main").glob("*.txt")) == ["test", "train", "val"]
    assert read_classes(tmp_path / "back/classes.txt") == CLASSES
    assert_same_splits(splits_of(tmp_path / "back", CLASSES, want), want, difficult=False, exact=False)
    assert hashes(voc) == before


def test_voc_coco_voc_round_trip_is_exact(tmp_path, capsys):
    voc = varied_voc(tmp_path / "voc")
    want = splits_of(voc, CLASSES, ["test", "train", "val"])
    before = hashes(voc)
    out, _ = converted(voc, tmp_path / "coco", "voc", "coco", capsys)
    assert "COCO category ids are 1..2 in class order" in out
    doc = json.loads((tmp_path / "coco/annotations/instances_test.json").read_text())
    assert doc["categories"] == [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]
    sizes = [(im["file_name"], im["width"], im["height"]) for im in doc["images"]]
    assert sizes == [("img06.png", 160, 96), ("img01.png", 128, 128)]
    assert sum(a["iscrowd"] for a in doc["annotations"]) == 1  # img01's difficult object
    assert_same_splits(splits_of(tmp_path / "coco", CLASSES, want), want)
    converted(tmp_path / "coco", tmp_path / "back", "coco", "voc", capsys)
    assert_same_splits(splits_of(tmp_path / "back", CLASSES, want), want)
    assert read_classes(tmp_path / "back/classes.txt") == CLASSES
    assert hashes(voc) == before


def test_coco_yolo_coco_round_trip(tmp_path, capsys):
    voc = varied_voc(tmp_path / "voc")
    converted(voc, tmp_path / "coco", "voc", "coco", capsys)
    want = splits_of(tmp_path / "coco", CLASSES, ["test", "train", "val"])
    before = hashes(tmp_path / "coco")
    converted(tmp_path / "coco", tmp_path / "yolo", "coco", "yolo", capsys)
    converted(tmp_path / "yolo", tmp_path / "again", "yolo", "coco", capsys)
    assert_same_splits(splits_of(tmp_path / "again", CLASSES, want), want, difficult=False, exact=False)
    first, again = (json.loads((p / "annotations/instances_val.json").read_text()) for p in (tmp_path / "coco",
                                                                                             tmp_path / "again"))
    assert again["categories"] == first["categories"] and again["images"] == first["images"]
    assert hashes(tmp_path / "coco") == before


def test_images_are_copied_byte_for_byte_with_their_names(tmp_path, capsys):
    voc = write_tiny_voc(tmp_path / "voc", 3)
    for to in ("voc", "yolo", "coco"):
        converted(voc, tmp_path / f"to-{to}", "voc", to, capsys)
    source = {p.name: p.read_bytes() for p in (voc / "JPEGImages").iterdir()}
    for folder in ("to-voc/JPEGImages", "to-yolo/images/train", "to-yolo/images/val", "to-coco/train", "to-coco/val"):
        assert {p.name: p.read_bytes() for p in (tmp_path / folder).iterdir()} == source, folder


def test_voc_boxes_are_written_as_the_reader_reads_them(tmp_path):
    sample = load_samples(varied_voc(tmp_path / "voc"), "test", CLASSES, use_cache=False)[0]
    xml = writers.voc_xml(sample, CLASSES).decode()
    # img06: pixels as they are (no 1-based shift), whole numbers without a point, floats as short as float32 allows
    assert "<xmin>10.5</xmin>" in xml and "<xmax>160</xmax>" in xml and "<xmax>33.3</xmax>" in xml
    assert "<width>160</width>" in xml and "<height>96</height>" in xml


def test_destination_that_exists_and_is_not_empty_is_refused(tmp_path, capsys):
    voc = write_tiny_voc(tmp_path / "voc", 2)
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst/keep.txt").write_text("mine")
    rc, out, err = run(["--from", "voc", "--to", "yolo", voc, tmp_path / "dst"], capsys)
    assert rc == 1 and "dst already exists and is not empty" in err and "scan" not in out  # before reading SRC
    assert [p.name for p in (tmp_path / "dst").iterdir()] == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    converted(voc, tmp_path / "empty", "voc", "yolo", capsys)  # an empty folder is fine
    rc, _, err = run(["--from", "voc", "--to", "yolo", voc, voc / "copy"], capsys)
    assert rc == 1 and "lies inside SRC" in err and not (voc / "copy").exists()


@pytest.mark.parametrize("failure", [OSError("No space left on device"), KeyboardInterrupt()])
def test_an_interrupted_conversion_leaves_no_destination(tmp_path, capsys, monkeypatch, failure):
    voc = write_tiny_voc(tmp_path / "voc", 4)
    copied, real_copy = [], writers.copy_file

    def failing_copy(src, dst):
        if len(copied) == 3:
            raise failure
        real_copy(src, dst)
        copied.append(dst)

    monkeypatch.setattr(writers, "copy_file", failing_copy)
    before = hashes(voc)
    if isinstance(failure, KeyboardInterrupt):
        rc, _, err = run(["--from", "voc", "--to", "coco", voc, tmp_path / "dst"], capsys)
        assert rc == 130 and "DST was not written" in err
    else:
        with pytest.raises(OSError, match="No space left"):
            convert.convert(voc, tmp_path / "dst", "voc", "coco")
    # written into a hidden sibling of DST, never into DST itself
    assert len(copied) == 3 and all(p.relative_to(tmp_path).parts[0].startswith(".dst.") for p in copied)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan_cache", "voc"]  # no DST, no temporary folder
    assert hashes(voc) == before


def test_bad_source_is_reported_as_the_scan_reports_it(tmp_path, capsys):
    voc = write_tiny_voc(tmp_path / "voc", 2)
    converted(voc, tmp_path / "yolo", "voc", "yolo", capsys)
    (tmp_path / "yolo/labels/train/img01.txt").write_text("0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.2 0.2\n")
    rc, _, err = run(["--from", "yolo", "--to", "voc", tmp_path / "yolo", tmp_path / "out"], capsys)
    assert rc == 1 and "img01.txt line 2: class index 5 is outside names" in err and not (tmp_path / "out").exists()
    rc, _, err = run(["--from", "coco", "--to", "voc", voc, tmp_path / "out"], capsys)
    assert rc == 1 and "a voc dataset, not coco; pass --from voc" in err
    rc, _, err = run(["--from", "voc", "--to", "yolo", tmp_path / "missing", tmp_path / "out"], capsys)
    assert rc == 1 and "missing does not exist" in err


def test_objects_and_images_that_cannot_be_written_are_counted(tmp_path, capsys):
    voc = write_tiny_voc(tmp_path / "voc", 4)
    set_xml(voc, "img01", "<name>blue</name>", "<name>green</name>")
    (voc / "JPEGImages/img03.png").write_bytes(b"not a png")
    _, err = converted(voc, tmp_path / "yolo", "voc", "yolo", capsys, "--splits", "train")
    assert "1 objects of names not in the classes are not written: green (1)" in err
    assert "1 images the scan skipped are not written (1 unreadable image)" in err
    assert sorted(p.name for p in (tmp_path / "yolo/images/train").iterdir()) == ["img00.png", "img01.png", "img02.png"]


def test_yolo_refuses_boxes_in_the_stored_frame_of_a_turned_image_coco_keeps_them(tmp_path, capsys):
    voc = write_tiny_voc(tmp_path / "voc", 1)
    stored = np.zeros((20, 40, 3), np.uint8)  # 40 x 20 stored; EXIF orientation 6 shows it 20 x 40
    (voc / "JPEGImages/img01.png").write_bytes(exif_image(stored, 6))
    (voc / "Annotations/img01.xml").write_text(
        "<annotation><filename>img01.png</filename><size><width>40</width><height>20</height></size><object>"
        "<name>red</name><difficult>0</difficult><bndbox><xmin>30</xmin><ymin>2</ymin><xmax>38</xmax><ymax>8</ymax>"
        "</bndbox></object></annotation>")
    (voc / "ImageSets/Main/val.txt").write_text("img01\n")
    want = splits_of(voc, CLASSES, ["val"])
    assert not want["val"][0].exif_transpose  # annotated in the stored pixels
    rc, _, err = run(["--from", "voc", "--to", "yolo", voc, tmp_path / "yolo", "--splits", "val"], capsys)
    assert rc == 1 and "img01.png" in err and "convert to COCO or VOC" in err and not (tmp_path / "yolo").exists()
    converted(voc, tmp_path / "coco", "voc", "coco", capsys, "--splits", "val")
    assert_same_splits(splits_of(tmp_path / "coco", CLASSES, ["val"]), want)


def test_coco_json_file_is_one_split_named_after_it(tmp_path, capsys):
    voc = write_tiny_voc(tmp_path / "voc", 3)
    (voc / "ImageSets/Main/val2017.txt").write_text("img00\nimg02\n")
    converted(voc, tmp_path / "coco", "voc", "coco", capsys, "--splits", "val2017")
    converted(tmp_path / "coco/annotations/instances_val2017.json", tmp_path / "voc2", "coco", "voc", capsys)
    assert (tmp_path / "voc2/ImageSets/Main/val2017.txt").read_text().split() == ["img00", "img02"]


def test_default_splits_are_those_the_source_lists(tmp_path, capsys):
    voc = write_tiny_voc(tmp_path / "devkit/VOC2007", 2)
    (voc / "ImageSets/Main/test.txt").write_text("img01\n")
    write_tiny_voc(tmp_path / "devkit/VOC2012", 2)
    converted(voc, tmp_path / "yolo", "voc", "yolo", capsys)
    flat = write_tiny_voc(tmp_path / "flat", 2)
    shutil.rmtree(flat / "ImageSets")
    cases = {tmp_path / "devkit": ["test", "train", "val"], tmp_path / "yolo/data.yaml": ["train", "val", "test"],
             tmp_path / "yolo": ["test", "train", "val"], flat: ["train", "val"]}
    for src, splits in cases.items():
        layout = convert.check_source(src, "voc" if "yolo" not in src.parts else "yolo")
        assert [p.split for p in convert.source_splits(src, layout)] == splits, src
    assert [p.split for p in convert.source_splits(flat, "flat", ["all", "val", "all"])] == ["all", "val"]
    out, _ = converted(tmp_path / "devkit", tmp_path / "one", "voc", "voc", capsys, "--splits", "VOC2007/test",
                       "--classes", voc / "classes.txt")
    assert "VOC2007/test -> VOC2007-test" in out and (tmp_path / "one/ImageSets/Main/VOC2007-test.txt").is_file()


def test_labelme_folder_converts_with_its_seeded_splits(tmp_path, capsys):
    labelme = voc_to_labelme(write_tiny_voc(tmp_path / "voc", 6), tmp_path / "labelme")
    want = splits_of(labelme, CLASSES, ["train", "val"])
    converted(labelme, tmp_path / "out", "labelme", "voc", capsys)
    assert_same_splits(splits_of(tmp_path / "out", CLASSES, want), want)
    assert (tmp_path / "out/ImageSets/Main/val.txt").read_text().split() == ["img02"]


def test_classes_file_sets_the_names_and_their_order(tmp_path, capsys):
    voc = write_tiny_voc(tmp_path / "voc", 3)
    (tmp_path / "reversed.txt").write_text("blue\nred\n")
    converted(voc, tmp_path / "coco", "voc", "coco", capsys, "--classes", tmp_path / "reversed.txt")
    doc = json.loads((tmp_path / "coco/annotations/instances_train.json").read_text())
    assert doc["categories"] == [{"id": 1, "name": "blue"}, {"id": 2, "name": "red"}]
    want = splits_of(voc, ["blue", "red"], ["train"])
    assert_same_splits(splits_of(tmp_path / "coco", ["blue", "red"], ["train"]), want)


def test_coco_images_elsewhere_are_found_with_images(tmp_path, capsys):
    voc = write_tiny_voc(tmp_path / "voc", 3)
    converted(voc, tmp_path / "coco", "voc", "coco", capsys, "--splits", "val")
    (tmp_path / "coco/val").rename(tmp_path / "pictures")
    data = tmp_path / "coco/annotations/instances_val.json"
    rc, _, err = run(["--from", "coco", "--to", "voc", data, tmp_path / "out"], capsys)
    assert rc == 1 and "no usable image" in err and not (tmp_path / "out").exists()
    converted(data, tmp_path / "out", "coco", "voc", capsys, "--images", tmp_path / "pictures")
    assert_same_splits(splits_of(tmp_path / "out", CLASSES, ["val"]), splits_of(voc, CLASSES, ["val"]))


def test_two_images_under_one_stem_are_refused(tmp_path, capsys):
    converted(write_tiny_voc(tmp_path / "voc", 2), tmp_path / "yolo", "voc", "yolo", capsys)
    for sub in ("images", "labels"):
        (tmp_path / "yolo" / sub / "train/sub").mkdir()
    (tmp_path / "yolo/images/train/sub/img00.png").write_bytes((tmp_path / "yolo/images/train/img01.png").read_bytes())
    (tmp_path / "yolo/labels/train/sub/img00.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    rc, _, err = run(["--from", "yolo", "--to", "voc", tmp_path / "yolo", tmp_path / "out"], capsys)
    assert rc == 1 and "written under the stem 'img00' but differ" in err and not (tmp_path / "out").exists()


def summaries(text: str):
    """The scan summary lines of `text` without their `scan <path> [<split>]:` prefix."""
    return [re.sub(r"^scan .* \[[^]]*\]: ", "", line) for line in text.splitlines() if line.startswith("scan ")]


def noisy_detections(samples, path: Path) -> Path:
    """A COCO results file: each ground-truth box moved by a few pixels with a random score, plus a false one."""
    rng, rows = np.random.default_rng(0), []
    for s in samples:
        for box, label in zip(s.boxes.tolist(), s.labels.tolist()):
            x1, y1, x2, y2 = np.asarray(box) + rng.normal(0, 4, 4)
            rows.append({"image_id": Path(s.image_path).stem, "category_id": label + 1, "score": float(rng.random()),
                         "bbox": [x1, y1, x2 - x1, y2 - y1]})
        rows.append({"image_id": Path(s.image_path).stem, "category_id": 1, "score": float(rng.random()),
                     "bbox": [1.0, 1.0, 30.0, 30.0]})
    path.write_text(json.dumps(rows))
    return path


def score(flags):
    args = get_map.make_parser().parse_args([str(f) for f in flags] + ["--amp", "off", "--device", "cpu", "--no-plots"])
    return scoring.score(**get_map.settings_of(args))[:2]  # (result, detections)


def test_voc_yolo_and_coco_copies_give_the_same_summary_and_map(tmp_path, capsys):
    voc = write_tiny_voc(tmp_path / "voc", 8)
    copies = {"voc": voc, "yolo": tmp_path / "yolo", "coco": tmp_path / "coco"}
    for to in ("yolo", "coco"):
        converted(voc, copies[to], "voc", to, capsys)
    weights = tmp_path / "run" / "best.pth"
    save_random_checkpoint(weights, CLASSES)
    gt = noisy_detections(load_samples(voc, "val", CLASSES, use_cache=False), tmp_path / "noisy.json")
    capsys.readouterr()
    found = {}
    for name, data in copies.items():
        load_samples(data, "val", CLASSES, use_cache=False)
        model, detections = score(["--weights", weights, "--data", data, "--split", "val"])
        noisy, _ = score(["--detections", gt, "--data", data, "--split", "val", "--classes", voc / "classes.txt"])
        found[name] = (summaries(capsys.readouterr().out)[0], model["map50"], model["map50_95"], noisy["map50"],
                       noisy["map50_95"], sum(len(d) for d in detections))
    line, model50, model50_95, noisy50, noisy50_95, n_detections = found["voc"]
    assert "8 images used" in line and n_detections > 0
    # the numbers say something: the random model matches a few boxes, the noisy truths most but not all
    assert 0 < model50_95 < model50 < 1 and 0.1 < noisy50_95 < noisy50 < 0.9
    for name in ("yolo", "coco"):
        assert found[name][0] == line, name
        np.testing.assert_allclose(found[name][1:], found["voc"][1:], rtol=0, atol=1e-6, err_msg=name)


def test_train_reads_the_yolo_copy_as_the_voc_original(tmp_path, capsys, monkeypatch):
    voc = write_tiny_voc(tmp_path / "voc", 6)
    set_xml(voc, "img02", "</xmin>", ".25</xmin>")
    converted(voc, tmp_path / "yolo", "voc", "yolo", capsys)
    lines, runs = {}, {"voc": ["--data", voc, "--classes", voc / "classes.txt"], "yolo": ["--data", tmp_path / "yolo"]}
    for name, flags in runs.items():
        monkeypatch.setenv("YOLO_SCAN_CACHE", str(tmp_path / f"cache-{name}"))  # both scans read every file
        data = load_data(vars(train.parse_args([str(f) for f in flags])))
        lines[name] = summaries(capsys.readouterr().out)
        assert data.class_names == CLASSES and (data.used["train_split"], data.used["val_split"]) == ("train", "val")
    assert len(lines["voc"]) == 2 and lines["yolo"] == lines["voc"]


def readme_commands():
    """The commands of the README's "Your own data" section."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("## Your own data"):].split("\n## ")[0].split("```bash\n")[1].split("```")[0]
    return [line.split("#")[0].split() for line in block.splitlines() if line.strip()]


def test_readme_commands_read_each_format(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    voc = write_tiny_voc(tmp_path / "VOCdevkit/VOC2007", 6)
    (tmp_path / "my_classes.txt").write_text("\n".join(CLASSES) + "\n")
    (voc / "ImageSets/Main/train2017.txt").write_text((voc / "ImageSets/Main/train.txt").read_text())
    converted(voc, tmp_path / "datasets/mine", "voc", "yolo", capsys)
    converted(voc, tmp_path / "coco", "voc", "coco", capsys, "--splits", "train2017")
    voc_to_labelme(voc, tmp_path / "labelme_folder")
    commands = readme_commands()
    trains = [c for c in commands if c[:2] == ["python", "train.py"]]
    assert len(trains) == 5
    for command in trains:
        data = load_data(vars(train.parse_args(command[2:])))
        assert data.class_names == CLASSES and len(data.train) > 0 and len(data.val) > 0, command
    converted(voc, tmp_path / "coco_val", "voc", "coco", capsys, "--splits", "val")
    (tmp_path / "coco_val/annotations/instances_val.json").rename(tmp_path / "instances_val.json")
    (tmp_path / "coco_val/val").rename(tmp_path / "imgs")
    [scoring] = [c for c in commands if c[:2] == ["python", "get_map.py"]]
    args = get_map.make_parser().parse_args(scoring[2:])
    samples, _ = load_split(dataset_of(args), args.split, CLASSES)
    assert len(samples) == len((voc / "ImageSets/Main/val.txt").read_text().split())
    [conversion] = [c for c in commands if c[:3] == ["python", "-m", "utils.data.convert"]]
    assert convert.main(conversion[3:]) == 0
    assert load_samples(conversion[-1], "train", CLASSES, use_cache=False)
