"""Writing Samples (utils/data/annotations.py) as a new VOC, YOLO or COCO dataset, read back by the readers.

What each format holds, `<split>` for every split given:
  * voc: `JPEGImages/<image>`, `Annotations/<stem>.xml` (`<filename>`, `<size>`, objects with `difficult`),
    `ImageSets/Main/<split>.txt`, `classes.txt`. Box coordinates are written as annotations.parse_xml reads
    them (pixels as they are, no 1-based shift), as the shortest decimal that reads back as the same float32.
  * yolo: `images/<split>/<image>`, `labels/<split>/<stem>.txt` (`class cx cy w h` normalised, full float64
    precision; an empty file for an image without objects), `classes.txt`, and a `data.yaml` with `names`
    and the `train`, `val`, `test` splits (other split names are read through the folder itself). YOLO has no
    difficult flag: difficult objects become ordinary ones (a warning counts them). YOLO boxes are in the
    frame after EXIF orientation, so an image annotated in its stored pixels while its EXIF rotates it
    cannot be written (DatasetError naming the images).
  * coco: `annotations/instances_<split>.json` with the images in `<split>/` (the COCO download layout that
    coco_records.find_coco_image reads); categories get ids 1..n in class order, images and annotations ids
    1.. in split order; `width`, `height` are the Sample's; difficult objects are `iscrowd` 1.
Images are copied byte for byte with their file names. Everything is written into a hidden sibling folder
that is renamed to the destination at the end, so an interrupted write leaves no destination behind.
"""
import os
import re
import shutil
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Sequence

import numpy as np
import yaml
from PIL import Image

from utils.core.config import classes_text
from utils.core.fileio import atomic_open, write_bytes_atomic, write_json_atomic, write_text_atomic
from utils.data.annotations import DatasetError, Sample
from utils.data.formats import COCO_PREFIX, YOLO_SPLITS
from utils.ops.image import exif_rotates

WRITE_FORMATS = ("voc", "yolo", "coco")
_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")  # VOC lists ignore split files whose stem holds "_"

Splits = Mapping[str, Sequence[Sample]]


@dataclass
class Report:
    """What a conversion says: warnings (what the target format cannot keep) and notes (how it was written)."""

    warnings: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    images: Dict[str, int] = field(default_factory=dict)  # split (as written) -> images in it


def split_folder_name(split: str) -> str:
    """A split name fit for a file or folder name: runs of other characters than A-Z a-z 0-9 . - become '-'."""
    name = _UNSAFE.sub("-", split).strip("-.")
    if not name:
        raise DatasetError(f"split {split!r} leaves no usable name for a file or folder")
    return name


def check_destination(dst: Path) -> None:
    """Refuse a destination that exists and is not an empty folder."""
    if dst.is_dir() and not any(dst.iterdir()):
        return
    if dst.exists():
        raise DatasetError(f"{dst} already exists and is not empty; give a new folder")


