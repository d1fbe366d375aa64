"""Dataset scanning: every bad-input case, layouts, splits, difficult objects, EXIF and the cache."""
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.voc import exif_image, write_voc, write_xml
from utils.data import voc
from utils.ops.image import read_image
from utils.data.voc import DatasetError, default_split, load_samples

CLASSES = ["cat", "dog"]


def rgb(w=40, h=30, colour=(200, 50, 50)) -> Image.Image:
    return Image.new("RGB", (w, h), colour)


def good(stem="good"):
    return {stem: (rgb(), f"{stem}.jpg", (40, 30), [("cat", 5, 5, 20, 20, 0)])}


def jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


BAD_CASES = {
    "corrupt image": ({"bad": (b"this is not an image at all", "bad.jpg", (40, 30), [("cat", 1, 1, 9, 9, 0)])}, "unreadable image"),
    "truncated image": ({"bad": (jpeg_bytes()[:400], "bad.jpg", (64, 64), [("cat", 1, 1, 9, 9, 0)])}, "unreadable image"),
    "zero-byte image": ({"bad": (b"", "bad.jpg", (40, 30), [("cat", 1, 1, 9, 9, 0)])}, "unreadable image"),
    "missing image": ({"bad": (None, "bad.jpg", (40, 30), [("cat", 1, 1, 9, 9, 0)])}, "image missing"),
    "unknown classes only": ({"bad": (rgb(), "bad.jpg", (40, 30), [("horse", 1, 1, 9, 9, 0)])}, "no objects of known classes"),
    "only degenerate boxes": ({"bad": (rgb(), "bad.jpg", (40, 30), [("cat", 9, 1, 9, 9, 0)])}, "no usable boxes"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_image_or_annotation_is_skipped_with_reason(tmp_path, capsys, case):
    items, reason = BAD_CASES[case]
    root = write_voc(tmp_path / "VOC", {**good(), **items})
    samples = load_samples(root, "train", CLASSES, cache_dir=tmp_path / "cache")
    out, err = capsys.readouterr()
    assert [Path(s.image_path).name for s in samples] == ["good.jpg"]
    assert "bad." in err and "skipped" in err
    assert f"1 {reason}" in out and "1 images used" in out


def test_malformed_xml_is_skipped(tmp_path, capsys):
    root = write_voc(tmp_path / "VOC", good(), {"train": ["good", "broken"]})
    (root / "Annotations" / "broken.xml").write_text("<annotation><object>", encoding="utf-8")
    samples = load_samples(root, "train", CLASSES, cache_dir=tmp_path / "cache")
    out, err = capsys.readouterr()
    assert len(samples) == 1 and "broken.xml: malformed XML" in err and "1 malformed XML" in out


def test_boxes_clipped_dropped_float_and_background(tmp_path, capsys):
    items = {"a": (rgb(), "a.jpg", (40, 30), [("cat", -5, 2.5, 50, 20.75, 0), ("dog", 10, 10, 10, 20, 0),
                                              ("dog", 3.5, 4.25, 12.5, 14, 0), ("horse", 1, 1, 5, 5, 0)]),
             "empty": (rgb(), "empty.jpg", (40, 30), [])}
    samples = load_samples(write_voc(tmp_path / "VOC", items), "train", CLASSES, cache_dir=tmp_path / "c")
    out, err = capsys.readouterr()
    a, empty = samples
    np.testing.assert_allclose(a.boxes, [[0, 2.5, 40, 20.75], [3.5, 4.25, 12.5, 14]])
    assert a.labels.tolist() == [0, 1] and a.boxes.dtype == np.float32 and a.labels.dtype == np.int64
    assert "clipped" in err and "no area" in err and "dropped" in err
    assert len(empty.labels) == 0 and "1 background" in out and "horse (1)" in out


@pytest.mark.parametrize("mode,ext", [("L", "png"), ("RGBA", "png"), ("P", "png"), ("I;16", "png"),
                                      ("RGB", "bmp"), ("RGB", "webp"), ("RGB", "png")])
def test_image_kinds_become_rgb(tmp_path, mode, ext):
    image = rgb(40, 30).convert(mode) if mode != "I;16" else Image.fromarray(np.full((30, 40), 40000, np.uint16))
    items = {"x": (image, f"x.{ext}", (40, 30), [("dog", 1, 1, 30, 20, 0)])}
    (sample,) = load_samples(write_voc(tmp_path / "VOC", items), "train", CLASSES, cache_dir=tmp_path / "c")
    pixels = read_image(sample.image_path, sample.exif_transpose)
    assert pixels.shape == (30, 40, 3) and pixels.dtype == np.uint8 and (sample.width, sample.height) == (40, 30)


def test_xml_size_disagreeing_trusts_image(tmp_path, capsys):
    items = {"x": (rgb(40, 30), "x.jpg", (400, 300), [("cat", 1, 1, 35, 25, 0)])}
    (sample,) = load_samples(write_voc(tmp_path / "VOC", items), "train", CLASSES, cache_dir=tmp_path / "c")
    assert (sample.width, sample.height) == (40, 30)
    assert "disagrees with the image 40x30" in capsys.readouterr().err


@pytest.mark.parametrize("annotated_on", ["rotated", "stored"])
def test_exif_orientation_keeps_boxes_on_what_the_annotator_saw(tmp_path, annotated_on):
    stored = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high; orientation 6 shows it 20 wide, 40 high
    stored[2:8, 30:38] = 255  # a white block: top-right when stored, bottom-right when shown upright
    if annotated_on == "rotated":
        size, box = (20, 40), (12, 30, 18, 38)
    else:
        size, box = (40, 20), (30, 2, 38, 8)
    items = {"x": (exif_image(stored, 6), "x.png", size, [("cat", *box, 0)])}
    (sample,) = load_samples(write_voc(tmp_path / "VOC", items), "train", CLASSES, cache_dir=tmp_path / "c")
    assert sample.exif_transpose == (annotated_on == "rotated")
    pixels = read_image(sample.image_path, apply_exif=sample.exif_transpose)
    assert pixels.shape[:2] == (sample.height, sample.width)
    x1, y1, x2, y2 = sample.boxes[0].astype(int)
    assert pixels[y1:y2, x1:x2].min() == 255 and pixels.sum() == pixels[y1:y2, x1:x2].sum()


def test_non_ascii_and_spaces_in_paths(tmp_path):
    items = {"bild ü 1": (rgb(), "bild ü 1.png", (40, 30), [("dog", 2, 2, 20, 20, 0)])}
    (sample,) = load_samples(write_voc(tmp_path / "dätä set" / "VOC 2007", items), "train", CLASSES,
                             cache_dir=tmp_path / "c")
    assert "bild ü 1.png" in sample.image_path and read_image(sample.image_path).shape == (30, 40, 3)


def test_annotation_lines_with_spaces_and_bad_class_index(tmp_path):
    image_path = tmp_path / "my images" / "a b.jpg"
    image_path.parent.mkdir()
    rgb().save(image_path)
    lines = tmp_path / "2007_train.txt"
    lines.write_text(f"{image_path} 1,2,10,12,0 5.5,6,30,25,1\n{image_path}\n")
    samples = load_samples(lines, default_split(lines, "train"), CLASSES, cache_dir=tmp_path / "c")
    assert len(samples) == 2 and samples[0].labels.tolist() == [0, 1] and len(samples[1].labels) == 0
    np.testing.assert_allclose(samples[0].boxes[1], [5.5, 6, 30, 25])
    lines.write_text(f"{image_path} 1,2,10,12,0\n{image_path} 1,2,10,12,7\n")
    with pytest.raises(DatasetError, match=r"line 2: class index 7 is outside"):
        load_samples(lines, "all", CLASSES, cache_dir=tmp_path / "c")


def test_no_usable_image_stops_with_clear_error(tmp_path):
    root = write_voc(tmp_path / "VOC", {"bad": (b"", "bad.jpg", (4, 4), [("cat", 1, 1, 3, 3, 0)])})
    with pytest.raises(DatasetError, match="no usable image in .*VOC split 'train'"):
        load_samples(root, "train", CLASSES, cache_dir=tmp_path / "c")
    with pytest.raises(DatasetError, match="splits in"):
        load_samples(root, "nosuchsplit", CLASSES, cache_dir=tmp_path / "c")


def test_voc07_plus_12_and_default_splits(tmp_path):
    devkit = tmp_path / "VOCdevkit"
    write_voc(devkit / "VOC2007", {**good("a"), **good("b"), **good("t")}, {"trainval": ["a", "b"], "test": ["t"]})
    write_voc(devkit / "VOC2012", {**good("c"), **good("d")}, {"trainval": ["c", "d"], "val": ["d"]})
    assert default_split(devkit, "train") == "trainval" and default_split(devkit, "eval") == "VOC2007/test"
    train = load_samples(devkit, "trainval", CLASSES, cache_dir=tmp_path / "c")
    assert sorted(Path(s.image_path).stem for s in train) == ["a", "b", "c", "d"]
    test = load_samples(devkit, default_split(devkit, "eval"), CLASSES, cache_dir=tmp_path / "c")
    assert [Path(s.image_path).stem for s in test] == ["t"]
    assert default_split(devkit / "VOC2012", "train") == "train" and default_split(devkit / "VOC2012", "eval") == "val"


def test_auto_split_without_imagesets_is_seeded_and_disjoint(tmp_path):
    root = write_voc(tmp_path / "flat", {**{f"i{k}": good(f"i{k}")[f"i{k}"] for k in range(30)}})
    import shutil
    shutil.rmtree(root / "ImageSets")
    train = {s.image_path for s in load_samples(root, "train", CLASSES, cache_dir=tmp_path / "c", val_fraction=0.3)}
    val = {s.image_path for s in load_samples(root, "val", CLASSES, cache_dir=tmp_path / "c", val_fraction=0.3)}
    again = {s.image_path for s in load_samples(root, "val", CLASSES, use_cache=False, val_fraction=0.3)}
    assert train.isdisjoint(val) and len(train | val) == 30 and 3 <= len(val) <= 17 and val == again
    assert (default_split(root, "train"), default_split(root, "eval")) == ("train", "val")


def test_difficult_objects_are_kept_and_flagged(tmp_path):
    items = {"x": (rgb(), "x.jpg", (40, 30), [("cat", 1, 1, 9, 9, 1), ("dog", 10, 10, 30, 25, 0)])}
    (sample,) = load_samples(write_voc(tmp_path / "VOC", items), "train", CLASSES, cache_dir=tmp_path / "c")
    assert sample.difficult.tolist() == [True, False] and sample.labels.tolist() == [0, 1]


def test_cache_is_used_and_detects_changed_files(tmp_path, capsys):
    root = write_voc(tmp_path / "VOC", {**good("a"), **good("b")})
    load_samples(root, "train", CLASSES, cache_dir=tmp_path / "c")
    assert "0 from cache" in capsys.readouterr().out
    samples = load_samples(root, "train", CLASSES, cache_dir=tmp_path / "c")
    assert "2 from cache" in capsys.readouterr().out and samples[1].labels.tolist() == [0]
    xml = root / "Annotations" / "b.xml"
    write_xml(xml, "b.jpg", (40, 30), [("dog", 1, 1, 30, 20, 0), ("dog", 2, 2, 10, 10, 0)])
    os.utime(xml, ns=(xml.stat().st_atime_ns, xml.stat().st_mtime_ns + 10**9))
    samples = load_samples(root, "train", CLASSES, cache_dir=tmp_path / "c")
    assert "1 from cache" in capsys.readouterr().out and samples[1].labels.tolist() == [1, 1]
    assert not any(p.suffix in (".pkl", ".json") for p in root.rglob("*")), "the cache must not be written into the dataset"


def test_resolve_data_falls_back_to_demo_only_for_the_default(tmp_path, monkeypatch, capsys):
    import utils.data.demo_data
    from utils.data import layouts  # resolve_data lives there; voc re-exports it
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(layouts, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(utils.data.demo_data, "ensure_demo_dataset", lambda: tmp_path / "demo_data" / "demo")
    (tmp_path / "VOCdevkit").mkdir()
    assert voc.resolve_data("VOCdevkit") == tmp_path / "demo_data" / "demo"
    assert "using the demo dataset" in capsys.readouterr().out
    with pytest.raises(DatasetError, match="does not exist"):
        voc.resolve_data(tmp_path / "elsewhere")
    write_voc(tmp_path / "VOCdevkit" / "VOC2007", good())
    assert voc.resolve_data("VOCdevkit") == Path("VOCdevkit")


@pytest.mark.parametrize("scale,flag", [(0.65, "INTER_LINEAR"), (0.4, "INTER_AREA"), (1.5, "INTER_LINEAR")])
def test_resize_is_bilinear_except_below_half_size(scale, flag):
    import cv2
    from utils.ops.image import resize
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    size = (round(160 * scale), round(120 * scale))
    assert np.array_equal(resize(image, size), cv2.resize(image, size, interpolation=getattr(cv2, flag)))
    other = "INTER_AREA" if flag == "INTER_LINEAR" else "INTER_LINEAR"
    if scale < 1:  # upscaling, area averaging is bilinear too
        assert not np.array_equal(resize(image, size), cv2.resize(image, size, interpolation=getattr(cv2, other)))


def test_scan_lists_unreadable_images_with_their_ground_truths(tmp_path):
    """Evaluation refuses to lose images silently: the scan names each one it could not read."""
    items = {**good("a"), **good("b"),
             "broken": (b"not an image", "broken.jpg", (40, 30), [("cat", 1, 1, 9, 9, 0), ("dog", 2, 2, 8, 8, 0),
                                                                  ("cat", 3, 3, 9, 9, 1)]),
             "gone": (None, "gone.jpg", (40, 30), [("dog", 1, 1, 9, 9, 0)])}
    year = write_voc(tmp_path / "VOC", items)
    stats = voc.ScanStats()
    samples = load_samples(year, "train", CLASSES, use_cache=False, stats=stats)
    assert len(samples) == 2
    found = sorted((Path(e.image).name, e.reason, e.objects) for e in stats.left_out)
    assert found == [("broken.jpg", "unreadable image", 2), ("gone.xml", "image missing", 1)]  # difficult not counted
    with pytest.raises(voc.UnreadableImagesError, match="2 images of .* cannot be read") as caught:
        voc.load_eval_samples(year, "train", CLASSES, cache_dir=tmp_path / "cache")
    message = str(caught.value)
    assert "broken.jpg (unreadable image)" in message and "gone.xml (image missing)" in message
    assert "3 ground-truth objects" in message and "--skip-unreadable" in message
    again = voc.ScanStats()
    samples, left_out = voc.load_eval_samples(year, "train", CLASSES, skip_unreadable=True, stats=again,
                                              cache_dir=tmp_path / "cache")
    assert again.from_cache == 3  # a missing image is looked for again; the unreadable one comes from the cache
    assert len(samples) == 2 and sorted(left_out) == sorted(stats.left_out)


def test_every_public_name_is_still_importable_from_voc():
    # voc.py was split into layouts.py, annotations.py and the scan; callers keep importing from voc
    names = ["CACHE_VERSION", "DEFAULT_DATA", "REPO_ROOT", "UNREADABLE_REASONS", "DatasetError", "LeftOut", "Record",
             "Sample", "ScanStats", "UnreadableImagesError", "default_split", "load_eval_samples", "load_samples",
             "parse_line", "parse_xml", "resolve_classes", "resolve_data", "stat_key"]
    assert [n for n in names if not hasattr(voc, n)] == []
    assert sorted(voc.__all__) == sorted(names)
