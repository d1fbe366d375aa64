"""Pascal VOC reading: dataset layouts, splits, validation and the scan cache.

`--data` may be:
  * a VOCdevkit root: every sub-folder holding `Annotations/` (VOC2007, VOC2012, ...) is a year;
  * one year folder: `Annotations/`, `JPEGImages/`, `ImageSets/Main/<split>.txt`;
  * a folder with `Annotations/` and `JPEGImages/` but no `ImageSets/Main`: seeded train/val split;
  * an annotation-lines file of the reference implementation: `path x1,y1,x2,y2,cls ...` per line.

Split names:
  * year folder: the stems of `ImageSets/Main/*.txt` (train, val, trainval, test); `a+b` joins splits.
  * VOCdevkit root: `trainval` means trainval of every year that has it; `VOC2007/test` picks one
    year; `+` joins parts (`VOC2007/trainval+VOC2012/trainval`).
  * folder without ImageSets and annotation-lines file: `train`, `val` (a seeded split: an image is in
    val when a hash of (seed, file stem) falls below `val_fraction`, so adding files moves no others)
    and `all`.
  Defaults (`default_split`): when a `test` split exists, train on `trainval` (of every year) and
  evaluate on `test` (VOC2007 test for VOC07+12); otherwise train on `train`, evaluate on `val`.
  Annotation-lines files default to `all` for both. The demo dataset has train and val.

EXIF orientation: VOC boxes are in the pixel frame the annotator saw. When an image carries an
EXIF orientation, the XML `<size>` is compared with the stored and the rotated size: a match with only
the rotated size means the annotator saw the rotated image (Sample.exif_transpose = True), a match with
only the stored size means the stored pixels (False). When both or neither match (180 degrees, square
images, no `<size>`) the boxes decide: if they fit only the stored frame, False; otherwise True, what
every image viewer shows. Annotation-lines files have no `<size>`: stored pixels (as the reference
read them) unless the boxes fit only the rotated frame. Boxes, width and height are always in the frame
of `read_image(image_path, apply_exif=exif_transpose)`.

Cache: a scan is stored in `$YOLO_SCAN_CACHE` or `<repo>/.cache/voc_scan/` (never in the dataset), one
file per (data path, split, classes, seed, val_fraction). Each image's record is re-used only when its
annotation and image files have the same size and modification time; other files are re-read.
"""
import hashlib
import os
import pickle
import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from utils.ops.image import IMAGE_EXTENSIONS, ImageReadError, exif_rotates, open_image
from utils.core.fileio import atomic_open
from utils.core.paths import REPO_ROOT

DEFAULT_DATA = "VOCdevkit"
CACHE_VERSION = 2
# skip reasons that take an image and its objects out of a split without the data saying so
UNREADABLE_REASONS = ("unreadable image", "image missing", "annotation missing", "malformed XML")


@dataclass
class Sample:
    """One image and its objects.

    boxes: float32 [N, 4] xyxy in pixels of `read_image(image_path, apply_exif=exif_transpose)`;
    labels: int64 [N]; difficult: bool [N]; width, height: of that image.
    """

    image_path: str
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    width: int
    height: int
    exif_transpose: bool = True



class DatasetError(ValueError):
    """A dataset that cannot be used; the message says what was looked for and where."""


class LeftOut(NamedTuple):
    """An image of a split that could not be read: what it is, why, and its ground truths (non-difficult
    objects of known classes, 0 when the annotation itself could not be read)."""

    image: str
    reason: str
    objects: int


class UnreadableImagesError(DatasetError):
    """Images of an evaluation split that cannot be read; scoring without them would overstate the result."""

    def __init__(self, left_out: Sequence[LeftOut], where: str,
                 remedy: str = "pass --skip-unreadable to score without them"):
        self.left_out = list(left_out)
        names = "; ".join(f"{e.image} ({e.reason})" for e in self.left_out)
        objects = sum(e.objects for e in self.left_out)
        super().__init__(f"{len(self.left_out)} images of {where} cannot be read: {names}. Scoring without them "
                         f"would leave out their {objects} ground-truth objects and overstate the result; fix or "
                         f"remove these files, or {remedy}")


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

    def skipped(self, reason: str, message: str) -> "Record":
        self.skip = reason
        self.warnings.append(f"{message}; skipped")
        return self


