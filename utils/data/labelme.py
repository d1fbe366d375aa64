"""Reading labelme JSON files (https://github.com/wkentaro/labelme) into the same Records as VOC.

A labelme dataset is a folder of `*.json` files, one per image; only the folder itself is read, not its
sub-folders. It is told apart from other folders by its first JSON files (sorted by name): one of them is
a mapping with a `shapes` list. Each file holds:
  * `imagePath`: the image, relative to the JSON (Windows backslashes are read as `/`). When no file is
    there, the file of that name beside the JSON, then `<JSON stem>.<image extension>` beside it, is used.
    The base64 `imageData` that labelme may embed is not read. An imagePath that leads out of the folder
    (`../`, an absolute path) is not read; with no image of its name or stem beside the JSON, the scan stops.
  * `imageWidth`, `imageHeight`: the size labelme showed (after EXIF orientation); they play the part of
    VOC's `<size>` in the EXIF rule of utils/data/annotations.py.
  * `shapes`: [{label, points [[x, y], ...] in pixels, shape_type}]. A `rectangle` (2 points, two opposite
    corners in any order) is a box. A `polygon` (3 or more points; a shape without `shape_type`, as early
    labelme wrote it, is one) becomes its bounding box, counted in the scan summary ("polygons read as
    boxes"). Other types (point, line, linestrip, circle, mask, ...) are skipped, counted per type; a file
    whose shapes are all of other types is skipped ("no rectangles or polygons"), not read as background.
Labels are matched to the classes file by name, as VOC object names are (others are counted as unknown
names); no object is difficult. A shape with the wrong number of points or non-numeric points is
dropped with a warning naming the file; a box without area is dropped as in VOC.
Splits and classes are those of utils/data/layouts.py: the seeded train / val / all over the JSON stems,
classes from --classes or a classes.txt in the folder. Untrusted input: JSON is read with json.
"""
import json
import math
from collections import Counter
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from utils.core.fileio import read_json
from utils.data.annotations import DatasetError, Record, _find_image, finish_record, open_record_image
from utils.data.formats import inside

BOX_SHAPES = ("rectangle", "polygon")
POLYGON_NOTE = "polygons read as boxes"
MALFORMED_JSON = "malformed JSON"
NOT_LABELME = "not a labelme file"
NO_BOX_SHAPES = "no rectangles or polygons"
DETECT_FILES = 3  # JSON files looked at to tell a labelme folder


def labelme_files(root: Path) -> List[Path]:
    """The JSON files directly in `root`, sorted by name."""
    return sorted(p for p in root.glob("*.json") if p.is_file())


def _is_labelme(data) -> bool:
    return isinstance(data, dict) and isinstance(data.get("shapes"), list)


def is_labelme_folder(root: Path) -> bool:
    """True when one of the first DETECT_FILES JSON files in `root` is a labelme file."""
    for path in labelme_files(root)[:DETECT_FILES]:
        try:
            if _is_labelme(read_json(path)):
                return True
        except (OSError, ValueError):
            continue
    return False


def find_labelme_image(json_path: Path, image_path) -> Optional[Path]:
    """The image a labelme file names (see the module docstring), or None. Untrusted input: an imagePath that
    leads out of the JSON's folder (`../`, an absolute path) is not read; when no image of its name or of the
    JSON's stem is beside the JSON either, DatasetError names the file and the entry."""
    text = str(image_path or "").replace("\\", "/").strip()
    if text and inside(json_path.parent, text) and (json_path.parent / text).is_file():
        return json_path.parent / text
    found = _find_image(json_path.parent, text or None, json_path.stem)
    if found is None and text and not inside(json_path.parent, text):
        raise DatasetError(f"{json_path}: imagePath {text!r} leads outside the labelme folder {json_path.parent}; "
                           "refused, nothing outside is read. Put the image in the folder (beside the JSON) and "
                           "fix imagePath")
    return found


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _pairs(points) -> Optional[List[Tuple[float, float]]]:
    """[(x, y)] of a shape's points, or None when they are not pairs of finite numbers."""
    if not isinstance(points, list):
        return None
    if not all(isinstance(p, (list, tuple)) and len(p) == 2 and all(_is_number(v) for v in p) for p in points):
        return None
    return [(float(x), float(y)) for x, y in points]


