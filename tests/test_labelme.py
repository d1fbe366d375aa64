"""labelme folders: the same Samples as their VOC original, the seeded splits, and every bad input named."""
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.voc import (TINY_CLASSES as CLASSES, VOC_DEFAULT, assert_same, by_stem, exif_image, polygon,
                               rectangle, voc_to_labelme, write_labelme, write_tiny_voc)
from utils.core.config import read_classes
from utils.data.layouts import dataset_layout
from utils.data.voc import DatasetError, UnreadableImagesError, default_split, load_eval_samples, load_samples
from utils.data.voc import resolve_classes


pytestmark = pytest.mark.usefixtures("scan_cache")


def test_labelme_folder_gives_the_voc_samples(tmp_path, capsys):
    voc = write_tiny_voc(tmp_path / "voc", 6)
    data = voc_to_labelme(voc, tmp_path / "labelme")
    assert dataset_layout(data) == "labelme"
    assert (default_split(data, "train"), default_split(data, "eval")) == ("train", "val")
    assert resolve_classes(data, VOC_DEFAULT) == data / "classes.txt"
    assert read_classes(resolve_classes(data, VOC_DEFAULT)) == CLASSES
    reference = load_samples(voc, "train", CLASSES, use_cache=False)
    capsys.readouterr()
    assert_same(load_samples(data, "all", CLASSES, use_cache=False), reference)
    out = capsys.readouterr().out
    assert "polygons read as boxes 1" in out and "6 images used" in out


def test_labelme_seeded_split_matches_the_voc_folder_without_imagesets(tmp_path):
    voc = write_tiny_voc(tmp_path / "voc", 12)
    data = voc_to_labelme(voc, tmp_path / "labelme")
    shutil.rmtree(voc / "ImageSets")
    for split in ("train", "val"):
        want = by_stem(load_samples(voc, split, CLASSES, use_cache=False, seed=3, val_fraction=0.4))
        got = by_stem(load_samples(data, split, CLASSES, use_cache=False, seed=3, val_fraction=0.4))
        assert sorted(got) == sorted(want) and got
    with pytest.raises(DatasetError, match=r"labelme: unknown split 'test'"):
        load_samples(data, "test", CLASSES, use_cache=False)


def one(tmp_path, shapes, image="a.png", make_image=True):
    """A labelme folder with one 100x50 image a.png and a.json holding `shapes`."""
    root = tmp_path / "lm"
    root.mkdir()
    if make_image:
        Image.new("RGB", (100, 50), (90, 90, 90)).save(root / "a.png")
    write_labelme(root / "a.json", image, shapes, (100, 50))
    return root


def test_labelme_image_missing_is_unreadable_for_evaluation(tmp_path, capsys):
    root = one(tmp_path, [rectangle("red", 1, 1, 20, 20)], image="gone.png", make_image=False)
    Image.new("RGB", (100, 50)).save(root / "b.png")
    write_labelme(root / "b.json", "b.png", [rectangle("blue", 1, 1, 20, 20)], (100, 50))
    [sample] = load_samples(root, "all", CLASSES, use_cache=False)
    assert Path(sample.image_path).name == "b.png"
    assert "a.json: no image 'gone.png'" in capsys.readouterr().err
    with pytest.raises(UnreadableImagesError, match=r"a\.json \(image missing\)"):
        load_eval_samples(root, "all", CLASSES, use_cache=False)


def test_labelme_image_found_by_the_json_stem(tmp_path):
    [sample] = load_samples(one(tmp_path, [rectangle("red", 1, 1, 20, 20)], image=""), "all", CLASSES,
                            use_cache=False)
    assert Path(sample.image_path).name == "a.png"


@pytest.mark.parametrize("shape,message", [
    (rectangle("red", 1, 1, 20, 20) | {"points": [[1, 1], [20, 20], [5, 5]]},
     "a.json shape 0 (red): rectangle with 3 points; expected 2"),
    (polygon("red", 1, 1, 20, 20) | {"points": [[1, 1], [20, 20]]},
     "a.json shape 0 (red): polygon with 2 points; expected at least 3"),
    (rectangle("red", 1, 1, 20, 20) | {"points": [["1", 1], [20, 20]]},
     "a.json shape 0 (red): points [['1', 1], [20, 20]] are not [x, y] pairs of numbers"),
    (rectangle("red", 1, 1, 20, 20) | {"points": [[1, 1, 1], [20, 20, 2]]},
     "a.json shape 0 (red): points [[1, 1, 1], [20, 20, 2]] are not [x, y] pairs of numbers"),
    (rectangle("red", 5, 1, 5, 20), "a.json: box [5.0, 1.0, 5.0, 20.0] has no area"),
    ("not a shape", "a.json shape 0: not a mapping"),
])
def test_labelme_bad_shape_is_dropped_and_named(tmp_path, capsys, shape, message):
    root = one(tmp_path, [shape, rectangle("blue", 30, 10, 60, 40)])
    [sample] = load_samples(root, "all", CLASSES, use_cache=False)
    assert message in capsys.readouterr().err
    assert sample.labels.tolist() == [1]
    np.testing.assert_allclose(sample.boxes, [[30, 10, 60, 40]])