def stat_key(path: Path) -> Optional[Tuple[int, int]]:
    """(mtime in ns, size) of a file, or None when it does not exist."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


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
        try:
            box = [float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            rec.warnings.append(f"{where}: object {name!r} has no numeric <bndbox> xmin/ymin/xmax/ymax; dropped")
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


def _finish(rec: Record, image, objects: list, n_objects: int, xml_wh, where: str) -> Record:
    """Clip and drop boxes, pick the EXIF frame, and build the Sample (or skip)."""
    if n_objects and not objects:
        names = ", ".join(sorted(rec.unknown)) or "none readable"
        return rec.skipped("no objects of known classes", f"{where}: no object of a known class (found: {names})")
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
    if n_objects and not good.any():
        return rec.skipped("no usable boxes", f"{where}: every box was dropped")
    rec.sample = Sample(rec.image_path, boxes[good].astype(np.float32), arr[good, 4].astype(np.int64),
                        arr[good, 5].astype(bool), int(width), int(height), use_exif)
    return rec


def _open(rec: Record, image_path: Path):
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
    image = _open(rec, image_path)
    if image is None:
        return rec
    rec.lost_objects = 0
    return _finish(rec, image, objects, n_objects, _xml_size(root), str(xml_path))


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
    image = _open(rec, image_path)
    if image is None:
        rec.lost_objects = _count_ground_truth(objects)
        return rec
    return _finish(rec, image, objects, len(objects), None, where)


@dataclass
class _Source:
    """One image to read: its cache key, the files whose changes invalidate it, and how to parse it."""

    key: str
    annotation: Optional[Path] = None
    images_dir: Optional[Path] = None
    line: Optional[str] = None
    where: str = ""


def _has_year_layout(path: Path) -> bool:
    return (path / "Annotations").is_dir()


def _year_dirs(root: Path) -> List[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and _has_year_layout(p))


def _layout(path: Path) -> Optional[str]:
    """'lines', 'year' (with ImageSets), 'flat' (no ImageSets), 'devkit', or None when not a dataset."""
    if path.is_file():
        return "lines"
    if not path.is_dir():
        return None
    if _has_year_layout(path):
        return "year" if (path / "ImageSets" / "Main").is_dir() else "flat"
    return "devkit" if _year_dirs(path) else None


def _split_names(year: Path) -> List[str]:
    main = year / "ImageSets" / "Main"
    if not main.is_dir():
        return ["train", "val", "all"]
    return sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem)


def default_split(data, purpose: str) -> str:
    """The split scripts use by default: purpose 'train' or 'eval' (see the module docstring)."""
    if purpose not in ("train", "eval"):
        raise ValueError(f"purpose must be 'train' or 'eval', got {purpose!r}")
    path = Path(data)
    layout = _layout(path)
    if layout == "lines":
        return "all"
    years = _year_dirs(path) if layout == "devkit" else [path]
    with_test = [y for y in years if "test" in _split_names(y)]
    if not with_test:
        return "train" if purpose == "train" else "val"
    if purpose == "train":
        return "trainval"
    if layout == "devkit":
        return "+".join(f"{y.name}/test" for y in with_test)
    return "test"


def resolve_data(data=DEFAULT_DATA) -> Path:
    """The dataset folder or file to read; the demo dataset when `data` is the default and empty."""
    path = Path(data)
    if _layout(path) is not None:
        return path
    if str(data).rstrip("/\\") == DEFAULT_DATA:
        repo_default = REPO_ROOT / DEFAULT_DATA
        if _layout(repo_default) is not None:
            return repo_default
        from utils.data.demo_data import ensure_demo_dataset
        demo = ensure_demo_dataset()
        print(f"no dataset in {DEFAULT_DATA}/: using the demo dataset at {demo} "
              f"(classes model_data/demo_classes.txt)")
        return demo
    what = "does not exist" if not path.exists() else "is not a dataset"
    raise DatasetError(f"--data {path} {what}: expected a VOCdevkit root (VOC*/Annotations), a year folder "
                       f"(Annotations/, JPEGImages/), or an annotation-lines file")


def resolve_classes(data_path, classes) -> Path:
    """The classes file to use: the demo's own when `data_path` is a demo dataset and `classes` is the VOC default."""
    from utils.data.demo_data import demo_classes_file
    demo = demo_classes_file(data_path)
    if demo is not None and Path(classes).name == "voc_classes.txt":
        return demo
    return Path(classes)


