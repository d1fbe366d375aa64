"""Pascal VOC reading: scan and validate a dataset split into Samples, with a cache.

The pieces: utils/data/layouts.py (what `--data`, `--data-format`, `--images` and a split name stand for:
VOCdevkit roots, year folders, folders without ImageSets, annotation-lines files, YOLO, COCO and labelme
datasets; the default splits), utils/data/annotations.py (one XML or annotation line and its image into a
Sample, the EXIF rule), utils/data/formats.py (YOLO label files and COCO JSON into the same Samples),
utils/data/labelme.py (labelme JSON files), and this module (the scan over a split: warnings, skips, the
one-line summary, the cache; the classes file a dataset implies). Every name callers use is importable from here.

A split to train on and a split to score differ in two rules (as_scanned): an image whose objects are all of
classes outside the classes file is skipped in training but scored in evaluation, as an image without ground
truth; invalid ground truth (not numbers, xmin > xmax) is dropped with a warning in training but stops
evaluation like an unreadable image (or is left out and counted, with skip_unreadable).

Cache: a scan is stored in `$YOLO_SCAN_CACHE` or `<repo>/.cache/voc_scan/` (never in the dataset), one JSON
file per (data path, split, classes, seed, val_fraction, data_format, images_dir): utils/data/scan_cache.py,
a format that cannot run code; a file of another version or a damaged one is ignored and the split re-read.
Each image's record is re-used only when its annotation and image files have the same size and modification
time; other files are re-read.
"""
import hashlib
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from utils.core.config import classes_text
from utils.core.fileio import atomic_open
from utils.core.paths import REPO_ROOT
from utils.data import demo_data
from utils.data.annotations import NO_KNOWN_OBJECTS, DatasetError, Record, Sample, parse_line, parse_xml
from utils.data.formats import COCO_IMAGE_MISSING, NO_IMAGE_NOTE, UNREADABLE_LABEL, label_files_without_image
from utils.data.labelme import MALFORMED_JSON
from utils.data.scan_cache import StaleCache, dumps, loads
from utils.data.layout_base import Source
from utils.data.layouts import DEFAULT_DATA, as_dataset, default_split, resolve_data

__all__ = ["CACHE_VERSION", "DEFAULT_DATA", "DatasetError", "LeftOut", "REPO_ROOT", "Record", "Sample", "ScanStats",
           "UNREADABLE_REASONS", "UnreadableImagesError", "default_split", "load_eval_samples", "load_samples",
           "parse_line", "parse_xml", "resolve_classes", "resolve_data", "stat_key"]

CACHE_VERSION = 5
INVALID_GROUND_TRUTH = "invalid ground truth"
# skip reasons that take an image and its objects out of a split without the data saying so
UNREADABLE_REASONS = ("unreadable image", "image missing", "annotation missing", "malformed XML", UNREADABLE_LABEL,
                      COCO_IMAGE_MISSING, MALFORMED_JSON, INVALID_GROUND_TRUTH)


class LeftOut(NamedTuple):
    """An image of a split that could not be read or scored: what it is, why, and its ground truths (non-difficult
    objects of known classes and the invalid ones, 0 when the annotation itself could not be read)."""

    image: str
    reason: str
    objects: int


class UnreadableImagesError(DatasetError):
    """Images of an evaluation split that cannot be read (or whose ground truth is invalid); scoring without them
    would overstate the result."""

    def __init__(self, left_out: Sequence[LeftOut], where: str,
                 remedy: str = "pass --skip-unreadable to score without them"):
        self.left_out = list(left_out)
        names = "; ".join(f"{e.image} ({e.reason})" for e in self.left_out)
        objects = sum(e.objects for e in self.left_out)
        invalid = any(e.reason.startswith(INVALID_GROUND_TRUTH) for e in self.left_out)
        super().__init__(f"{len(self.left_out)} images of {where} cannot be "
                         f"{'read or scored' if invalid else 'read'}: {names}. Scoring without them "
                         f"would leave out their {objects} ground-truth objects and overstate the result; fix or "
                         f"remove these files, or {remedy}")


