"""One image entry of a COCO detection JSON (utils/data/formats.py read_coco) and its image, read into a Record.

The Sample's boxes follow the rules of every format (clipped to the image, boxes without area left out;
what training learns from and VOC AP scores). COCO mAP instead scores the annotations as the file gives
them, as pycocotools does: Sample.coco_id is the entry's image id and Sample.coco_truth its annotations of
known classes, float64 [M, 7]: x, y, w, h (unclipped, zero sizes kept), area (the annotation's `area`, the
segment's, which the size ranges use; w*h when it has none), iscrowd, class index.
"""
import math
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from utils.data.annotations import DatasetError, Record, finish_record, open_record_image
from utils.data.formats import COCO_IMAGE_MISSING, CocoImage, coco_tag, inside


def _coco_box(bbox) -> Optional[List[float]]:
    """[x, y, w, h] of a bbox of four finite numbers, else None."""
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
        return None
    return [float(v) for v in bbox] if all(math.isfinite(v) for v in bbox) else None


def _coco_area(area, w: float, h: float, at: str, rec: Record) -> float:
    """The annotation's `area` (what pycocotools' size ranges use), w*h when it has none."""
    if area is None:
        return w * h
    if isinstance(area, (int, float)) and not isinstance(area, bool) and math.isfinite(area):
        return float(area)
    rec.warnings.append(f"{at} has area {area!r}; expected a number; using width*height for the COCO size ranges")
    return w * h


def parse_coco(image: CocoImage, json_path: Path, class_names: Sequence[str],
               images_dir: Optional[Path] = None) -> Record:
    """Read one COCO image entry and its image (find_coco_image) into a Record; crowd objects are difficult.
    The Sample also keeps the annotations of known classes as the file gives them (coco_id, coco_truth)."""
    where = f"{json_path} image {image.id} ({image.file_name})"
    rec = Record(where=where)
    index = {n: i for i, n in enumerate(class_names)}
    objects, truth = [], []
    for ann_id, bbox, name, crowd, area in image.objects:
        box = _coco_box(bbox)
        if box is None:
            rec.invalid.append(f"{where}: annotation {ann_id} has bbox {str(bbox)[:80]}; expected [x, y, width, "
                               f"height], four finite numbers in pixels")
        elif name not in index:
            rec.unknown[name] += 1
        else:
            x, y, w, h = box
            objects.append((x, y, x + w, y + h, index[name], crowd))
            if w >= 0 and h >= 0:  # a negative size is invalid ground truth (finish_record)
                truth.append((x, y, w, h, _coco_area(area, w, h, f"{where}: annotation {ann_id}", rec), crowd,
                              index[name]))
    rec.lost_objects = sum(1 for o in objects if not o[5])
    path = find_coco_image(json_path, image.file_name, images_dir)
    if path is None:
        looked = ", ".join(str(d) for d in coco_image_dirs(json_path, images_dir))
        return rec.skipped(COCO_IMAGE_MISSING, f"{where}: no image {image.file_name} in {looked}"
                                               + ("" if images_dir else " (--images names the folder)"))
    pil = open_record_image(rec, path)
    if pil is None:
        return rec
    rec.lost_objects = 0
    rec = finish_record(rec, pil, objects, len(image.objects), image.size, where)
    if rec.sample is not None:
        rec.sample.coco_id = image.id
        rec.sample.coco_truth = np.array(truth, dtype=np.float64).reshape(-1, 7)
    return rec


def coco_image_dirs(json_path: Path, images_dir: Optional[Path] = None) -> List[Path]:
    """The folders the images of a COCO JSON are looked for in, in order (see the module docstring)."""
    if images_dir is not None:
        return [Path(images_dir)]
    base, tag = json_path.parent, coco_tag(json_path)
    return [base, base / "images", base.parent / tag, base.parent / "images" / tag]


def find_coco_image(json_path: Path, file_name: str, images_dir: Optional[Path] = None) -> Optional[Path]:
    """The image of an entry: `file_name`, then its last component, in each of coco_image_dirs; None when
    there is none. Untrusted input: a `file_name` that leads out of a folder (`../`, an absolute path) is not
    looked for there, only its last component is; when it leads out of every folder and that finds nothing,
    DatasetError names the JSON and the entry (`--images` with the folder that holds it reads it)."""
    folders = coco_image_dirs(json_path, images_dir)
    for folder in folders:
        own = [folder / file_name] if inside(folder, file_name) else []
        for candidate in dict.fromkeys(own + [folder / Path(file_name).name]):
            if candidate.is_file():
                return candidate
    if file_name and not any(inside(folder, file_name) for folder in folders):
        where = f"--images {folders[0]}" if images_dir is not None else ", ".join(str(f) for f in folders)
        raise DatasetError(f"{json_path}: image entry file_name {file_name!r} leads outside the dataset's image "
                           f"folders ({where}); refused, nothing outside is read. Pass --images with the folder "
                           "that holds it, or fix file_name")
    return None