def test_labelme_other_shape_types_are_skipped_and_counted(tmp_path, capsys):
    shapes = [{"label": "red", "points": [[3, 3]], "shape_type": "point"},
              {"label": "red", "points": [[3, 3], [9, 9]], "shape_type": "circle"},
              {"label": "red", "points": [[3, 3], [9, 9]], "shape_type": "line"},
              {"label": "red", "points": [[3, 3], [9, 9]], "shape_type": "line"},
              {"label": "blue", "points": [[10, 5], [40, 5], [25, 30]]},  # no shape_type: a polygon
              rectangle("horse", 1, 1, 9, 9)]
    [sample] = load_samples(one(tmp_path, shapes), "all", CLASSES, use_cache=False)
    out = capsys.readouterr().out
    np.testing.assert_allclose(sample.boxes, [[10, 5, 40, 30]])
    assert sample.labels.tolist() == [1] and not sample.difficult.any()
    assert "labelme circle shapes skipped 1" in out and "labelme line shapes skipped 2" in out
    assert "labelme point shapes skipped 1" in out and "polygons read as boxes 1" in out
    assert "names not in the classes file: horse (1)" in out


def test_labelme_file_with_only_other_shapes_is_skipped_not_background(tmp_path, capsys):
    root = one(tmp_path, [{"label": "red", "points": [[3, 3]], "shape_type": "point"}])
    Image.new("RGB", (100, 50)).save(root / "b.png")
    write_labelme(root / "b.json", "b.png", [], (100, 50))
    [sample] = load_samples(root, "all", CLASSES, use_cache=False)
    out, err = capsys.readouterr()
    assert Path(sample.image_path).name == "b.png" and len(sample.labels) == 0
    assert "a.json: no rectangle or polygon among its shapes (point 1); skipped" in err
    assert "1 no rectangles or polygons" in out and "(1 background" in out


def test_labelme_malformed_and_foreign_json_are_named(tmp_path, capsys):
    root = one(tmp_path, [rectangle("red", 1, 1, 20, 20)])
    (root / "b.json").write_text('{"shapes": [')
    (root / "c.json").write_text('{"info": "not labelme"}')
    [sample] = load_samples(root, "all", CLASSES, use_cache=False)
    out, err = capsys.readouterr()
    assert "b.json: cannot read the labelme JSON" in err and "c.json: not a labelme file" in err
    assert "1 malformed JSON" in out and "1 not a labelme file" in out
    with pytest.raises(UnreadableImagesError, match=r"b\.json \(malformed JSON\)"):
        load_eval_samples(root, "all", CLASSES, use_cache=False)


def test_labelme_detection_looks_at_the_json_files(tmp_path):
    root = tmp_path / "jsons"
    root.mkdir()
    (root / "a.json").write_text('{"images": []}')
    assert dataset_layout(root) is None
    write_labelme(root / "b.json", "b.png", [])
    assert dataset_layout(root) == "labelme"


@pytest.mark.parametrize("shown", ["rotated", "stored"])
def test_labelme_image_size_picks_the_exif_frame(tmp_path, shown):
    stored = np.zeros((20, 40, 3), np.uint8)  # orientation 6 shows it 20 wide, 40 high
    root = tmp_path / "lm"
    root.mkdir()
    (root / "x.png").write_bytes(exif_image(stored, 6))
    size = (20, 40) if shown == "rotated" else (40, 20)
    write_labelme(root / "x.json", "x.png", [rectangle("red", 2, 2, 15, 15)], size)  # fits both frames
    [sample] = load_samples(root, "all", CLASSES, use_cache=False)
    assert sample.exif_transpose == (shown == "rotated") and (sample.width, sample.height) == size
