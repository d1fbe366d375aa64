"""What a dataset format module gives the registry (utils/data/layouts.py REGISTRY): its Layouts, and the pieces
they share: a Source per image, the seeded train/val split of a format without splits of its own, folder tests.

A Layout is one way a dataset lies on disk (a VOC year folder, a COCO JSON, ...): its name (the key of LAYOUTS
and Dataset.layout), its format (one of DATA_FORMATS), how an error names it, what an empty scan looked at, its
rank in detection (lowest first: the first that fits is the one detected) and its answers: whether a path fits,
the Sources of a split, the default splits, the class names it declares, the splits a converter lists and, for a
COCO JSON, the JSON files of a split (for results in their ids).
"""
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from utils.data import formats
from utils.data.annotations import DatasetError, Record

Names = Tuple[Optional[Tuple[str, ...]], Optional[Path]]  # (class names, their classes file), or (None, None)
SEEDED_SPLITS = ("train", "val")


@dataclass
class Source:
    """One image to read: its cache key, the files whose changes invalidate it, and how to parse it (`read`:
    (source, class names) -> Record, the format's reader).

    kind: 'xml' (annotation, images_dir), 'line' (line, images_dir), 'yolo' (image, annotation = its label
    file, names = the dataset's class names or None for the classes file's), 'coco' (coco, annotation = the JSON,
    images_dir = the image folder asked for or None), 'labelme' (annotation = the JSON).
    """

    key: str
    annotation: Optional[Path] = None
    images_dir: Optional[Path] = None
    line: Optional[str] = None
    where: str = ""
    kind: str = "xml"
    image: Optional[Path] = None
    names: Optional[Tuple[str, ...]] = None
    coco: Optional[formats.CocoImage] = None
    read: Optional[Callable[["Source", Sequence[str]], Record]] = None


def seeded_default(path: Path, purpose: str) -> str:
    """The default split of a layout with the seeded split (or train/val folders): train, or val to evaluate."""
    return "train" if purpose == "train" else "val"


def no_names(path: Path) -> Names:
    return None, None


def seeded_listed(path: Path) -> List[str]:
    return list(SEEDED_SPLITS)


@dataclass(frozen=True)
class Layout:
    """One layout of a dataset format (see the module docstring). `sources(path, split, seed, val_fraction,
    images_dir)` returns one Source per image of the split (DatasetError for an unknown split); `path` is
    resolved, `images_dir` the resolved --images or None."""

    name: str
    format: str
    what: str
    looked_at: str
    rank: int
    fits: Callable[[Path], bool]
    sources: Callable[..., List[Source]]
    default_split: Callable[[Path, str], str] = seeded_default
    declared_names: Callable[[Path], Names] = no_names
    listed_splits: Callable[[Path], List[str]] = seeded_listed
    coco_files: Optional[Callable[[Path, str], List[Path]]] = None


def has_folder(path: Path, name: str) -> bool:
    """A sub-folder of exactly this name, also where file names ignore case (Annotations/ vs annotations/)."""
    return (path / name).is_dir() and name in os.listdir(path)


def _seeded_val(stem: str, seed: int, val_fraction: float) -> bool:
    digest = hashlib.sha1(f"{seed}:{stem}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < val_fraction


def seeded_pick(stems: Sequence[str], split: str, seed: int, val_fraction: float, where: str) -> List[str]:
    """The seeded split of a format without splits of its own: `all`, or `train` / `val` by a hash of (seed,
    stem), so that adding files moves no others."""
    if split == "all":
        return list(stems)
    if split not in ("train", "val"):
        raise DatasetError(f"{where}: unknown split {split!r}; valid: train, val, all (seeded split)")
    return [s for s in stems if _seeded_val(s, seed, val_fraction) == (split == "val")]


def classes_txt(root: Path) -> Names:
    """(names, file) of a classes.txt (one name a line) in `root`; (None, None) without one."""
    file = root / "classes.txt"
    if not file.is_file():
        return None, None
    names = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    return formats.check_names(names, str(file)), file
