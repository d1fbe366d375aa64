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