def stat_key(path: Path) -> Optional[Tuple[int, int]]:
    """(mtime in ns, size) of a file, or None when it does not exist."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _fingerprint(source: Source, record: Optional[Record]) -> Optional[Tuple]:
    """Sizes and times of the files a record depends on; None when they cannot be checked."""
    image = record.image_path if record is not None else None
    if record is not None and image is None:
        return None  # a missing image is looked for again every time
    parts = (source.line,) if source.line is not None else (stat_key(source.annotation),)
    return parts + ((stat_key(Path(image)),) if image else ())


def _cache_base(cache_dir=None) -> Path:
    return Path(cache_dir or os.environ.get("YOLO_SCAN_CACHE") or REPO_ROOT / ".cache" / "voc_scan")


def _cache_path(path: Path, split: str, class_names: Sequence[str], seed: int, val_fraction: float,
                cache_dir, data_format: Optional[str], images_dir) -> Path:
    images = str(Path(images_dir).resolve()) if images_dir is not None else None
    key = repr((CACHE_VERSION, str(path.resolve()), split, list(class_names), seed, val_fraction, data_format, images))
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return _cache_base(cache_dir) / f"{path.name}-{split.replace('/', '_')[:40]}-{digest}.json"


def _written_classes(path: Path, names: Sequence[str]) -> Path:
    """A classes file holding `names`, in the scan cache folder (never in the dataset)."""
    text = classes_text(names)
    digest = hashlib.sha1(f"{path.resolve()}\n{text}".encode("utf-8")).hexdigest()[:16]
    target = _cache_base() / "classes" / f"{path.stem}-{digest}.txt"
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        with atomic_open(target, "w") as f:
            f.write(text)
    return target


def resolve_classes(data, classes, data_format: Optional[str] = None, images_dir=None) -> Path:
    """The classes file to use. When `classes` is the VOC default (voc_classes.txt): the demo's own for a demo
    dataset, the names a YOLO, COCO or labelme dataset declares (Dataset.declared_names: a classes.txt in a YOLO
    or labelme folder, or a file written to the scan cache folder for the YAML's `names` / the JSON's categories
    in ascending id order); else `classes`. `data`: a Dataset (or a path, its layout detected for this call)."""
    if Path(classes).name != "voc_classes.txt":
        return Path(classes)
    demo = demo_data.demo_classes_file(data)
    if demo is not None:
        return demo
    dataset = as_dataset(data, data_format, images_dir)
    names, file = dataset.declared_names()
    if names is None:
        return Path(classes)
    return file if file is not None else _written_classes(dataset.path, names)


def _read_cache(cache_file: Path) -> Dict:
    """{source key: (fingerprint, Record)}; empty, so that every file is read again, when the cache is missing,
    of another version or damaged. The file is JSON (utils/data/scan_cache.py): nothing in it can run."""
    if not cache_file.is_file():
        return {}
    try:
        return loads(cache_file.read_text(encoding="utf-8"), CACHE_VERSION)
    except (OSError, UnicodeDecodeError, StaleCache) as e:
        _warn(f"{cache_file}: unusable scan cache, scanning again ({e})")
        return {}


def _write_cache(cache_file: Path, cache: Dict) -> None:
    try:
        text = dumps(CACHE_VERSION, cache)
        with atomic_open(cache_file, "w") as f:
            f.write(text)
    except (OSError, TypeError, ValueError) as e:
        _warn(f"{cache_file}: could not write the scan cache ({e}); the next scan will read every file again")


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _parse(source: Source, class_names: Sequence[str]) -> Record:
    """The record of one image, read by its format's reader (Source.read, set by its Layout)."""
    return source.read(source, class_names)


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
    notes: Counter = field(default_factory=Counter)  # conversions the formats count (segments read as boxes, ...)
    scored_empty: int = 0  # evaluation: images whose objects are all of other classes, kept without ground truth

    def add(self, record: Record, class_names: Sequence[str]) -> None:
        self.unknown.update(record.unknown)
        self.notes.update(record.notes)
        if record.sample is None:
            self.skipped[record.skip] += 1
            if record.skip in UNREADABLE_REASONS:
                self.left_out.append(LeftOut(record.image_path or record.where, _left_out_reason(record),
                                             record.lost_objects))
            return
        self.used += 1
        self.background += int(len(record.sample.labels) == 0)
        self.scored_empty += int(record.empty == NO_KNOWN_OBJECTS)
        self.objects.update(class_names[i] for i in record.sample.labels.tolist())
        self.difficult += int(record.sample.difficult.sum())

    def summary(self, where: str, class_names: Sequence[str]) -> str:
        objects = ", ".join(f"{n} {self.objects[n]}" for n in class_names)
        skipped = ", ".join(f"{n} {r}" for r, n in self.skipped.most_common()) or "none"
        unknown = ", ".join(f"{k} ({n})" for k, n in self.unknown.most_common()) or "none"
        scored = (f" ({self.scored_empty} images holding only these scored as images without ground truth)"
                  if self.scored_empty else "")
        return (f"scan {where}: {self.used} images used ({self.background} background, {self.from_cache} from cache); "
                f"objects: {objects} ({self.difficult} difficult); skipped {sum(self.skipped.values())}: {skipped}; "
                f"names not in the classes file: {unknown}{scored}"
                + "".join(f"; {note} {n}" for note, n in sorted(self.notes.items())))


def _left_out_reason(record: Record) -> str:
    if record.skip != INVALID_GROUND_TRUTH:
        return record.skip
    more = f" (and {len(record.invalid) - 1} more)" if len(record.invalid) > 1 else ""
    return f"{INVALID_GROUND_TRUTH}: {record.invalid[0]}{more}"