def _seeded_val(stem: str, seed: int, val_fraction: float) -> bool:
    digest = hashlib.sha1(f"{seed}:{stem}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < val_fraction


def _pick(stems: Sequence[str], split: str, seed: int, val_fraction: float, where: str) -> List[str]:
    if split == "all":
        return list(stems)
    if split not in ("train", "val"):
        raise DatasetError(f"{where}: unknown split {split!r}; valid: train, val, all (seeded split)")
    return [s for s in stems if _seeded_val(s, seed, val_fraction) == (split == "val")]


def _image_id(line: str, annotations: Path) -> str:
    """The id on an ImageSets line; ids may hold spaces, class lists add a ` 1` / ` -1` column."""
    whole, first = line.strip(), line.split()[0]
    return first if whole != first and not (annotations / f"{whole}.xml").exists() else whole


def _year_sources(year: Path, split: str, seed: int, val_fraction: float) -> List[_Source]:
    annotations, images = year / "Annotations", year / "JPEGImages"
    main = year / "ImageSets" / "Main"
    if main.is_dir():
        ids: List[str] = []
        for part in split.split("+"):
            list_file = main / f"{part}.txt"
            if not list_file.is_file():
                raise DatasetError(f"{list_file} does not exist; splits in {main}: {', '.join(_split_names(year))}")
            ids += [_image_id(line, annotations) for line in list_file.read_text(encoding="utf-8").splitlines()
                    if line.strip()]
    else:
        stems = sorted(p.stem for p in annotations.glob("*.xml"))
        ids = _pick(stems, split, seed, val_fraction, str(year))
    ids = list(dict.fromkeys(ids))
    return [_Source(key=str(annotations / f"{i}.xml"), annotation=annotations / f"{i}.xml", images_dir=images,
                    where=str(annotations / f"{i}.xml")) for i in ids]


def _devkit_sources(root: Path, split: str, seed: int, val_fraction: float) -> List[_Source]:
    years = {y.name: y for y in _year_dirs(root)}
    sources: List[_Source] = []
    for part in split.split("+"):
        if "/" in part:
            name, sub = part.split("/", 1)
            if name not in years:
                raise DatasetError(f"{root}: no year folder {name!r} for split {part!r}; found: {', '.join(years)}")
            sources += _year_sources(years[name], sub, seed, val_fraction)
            continue
        having = [y for y in years.values() if part in _split_names(y)]
        if not having:
            raise DatasetError(f"{root}: no year folder has split {part!r}; found {', '.join(years)} "
                               f"with splits {sorted({s for y in years.values() for s in _split_names(y)})}")
        for year in having:
            sources += _year_sources(year, part, seed, val_fraction)
    return list({s.key: s for s in sources}.values())


def _lines_sources(path: Path, split: str, seed: int, val_fraction: float) -> List[_Source]:
    lines = path.read_text(encoding="utf-8").splitlines()
    numbered = [(n, line.strip()) for n, line in enumerate(lines, 1) if line.strip()]
    keep = set(_pick([str(n) for n, _ in numbered], split, seed, val_fraction, str(path)))
    return [_Source(key=f"{path}:{n}", line=line, images_dir=path.parent, where=f"{path} line {n}")
            for n, line in numbered if str(n) in keep]


def _sources(path: Path, split: str, seed: int, val_fraction: float) -> List[_Source]:
    layout = _layout(path)
    if layout is None:
        raise DatasetError(f"{path}: not a dataset (expected VOC*/Annotations, Annotations/ + JPEGImages/, "
                           f"or an annotation-lines file)")
    if layout == "lines":
        return _lines_sources(path, split, seed, val_fraction)
    if layout == "devkit":
        return _devkit_sources(path, split, seed, val_fraction)
    return _year_sources(path, split, seed, val_fraction)


def _fingerprint(source: _Source, record: Optional[Record]) -> Optional[Tuple]:
    """Sizes and times of the files a record depends on; None when they cannot be checked."""
    image = record.image_path if record is not None else None
    if record is not None and image is None:
        return None  # a missing image is looked for again every time
    parts = (source.line,) if source.line is not None else (stat_key(source.annotation),)
    return parts + ((stat_key(Path(image)),) if image else ())


def _cache_path(path: Path, split: str, class_names: Sequence[str], seed: int, val_fraction: float,
                cache_dir) -> Path:
    base = Path(cache_dir or os.environ.get("YOLO_SCAN_CACHE") or REPO_ROOT / ".cache" / "voc_scan")
    key = repr((CACHE_VERSION, str(path.resolve()), split, list(class_names), seed, val_fraction))
    return base / f"{path.name}-{split.replace('/', '_')[:40]}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.pkl"


def _read_cache(cache_file: Path) -> Dict:
    if not cache_file.is_file():
        return {}
    try:
        with open(cache_file, "rb") as f:
            cache = pickle.load(f)
        return cache if isinstance(cache, dict) else {}
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError) as e:
        _warn(f"{cache_file}: unreadable scan cache, scanning again ({e})")
        return {}


