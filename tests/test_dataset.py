"""A dataset's layout is detected once (issue 28, step 5): utils.data.layouts.open_dataset makes a Dataset from
--data, --data-format and --images, and the Dataset, not the path and the two flags, travels to the scan, the
default splits, the classes file and the COCO categories."""
import json
from dataclasses import FrozenInstanceError

import pytest

import get_map
from tests.helpers.voc import TINY_CLASSES as CLASSES, write_tiny_voc
from utils.data import layouts
from utils.data.layouts import Dataset, dataset_of, open_dataset
from utils.engine.run import load_data


@pytest.fixture
def detections(monkeypatch):
    """[number of layout detections]: layouts._layouts (every path the detector looks at) counted."""
    calls = [0]
    detect = layouts._layouts

    def counted(path):
        calls[0] += 1
        return detect(path)

    monkeypatch.setattr(layouts, "_layouts", counted)
    return calls


@pytest.fixture
def voc(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_SCAN_CACHE", str(tmp_path / "cache"))
    return write_tiny_voc(tmp_path / "voc", 3)


def test_open_dataset_detects_once_and_is_frozen(voc, detections):
    dataset = open_dataset(str(voc), "voc")
    assert detections[0] == 1
    assert (dataset.path, dataset.layout, dataset.format, dataset.data_format) == (voc, "year", "voc", "voc")
    assert str(dataset) == str(voc) and open_dataset(dataset) is dataset
    assert dataset_of({"data": str(voc), "data_format": None, "images": None}).layout == "year"
    assert dataset.default_split("train") == "train" and dataset.declared_names() == (None, None)
    assert detections[0] == 2  # dataset_of opened it again; the Dataset's own methods detect nothing
    with pytest.raises(FrozenInstanceError):
        dataset.layout = "flat"


def test_a_training_run_detects_the_layout_once(voc, detections):
    """train's load_data: the data path, both default splits and both scans were five detections before the
    Dataset (six with the classes file a dataset declares)."""
    values = {"data": str(voc), "data_format": None, "images": None, "classes": str(voc / "classes.txt"), "train_split": None,
              "val_split": None}
    data = load_data(values)
    assert data.class_names == CLASSES and len(data.train) == len(data.val) == 3
    assert data.used["train_split"] == "train" and data.used["val_split"] == "val"
    assert detections[0] == 1


def test_get_map_scoring_detects_the_layout_once(voc, tmp_path, detections):
    """get_map.py scoring a results file: the data path, the default split, the scan and the COCO categories
    were four detections before the Dataset."""
    found = tmp_path / "found.json"
    found.write_text(json.dumps([{"image_id": "img00", "category_id": 1, "bbox": [10, 10, 40, 40], "score": 0.9}]))
    assert get_map.main(["--detections", str(found), "--data", str(voc), "--classes", str(voc / "classes.txt"),
                         "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    assert (tmp_path / "out" / "summary.json").is_file()
    assert detections[0] == 1


def test_a_dataset_given_is_used_as_it_is(voc, detections):
    """A Dataset handed to the scan is not detected again, also where a path would be (resolve_classes)."""
    from utils.data.voc import load_eval_samples, load_samples, resolve_classes
    dataset = Dataset(voc, "year")
    assert resolve_classes(dataset, voc / "classes.txt") == voc / "classes.txt"
    assert len(load_samples(dataset, "train", CLASSES)) == 3
    assert len(load_eval_samples(dataset, "val", CLASSES)[0]) == 3
    assert detections[0] == 0


def _toy_layout():
    """A new format of one Layout: a folder holding boxes.txt, annotation lines (`image x1,y1,x2,y2,cls ...`) of
    images beside it, read by the VOC lines reader; seeded train/val split."""
    from utils.data.annotations import parse_line
    from utils.data.layout_base import Layout, Source, seeded_pick

    def read(source, class_names):
        return parse_line(source.line, source.where, source.images_dir, class_names)

    def sources(path, split, seed, val_fraction, images_dir=None):
        lines = [line for line in (path / "boxes.txt").read_text().splitlines() if line.strip()]
        keep = seeded_pick([str(n) for n in range(len(lines))], split, seed, val_fraction, str(path))
        return [Source(key=f"{path}:{n}", line=lines[int(n)], images_dir=path, where=f"{path} box line {n}",
                       kind="line", read=read) for n in keep]

    return Layout("toy", "toy", "a folder with boxes.txt", "boxes.txt lines", 45,
                  fits=lambda p: (p / "boxes.txt").is_file(), sources=sources)


def test_a_format_is_one_module_of_layouts_and_one_registry_entry(voc, tmp_path, monkeypatch):
    """With a registry entry the new format is detected, asked for with --data-format, scanned (with the cache),
    split and trained on; nothing else is edited."""
    registry = {**layouts.REGISTRY, "toy": (_toy_layout(),)}
    monkeypatch.setattr(layouts, "REGISTRY", registry)
    for name, value in zip(("DATA_FORMATS", "DETECTION", "LAYOUT", "LAYOUTS"), layouts.indexed(registry)):
        monkeypatch.setattr(layouts, name, value)
    toy = tmp_path / "toy"
    toy.mkdir()
    lines = []
    for image in sorted((voc / "JPEGImages").glob("*.png")):
        (toy / image.name).write_bytes(image.read_bytes())
        lines.append(f"{image.name} 10,10,60,60,{len(lines) % 2}")
    (toy / "boxes.txt").write_text("\n".join(lines) + "\n")
    dataset = open_dataset(str(toy), "toy")
    assert (dataset.layout, dataset.format, dataset.default_split("eval")) == ("toy", "toy", "val")
    with pytest.raises(Exception, match="does not fit: it is a VOC year folder"):
        open_dataset(str(voc), "toy")
    values = {"data": str(toy), "data_format": None, "images": None, "classes": str(voc / "classes.txt"),
              "train_split": "all", "val_split": "all"}
    data = load_data(values)
    assert len(data.train) == len(data.val) == 3 and [s.labels.tolist() for s in data.train] == [[0], [1], [0]]
