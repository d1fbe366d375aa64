"""Reading one VOC annotation (an XML file or an annotation line) and its image into a Sample.

EXIF orientation: VOC boxes are in the pixel frame the annotator saw. When an image carries an
EXIF orientation, the XML `<size>` is compared with the stored and the rotated size: a match with only
the rotated size means the annotator saw the rotated image (Sample.exif_transpose = True), a match with
only the stored size means the stored pixels (False). When both or neither match (180 degrees, square
images, no `<size>`) the boxes decide: if they fit only the stored frame, False; otherwise True, what
every image viewer shows. Annotation-lines files have no `<size>`: stored pixels (as the reference
read them) unless the boxes fit only the rotated frame. Boxes, width and height are always in the frame
of `read_image(image_path, apply_exif=exif_transpose)`.
"""
import math
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from utils.ops.image import IMAGE_EXTENSIONS, ImageReadError, exif_rotates, open_image


@dataclass
class Sample:
    """One image and its objects.

    boxes: float32 [N, 4] xyxy in pixels of `read_image(image_path, apply_exif=exif_transpose)`;
    labels: int64 [N]; difficult: bool [N]; width, height: of that image.
    coco_id, coco_truth: for an image of a COCO JSON, its image id (int or str) and its annotations of known
    classes as the file gives them, for COCO mAP: float64 [M, 7] x, y, w, h (unclipped), area, iscrowd, class
    index (utils.data.coco_records.parse_coco); None for other formats.
    """

    image_path: str
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    width: int
    height: int
    exif_transpose: bool = True
    coco_id: object = None
    coco_truth: Optional[np.ndarray] = None


class DatasetError(ValueError):
    """A dataset that cannot be used; the message says what was looked for and where."""


NO_KNOWN_OBJECTS = "no objects of known classes"
NO_USABLE_BOXES = "no usable boxes"


@dataclass
class Record:
    """The outcome of reading one image: a Sample, or the reason it was skipped, and warnings to print."""

    sample: Optional[Sample] = None
    skip: Optional[str] = None
    image_path: Optional[str] = None
    warnings: List[str] = field(default_factory=list)
    unknown: Counter = field(default_factory=Counter)
    where: str = ""  # the annotation file or line this record comes from
    lost_objects: int = 0  # ground truths of a skipped record whose annotation was read
    notes: Counter = field(default_factory=Counter)  # counted conversions, e.g. segments read as boxes
    # malformed ground truth of the classes (not numbers, not finite, xmin > xmax): one message each, the boxes
    # left out of the Sample; training warns and goes on, evaluation cannot score the image (utils/data/voc.py)
    invalid: List[str] = field(default_factory=list)
    # NO_KNOWN_OBJECTS or NO_USABLE_BOXES: the annotation lists objects but none of the classes with a usable box;
    # the Sample has no boxes. Training skips such an image, evaluation scores it without ground truth.
    empty: Optional[str] = None

    def skipped(self, reason: str, message: str) -> "Record":
        self.skip = reason
        self.warnings.append(f"{message}; skipped")
        return self


def _find_image(images_dir: Path, filename: Optional[str], stem: str) -> Optional[Path]:
    """The XML `<filename>` in images_dir if present, else `<stem>.<any image extension>`."""
    names = [Path(filename.strip()).name] if filename and filename.strip() else []
    names += [stem + ext for ext in IMAGE_EXTENSIONS] + [stem + ext.upper() for ext in IMAGE_EXTENSIONS]
    for name in names:
        if (images_dir / name).is_file():
            return images_dir / name
    return None


def _xml_size(root) -> Optional[Tuple[int, int]]:
    try:
        size = int(float(root.findtext("size/width"))), int(float(root.findtext("size/height")))
    except (TypeError, ValueError):
        return None
    return size if min(size) > 0 else None  # some tools write 0x0 for an unknown size


