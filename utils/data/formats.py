"""Reading YOLO txt and COCO JSON datasets into the same Records as VOC (utils/data/annotations.py).

YOLO (darknet / ultralytics, https://docs.ultralytics.com/datasets/detect/):
  * a data YAML: `path` (the root; relative to the YAML's folder, default that folder), `train`, `val`,
    optional `test` (each a folder of images, searched recursively, a list of folders, or a txt file of
    image paths, relative ones to the txt's folder), `names` (a list, or an id -> name map with ids 0..n-1);
  * a bare folder: `images/` + `labels/` (sub-folders such as `images/train` are splits), names from
    `classes.txt` (one a line) or `data.yaml` in it, else from `--classes`.
  A label file is the image path with its last `images` component replaced by `labels` and the suffix
  by `.txt`; one object a line, `class cx cy w h`, normalised to the image size after EXIF orientation
  (as ultralytics reads it). A segment line (`class x1 y1 x2 y2 ...`) becomes its bounding box (counted in
  the scan summary); an image without a label file is a background sample (counted).
  A label file in the labels folder of a split's images that no image has is warned about and counted
  ("label files without an image"; a folder split by seed shares one labels folder, so each of its splits
  counts it); nothing else changes.
COCO detection JSON (https://cocodataset.org/#format-data): `images`, `annotations`, `categories`;
  `bbox` is [x, y, width, height] in pixels; `iscrowd` objects become difficult (left out of training
  targets, ignored in evaluation); COCO mAP scores the annotations as the file gives them, `area` included
  (utils/data/coco_records.py, which also finds the images). Images are looked for in `images_dir` (`--images`) when given, else
  beside the JSON, in `images/` beside it, and in the COCO download layout: for
  `coco/annotations/instances_val2017.json`, in `coco/val2017/` and `coco/images/val2017/` (the JSON stem
  without `instances_`). An image entry whose file is in none of them is skipped as "COCO image missing",
  which evaluation counts as unreadable. Duplicate image ids or file names, and annotations whose
  image_id or category_id does not exist, stop the scan naming the JSON.
Untrusted input: YAML is read with yaml.safe_load, JSON with json.
"""
import functools
import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

from utils.core.fileio import read_json
from utils.data.annotations import DatasetError, Record, _orientation, finish_record, open_record_image
from utils.ops.image import IMAGE_EXTENSIONS

YAML_SUFFIXES = (".yaml", ".yml")
YOLO_SPLITS = ("train", "val", "test")
SEGMENT_NOTE = "segments read as boxes"
NO_LABEL_NOTE = "images without a label file (background)"
UNREADABLE_LABEL = "unreadable label file"
NO_IMAGE_NOTE = "label files without an image"
COCO_IMAGE_MISSING = "COCO image missing"
COCO_PREFIX = "instances_"


