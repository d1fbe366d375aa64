"""bench/bench_vs_peer.py: VOC -> YOLO labels and files, settings keys, the table, and reuse of finished results.

Pure functions and file layout only: no training, no ultralytics, no network.
"""
import argparse
import importlib.util
import json
import os

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import ROOT
from utils.data.voc import Sample

_spec = importlib.util.spec_from_file_location("bench_vs_peer", ROOT / "bench" / "bench_vs_peer.py")
bvp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bvp)

SETTINGS = bvp.Settings(input_size=320, epochs=25, batch_size=8, workers=2, threads=2, max_images=0)


def sample(path="img.jpg", boxes=((10, 20, 50, 60),), labels=(1,), difficult=(False,), width=200, height=100,
           exif_transpose=True) -> Sample:
    return Sample(str(path), np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64),
                  np.asarray(difficult, bool), width, height, exif_transpose)


def test_label_lines_by_hand():
    # box 10..50 x 20..60 in 200x100: centre (30, 40) -> (0.15, 0.4); size (40, 40) -> (0.2, 0.4)
    assert bvp.yolo_label_lines(sample()) == ["1 0.150000 0.400000 0.200000 0.400000"]


def test_label_lines_skip_difficult_and_clip():
    s = sample(boxes=((0, 0, 100, 50), (150, 50, 250, 120)), labels=(0, 2), difficult=(True, False))
    # the second box is clipped to 150..200 x 50..100: centre (0.875, 0.75), size (0.25, 0.5)
    assert bvp.yolo_label_lines(s) == ["2 0.875000 0.750000 0.250000 0.500000"]


def test_label_lines_background():
    assert bvp.yolo_label_lines(sample(boxes=(), labels=(), difficult=())) == []


def test_data_yaml_reads_back(tmp_path):
    data = yaml.safe_load(bvp.yolo_data_yaml(tmp_path, ["circle", "square"]))
    assert data == {"path": str(tmp_path.resolve()), "train": "images/train", "val": "images/val",
                    "names": ["circle", "square"]}


def test_convert_layout_links_and_exif(tmp_path):
    plain = tmp_path / "plain.jpg"
    Image.new("RGB", (200, 100), (10, 20, 30)).save(plain)
    turned = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 200x100, shown rotated 90 degrees: 100x200
    Image.new("RGB", (200, 100), (200, 20, 30)).save(turned, exif=exif)
    background = sample(plain, boxes=(), labels=(), difficult=())
    splits = {"train": [sample(plain)], "val": [sample(turned, width=100, height=200), background]}
    data_yaml = bvp.convert_to_yolo(splits, ["a", "b"], tmp_path / "yolo")
    root = data_yaml.parent
    copied = root / "images" / "train" / "00000_plain.jpg"
    assert copied.read_bytes() == plain.read_bytes() and not os.path.samefile(copied, plain)
    assert (root / "labels" / "train" / "00000_plain.txt").read_text() == "1 0.150000 0.400000 0.200000 0.400000\n"
    with Image.open(root / "images" / "val" / "00000_turned.png") as upright:
        assert upright.size == (100, 200)
    assert (root / "labels" / "val" / "00001_plain.txt").read_text() == ""
    assert [p.name for p in bvp.yolo_val_images(root)] == ["00000_turned.png", "00001_plain.jpg"]


def test_parse_datasets():
    assert bvp.parse_datasets("demo, alt") == ["demo", "alt"]
    with pytest.raises(argparse.ArgumentTypeError, match="valid: demo, alt"):
        bvp.parse_datasets("demo,coco")


def test_keys_differ_by_settings():
    smoke = bvp.Settings(320, 1, 8, 2, 2, 16)
    assert bvp.run_key("demo", "ours", SETTINGS) == "demo-ours-s320-e25-b8-w2-t2"
    assert bvp.run_key("demo", "ours", smoke) == "demo-ours-s320-e1-b8-w2-t2-n16"


def test_detections_from_lists():
    dets = bvp.detections_from_lists([[[1, 2, 3, 4, 0.5, 1]], []])
    assert [d.shape for d in dets] == [(1, 6), (0, 6)] and dets[0].dtype == np.float32


def test_table():
    rows = [{"dataset": "demo", "model": "ours", "map50": 0.61234, "map50_95": 0.3, "train_wall_s": 90.0,
             "params": 5_880_000},
            {"dataset": "demo", "model": "yolov8n", "map50": 0.6, "map50_95": 0.35, "train_wall_s": 120.0,
             "params": 3_010_000, "ultralytics": "8.4.190", "train_network_attempts": [],
             "predict_network_attempts": ["lookup github.com"]}]
    lines = bvp.format_table(rows).splitlines()
    assert lines[0] == "| dataset | model | AP50 | AP50-95 | train wall time | params |"
    assert lines[2] == "| demo | ours | 0.612 | 0.300 | 1.5 min | 5.88 M |"
    assert lines[3] == "| demo | yolov8n | 0.600 | 0.350 | 2.0 min | 3.01 M |"
    notes = bvp.table_notes(SETTINGS, rows)
    assert "ultralytics 8.4.190" in notes and "lookup github.com" in notes


def _bench(tmp_path) -> "bvp.Bench":
    args = bvp.make_parser().parse_args(["--out", str(tmp_path), "--threads", "2"])
    return bvp.Bench(args)


def test_finished_result_is_reused(tmp_path, monkeypatch):
    bench = _bench(tmp_path)
    dataset = bvp.Dataset("demo", tmp_path, tmp_path / "classes.txt", ["a"])
    key = bvp.run_key("demo", "ours", bench.settings)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / f"{key}.json").write_text(json.dumps({"map50": 0.5}))
    monkeypatch.setattr(bench, "train", lambda *a: pytest.fail("a finished result was trained again"))
    assert bench.run(dataset, "ours") == {"map50": 0.5}


def test_finished_training_is_scored_not_retrained(tmp_path, monkeypatch):
    bench = _bench(tmp_path)
    dataset = bvp.Dataset("demo", tmp_path, tmp_path / "classes.txt", ["a"])
    key = bvp.run_key("demo", "ours", bench.settings)
    weights = tmp_path / "last.pth"
    weights.write_bytes(b"")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / f"{key}.train.json").write_text(json.dumps({"weights": str(weights), "train_wall_s": 60.0}))
    monkeypatch.setattr(bvp, "train_ours", lambda *a: pytest.fail("a finished training was run again"))
    monkeypatch.setattr(bench, "score", lambda *a: {"map50": 0.25, "map50_95": 0.125, "params": 1})
    row = bench.run(dataset, "ours")
    assert row["train_wall_s"] == 60.0 and row["map50"] == 0.25 and row["settings"]["epochs"] == 25
    assert json.loads((tmp_path / "results" / f"{key}.json").read_text()) == row