def _xml_objects(root, where: str, class_names: Sequence[str], rec: Record) -> Tuple[list, int]:
    """[(x1, y1, x2, y2, label, difficult)] of known classes, and the count of all objects."""
    index = {n: i for i, n in enumerate(class_names)}
    found, objects = [], root.findall("object")
    for obj in objects:
        name = (obj.findtext("name") or "").strip()
        if name not in index:
            rec.unknown[name] += 1
            continue
        texts = [obj.findtext(f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")]
        try:
            box = [float(t) for t in texts]
        except (TypeError, ValueError):
            given = ", ".join(f"{k} {t!r}" for k, t in zip(("xmin", "ymin", "xmax", "ymax"), texts))
            rec.invalid.append(f"{where}: object {name!r} has <bndbox> {given}; expected four numbers")
            continue
        difficult = (obj.findtext("difficult") or "0").strip().lower() in ("1", "true")
        found.append((*box, index[name], difficult))
    return found, len(objects)


def _orientation(image) -> int:
    return int(image.getexif().get(0x0112, 1)) if exif_rotates(image) else 1


def _fits(boxes: np.ndarray, wh: Tuple[int, int]) -> bool:
    return len(boxes) == 0 or bool((boxes[:, 2] <= wh[0] + 1).all() and (boxes[:, 3] <= wh[1] + 1).all())


def _choose_exif(image, xml_wh, boxes: np.ndarray, where: str, rec: Record) -> Tuple[bool, int, int]:
    """(exif_transpose, width, height) by the rule in the module docstring."""
    stored = image.size
    orientation = _orientation(image)
    rotated = (stored[1], stored[0]) if orientation in (5, 6, 7, 8) else stored
    if orientation == 1:
        use = False
    elif xml_wh == rotated and xml_wh != stored:
        use = True
    elif xml_wh == stored and xml_wh != rotated:
        use = False
    else:
        use = not (_fits(boxes, stored) and not _fits(boxes, rotated))
        if xml_wh is None and not _fits(boxes, rotated) and not _fits(boxes, stored):
            use = True
    width, height = rotated if use else stored
    if xml_wh is not None and xml_wh != (width, height) and xml_wh not in (stored, rotated):
        rec.warnings.append(f"{where}: <size> {xml_wh[0]}x{xml_wh[1]} disagrees with the image "
                            f"{width}x{height}; trusting the image")
    return use, width, height


def _valid_boxes(objects: list, where: str, rec: Record) -> list:
    """The objects whose box is four finite numbers with xmin <= xmax and ymin <= ymax; rec.invalid names the rest."""
    kept = []
    for obj in objects:
        x1, y1, x2, y2 = obj[:4]
        shown = [round(float(v), 1) for v in obj[:4]]
        if not all(math.isfinite(v) for v in obj[:4]):
            rec.invalid.append(f"{where}: box {shown} is not four finite numbers")
        elif x1 > x2 or y1 > y2:
            rec.invalid.append(f"{where}: box {shown} has xmin > xmax or ymin > ymax")
        else:
            kept.append(obj)
    return kept


def finish_record(rec: Record, image, objects: list, n_objects: int, xml_wh, where: str) -> Record:
    """Leave out invalid boxes (rec.invalid), clip and drop boxes without area, pick the EXIF frame, and build the
    Sample; when objects were listed but none of a known class has a usable box, rec.empty says why."""
    known = bool(objects or rec.invalid)
    objects = _valid_boxes(objects, where, rec)
    arr = np.array(objects, dtype=np.float64).reshape(-1, 6)
    use_exif, width, height = _choose_exif(image, xml_wh, arr[:, :4], where, rec)
    boxes = arr[:, :4].copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    for i in np.flatnonzero((boxes != arr[:, :4]).any(axis=1)):
        rec.warnings.append(f"{where}: box {arr[i, :4].round(1).tolist()} lies outside the {width}x{height} image; clipped")
    good = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    for i in np.flatnonzero(~good):
        rec.warnings.append(f"{where}: box {arr[i, :4].round(1).tolist()} has no area (xmin>=xmax or ymin>=ymax "
                            f"after clipping); dropped")
    if (n_objects or rec.invalid) and not good.any():
        rec.empty = NO_USABLE_BOXES if known else NO_KNOWN_OBJECTS
    rec.sample = Sample(rec.image_path, boxes[good].astype(np.float32), arr[good, 4].astype(np.int64),
                        arr[good, 5].astype(bool), int(width), int(height), use_exif)
    return rec


def open_record_image(rec: Record, image_path: Path):
    rec.image_path = str(image_path)
    try:
        return open_image(image_path)
    except ImageReadError as e:
        rec.skipped("unreadable image", str(e))
        return None


def _count_ground_truth(objects: list) -> int:
    return sum(1 for obj in objects if not obj[5])


def parse_xml(xml_path: Path, images_dir: Path, class_names: Sequence[str]) -> Record:
    """Read one VOC XML and its image into a Record."""
    rec = Record(where=str(xml_path))
    try:
        root = ET.fromstring(xml_path.read_bytes())
    except FileNotFoundError:
        return rec.skipped("annotation missing", f"{xml_path}: annotation file does not exist")
    except (ET.ParseError, OSError) as e:
        return rec.skipped("malformed XML", f"{xml_path}: malformed XML ({e})")
    filename = root.findtext("filename")
    objects, n_objects = _xml_objects(root, str(xml_path), class_names, rec)
    rec.lost_objects = _count_ground_truth(objects)
    image_path = _find_image(images_dir, filename, xml_path.stem)
    if image_path is None:
        return rec.skipped("image missing", f"{xml_path}: no image {filename or xml_path.stem + '.*'} in {images_dir}")
    image = open_record_image(rec, image_path)
    if image is None:
        return rec
    rec.lost_objects = 0
    return finish_record(rec, image, objects, n_objects, _xml_size(root), str(xml_path))


def _line_boxes(line: str, where: str, num_classes: int) -> Tuple[str, list]:
    """Split `path x1,y1,x2,y2,cls ...` into the path (which may hold spaces) and box tuples."""
    tokens = list(re.finditer(r"\S+", line))
    start = len(tokens)
    while start > 1 and tokens[start - 1].group().count(",") == 4:
        start -= 1
    path_text = line[:tokens[start].start()].strip() if start < len(tokens) else line.strip()
    objects = []
    for token in tokens[start:]:
        parts = token.group().split(",")
        try:
            box, cls = [float(v) for v in parts[:4]], int(parts[4])
        except ValueError:
            raise DatasetError(f"{where}: cannot read box {token.group()!r}; expected x1,y1,x2,y2,class_index") from None
        if not 0 <= cls < num_classes:
            raise DatasetError(f"{where}: class index {cls} is outside the classes file ({num_classes} classes, "
                               f"indices 0..{num_classes - 1}); check --classes")
        objects.append((*box, cls, False))
    return path_text, objects


def parse_line(line: str, where: str, base_dir: Path, class_names: Sequence[str]) -> Record:
    """Read one annotation line (reference format) and its image into a Record."""
    rec = Record(where=where)
    path_text, objects = _line_boxes(line, where, len(class_names))
    image_path = Path(path_text)
    if not image_path.is_absolute() and not image_path.exists():
        image_path = base_dir / path_text
    image = open_record_image(rec, image_path)
    if image is None:
        rec.lost_objects = _count_ground_truth(objects)
        return rec
    return finish_record(rec, image, objects, len(objects), None, where)