def _write_cache(cache_file: Path, cache: Dict) -> None:
    try:
        with atomic_open(cache_file, "wb") as f:
            pickle.dump(cache, f, protocol=pickle.HIGHEST_PROTOCOL)
    except OSError as e:
        _warn(f"{cache_file}: could not write the scan cache ({e}); the next scan will read every file again")


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _parse(source: _Source, class_names: Sequence[str]) -> Record:
    if source.line is not None:
        return parse_line(source.line, source.where, source.images_dir, class_names)
    return parse_xml(source.annotation, source.images_dir, class_names)


@dataclass
class ScanStats:
    """What a scan found, for the one-line summary."""

    used: int = 0
    background: int = 0
    from_cache: int = 0
    objects: Counter = field(default_factory=Counter)
    difficult: int = 0
    skipped: Counter = field(default_factory=Counter)
    unknown: Counter = field(default_factory=Counter)
    left_out: List[LeftOut] = field(default_factory=list)  # skipped for a reason in UNREADABLE_REASONS

    def add(self, record: Record, class_names: Sequence[str]) -> None:
        self.unknown.update(record.unknown)
        if record.sample is None:
            self.skipped[record.skip] += 1
            if record.skip in UNREADABLE_REASONS:
                self.left_out.append(LeftOut(record.image_path or record.where, record.skip, record.lost_objects))
            return
        self.used += 1
        self.background += int(len(record.sample.labels) == 0)
        self.objects.update(class_names[i] for i in record.sample.labels.tolist())
        self.difficult += int(record.sample.difficult.sum())

    def summary(self, where: str, class_names: Sequence[str]) -> str:
        objects = ", ".join(f"{n} {self.objects[n]}" for n in class_names)
        skipped = ", ".join(f"{n} {r}" for r, n in self.skipped.most_common()) or "none"
        unknown = ", ".join(f"{k} ({n})" for k, n in self.unknown.most_common()) or "none"
        return (f"scan {where}: {self.used} images used ({self.background} background, {self.from_cache} from cache); "
                f"objects: {objects} ({self.difficult} difficult); skipped {sum(self.skipped.values())}: {skipped}; "
                f"names not in the classes file: {unknown}")


def load_samples(data, split: str, class_names: Sequence[str], cache_dir=None, use_cache: bool = True,
                 seed: int = 0, val_fraction: float = 0.1, workers: int = 4,
                 stats: Optional["ScanStats"] = None) -> List[Sample]:
    """Scan and validate a dataset split; warn about and skip bad files; print a one-line summary.

    `stats`, when given, is filled with what the scan found (e.g. the annotated names the classes lack).
    Raises DatasetError when the split cannot be found or holds no usable image.
    """
    path = Path(data)
    sources = _sources(path.resolve(), split, seed, val_fraction)
    cache_file = _cache_path(path, split, class_names, seed, val_fraction, cache_dir)
    cache = _read_cache(cache_file) if use_cache else {}
    records: List[Optional[Record]] = [None] * len(sources)
    todo = []
    for i, source in enumerate(sources):
        entry = cache.get(source.key)
        if entry is not None and entry[0] is not None and entry[0] == _fingerprint(source, entry[1]):
            records[i] = entry[1]
        else:
            todo.append(i)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, record in zip(todo, pool.map(lambda j: _parse(sources[j], class_names), todo)):
            records[i] = record
    stats = stats if stats is not None else ScanStats()
    stats.from_cache = len(sources) - len(todo)
    for record in records:
        for message in record.warnings:
            _warn(message)
        stats.add(record, class_names)
    if use_cache and todo:
        _write_cache(cache_file, {s.key: (_fingerprint(s, r), r) for s, r in zip(sources, records)})
    print(stats.summary(f"{path} [{split}]", class_names))
    if stats.used == 0:
        raise DatasetError(f"no usable image in {path} split {split!r}: looked at {len(sources)} entries "
                           f"({'annotation lines' if _layout(path) == 'lines' else 'Annotations/*.xml with images in JPEGImages/'}); "
                           f"skipped: {dict(stats.skipped) or 'none listed'}")
    return [r.sample for r in records if r.sample is not None]


def load_eval_samples(data, split: str, class_names: Sequence[str], skip_unreadable: bool = False,
                      stats: Optional[ScanStats] = None, **kwargs) -> Tuple[List[Sample], List[LeftOut]]:
    """load_samples for scoring: (samples, left_out). Images that cannot be read (ScanStats.left_out) raise
    UnreadableImagesError naming each one, since a score without their objects overstates the result;
    with `skip_unreadable` they are returned as left_out, for the results to report."""
    stats = stats if stats is not None else ScanStats()
    samples = load_samples(data, split, class_names, stats=stats, **kwargs)
    if stats.left_out and not skip_unreadable:
        raise UnreadableImagesError(stats.left_out, f"{data} [{split}]")
    return samples, list(stats.left_out)
