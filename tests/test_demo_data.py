"""The demo dataset: deterministic, VOC layout, readable by the scanner, regenerated when incomplete."""
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from utils.data import demo_data
from utils.core.config import read_classes
from utils.data.voc import default_split, load_samples, resolve_classes

TINY = dataclasses.replace(demo_data.STYLES["demo"], n_train=6, n_val=3, difficult_rate=0.3, background_rate=0.5)


@pytest.fixture
def tiny_style(monkeypatch):
    monkeypatch.setitem(demo_data.STYLES, "demo", TINY)


def files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generation_is_deterministic_and_voc_shaped(tmp_path, tiny_style):
    a = demo_data.ensure_demo_dataset(tmp_path / "a")
    b = demo_data.ensure_demo_dataset(tmp_path / "b")
    assert files(a) == files(b)
    assert len(list((a / "JPEGImages").glob("*.jpg"))) == 9 and len(list((a / "Annotations").glob("*.xml"))) == 9
    assert (a / "ImageSets/Main/train.txt").read_text().split() == [f"train_{i:05d}" for i in range(6)]
    assert (default_split(a, "train"), default_split(a, "eval")) == ("train", "val")
    classes = read_classes(resolve_classes(a, "model_data/voc_classes.txt"))
    assert classes == list(TINY.classes) == read_classes(demo_data.REPO_ROOT / "model_data/demo_classes.txt")
    samples = load_samples(a, "train", classes, use_cache=False) + load_samples(a, "val", classes, use_cache=False)
    assert len(samples) == 9 and any(len(s.labels) == 0 for s in samples) and any(s.difficult.any() for s in samples)
    for s in samples:
        assert (s.boxes[:, 2:] - s.boxes[:, :2] >= 10).all() and (s.boxes[:, 2] <= s.width).all()


def test_incomplete_dataset_is_regenerated_and_complete_one_reused(tmp_path, tiny_style):
    root = demo_data.ensure_demo_dataset(tmp_path)
    first = files(root)
    (root / "JPEGImages" / "val_00001.jpg").unlink()
    assert demo_data.ensure_demo_dataset(tmp_path) == root and "JPEGImages/val_00001.jpg" not in {str(p) for p in files(root)}
    (root / demo_data.MARKER).unlink()
    demo_data.ensure_demo_dataset(tmp_path)
    assert files(root) == first and not list(tmp_path.glob(".demo.*"))


def test_styles_and_their_classes_files():
    for name, style in demo_data.STYLES.items():
        assert read_classes(demo_data.REPO_ROOT / "model_data" / style.classes_file) == list(style.classes)
        assert set(style.classes) <= set(demo_data.UNIT_SHAPES)
    demo, alt = demo_data.STYLES["demo"], demo_data.STYLES["alt"]
    assert demo.n_train >= 300 and 80 <= demo.n_val <= 120 and alt.max_objects > demo.max_objects and alt.clutter > 0
    with pytest.raises(ValueError, match="valid: demo, alt"):
        demo_data.ensure_demo_dataset(style="nope")


def summary_lines(text):
    return [line.split("]: ", 1)[1] for line in text.splitlines() if line.startswith("scan ")]


@pytest.mark.parametrize("data_format", ["yolo", "coco"])
def test_demo_in_another_format_reads_back_as_the_voc_original(tmp_path, tiny_style, capsys, data_format):
    voc = demo_data.ensure_demo_dataset(tmp_path)
    assert demo_data.main(["--root", str(tmp_path), "--format", data_format]) == 0
    out, err = capsys.readouterr()
    path = tmp_path / f"demo-{data_format}"
    assert out.splitlines()[-1] == str(path)
    assert ("difficult objects are written as ordinary objects" in err) == (data_format == "yolo")
    classes = list(TINY.classes)
    assert read_classes(resolve_classes(path, "model_data/voc_classes.txt")) == classes
    assert (default_split(path, "train"), default_split(path, "eval")) == ("train", "val")
    for split in ("train", "val"):
        want = {Path(s.image_path).name: s for s in load_samples(voc, split, classes, use_cache=False)}
        got = {Path(s.image_path).name: s for s in load_samples(path, split, classes, use_cache=False)}
        assert sorted(got) == sorted(want)
        for name, w in want.items():
            np.testing.assert_allclose(got[name].boxes, w.boxes, rtol=1e-6, atol=0, err_msg=name)
            assert got[name].labels.tolist() == w.labels.tolist()
            kept = w.difficult.tolist() if data_format == "coco" else [False] * len(w.labels)
            assert got[name].difficult.tolist() == kept
        voc_line, copy_line = summary_lines(capsys.readouterr().out)
        if data_format == "yolo":
            voc_line = re.sub(r"\(\d+ difficult\)", "(0 difficult)", voc_line)
        assert copy_line == voc_line


def test_demo_in_another_format_is_written_again_when_incomplete(tmp_path, tiny_style):
    path = demo_data.ensure_demo_dataset(tmp_path, data_format="coco")
    first, written = files(path), (path / "annotations/instances_val.json").stat().st_mtime_ns
    assert demo_data.ensure_demo_dataset(tmp_path, data_format="coco") == path  # complete: used as it is
    assert (path / "annotations/instances_val.json").stat().st_mtime_ns == written
    (path / demo_data.MARKER).unlink()
    (path / "val" / "val_00001.jpg").unlink()
    assert demo_data.ensure_demo_dataset(tmp_path, data_format="coco") == path and files(path) == first
    with pytest.raises(ValueError, match="valid: voc, yolo, coco"):
        demo_data.ensure_demo_dataset(tmp_path, data_format="labelme")