def _shape_box(shape: dict, kind: str, at: str, rec: Record) -> Optional[Tuple[float, float, float, float]]:
    """xyxy of a rectangle or the bounding box of a polygon; None (named in rec.invalid) when its points are bad."""
    points = _pairs(shape.get("points"))
    if points is None:
        rec.invalid.append(f"{at}: points {str(shape.get('points'))[:60]} are not [x, y] pairs of numbers")
        return None
    fits = len(points) == 2 if kind == "rectangle" else len(points) >= 3
    if not fits:
        expected = "2 (two opposite corners)" if kind == "rectangle" else "at least 3"
        rec.invalid.append(f"{at}: {kind} with {len(points)} points; expected {expected}")
        return None
    if kind == "polygon":
        rec.notes[POLYGON_NOTE] += 1
    xs, ys = [x for x, _ in points], [y for _, y in points]
    return min(xs), min(ys), max(xs), max(ys)


def _shape_objects(shapes: list, where: str, class_names: Sequence[str], rec: Record) -> Tuple[list, int, Counter]:
    """([(x1, y1, x2, y2, label, difficult)] of known classes, the count of box shapes, {other type: count})."""
    index = {n: i for i, n in enumerate(class_names)}
    objects, boxes, others = [], 0, Counter()
    for i, shape in enumerate(shapes):
        if not isinstance(shape, dict):
            boxes += 1
            rec.invalid.append(f"{where} shape {i}: not a mapping with label, points and shape_type")
            continue
        kind = str(shape.get("shape_type") or "polygon")[:40]
        if kind not in BOX_SHAPES:
            others[kind] += 1
            continue
        boxes += 1
        label = str(shape.get("label") or "").strip()
        if label not in index:
            rec.unknown[label] += 1
            continue
        box = _shape_box(shape, kind, f"{where} shape {i} ({label})", rec)
        if box is not None:
            objects.append((*box, index[label], False))
    for kind, n in sorted(others.items()):
        rec.notes[f"labelme {kind} shapes skipped"] += n
    return objects, boxes, others


def _shown_size(data: dict) -> Optional[Tuple[int, int]]:
    w, h = data.get("imageWidth"), data.get("imageHeight")
    return (int(w), int(h)) if _is_number(w) and _is_number(h) and w > 0 and h > 0 else None


def _read_json(path: Path, rec: Record):
    """The parsed file, or None with the record skipped."""
    try:
        data = read_json(path)
    except (OSError, ValueError) as e:  # read_json's ValueError (not JSON, nested too deep) starts with the path
        rec.skipped(MALFORMED_JSON, f"{path}: cannot read the labelme JSON ({str(e).removeprefix(f'{path}: ')})")
        return None
    if not _is_labelme(data):
        found = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
        rec.skipped(NOT_LABELME, f"{path}: not a labelme file (expected a mapping with a 'shapes' list; found {found})")
        return None
    return data


def parse_labelme(json_path: Path, class_names: Sequence[str]) -> Record:
    """Read one labelme JSON and its image into a Record (the rules in the module docstring)."""
    where = str(json_path)
    rec = Record(where=where)
    data = _read_json(json_path, rec)
    if data is None:
        return rec
    objects, boxes, others = _shape_objects(data["shapes"], where, class_names, rec)
    if others and not boxes:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(others.items()))
        return rec.skipped(NO_BOX_SHAPES, f"{where}: no rectangle or polygon among its shapes ({kinds})")
    rec.lost_objects = len(objects)
    image_path = find_labelme_image(json_path, data.get("imagePath"))
    if image_path is None:
        return rec.skipped("image missing", f"{where}: no image {data.get('imagePath')!r} (imagePath, relative to "
                                            f"the JSON) nor {json_path.stem}.* in {json_path.parent}")
    image = open_record_image(rec, image_path)
    if image is None:
        return rec
    rec.lost_objects = 0
    return finish_record(rec, image, objects, boxes, _shown_size(data), where)