@contextmanager
def new_folder(dst: Path) -> Iterator[Path]:
    """A hidden temporary sibling of `dst` to write into, renamed to `dst` when the block ends cleanly and
    removed otherwise."""
    check_destination(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.writing-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        check_destination(dst)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def copy_file(src: Path, dst: Path) -> None:
    """Copy the bytes of `src` to `dst`, written atomically."""
    with open(src, "rb") as f, atomic_open(dst, "wb") as out:
        shutil.copyfileobj(f, out)


def _same_annotation(a: Sample, b: Sample) -> bool:
    return (Path(a.image_path).name == Path(b.image_path).name and (a.width, a.height) == (b.width, b.height)
            and a.exif_transpose == b.exif_transpose and np.array_equal(a.boxes, b.boxes)
            and np.array_equal(a.labels, b.labels) and np.array_equal(a.difficult, b.difficult))


def _same_bytes(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


def unique_images(samples: Sequence[Sample], where: str) -> List[Sample]:
    """The samples once per file stem (an image listed in several splits is written once). Two different
    images, or two annotations of one image, under one stem raise DatasetError naming both."""
    by_stem: Dict[str, Sample] = {}
    for s in samples:
        first = by_stem.setdefault(Path(s.image_path).stem, s)
        if first is s:
            continue
        if not _same_annotation(first, s) or not _same_bytes(Path(first.image_path), Path(s.image_path)):
            raise DatasetError(f"{where}: {first.image_path} and {s.image_path} would both be written under the "
                               f"stem {Path(s.image_path).stem!r} but differ; rename one of them")
    return list(by_stem.values())


def _number(value) -> str:
    """The shortest decimal that reads back as the same float32 (no point for a whole number)."""
    v = np.float32(value)
    text = np.format_float_positional(v, unique=True, trim="-")
    return text if np.float32(float(text)) == v else repr(float(v))


def voc_xml(sample: Sample, class_names: Sequence[str]) -> bytes:
    """The VOC XML of one sample."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = Path(sample.image_path).name
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(sample.width)
    ET.SubElement(size, "height").text = str(sample.height)
    for box, label, difficult in zip(sample.boxes, sample.labels, sample.difficult):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = class_names[int(label)]
        ET.SubElement(obj, "difficult").text = str(int(difficult))
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bndbox, tag).text = _number(value)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write_voc(root: Path, splits: Splits, class_names: Sequence[str]) -> Report:
    """A VOC year folder (see the module docstring)."""
    for sample in unique_images([s for samples in splits.values() for s in samples], str(root)):
        name = Path(sample.image_path)
        copy_file(name, root / "JPEGImages" / name.name)
        write_bytes_atomic(root / "Annotations" / f"{name.stem}.xml", voc_xml(sample, class_names))
    for split, samples in splits.items():
        ids = "".join(f"{Path(s.image_path).stem}\n" for s in samples)
        write_text_atomic(root / "ImageSets" / "Main" / f"{split}.txt", ids)
    write_text_atomic(root / "classes.txt", classes_text(class_names))
    return Report()


def _yolo_fields(box, width: int, height: int) -> List[float]:
    """[cx, cy, w, h] normalised, in float64."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height]


def yolo_label(sample: Sample) -> str:
    """The YOLO label file of one sample: `class cx cy w h` a line, as many digits as float64 needs."""
    lines = []
    for box, label in zip(sample.boxes, sample.labels):
        fields = _yolo_fields(box, sample.width, sample.height)
        lines.append(" ".join([str(int(label))] + [repr(v) for v in fields]) + "\n")
    return "".join(lines)


def _stored_frame_images(samples: Sequence[Sample]) -> List[str]:
    """Images annotated in their stored pixels (exif_transpose False) that an EXIF orientation turns."""
    found = []
    for s in samples:
        if not s.exif_transpose:
            with Image.open(s.image_path) as image:
                if exif_rotates(image):
                    found.append(s.image_path)
    return found


def _check_yolo_frames(splits: Splits) -> None:
    turned = _stored_frame_images(list({s.image_path: s for ss in splits.values() for s in ss}.values()))
    if turned:
        raise DatasetError(f"{len(turned)} images are annotated in their stored pixels but carry an EXIF orientation "
                           f"that turns them ({', '.join(turned[:5])}); YOLO labels are read after the EXIF "
                           f"orientation, so these boxes cannot be written as YOLO: convert to COCO or VOC instead")


def _data_yaml(splits: Splits, class_names: Sequence[str]) -> str:
    data = {key: f"images/{key}" for key in YOLO_SPLITS if key in splits}
    data.update(nc=len(class_names), names=list(class_names))
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def write_yolo(root: Path, splits: Splits, class_names: Sequence[str]) -> Report:
    """A YOLO folder with a data.yaml (see the module docstring)."""
    _check_yolo_frames(splits)
    for split, samples in splits.items():
        for sample in unique_images(samples, f"{root} split {split}"):
            name = Path(sample.image_path)
            copy_file(name, root / "images" / split / name.name)
            write_text_atomic(root / "labels" / split / f"{name.stem}.txt", yolo_label(sample))
    write_text_atomic(root / "data.yaml", _data_yaml(splits, class_names))
    write_text_atomic(root / "classes.txt", classes_text(class_names))
    report = Report()
    images = {s.image_path: s for samples in splits.values() for s in samples}.values()
    difficult = sum(int(s.difficult.sum()) for s in images)
    if difficult:
        report.warnings.append(f"YOLO labels have no difficult flag: {difficult} difficult objects are written as "
                               f"ordinary objects")
    others = [s for s in splits if s not in YOLO_SPLITS]
    if others:
        report.notes.append(f"data.yaml lists only {'/'.join(YOLO_SPLITS)}; splits {', '.join(others)} are read "
                            f"through the folder (its images/<split>)")
    return report


def _json_number(value: float):
    return int(value) if float(value).is_integer() else float(value)


def coco_json(samples: Sequence[Sample], class_names: Sequence[str]) -> dict:
    """A COCO detection JSON of one split: category id i + 1 is class i; bbox [x, y, w, h] in pixels."""
    images, annotations = [], []
    for image_id, s in enumerate(samples, 1):
        images.append({"id": image_id, "file_name": Path(s.image_path).name, "width": s.width, "height": s.height})
        for box, label, difficult in zip(s.boxes.tolist(), s.labels.tolist(), s.difficult.tolist()):
            x, y, w, h = box[0], box[1], box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                                "bbox": [_json_number(v) for v in (x, y, w, h)], "area": _json_number(w * h),
                                "iscrowd": int(difficult)})
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco(root: Path, splits: Splits, class_names: Sequence[str]) -> Report:
    """One COCO JSON per split with its images (see the module docstring)."""
    for split, samples in splits.items():
        samples = unique_images(samples, f"{root} split {split}")
        for sample in samples:
            copy_file(Path(sample.image_path), root / split / Path(sample.image_path).name)
        write_json_atomic(root / "annotations" / f"{COCO_PREFIX}{split}.json", coco_json(samples, class_names))
    return Report(notes=[f"COCO category ids are 1..{len(class_names)} in class order ({class_names[0]} is 1); "
                         f"the ids of a source COCO JSON are not kept"])


WRITERS = {"voc": write_voc, "yolo": write_yolo, "coco": write_coco}


def write_dataset(dst, splits: Splits, class_names: Sequence[str], data_format: str) -> Report:
    """Write `splits` ({split name: samples}) as a new `data_format` dataset in `dst`, which must not exist or
    be empty. Split names become file-name safe (split_folder_name)."""
    if data_format not in WRITERS:
        raise ValueError(f"unknown format {data_format!r}; valid: {', '.join(WRITE_FORMATS)}")
    renamed = {split_folder_name(s): s for s in splits}
    if len(renamed) != len(splits):
        raise DatasetError(f"splits {', '.join(splits)} do not keep apart as file names ({', '.join(renamed)})")
    dst = Path(dst)
    with new_folder(dst) as tmp:
        report = WRITERS[data_format](tmp, {name: splits[s] for name, s in renamed.items()}, list(class_names))
    report.images = {name: len(splits[s]) for name, s in renamed.items()}
    changed = [f"{s} -> {name}" for name, s in renamed.items() if name != s]
    if changed:
        report.notes.append(f"split names made file-name safe: {', '.join(changed)}")
    return report
