"""The demo dataset: deterministic, VOC layout, readable by the scanner, regenerated when incomplete."""
import dataclasses

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