def _empty_message(record: Record) -> str:
    if record.empty == NO_KNOWN_OBJECTS:
        return f"{record.where}: no object of a known class (found: {', '.join(sorted(record.unknown)) or 'none'})"
    return f"{record.where}: every box was dropped"


def as_scanned(record: Record, evaluation: bool) -> Record:
    """The record as a split uses it; the (cached) record itself is not changed.

    Training: invalid boxes are warned about and left out, an image with objects but none of the classes with a
    usable box (Record.empty) is skipped, so that its objects are not taught as background. Evaluation (as the VOC
    devkit and pycocotools score a subset of classes): objects of other classes are not part of the benchmark but
    the image is, scored without ground truth (its detections are false positives); an image with invalid ground
    truth cannot be scored and is left out (LeftOut), which stops scoring unless unreadable images are skipped."""
    if record.sample is None:
        return record
    if evaluation and record.invalid:
        lost = int((~record.sample.difficult).sum()) + len(record.invalid)
        return replace(record, sample=None, skip=INVALID_GROUND_TRUTH, lost_objects=lost,
                       warnings=record.warnings + [f"{m}; the image cannot be scored" for m in record.invalid])
    warnings = record.warnings + [f"{m}; dropped" for m in record.invalid]
    if record.empty is not None and not evaluation:
        return replace(record, sample=None, skip=record.empty, warnings=warnings + [f"{_empty_message(record)}; skipped"])
    return replace(record, warnings=warnings) if record.invalid else record


def _count_label_files_without_image(sources: Sequence[Source], stats: "ScanStats") -> None:
    for label in label_files_without_image([(s.image, s.annotation) for s in sources if s.kind == "yolo"]):
        _warn(f"{label}: no image of the split has this label file (looked for {label.stem}.* beside the images); "
              f"not used")
        stats.notes[NO_IMAGE_NOTE] += 1


def load_samples(data, split: str, class_names: Sequence[str], cache_dir=None, use_cache: bool = True,
                 seed: int = 0, val_fraction: float = 0.1, workers: int = 4, stats: Optional["ScanStats"] = None,
                 data_format: Optional[str] = None, images_dir=None, evaluation: bool = False) -> List[Sample]:
    """Scan and validate a dataset split; warn about and skip bad files; print a one-line summary.

    `stats`, when given, is filled with what the scan found (e.g. the annotated names the classes lack).
    `data`: a Dataset (utils/data/layouts.py open_dataset), or a path read with `data_format` and `images_dir`
    (None: detect; the images beside a COCO JSON), whose layout is detected for this call.
    `evaluation`: the rules of a split to score, else of one to train on (as_scanned).
    Raises DatasetError when the split cannot be found or holds no usable image.
    """
    dataset = as_dataset(data, data_format, images_dir)
    path = dataset.path
    sources = dataset.sources(split, seed, val_fraction)
    cache_file = _cache_path(path, split, class_names, seed, val_fraction, cache_dir, dataset.data_format,
                             dataset.images_dir)
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
    _count_label_files_without_image(sources, stats)
    used = [as_scanned(record, evaluation) for record in records]
    for record in used:
        for message in record.warnings:
            _warn(message)
        stats.add(record, class_names)
    if use_cache and todo:
        _write_cache(cache_file, {s.key: (_fingerprint(s, r), r) for s, r in zip(sources, records)})
    print(stats.summary(f"{path} [{split}]", class_names))
    if stats.used == 0:
        raise DatasetError(f"no usable image in {path} split {split!r}: looked at {len(sources)} entries "
                           f"({dataset.kind.looked_at}); "
                           f"skipped: {dict(stats.skipped) or 'none listed'}")
    return [r.sample for r in used if r.sample is not None]


def load_eval_samples(data, split: str, class_names: Sequence[str], skip_unreadable: bool = False,
                      stats: Optional[ScanStats] = None, data_format: Optional[str] = None, images_dir=None,
                      **kwargs) -> Tuple[List[Sample], List[LeftOut]]:
    """load_samples with evaluation's rules (as_scanned): (samples, left_out). Images that cannot be read or hold
    invalid ground truth (ScanStats.left_out) raise UnreadableImagesError naming each one, since a score without
    their objects overstates the result; with `skip_unreadable` they are returned as left_out, for the results to
    report. A split whose objects are all of other classes raises DatasetError. `kwargs`: load_samples'."""
    stats = stats if stats is not None else ScanStats()
    data = as_dataset(data, data_format, images_dir)
    samples = load_samples(data, split, class_names, stats=stats, evaluation=True, **kwargs)
    if stats.left_out and not skip_unreadable:
        raise UnreadableImagesError(stats.left_out, f"{data} [{split}]")
    if stats.unknown and not sum(stats.objects.values()):
        found = ", ".join(f"{k} ({n})" for k, n in stats.unknown.most_common(8))
        raise DatasetError(f"no object of the {len(class_names)} classes in {data} [{split}]; its objects are of "
                           f"other classes: {found}")
    return samples, list(stats.left_out)
