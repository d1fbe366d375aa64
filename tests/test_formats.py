"""YOLO txt and COCO datasets and --data-format / --images: the same Samples as the VOC original, bad input named."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.voc import (TINY_CLASSES as CLASSES, VOC_DEFAULT, assert_same, voc_objects, voc_to_coco,
                               write_tiny_voc)
from utils.core.config import read_classes
from utils.data.layouts import dataset_layout
from utils.data.voc import (DatasetError, UnreadableImagesError, default_split, load_eval_samples, load_samples,
                            resolve_classes, resolve_data)


pytestmark = pytest.mark.usefixtures("scan_cache")


def voc_to_yolo(voc: Path, dst: Path, names_as_map: bool = False) -> Path:
    """images/train + labels/train and a data.yaml (train = val); difficult flags cannot be kept."""
    for sub in ("images/train", "labels/train"):
        (dst / sub).mkdir(parents=True)
    for stem, (filename, (w, h), objects) in voc_objects(voc).items():
        shutil.copy(voc / "JPEGImages" / filename, dst / "images/train" / filename)
        lines = [f"{CLASSES.index(n)} {(a + c) / 2 / w:.10f} {(b + d) / 2 / h:.10f} {(c - a) / w:.10f} {(d - b) / h:.10f}"
                 for n, a, b, c, d, _ in objects]
        (dst / "labels/train" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    names = {i: n for i, n in enumerate(CLASSES)} if names_as_map else list(CLASSES)
    yaml_text = f"path: .\ntrain: images/train\nval: images/train\nnames: {json.dumps(names)}\n"
    (dst / "data.yaml").write_text(yaml_text)
    return dst / "data.yaml"


def mark_difficult(voc: Path, stem: str) -> None:
    xml = voc / "Annotations" / f"{stem}.xml"
    xml.write_text(xml.read_text().replace("<difficult>0</difficult>", "<difficult>1</difficult>", 1))


@pytest.mark.parametrize("names_as_map", [False, True])
def test_yolo_yaml_gives_the_voc_samples(tmp_path, names_as_map):
    voc = write_tiny_voc(tmp_path / "voc", 6)
    data = voc_to_yolo(voc, tmp_path / "yolo", names_as_map)
    assert default_split(data, "train") == "train" and default_split(data, "eval") == "val"
    assert read_classes(resolve_classes(data, VOC_DEFAULT)) == CLASSES
    reference = load_samples(voc, "train", CLASSES, use_cache=False)
    assert_same(load_samples(data, "train", CLASSES, use_cache=False), reference)
    assert_same(load_samples(data, "val", CLASSES, use_cache=False), reference)


def test_bare_yolo_folder_and_txt_list(tmp_path, capsys):
    voc = write_tiny_voc(tmp_path / "voc", 4)
    reference = load_samples(voc, "train", CLASSES, use_cache=False)
    root = voc_to_yolo(voc, tmp_path / "yolo").parent
    (root / "data.yaml").unlink()
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    assert resolve_classes(root, VOC_DEFAULT) == root / "classes.txt"
    assert_same(load_samples(root, "train", CLASSES, cache_dir=tmp_path / "c"), reference)
    assert_same(load_samples(root, "train", CLASSES, cache_dir=tmp_path / "c"), reference)
    assert "4 from cache" in capsys.readouterr().out
    (root / "train.txt").write_text("".join(f"images/train/{p.name}\n" for p in sorted((root / "images/train").iterdir())))
    (root / "list.yaml").write_text("train: train.txt\nval: [images/train]\nnames: [red, blue]\n")
    assert_same(load_samples(root / "list.yaml", "train", CLASSES, use_cache=False), reference)


def test_coco_json_gives_the_voc_samples(tmp_path):
    voc = write_tiny_voc(tmp_path / "voc", 6)
    mark_difficult(voc, "img01")
    data = voc_to_coco(voc, tmp_path / "coco")
    assert default_split(data, "train") == "all"
    # ids 7 (red) and 12 (blue) -> class indices 0 and 1, in ascending id order
    assert read_classes(resolve_classes(data, VOC_DEFAULT)) == CLASSES
    reference = load_samples(voc, "train", CLASSES, use_cache=False)
    assert any(s.difficult.any() for s in reference)
    assert_same(load_samples(data, "all", CLASSES, use_cache=False), reference)


def yolo_one(tmp_path, label_text, names=("red", "blue"), size=(100, 50)):
    """A data YAML with one image `a.png` of `size` and its label file (None: no label file)."""
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    Image.new("RGB", size, (90, 90, 90)).save(root / "images" / "a.png")
    if label_text is not None:
        (root / "labels" / "a.txt").write_text(label_text)
    (root / "data.yaml").write_text(f"train: images\nval: images\nnames: {json.dumps(list(names))}\n")
    return root / "data.yaml"


def test_yolo_class_index_outside_names(tmp_path):
    data = yolo_one(tmp_path, "0 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DatasetError, match=r"a\.txt line 2: class index 2 is outside names"):
        load_samples(data, "train", CLASSES, use_cache=False)


def test_yolo_coordinates_outside_unit_range_are_clipped(tmp_path, capsys):
    data = yolo_one(tmp_path, "1 0.9 0.5 0.4 0.2\n")
    [sample] = load_samples(data, "train", CLASSES, use_cache=False)
    assert "a.txt line 1: normalised box" in capsys.readouterr().err
    np.testing.assert_allclose(sample.boxes, [[70, 20, 100, 30]], atol=1e-4)
    assert sample.labels.tolist() == [1]


def test_yolo_wrong_number_of_fields(tmp_path, capsys):
    data = yolo_one(tmp_path, "0 0.5 0.5 0.2\n1 0.5 0.5 0.2 0.2\nred 0.5 0.5 0.2 0.2\n")
    [sample] = load_samples(data, "train", CLASSES, use_cache=False)
    err = capsys.readouterr().err
    assert "a.txt line 1: 4 fields; expected 5 (class cx cy w h)" in err
    assert "a.txt line 3: 'red 0.5 0.5 0.2 0.2' is not numeric" in err
    assert sample.labels.tolist() == [1]


def test_yolo_segment_line_becomes_its_box(tmp_path, capsys):
    data = yolo_one(tmp_path, "0 0.1 0.2 0.5 0.2 0.3 0.8\n")
    [sample] = load_samples(data, "train", CLASSES, use_cache=False)
    np.testing.assert_allclose(sample.boxes, [[10, 10, 50, 40]], atol=1e-4)
    assert "segments read as boxes 1" in capsys.readouterr().out


def test_yolo_image_without_label_file_is_background(tmp_path, capsys):
    data = yolo_one(tmp_path, None)
    [sample] = load_samples(data, "train", CLASSES, use_cache=False)
    assert len(sample.labels) == 0
    out = capsys.readouterr().out
    assert "(1 background" in out and "images without a label file (background) 1" in out


def test_yolo_zero_area_and_negative_boxes_are_dropped(tmp_path, capsys):
    data = yolo_one(tmp_path, "0 0.5 0.5 0 0.2\n1 0.5 0.5 -0.2 0.2\n1 0.5 0.5 0.2 0.2\n")
    [sample] = load_samples(data, "train", CLASSES, use_cache=False)
    err = capsys.readouterr().err
    assert err.count("a.txt: box") == 2 and "has no area" in err
    assert sample.labels.tolist() == [1]


def coco_one(tmp_path, images=None, annotations=None, categories=None):
    root = tmp_path / "coco"
    root.mkdir()
    Image.new("RGB", (100, 50), (90, 90, 90)).save(root / "a.png")
    doc = {"images": images if images is not None else [{"id": 1, "file_name": "a.png", "width": 100, "height": 50}],
           "annotations": annotations if annotations is not None else [],
           "categories": categories if categories is not None else [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]}
    (root / "val.json").write_text(json.dumps(doc))
    return root / "val.json"


def test_coco_json_is_parsed_once_per_version_of_the_file(tmp_path, monkeypatch):
    from utils.data import formats
    data = coco_one(tmp_path)
    reads = []
    monkeypatch.setattr(formats, "read_json", lambda p: reads.append(p) or json.loads(Path(p).read_text()))
    formats.read_coco(data)
    assert formats.coco_category_ids(data) == {1: "red", 2: "blue"} and len(reads) == 1
    doc = json.loads(data.read_text())
    doc["categories"][1]["name"] = "green, a longer name"  # a new version of the file is read again, never stale
    data.write_text(json.dumps(doc))
    assert formats.coco_category_ids(data) == {1: "red", 2: "green, a longer name"} and len(reads) == 2
    monkeypatch.setattr(formats, "MEMO_BYTES", 10)  # a file too large to keep is parsed each time, never held
    formats.read_coco(data)
    formats.coco_category_ids(data)
    assert len(reads) == 4


def test_coco_annotation_with_unknown_image_id(tmp_path):
    data = coco_one(tmp_path, annotations=[{"id": 5, "image_id": 9, "category_id": 1, "bbox": [1, 1, 5, 5]}])
    with pytest.raises(DatasetError, match=r"val\.json: 1 annotations refer to an image_id .*annotation 5 \(image_id 9\)"):
        load_samples(data, "all", CLASSES, use_cache=False)


def test_coco_annotation_with_unknown_category_id(tmp_path):
    data = coco_one(tmp_path, annotations=[{"id": 5, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5]}])
    with pytest.raises(DatasetError, match=r"val\.json: 1 annotations refer to a category_id .*category_id 3"):
        load_samples(data, "all", CLASSES, use_cache=False)


def test_coco_duplicate_image_ids(tmp_path):
    image = {"id": 1, "file_name": "a.png", "width": 100, "height": 50}
    data = coco_one(tmp_path, images=[image, dict(image, file_name="b.png")])
    with pytest.raises(DatasetError, match=r"val\.json: duplicate image ids in 'images': 1"):
        load_samples(data, "all", CLASSES, use_cache=False)


def test_coco_zero_area_negative_boxes_and_crowds(tmp_path, capsys):
    boxes = [[10, 10, 0, 5], [10, 10, -4, 5], [10, 10, 20, 20], [0, 0, 30, 30]]
    data = coco_one(tmp_path, annotations=[{"id": i, "image_id": 1, "category_id": 2, "bbox": b, "iscrowd": int(i == 3)}
                                           for i, b in enumerate(boxes)])
    [sample] = load_samples(data, "all", CLASSES, use_cache=False)
    err = capsys.readouterr().err
    assert err.count("val.json image 1 (a.png): box") == 2 and "has no area" in err
    np.testing.assert_allclose(sample.boxes, [[10, 10, 30, 30], [0, 0, 30, 30]])
    assert sample.labels.tolist() == [1, 1] and sample.difficult.tolist() == [False, True]


def test_coco_duplicate_file_names(tmp_path):
    image = {"id": 1, "file_name": "a.png", "width": 100, "height": 50}
    data = coco_one(tmp_path, images=[image, dict(image, id=2)])
    with pytest.raises(DatasetError, match=r"val\.json: duplicate file names in 'images': a\.png"):
        load_samples(data, "all", CLASSES, use_cache=False)


def test_coco_image_missing_is_unreadable_for_evaluation(tmp_path, capsys):
    image = {"id": 1, "file_name": "a.png", "width": 100, "height": 50}
    data = coco_one(tmp_path, images=[image, dict(image, id=2, file_name="gone.png")],
                    annotations=[{"id": 7, "image_id": 2, "category_id": 1, "bbox": [1, 1, 9, 9]}])
    [sample] = load_samples(data, "all", CLASSES, use_cache=False)
    out, err = capsys.readouterr()
    assert Path(sample.image_path).name == "a.png" and "1 COCO image missing" in out
    assert "val.json image 2 (gone.png): no image gone.png in" in err
    with pytest.raises(UnreadableImagesError, match=r"val\.json image 2 \(gone\.png\) \(COCO image missing\)"):
        load_eval_samples(data, "all", CLASSES, use_cache=False)


def coco_download(voc: Path, root: Path) -> Path:
    """The COCO download layout: annotations/instances_{train,val}2017.json, images in val2017/ and
    images/train2017/ (both splits hold every image of `voc`)."""
    json_path = voc_to_coco(voc, root / "staging")
    (root / "annotations").mkdir()
    for split, images in (("val2017", root / "val2017"), ("train2017", root / "images" / "train2017")):
        shutil.copytree(root / "staging" / "images", images)
        shutil.copy(json_path, root / "annotations" / f"instances_{split}.json")
    shutil.rmtree(root / "staging")
    return root


def test_coco_root_and_download_layout(tmp_path):
    voc = write_tiny_voc(tmp_path / "voc", 4)
    reference = load_samples(voc, "train", CLASSES, use_cache=False)
    root = coco_download(voc, tmp_path / "coco")
    assert dataset_layout(root) == "coco-root"
    assert (default_split(root, "train"), default_split(root, "eval")) == ("train2017", "val2017")
    assert read_classes(resolve_classes(root, VOC_DEFAULT)) == CLASSES
    val = load_samples(root, "val2017", CLASSES, use_cache=False)
    assert_same(val, reference) and all("/val2017/" in s.image_path for s in val)
    train = load_samples(root / "annotations" / "instances_train2017.json", "all", CLASSES, use_cache=False)
    assert_same(train, reference) and all("/images/train2017/" in s.image_path for s in train)
    assert len(load_samples(root, "train2017+val2017", CLASSES, use_cache=False)) == 8
    with pytest.raises(DatasetError, match=r"annotations: no instances_test2017\.json .*splits: train2017, val2017"):
        load_samples(root, "test2017", CLASSES, use_cache=False)


def test_coco_images_dir(tmp_path, capsys):
    voc = write_tiny_voc(tmp_path / "voc", 3)
    reference = load_samples(voc, "train", CLASSES, use_cache=False)
    data = voc_to_coco(voc, tmp_path / "coco")
    shutil.move(tmp_path / "coco" / "images", tmp_path / "elsewhere")
    capsys.readouterr()
    with pytest.raises(DatasetError, match="no usable image"):
        load_samples(data, "all", CLASSES, use_cache=False)
    assert "3 COCO image missing" in capsys.readouterr().out
    assert_same(load_samples(data, "all", CLASSES, use_cache=False, images_dir=tmp_path / "elsewhere"), reference)
    with pytest.raises(DatasetError, match=r"--images .*nowhere is not a folder"):
        load_samples(data, "all", CLASSES, images_dir=tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=r"--images .*only for a COCO JSON or root; .*voc is a VOC year folder"):
        resolve_data(voc, images_dir=tmp_path / "elsewhere")


def test_cache_key_holds_images_dir(tmp_path):
    voc = write_tiny_voc(tmp_path / "voc", 2)
    data = voc_to_coco(voc, tmp_path / "coco")
    shutil.copytree(tmp_path / "coco" / "images", tmp_path / "copy")
    first = load_samples(data, "all", CLASSES, cache_dir=tmp_path / "c")
    second = load_samples(data, "all", CLASSES, cache_dir=tmp_path / "c", images_dir=tmp_path / "copy")
    assert all("/coco/images/" in s.image_path for s in first)
    assert all("/copy/" in s.image_path for s in second)


def yolo_and_coco(tmp_path) -> Path:
    """One folder that is both a YOLO folder (images/train, labels/train) and a COCO root (train2017)."""
    voc = write_tiny_voc(tmp_path / "voc", 3)
    root = voc_to_yolo(voc, tmp_path / "both").parent
    (root / "data.yaml").unlink()
    (root / "annotations").mkdir()
    shutil.copy(voc_to_coco(voc, tmp_path / "coco"), root / "annotations" / "instances_train2017.json")
    shutil.copytree(tmp_path / "coco" / "images", root / "train2017")
    return root


def test_data_format_picks_among_the_layouts_a_folder_fits(tmp_path, capsys):
    root = yolo_and_coco(tmp_path)
    assert dataset_layout(root) == "yolo" and dataset_layout(root, "yolo") == "yolo"
    assert dataset_layout(root, "coco") == "coco-root"
    assert default_split(root, "train", data_format="coco") == "train2017"
    samples = load_samples(root, "train2017", CLASSES, use_cache=False, data_format="coco")
    assert len(samples) == 3 and all("/train2017/" in s.image_path for s in samples)
    assert len(load_eval_samples(root, "train2017", CLASSES, use_cache=False, data_format="coco")[0]) == 3
    with pytest.raises(DatasetError, match=r"images: no split folder 'train2017'"):
        load_samples(root, "train2017", CLASSES, use_cache=False)
    with pytest.raises(DatasetError, match=r"both: --data-format voc does not fit: it is a YOLO folder"):
        load_samples(root, "train", CLASSES, use_cache=False, data_format="voc")


def test_data_format_that_does_not_fit_names_what_was_found(tmp_path):
    voc = write_tiny_voc(tmp_path / "voc", 2)
    with pytest.raises(DatasetError, match=r"voc: --data-format yolo does not fit: it is a VOC year folder with "
                                           r"ImageSets \(voc\)"):
        resolve_data(voc, data_format="yolo")
    data = voc_to_coco(voc, tmp_path / "coco")
    with pytest.raises(DatasetError, match=r"instances\.json: --data-format labelme does not fit: it is a JSON file, "
                                           r"read as COCO"):
        default_split(data, "train", data_format="labelme")
    with pytest.raises(DatasetError, match=r"unknown data format 'pascal'; valid: voc, yolo, coco, labelme"):
        resolve_data(voc, data_format="pascal")
    with pytest.raises(DatasetError, match=r"nothing does not exist"):
        resolve_data(tmp_path / "nothing", data_format="coco")


def test_cache_key_holds_the_data_format(tmp_path, capsys):
    voc = write_tiny_voc(tmp_path / "voc", 3)
    shutil.rmtree(voc / "ImageSets")
    for stem, (filename, size, objects) in voc_objects(voc).items():
        shapes = [{"label": n, "points": [[a, b], [c, d]], "shape_type": "rectangle"} for n, a, b, c, d, _ in objects]
        (voc / f"{stem}.json").write_text(json.dumps({"shapes": shapes, "imagePath": f"JPEGImages/{filename}"}))
    assert dataset_layout(voc) == "flat" and dataset_layout(voc, "labelme") == "labelme"
    for data_format in ("voc", "labelme", "voc"):
        load_samples(voc, "all", CLASSES, cache_dir=tmp_path / "c", data_format=data_format)
    assert "3 from cache" in capsys.readouterr().out.splitlines()[-1]


def test_yolo_label_file_without_an_image_is_counted(tmp_path, capsys):
    voc = write_tiny_voc(tmp_path / "voc", 3)
    reference = load_samples(voc, "train", CLASSES, use_cache=False)
    data = voc_to_yolo(voc, tmp_path / "yolo")
    (data.parent / "labels/train/stray.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    capsys.readouterr()
    assert_same(load_samples(data, "train", CLASSES, use_cache=False), reference)
    out, err = capsys.readouterr()
    assert "labels/train/stray.txt: no image of the split has this label file" in err
    assert out.rstrip().endswith("label files without an image 1") and "skipped 0" in out


def test_seeded_yolo_folder_counts_only_label_files_without_any_image(tmp_path, capsys):
    data = yolo_one(tmp_path, "0 0.5 0.5 0.2 0.2\n")
    root = data.parent
    data.unlink()
    for stem in ("b", "c", "d", "e"):
        Image.new("RGB", (20, 20)).save(root / "images" / f"{stem}.png")
        (root / "labels" / f"{stem}.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    (root / "labels" / "stray.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    for split in ("train", "val"):
        load_samples(root, split, CLASSES, use_cache=False, val_fraction=0.5)
    err = capsys.readouterr().err
    assert err.count("stray.txt: no image of the split") == 2 and err.count("label file") == 2


def test_coco_tag_is_the_stem_without_instances_and_never_empty():
    from utils.data.formats import coco_tag
    assert coco_tag(Path("a/instances_val2017.json")) == "val2017"
    assert coco_tag(Path("a/val.json")) == "val"
    assert coco_tag(Path("a/instances_.json")) == "instances_"  # an empty name is no split
