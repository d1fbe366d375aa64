"""The one VOC writer of the tests, the datasets built on it, and converters from VOC to the other layouts."""
import io
import json
import shutil
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# --- the writer -------------------------------------------------------------------------------------------


def write_xml(path: Path, filename: str, size, objects) -> None:
    """objects: [(name, xmin, ymin, xmax, ymax, difficult)]; size (w, h) or None."""
    parts = [f"<annotation><filename>{filename}</filename>"]
    if size:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    for name, x1, y1, x2, y2, diff in objects:
        parts.append(f"<object><name>{name}</name><difficult>{int(diff)}</difficult><bndbox><xmin>{x1}</xmin>"
                     f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts) + "</annotation>", encoding="utf-8")


def write_voc(root: Path, items, splits=None, classes=None) -> Path:
    """A VOC year folder. items: {stem: (image, filename, xml size (w, h) or None, objects)}, where image is a
    PIL image (saved in the format of the filename's suffix), encoded bytes, or None (no image file); objects
    (name, xmin, ymin, xmax, ymax, difficult). splits: {name: [stems]} (default: train = every item);
    classes: also written to root/classes.txt."""
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    for stem, (image, filename, size, objects) in items.items():
        if isinstance(image, Image.Image):
            image.save(root / "JPEGImages" / filename)
        elif isinstance(image, bytes):
            (root / "JPEGImages" / filename).write_bytes(image)
        write_xml(root / "Annotations" / f"{stem}.xml", filename, size, objects)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for name, stems in (splits or {"train": list(items)}).items():
        (root / "ImageSets" / "Main" / f"{name}.txt").write_text("\n".join(stems) + "\n")
    if classes is not None:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def encoded(image_bgr: np.ndarray, suffix: str) -> bytes:
    """cv2's encoding of a BGR image (the bytes cv2.imwrite writes)."""
    return cv2.imencode(suffix, image_bgr)[1].tobytes()


# --- the tiny VOC: grey 128x128 PNGs with one or two coloured rectangles, train = val = all ------------------

TINY_CLASSES = ["red", "blue"]
COLOURS = {"red": (255, 40, 40), "blue": (40, 40, 255)}


def write_tiny_voc(root: Path, n_images: int, seed: int = 0) -> Path:
    """Grey images with one or two filled rectangles per image, in VOC layout (train = val = all)."""
    rng = np.random.default_rng(seed)
    items = {}
    for i in range(n_images):
        image = np.full((128, 128, 3), 120, np.uint8)
        objects = []
        for k in range(1 + i % 2):
            name = TINY_CLASSES[(i + k) % 2]
            w, h = rng.integers(36, 56, size=2)
            x1 = 8 + 64 * k if k else int(rng.integers(4, 128 - w - 4) // 2)
            y1 = int(rng.integers(4, 128 - h - 4))
            x1, w = min(x1, 124 - w), int(w)
            cv2.rectangle(image, (x1, y1), (x1 + w, y1 + int(h)), COLOURS[name][::-1], -1)
            objects.append((name, x1, y1, x1 + w, y1 + int(h), 0))
        stem = f"img{i:02d}"
        items[stem] = (encoded(image, ".png"), f"{stem}.png", (128, 128), objects)
    return write_voc(root, items, {"train": list(items), "val": list(items)}, TINY_CLASSES)


# --- get_map's VOC: VOCdevkit/VOC2007 with a test split of three images and a trainval of one ----------------

MAP_CLASSES = ["cat", "dog"]
# stem -> (height, width), objects (name, xmin, ymin, xmax, ymax, difficult)
MAP_IMAGES = {
    "000001": ((96, 128), [("cat", 10, 12, 60, 70, 0), ("dog", 70, 20, 120, 90, 0)]),
    "000002": ((80, 80), [("dog", 5, 5, 50, 60, 0), ("cat", 52, 40, 78, 78, 1)]),
    "000003": ((100, 90), [("cat", 20, 30, 85, 95, 0)]),
    "000004": ((64, 64), [("dog", 8, 8, 40, 40, 0)]),  # trainval only
}


def write_map_voc(root: Path) -> Path:
    """root/VOCdevkit/VOC2007 of MAP_IMAGES (random-pixel JPEGs) and root/classes.txt; returns the VOCdevkit."""
    rng = np.random.default_rng(0)
    items = {stem: (encoded(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), ".jpg"), f"{stem}.jpg", (w, h), objects)
             for stem, ((h, w), objects) in MAP_IMAGES.items()}
    write_voc(root / "VOCdevkit" / "VOC2007", items, {"test": ["000001", "000002", "000003"], "trainval": ["000004"]})
    (root / "classes.txt").write_text("\n".join(MAP_CLASSES) + "\n")
    return root / "VOCdevkit"


