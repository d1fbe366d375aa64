"""COCO results files (a list of {image_id, category_id, bbox [x, y, w, h], score}): written and read.

What the ids mean:
- The ground truth is a COCO JSON (`categories` given: dataset_categories): `category_id` is that JSON's
  category id and `image_id` its image id, as pycocotools reads them (ids 1, 3, 7 ... need not be
  contiguous); an image_id that is one image's id and another's file name is read as the id, with a
  warning. Files written for such a dataset use those ids, so pycocotools scores them against the
  JSON directly. A file whose ids are not all the JSON's, or whose `category_name` disagrees with the
  JSON's name of the id, is read as this project's own files for other datasets are (below) when every
  row fits that, since predict.py, which knows no dataset, writes those; otherwise it is refused, naming
  a row, rather than guessed at.
- Other ground truth (VOC, YOLO, labelme): `category_id` is the class index + 1 in the class list, with
  `category_name`, the name, beside it (the two must agree); `image_id` is the file stem (image_keys),
  file name or path, or the stem as an int.
Results of a JSON category outside the class list are not part of the benchmark: skipped, counted in a
warning. Results of images outside the split are skipped the same way. Images of the split without a row
are scored as images with no detections, with a warning counting them (a file made on part of the split).
A score or box that is not a finite number (NaN, inf) is refused, naming the row: it has no rank and no
overlap to score.
"""
import math
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from utils.core.fileio import read_json, write_json_atomic
from utils.data.annotations import DatasetError
from utils.data.formats import coco_category_ids
from utils.data.layouts import as_dataset

Categories = Dict[int, str]  # {category id: name} of a COCO JSON


def dataset_categories(data, split: str, data_format: Optional[str] = None,
                       images_dir=None) -> Optional[Categories]:
    """{category id: name} of the COCO JSON(s) the split is read from, None for a dataset of another format.
    `data`: a utils.data.layouts.Dataset, or a path whose layout is detected for this call."""
    files = as_dataset(data, data_format, images_dir).coco_files(split)
    if files is None:
        return None
    table: Categories = {}
    for f in files:
        for cid, name in coco_category_ids(f).items():
            if table.setdefault(cid, name) != name:
                raise DatasetError(f"{f}: category id {cid} is {name!r}, but {table[cid]!r} in {files[0]}; the "
                                   "JSONs of one split must give their categories the same ids")
    return table


def image_keys(samples) -> List[str]:
    """A stable id per sample for results files: the file stem, or the path when stems repeat."""
    stems = [Path(s.image_path).stem for s in samples]
    if len(set(stems)) == len(stems):
        return stems
    return [Path(s.image_path).as_posix() for s in samples]


def result_image_ids(samples) -> list:
    """The image_id of each sample in the results files we write: a COCO JSON's own image ids (Sample.coco_id)
    where every sample has a distinct one, so pycocotools can score the file against that JSON; else image_keys."""
    ids = [getattr(s, "coco_id", None) for s in samples]
    if ids and None not in ids and len(set(ids)) == len(ids):
        return ids
    return image_keys(samples)


def class_category_ids(class_names: Sequence[str], categories: Optional[Categories] = None) -> List[int]:
    """The category_id written for each class: its id in `categories` where every class has one, else index + 1."""
    ids = {name: cid for cid, name in (categories or {}).items()}
    if categories and all(n in ids for n in class_names):
        return [ids[n] for n in class_names]
    return [c + 1 for c in range(len(class_names))]