def check_names(names: Sequence[str], where: str) -> Tuple[str, ...]:
    """Class names as a tuple; empty, multi-line or repeated names raise DatasetError."""
    names = tuple(str(n).strip() for n in names)
    if not names:
        raise DatasetError(f"{where}: no class names")
    bad = [n for n in names if not n or "\n" in n or "\r" in n]
    if bad:
        raise DatasetError(f"{where}: class names must be non-empty single lines; found {bad[:3]}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DatasetError(f"{where}: class names repeat: {', '.join(repeated)}")
    return names


def _load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DatasetError(f"{path}: cannot read the data YAML ({e})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a mapping with path, train, val and names; found {type(data).__name__}")
    return data


def yolo_names(value, where: str) -> Tuple[str, ...]:
    """`names` of a data YAML (a list, or a map from ids 0..n-1 to names) as a tuple in id order."""
    if isinstance(value, dict):
        try:
            ids = {int(k): v for k, v in value.items()}
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: names map keys must be integer class ids; found {list(value)[:5]}") from None
        if sorted(ids) != list(range(len(ids))):
            raise DatasetError(f"{where}: names ids must be 0..{len(ids) - 1} without gaps; found {sorted(ids)}")
        value = [ids[i] for i in range(len(ids))]
    if not isinstance(value, (list, tuple)):
        raise DatasetError(f"{where}: names must be a list or an id -> name map; found {type(value).__name__}")
    return check_names(value, where)


@dataclass(frozen=True)
class YoloConfig:
    """A data YAML: its root, the entries (folders or txt files) of each split, and the class names."""

    yaml_path: Path
    root: Path
    splits: Dict[str, Tuple[str, ...]]
    names: Tuple[str, ...]


def read_data_yaml(path: Path) -> YoloConfig:
    data = _load_yaml(path)
    root = Path(str(data.get("path") or "."))
    root = root if root.is_absolute() else path.parent / root
    splits = {}
    for key in YOLO_SPLITS:
        value = data.get(key)
        if value in (None, ""):
            continue
        entries = [value] if isinstance(value, str) else value
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise DatasetError(f"{path}: {key} must be a folder, a list of folders or a txt file; found {value!r}")
        splits[key] = tuple(entries)
    if "names" not in data:
        raise DatasetError(f"{path}: no `names` (a list of class names, or an id -> name map)")
    names = yolo_names(data["names"], f"{path} names")
    if data.get("nc") is not None and data["nc"] != len(names):
        raise DatasetError(f"{path}: nc is {data['nc']} but names holds {len(names)} classes")
    return YoloConfig(path, root, splits, names)


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def _listed_images(txt: Path) -> List[Path]:
    images = []
    for line in txt.read_text(encoding="utf-8").splitlines():
        if line.strip():
            p = Path(line.strip())
            images.append(p if p.is_absolute() else txt.parent / p)
    return images


def yolo_split_images(config: YoloConfig, split: str) -> List[Path]:
    """The images of a split (`a+b` joins splits) of a data YAML, in file order."""
    images: List[Path] = []
    for part in split.split("+"):
        if part not in config.splits:
            raise DatasetError(f"{config.yaml_path}: no split {part!r}; splits: {', '.join(config.splits) or 'none'}")
        for entry in config.splits[part]:
            p = Path(entry) if Path(entry).is_absolute() else config.root / entry
            if p.is_dir():
                images += sorted(q for q in p.rglob("*") if is_image(q))
            elif p.is_file():
                images += _listed_images(p)
            else:
                raise DatasetError(f"{config.yaml_path}: {part} entry {p} does not exist (expected a folder of "
                                   f"images or a txt file of image paths)")
    return list(dict.fromkeys(images))


def label_path(image: Path) -> Path:
    """The label file of an image: its last `images` path component replaced by `labels`, suffix .txt."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def label_files_without_image(pairs: Sequence[Tuple[Path, Path]]) -> List[Path]:
    """The label files that no image has, in the labels folders of the (image, label file) `pairs` of a split,
    where a labels folder is not the image folder itself (there, other txt files may lie)."""
    folders = {label.parent: image.parent for image, label in pairs if label.parent != image.parent}
    stems = {d: {p.stem for p in d.iterdir() if is_image(p)} if d.is_dir() else set() for d in set(folders.values())}
    known = {label for _, label in pairs}
    return [p for labels, images in sorted(folders.items()) if labels.is_dir() for p in sorted(labels.glob("*.txt"))
            if p not in known and p.stem not in stems[images]]


def _yolo_box(values: List[float], at: str, rec: Record) -> Optional[List[float]]:
    """Normalised xyxy of a box line (class cx cy w h) or a segment line (class x1 y1 x2 y2 ...)."""
    if len(values) == 5:
        cx, cy, w, h = values[1:]
        return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    if len(values) >= 7 and len(values) % 2 == 1:
        rec.notes[SEGMENT_NOTE] += 1
        xs, ys = values[1::2], values[2::2]
        return [min(xs), min(ys), max(xs), max(ys)]
    rec.invalid.append(f"{at}: {len(values)} fields; expected 5 (class cx cy w h) or a segment "
                       f"(class x1 y1 x2 y2 x3 y3 ...)")
    return None


def _yolo_rows(text: str, where: str, rec: Record) -> List[Tuple[int, int, List[float]]]:
    """[(class index, line number, normalised xyxy clipped to [0, 1])] of a label file."""
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        fields, at = line.split(), f"{where} line {n}"
        if not fields:
            continue
        try:
            values = [float(f) for f in fields]
        except ValueError:
            rec.invalid.append(f"{at}: {line.strip()[:80]!r} is not numeric; expected class cx cy w h (normalised)")
            continue
        if not all(math.isfinite(v) for v in values):
            rec.invalid.append(f"{at}: {line.strip()[:80]!r} holds a value that is not a finite number")
            continue
        box = _yolo_box(values, at, rec)
        if box is None:
            continue
        if values[0] != int(values[0]):
            rec.invalid.append(f"{at}: class {fields[0]!r} is not an integer index")
            continue
        if box[0] > box[2] or box[1] > box[3]:
            rec.invalid.append(f"{where}: box {[round(v, 4) for v in box]} (x1 y1 x2 y2, normalised) on line {n} "
                               f"has a negative width or height")
            continue
        clipped = [min(max(v, 0.0), 1.0) for v in box]
        if clipped != box:
            rec.warnings.append(f"{at}: normalised box {[round(v, 4) for v in box]} (x1 y1 x2 y2) lies outside "
                                f"[0, 1]; clipped")
        rows.append((int(values[0]), n, clipped))
    return rows


def _stored_or_rotated_size(image) -> Tuple[int, int]:
    w, h = image.size
    return (h, w) if _orientation(image) in (5, 6, 7, 8) else (w, h)


def parse_yolo(image_path: Path, label: Path, names: Optional[Sequence[str]], class_names: Sequence[str]) -> Record:
    """Read one image and its YOLO label file into a Record; `names` are the dataset's (None: class_names).

    A class index outside `names` raises DatasetError, as in annotation-line files."""
    where = str(label)
    rec = Record(where=where)
    try:
        text = label.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
        rec.notes[NO_LABEL_NOTE] += 1
    except (OSError, UnicodeDecodeError) as e:
        rec.image_path = str(image_path)
        return rec.skipped(UNREADABLE_LABEL, f"{label}: cannot read the label file ({e})")
    rows = _yolo_rows(text, where, rec)
    table = tuple(names) if names is not None else tuple(class_names)
    index = {n: i for i, n in enumerate(class_names)}
    labelled = []
    for cls, n, box in rows:
        if not 0 <= cls < len(table):
            source = "names" if names is not None else "the classes file"
            raise DatasetError(f"{where} line {n}: class index {cls} is outside {source} ({len(table)} classes, "
                               f"indices 0..{len(table) - 1}); check names / --classes")
        if table[cls] not in index:
            rec.unknown[table[cls]] += 1
            continue
        labelled.append((box, index[table[cls]]))
    rec.lost_objects = len(labelled)
    image = open_record_image(rec, image_path)
    if image is None:
        return rec
    rec.lost_objects = 0
    w, h = _stored_or_rotated_size(image)
    objects = [(b[0] * w, b[1] * h, b[2] * w, b[3] * h, cls, False) for b, cls in labelled]
    return finish_record(rec, image, objects, len(rows), (w, h), where)


@dataclass(frozen=True)
class CocoImage:
    """One entry of a COCO JSON's `images` with its annotations: (annotation id, bbox, category name, iscrowd, area)."""

    id: object
    file_name: str
    size: Optional[Tuple[int, int]]
    objects: Tuple[Tuple[object, object, str, bool, object], ...]


MEMO_BYTES = 64 << 20  # COCO JSONs up to this size are parsed once per version of the file (a val2017 is 25 MB)


def _load_json(path: Path) -> dict:
    """The checked COCO JSON at `path`, parsed once per version of the file up to MEMO_BYTES: one get_map run
    reads it for the scan, the category ids and the results (treat the returned dict as read-only)."""
    try:
        stat = os.stat(path)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the JSON ({e.strerror})") from None
    if stat.st_size > MEMO_BYTES:  # e.g. train2017's 448 MB: held for the whole run (and by forked workers)
        return _parse_coco_json(path)
    return _load_json_version(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _load_json_version(path: str, mtime_ns: int, size: int) -> dict:
    return _parse_coco_json(Path(path))


def _parse_coco_json(path: Path) -> dict:
    try:
        data = read_json(path)
    except (OSError, ValueError) as e:  # read_json's ValueError (not JSON, nested too deep) starts with the path
        raise DatasetError(f"{path}: cannot read the JSON ({str(e).removeprefix(f'{path}: ')})") from None
    keys = ("images", "annotations", "categories")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in keys):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DatasetError(f"{path}: expected a COCO detection JSON with 'images', 'annotations' and 'categories' "
                           f"lists; found {found}")
    return data


def _listing(items: Sequence, limit: int = 5) -> str:
    return ", ".join(str(i) for i in items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def coco_categories(categories: list, path: Path) -> Dict[object, str]:
    """{category id: name}, in ascending id order. Class index i is the i-th category by ascending id,
    so ids need not be contiguous (COCO's 1..90 with gaps become 0..79)."""
    by_id: Dict[object, str] = {}
    for c in categories:
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or "name" not in c:
            raise DatasetError(f"{path}: a category must have an integer 'id' and a 'name'; found {c!r}")
        if c["id"] in by_id:
            raise DatasetError(f"{path}: category id {c['id']} appears twice")
        by_id[c["id"]] = str(c["name"])
    names = check_names([by_id[i] for i in sorted(by_id)], f"{path} categories")
    return dict(zip(sorted(by_id), names))


def coco_category_ids(path: Path) -> Dict[object, str]:
    """{category id: name} of a COCO JSON (coco_categories): what `category_id` means in its results files."""
    return coco_categories(_load_json(path)["categories"], path)


def _coco_images(images: list, path: Path) -> Dict[object, Tuple[str, Optional[Tuple[int, int]]]]:
    found: Dict[object, Tuple[str, Optional[Tuple[int, int]]]] = {}
    repeated, names = [], defaultdict(int)
    for im in images:
        if not isinstance(im, dict) or not isinstance(im.get("id"), (int, str)) or not im.get("file_name"):
            raise DatasetError(f"{path}: an image must have an 'id' and a 'file_name'; found {im!r}")
        if im["id"] in found:
            repeated.append(im["id"])
        w, h = im.get("width"), im.get("height")
        size = (int(w), int(h)) if isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0 else None
        found[im["id"]] = (str(im["file_name"]), size)
        names[str(im["file_name"])] += 1
    if repeated:
        raise DatasetError(f"{path}: duplicate image ids in 'images': {_listing(repeated)}; each id must be unique")
    twice = [n for n, k in names.items() if k > 1]
    if twice:
        raise DatasetError(f"{path}: duplicate file names in 'images': {_listing(twice)}; each image must appear once")
    return found


def read_coco(path: Path) -> Tuple[Tuple[str, ...], List[CocoImage]]:
    """(class names in ascending category id order, images with their annotations) of a COCO JSON.

    An annotation whose image_id or category_id does not exist raises DatasetError naming them."""
    data = _load_json(path)
    categories = coco_categories(data["categories"], path)
    images = _coco_images(data["images"], path)
    objects: Dict[object, list] = defaultdict(list)
    bad_image, bad_category = [], []
    for a in data["annotations"]:
        a = a if isinstance(a, dict) else {}
        image_id, category_id = a.get("image_id"), a.get("category_id")
        if not isinstance(image_id, (int, str)) or image_id not in images:
            bad_image.append(f"annotation {a.get('id')} (image_id {image_id!r})")
        elif not isinstance(category_id, int) or category_id not in categories:
            bad_category.append(f"annotation {a.get('id')} (category_id {category_id!r})")
        else:
            objects[image_id].append((a.get("id"), a.get("bbox"), categories[category_id], bool(a.get("iscrowd")),
                                      a.get("area")))
    if bad_image:
        raise DatasetError(f"{path}: {len(bad_image)} annotations refer to an image_id that no entry of 'images' "
                           f"has: {_listing(bad_image)}")
    if bad_category:
        raise DatasetError(f"{path}: {len(bad_category)} annotations refer to a category_id that 'categories' "
                           f"lacks: {_listing(bad_category)}")
    names = tuple(categories[i] for i in sorted(categories))
    return names, [CocoImage(i, f, s, tuple(objects.get(i, ()))) for i, (f, s) in images.items()]


def coco_tag(json_path: Path) -> str:
    """The split a COCO JSON names: its stem without `instances_` (instances_val2017.json -> val2017); a stem
    that is `instances_` alone is kept, since an empty name is no split."""
    stem = json_path.stem
    return stem[len(COCO_PREFIX):] if stem.startswith(COCO_PREFIX) and stem != COCO_PREFIX else stem


def inside(folder: Path, name: str) -> bool:
    """True when `folder / name` lies in `folder` (by its text: `..` and absolute paths may lead out of it;
    links inside the folder are the dataset's own and are followed)."""
    base = os.path.normpath(os.path.abspath(folder))
    return os.path.normpath(os.path.join(base, name)).startswith(base.rstrip(os.sep) + os.sep)