def perfect_results(by_name=False):
    """A COCO results file's rows detecting every object of get_map's test split with score 0.9."""
    rows = []
    for stem, (_, objects) in list(MAP_IMAGES.items())[:3]:
        for n, x1, y1, x2, y2, _ in objects:
            row = {"image_id": int(stem) if by_name else stem, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": 0.9}
            row.update({"category_name": n} if by_name else {"category_id": MAP_CLASSES.index(n) + 1})
            rows.append(row)
    return rows


def split_samples(voc):
    """The test split's ground truth, written out by hand from MAP_IMAGES (not read by utils.data.voc)."""
    samples = []
    for stem, (_, objects) in list(MAP_IMAGES.items())[:3]:
        samples.append(types.SimpleNamespace(
            image_path=str(voc / "VOC2007" / "JPEGImages" / f"{stem}.jpg"),
            boxes=np.array([o[1:5] for o in objects], np.float32),
            labels=np.array([MAP_CLASSES.index(o[0]) for o in objects]),
            difficult=np.array([bool(o[5]) for o in objects])))
    return samples


# --- the scene VOC: textured 70x120 JPEGs with one box each, train and val lists ------------------------------

SCENE_CLASSES = ["cat", "dog"]


def scene(h: int, w: int, seed: int) -> np.ndarray:
    """HxWx3 uint8: a blocky grey texture with four flat coloured rectangles, so the network's outputs
    change with the image (on pixel noise a random network gives nearly the same output everywhere)."""
    rng = np.random.default_rng(seed)
    img = np.kron(rng.integers(60, 200, (h // 8 + 1, w // 8 + 1, 1)), np.ones((8, 8, 3)))[:h, :w].astype(np.uint8)
    for _ in range(4):
        y0, x0 = rng.integers(0, h - 16), rng.integers(0, w - 16)
        img[y0:y0 + rng.integers(12, h // 2), x0:x0 + rng.integers(12, w // 2)] = rng.integers(0, 256, 3)
    return img


def write_scene_voc(root, n_train: int = 4, n_val: int = 2):
    """Scene images of 70x120 with one box each, in VOC layout with train and val lists."""
    stems = [f"im{i}" for i in range(n_train + n_val)]
    items = {stem: (Image.fromarray(scene(70, 120, seed=i)), f"{stem}.jpg", (120, 70),
                    [(SCENE_CLASSES[i % 2], 10, 5, 60 + i, 50, 0)]) for i, stem in enumerate(stems)}
    return write_voc(root, items, {"train": stems[:n_train], "val": stems[n_train:]})


def exif_image(stored: np.ndarray, orientation: int) -> bytes:
    """A PNG of `stored` whose EXIF orientation tag is `orientation`."""
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    image.save(buf, "PNG", exif=exif.tobytes())
    return buf.getvalue()


# --- reading a VOC folder back, and converting it to the other layouts --------------------------------------

VOC_DEFAULT = "model_data/voc_classes.txt"


def voc_objects(voc: Path):
    """{stem: (filename, (w, h), [(name, x1, y1, x2, y2, difficult)])} read straight from the XML."""
    found = {}
    for xml in sorted((voc / "Annotations").glob("*.xml")):
        root = ET.parse(xml).getroot()
        objects = [(o.findtext("name"), *(float(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")),
                    o.findtext("difficult") == "1") for o in root.findall("object")]
        size = int(root.findtext("size/width")), int(root.findtext("size/height"))
        found[xml.stem] = (root.findtext("filename"), size, objects)
    return found


def by_stem(samples):
    return {Path(s.image_path).stem: s for s in samples}


def assert_same(samples, reference):
    """The same images with the same boxes, labels, difficult flags and sizes."""
    got, want = by_stem(samples), by_stem(reference)
    assert sorted(got) == sorted(want)
    for stem, w in want.items():
        g = got[stem]
        np.testing.assert_allclose(g.boxes, w.boxes, atol=1e-4, err_msg=stem)
        assert g.labels.tolist() == w.labels.tolist(), stem
        assert g.difficult.tolist() == w.difficult.tolist(), stem
        assert (g.width, g.height) == (w.width, w.height), stem


def voc_to_coco(voc: Path, dst: Path) -> Path:
    """A COCO JSON of the tiny VOC with non-contiguous category ids listed out of order; difficult -> iscrowd."""
    (dst / "images").mkdir(parents=True)
    ids = {"red": 7, "blue": 12}
    images, annotations = [], []
    for k, (stem, (filename, (w, h), objects)) in enumerate(voc_objects(voc).items()):
        shutil.copy(voc / "JPEGImages" / filename, dst / "images" / filename)
        images.append({"id": 100 + k, "file_name": filename, "width": w, "height": h})
        for n, a, b, c, d, diff in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": 100 + k, "category_id": ids[n],
                                "bbox": [a, b, c - a, d - b], "area": (c - a) * (d - b), "iscrowd": int(diff)})
    categories = [{"id": 12, "name": "blue"}, {"id": 7, "name": "red"}]
    path = dst / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def rectangle(name, a, b, c, d, flip=False):
    corners = [[c, d], [a, b]] if flip else [[a, b], [c, d]]
    return {"label": name, "points": corners, "shape_type": "rectangle", "group_id": None, "flags": {}}


def polygon(name, a, b, c, d):
    """The box's corners and a point on its top edge: the bounding box is the box."""
    return {"label": name, "points": [[a, b], [(a + c) / 2, b], [c, b], [c, d], [a, d]], "shape_type": "polygon"}


def write_labelme(path: Path, image_path: str, shapes, size=(128, 128)) -> Path:
    doc = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": image_path, "imageData": None,
           "imageWidth": size[0], "imageHeight": size[1]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def voc_to_labelme(voc: Path, dst: Path) -> Path:
    """One JSON per image in dst/, images in dst/images/; img01's first object a polygon, img02's imagePath
    written with a Windows backslash, img03's rectangles with their corners swapped."""
    (dst / "images").mkdir(parents=True)
    for stem, (filename, size, objects) in voc_objects(voc).items():
        shutil.copy(voc / "JPEGImages" / filename, dst / "images" / filename)
        shapes = [polygon(n, a, b, c, d) if (stem, k) == ("img01", 0) else rectangle(n, a, b, c, d, stem == "img03")
                  for k, (n, a, b, c, d, _) in enumerate(objects)]
        write_labelme(dst / f"{stem}.json", f"images\\{filename}" if stem == "img02" else f"images/{filename}", shapes,
                      size)
    (dst / "classes.txt").write_text("\n".join(TINY_CLASSES) + "\n")
    return dst