def coco_result_rows(image_id, det: np.ndarray, class_names: Sequence[str],
                     category_ids: Optional[Sequence[int]] = None) -> List[dict]:
    """COCO results rows of one image's detections [K, 6] (image pixels, score, class id): image_id,
    category_id (category_ids[class], default class + 1), category_name, bbox [x, y, w, h], score."""
    ids = list(category_ids) if category_ids is not None else [c + 1 for c in range(len(class_names))]
    rows = []
    # full float precision, so scoring the file gives exactly the numbers of the run that wrote it
    for x1, y1, x2, y2, score, c in np.asarray(det, dtype=np.float64).reshape(-1, 6).tolist():
        rows.append({"image_id": image_id, "category_id": ids[int(c)], "category_name": class_names[int(c)],
                     "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    return rows


def write_coco_results(path, detections: Sequence[np.ndarray], image_ids: Sequence, class_names: Sequence[str],
                       categories: Optional[Categories] = None) -> int:
    """Write detections (one [K, 6] array per image) as a COCO results list (coco_result_rows), the format
    read_coco_results and `get_map.py --detections` read; with a COCO JSON's `categories`, in its category ids
    (class_category_ids). Returns the number of rows written."""
    if len(image_ids) != len(detections):
        raise ValueError(f"{len(image_ids)} image ids for {len(detections)} detection arrays; expected one per image")
    ids = class_category_ids(class_names, categories)
    rows = [row for key, det in zip(image_ids, detections) for row in coco_result_rows(key, det, class_names, ids)]
    write_json_atomic(path, rows)
    return len(rows)


def _image_lookup(samples):
    """({COCO JSON image id: sample}, {alias: sample}): the ids a results file may use for a sample. A JSON's
    image id comes first (as pycocotools reads it); the aliases are our key, stem, file name, path, or the
    stem as an int."""
    by_id = {s.coco_id: i for i, s in enumerate(samples) if getattr(s, "coco_id", None) is not None}
    aliases = {}
    for i, (key, s) in enumerate(zip(image_keys(samples), samples)):
        p = Path(s.image_path)
        for alias in (key, p.stem, p.name, str(p), p.as_posix()):
            aliases.setdefault(alias, i)
        if p.stem.isdigit():
            aliases.setdefault(int(p.stem), i)
    return by_id, aliases


def _row_box(row, n: int, path: Path):
    """(image_id, [x, y, w, h, score]) of a results row, checked: finite numbers, no negative size."""
    try:
        x, y, w, h = (float(v) for v in row["bbox"])
        score, image_id = float(row["score"]), row["image_id"]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: result {n} is not {{image_id, category_id, bbox: [x, y, w, h], score}} ({e!r})") from None
    if not all(math.isfinite(v) for v in (x, y, w, h, score)):
        raise ValueError(f"{path}: result {n} has score {row['score']!r} and bbox {row['bbox']}; expected finite "
                         "numbers (a NaN or inf score has no rank, such a box no overlap)")
    if w < 0 or h < 0:
        raise ValueError(f"{path}: result {n} has bbox {row['bbox']}: width and height must not be negative "
                         "(COCO bbox is [x, y, width, height])")
    if not isinstance(image_id, (int, str)):
        raise ValueError(f"{path}: result {n} has image_id {image_id!r}; expected an integer or a string")
    return image_id, [x, y, w, h, score]


class _Mismatch(ValueError):
    """A results row that does not fit one reading of category_id; the message says what the row holds."""


def _by_json_id(row, categories: Categories, index: Dict[str, int]) -> Optional[int]:
    """The class of a row whose category_id is a COCO JSON's (None: a category outside the class list)."""
    cid, name = row.get("category_id"), row.get("category_name")
    if type(cid) is not int or cid not in categories:
        raise _Mismatch(f"category_id {cid!r}, which is not one of the JSON's category ids")
    if name is not None and name != categories[cid]:
        raise _Mismatch(f"category_id {cid} ({categories[cid]!r} in the JSON) with category_name {name!r}")
    return index.get(categories[cid])


def _by_class_index(row, class_names: Sequence[str], index: Dict[str, int], need_name: bool) -> int:
    """The class of a row in this project's own form: category_name, and category_id = class index + 1."""
    cid, name = row.get("category_id"), row.get("category_name")
    if name is not None:
        if name not in index:
            raise _Mismatch(f"category_name {name!r}, which is not among the classes ({', '.join(class_names)})")
        if cid is not None and cid != index[name] + 1:
            raise _Mismatch(f"category_name {name!r} with category_id {cid!r}, not its class index + 1 "
                            f"({index[name] + 1})")
        return index[name]
    if need_name:
        raise _Mismatch(f"category_id {cid!r} without a category_name")
    if type(cid) is not int or not 1 <= cid <= len(class_names):
        raise _Mismatch(f"category_id {cid!r}, outside 1..{len(class_names)}")
    return cid - 1


def _read_all(rows, read):
    """(the class of every row, None) when `read` fits every row, else (None, (row number, what it holds))."""
    out = []
    for n, row in enumerate(rows):
        try:
            out.append(read(row))
        except _Mismatch as e:
            return None, (n, str(e))
    return out, None


def row_classes(rows: Sequence[dict], class_names: Sequence[str], categories: Optional[Categories],
                path) -> List[Optional[int]]:
    """The class index of each results row (None: a JSON category outside the class list), by the rules of the
    module docstring; ValueError naming a row where the ids cannot be mapped without guessing."""
    index = {n: i for i, n in enumerate(class_names)}
    if categories is None:
        classes, bad = _read_all(rows, lambda r: _by_class_index(r, class_names, index, False))
        if bad is not None:
            raise ValueError(f"{path}: result {bad[0]} has {bad[1]}; expected category_id = class index + 1 in the "
                             f"class list (1..{len(class_names)}) and a category_name, where given, of that class (as "
                             "get_map.py and predict.py write them); check --classes")
        return classes
    classes, bad = _read_all(rows, lambda r: _by_json_id(r, categories, index))
    if classes is not None:
        return classes
    own, bad_own = _read_all(rows, lambda r: _by_class_index(r, class_names, index, True))
    if own is not None:
        return own
    table = ", ".join(f"{cid} {name}" for cid, name in sorted(categories.items())[:10])
    raise ValueError(f"{path}: result {bad[0]} has {bad[1]}; with a COCO JSON as ground truth a category_id is one "
                     f"of its category ids ({table}{', ...' if len(categories) > 10 else ''}), as pycocotools reads "
                     f"them, with a category_name, where given, of that id. Nor is the file in the class index + 1 "
                     f"form predict.py writes (result {bad_own[0]} has {bad_own[1]}), so its categories cannot be "
                     "mapped without guessing; write the JSON's category ids")


def read_coco_results(path, samples, class_names: Sequence[str],
                      categories: Optional[Categories] = None) -> List[np.ndarray]:
    """Read a COCO results file into one float64 [K, 6] array per sample (image pixels, score, class id).

    `categories`: the COCO JSON's {category id: name} when the ground truth is one (dataset_categories), which
    decides what category_id means (module docstring). Results for images not in the samples, and of
    categories outside the class list, are skipped with one warning that counts them; samples with no row
    are images with no detections, counted in a warning (read_coco_file also returns how many).
    """
    return read_coco_file(path, samples, class_names, categories)[0]


def read_coco_file(path, samples, class_names: Sequence[str],
                   categories: Optional[Categories] = None) -> Tuple[List[np.ndarray], int]:
    """(read_coco_results, how many samples have no row in the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detections file {path} does not exist")
    rows = read_json(path)  # ValueError naming the file when it is not JSON or nests too deep
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a COCO results list [{{image_id, category_id, bbox, score}}, ...], "
                         f"found a {type(rows).__name__}")
    boxes = [_row_box(row, n, path) for n, row in enumerate(rows)]
    classes = row_classes(rows, class_names, categories, path)
    by_id, aliases = _image_lookup(samples)
    per_image = [[] for _ in samples]
    unknown, outside, both, covered = [], 0, [], set()
    for (image_id, (x, y, w, h, score)), c in zip(boxes, classes):
        i = by_id.get(image_id, aliases.get(image_id))
        covered.add(i)
        if i is None:
            unknown.append(image_id)
        elif c is None:
            outside += 1
        else:
            per_image[i].append([x, y, x + w, y + h, score, c])
        if i is not None and aliases.get(image_id, i) != i:
            both.append(image_id)
    if unknown:
        warnings.warn(f"{path}: {len(unknown)} results name images not in this split (e.g. {unknown[:3]}); skipped")
    if both:
        i = by_id[both[0]]
        warnings.warn(f"{path}: {len(both)} results have an image_id that is the COCO JSON's id of one image and "
                      f"the file name of another (e.g. {both[0]!r}: the JSON's image {samples[i].image_path}, read "
                      f"as pycocotools reads it, not {samples[aliases[both[0]]].image_path})")
    if outside:
        warnings.warn(f"{path}: {outside} results are of categories outside the class list; not scored")
    without = len(samples) - len(covered - {None})
    if without:
        warnings.warn(f"{path}: no results row for {without} of the {len(samples)} images of this split; they are "
                      "scored as images with no detections (right where the model found nothing; a file made on "
                      "part of the split scores lower than the model would)")
    return [np.asarray(d, dtype=np.float64).reshape(-1, 6) for d in per_image], without
