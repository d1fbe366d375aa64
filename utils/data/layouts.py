"""Dataset layouts and splits: which images a `--data` path and a split name stand for.

`--data` may be (format in brackets; detection takes the first that fits, in this order, files by suffix):
  * [voc] one year folder: `Annotations/`, `JPEGImages/`, `ImageSets/Main/<split>.txt`; or without
    `ImageSets/Main`: seeded train/val split;
  * [yolo] a bare YOLO folder (`images/` + `labels/`), or a YOLO data YAML (`*.yaml`/`*.yml`: path, train,
    val, test, names): see utils/data/formats.py;
  * [coco] a COCO root holding `annotations/instances_<split>.json` (the COCO download: `train2017`,
    `val2017`; the split name picks the JSON), or a COCO detection JSON (`*.json`): see utils/data/formats.py;
  * [labelme] a folder of labelme JSON files: see utils/data/labelme.py;
  * [voc] a VOCdevkit root: every sub-folder holding `Annotations/` (VOC2007, VOC2012, ...) is a year; or
    any other file: annotation lines of the reference implementation, `path x1,y1,x2,y2,cls ...` per line.
`data_format` (`--data-format`, one of DATA_FORMATS) takes the first layout of that format that fits instead
(a folder holding `images/` + `labels/` and `annotations/instances_*.json` is COCO with "coco"); a path that
fits only other formats is a DatasetError naming what it is. `images_dir` (`--images`) is the image folder
of a COCO JSON or root; with any other dataset it is a DatasetError.

Split names:
  * year folder: the stems of `ImageSets/Main/*.txt` (train, val, trainval, test); `a+b` joins splits.
  * VOCdevkit root: `trainval` means trainval of every year that has it; `VOC2007/test` picks one
    year; `+` joins parts (`VOC2007/trainval+VOC2012/trainval`).
  * folder without ImageSets, annotation-lines file, COCO JSON, labelme folder: `train`, `val` (a seeded
    split: an image is in val when a hash of (seed, file stem; line number; file_name; JSON stem) falls below
    `val_fraction`, so adding files moves no others) and `all`. COCO root: its `<split>`s; `+` joins them.
  * YOLO data YAML: the keys `train`, `val`, `test` it sets; bare YOLO folder: the sub-folders of `images/`
    (`images/train`, ...), or the seeded `train`, `val`, `all` when images lie directly in `images/`.
  Defaults (`default_split`): when a `test` split exists, train on `trainval` (of every year) and
  evaluate on `test` (VOC2007 test for VOC07+12); otherwise train on `train`, evaluate on `val`.
  Annotation-lines files and COCO JSON default to `all` for both; a COCO root to its last `train*` and `val*`
  splits by name (`train2017`, `val2017`). The demo dataset has train and val.
"""
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from utils.core.paths import REPO_ROOT
from utils.data import demo_data, formats, labelme
from utils.data.annotations import DatasetError

DEFAULT_DATA = "VOCdevkit"
DATA_FORMATS = ("voc", "yolo", "coco", "labelme")
# every layout dataset_layout returns: its format and how an error message names it
LAYOUTS = {"lines": ("voc", "an annotation-lines file"), "year": ("voc", "a VOC year folder with ImageSets"),
           "flat": ("voc", "a VOC folder (Annotations/, JPEGImages/) without ImageSets"),
           "devkit": ("voc", "a VOCdevkit root"), "yolo-yaml": ("yolo", "a YOLO data YAML"),
           "yolo": ("yolo", "a YOLO folder (images/ + labels/)"), "coco": ("coco", "a JSON file, read as COCO"),
           "coco-root": ("coco", "a COCO root (annotations/instances_*.json)"),
           "labelme": ("labelme", "a folder of labelme JSON files")}
EXPECTED = ("a VOCdevkit root (VOC*/Annotations), a year folder (Annotations/, JPEGImages/), an annotation-lines "
            "file, a YOLO data YAML or folder (images/ + labels/), a COCO JSON or root (annotations/instances_*.json), "
            "or a folder of labelme JSON files")


def _has_folder(path: Path, name: str) -> bool:
    """A sub-folder of exactly this name, also where file names ignore case (Annotations/ vs annotations/)."""
    return (path / name).is_dir() and name in os.listdir(path)


def year_dirs(root: Path) -> List[Path]:
    """The year folders (those holding Annotations/) of a VOCdevkit root."""
    return sorted(p for p in root.iterdir() if p.is_dir() and _has_folder(p, "Annotations"))


def _is_yolo_folder(path: Path) -> bool:
    return (path / "images").is_dir() and (path / "labels").is_dir()


def coco_root_splits(root: Path) -> Dict[str, Path]:
    """{split: JSON} of a COCO root folder: `annotations/instances_<split>.json`; {} for other paths."""
    if not root.is_dir() or not _has_folder(root, "annotations"):
        return {}
    found = sorted(p for p in (root / "annotations").glob(f"{formats.COCO_PREFIX}*.json") if p.is_file())
    return {formats.coco_tag(p): p for p in found}


def _layouts(path: Path) -> Iterator[str]:
    """Every layout `path` fits, in the order of the module docstring; the first is the one detected."""
    if path.is_file():
        suffix = path.suffix.lower()
        yield "yolo-yaml" if suffix in formats.YAML_SUFFIXES else "coco" if suffix == ".json" else "lines"
        return
    if not path.is_dir():
        return
    if _has_folder(path, "Annotations"):
        yield "year" if (path / "ImageSets" / "Main").is_dir() else "flat"
    if _is_yolo_folder(path):
        yield "yolo"
    if coco_root_splits(path):
        yield "coco-root"
    if labelme.is_labelme_folder(path):
        yield "labelme"
    if year_dirs(path):
        yield "devkit"


def _check_images_dir(path: Path, layout: str, images_dir) -> None:
    if images_dir is None:
        return
    if LAYOUTS[layout][0] != "coco":
        raise DatasetError(f"--images {images_dir}: an image folder is only for a COCO JSON or root; "
                           f"{path} is {LAYOUTS[layout][1]}, whose annotations name their images")
    if not Path(images_dir).is_dir():
        raise DatasetError(f"--images {images_dir} is not a folder (expected the images of {path})")


def dataset_layout(path: Path, data_format: Optional[str] = None, images_dir=None) -> Optional[str]:
    """A key of LAYOUTS, or None when `path` is no dataset; detected, or the first of `data_format` that fits
    (see the module docstring). A path that fits only other formats, an unknown format, or an `images_dir`
    that is no folder or not for a COCO dataset raise DatasetError."""
    if data_format is not None and data_format not in DATA_FORMATS:
        raise DatasetError(f"unknown data format {data_format!r}; valid: {', '.join(DATA_FORMATS)}")
    path = Path(path)
    found = None
    for layout in _layouts(path):
        found = found or layout
        if data_format in (None, LAYOUTS[layout][0]):
            _check_images_dir(path, layout, images_dir)
            return layout
    if found is not None:
        raise DatasetError(f"{path}: --data-format {data_format} does not fit: it is {LAYOUTS[found][1]} "
                           f"({LAYOUTS[found][0]}); give --data-format {LAYOUTS[found][0]} or leave it out")
    return None


def split_names(year: Path) -> List[str]:
    """The split names of a year folder: its ImageSets/Main lists, or the seeded train, val and all."""
    main = year / "ImageSets" / "Main"
    if not main.is_dir():
        return ["train", "val", "all"]
    return sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem)


def _coco_root_default(root: Path, purpose: str) -> str:
    splits = sorted(coco_root_splits(root))
    trains, vals = [s for s in splits if s.startswith("train")], [s for s in splits if s.startswith("val")]
    train = trains[-1] if trains else splits[0]
    return train if purpose == "train" else vals[-1] if vals else train


def _default_split(path: Path, layout: Optional[str], purpose: str) -> str:
    if purpose not in ("train", "eval"):
        raise ValueError(f"purpose must be 'train' or 'eval', got {purpose!r}")
    if layout in ("lines", "coco"):
        return "all"
    if layout == "coco-root":
        return _coco_root_default(path, purpose)
    if layout in ("yolo", "yolo-yaml", "labelme"):
        return "train" if purpose == "train" else "val"
    years = year_dirs(path) if layout == "devkit" else [path]
    with_test = [y for y in years if "test" in split_names(y)]
    if not with_test:
        return "train" if purpose == "train" else "val"
    if purpose == "train":
        return "trainval"
    if layout == "devkit":
        return "+".join(f"{y.name}/test" for y in with_test)
    return "test"


def default_split(data, purpose: str, data_format: Optional[str] = None, images_dir=None) -> str:
    """The split scripts use by default: purpose 'train' or 'eval' (see the module docstring). `data`: a Dataset,
    or a path (with the format and image folder asked for) whose layout is detected for this call."""
    return as_dataset(data, data_format, images_dir).default_split(purpose)


@dataclass(frozen=True)
class Dataset:
    """A dataset as `--data`, `--data-format` and `--images` name it, its layout detected once (open_dataset):
    what travels to the scan (utils/data/voc.py), the default splits, the class names it declares and the COCO
    categories, instead of the path and the two flags. `layout`: a key of LAYOUTS (None only for a path that is
    no dataset, made by as_dataset); `data_format` and `images_dir`: as asked for (None: detected; the images
    beside a COCO JSON), part of the scan cache's key. str() and os.fspath() give the path."""

    path: Path
    layout: Optional[str]
    data_format: Optional[str] = None
    images_dir: Optional[Path] = None

    @property
    def format(self) -> Optional[str]:
        """One of DATA_FORMATS: the detected layout's format."""
        return LAYOUTS[self.layout][0] if self.layout else None

    def default_split(self, purpose: str) -> str:
        """The split scripts use by default for `purpose` 'train' or 'eval' (see the module docstring)."""
        return _default_split(self.path, self.layout, purpose)

    def declared_names(self) -> Tuple[Optional[Tuple[str, ...]], Optional[Path]]:
        """(class names, their classes file or None) the dataset declares; (None, None) for VOC."""
        return _declared_names(self.path, self.layout)

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)


def as_dataset(data, data_format: Optional[str] = None, images_dir=None) -> Dataset:
    """`data` itself when it is a Dataset, else the Dataset at the path `data` (no demo fallback: a path that is
    no dataset gets layout None, which the scan refuses)."""
    if isinstance(data, Dataset):
        return data
    return Dataset(Path(data), dataset_layout(Path(data), data_format, images_dir), data_format, images_dir)


def open_dataset(data=DEFAULT_DATA, data_format: Optional[str] = None, images_dir=None) -> Dataset:
    """The Dataset `--data` names, its layout detected here once (a Dataset given is returned as it is); the
    demo dataset (VOC) when `data` is the default and empty and neither another format nor `images_dir` is asked
    for. Checks `data_format` and `images_dir` (dataset_layout); DatasetError for a path that is no dataset."""
    if isinstance(data, Dataset):
        return data
    path = Path(data)
    if formats.is_image(path):
        raise DatasetError(f"--data {path} is an image, not a dataset: --data takes {EXPECTED}")
    layout = dataset_layout(path, data_format, images_dir)
    if layout is not None:
        return Dataset(path, layout, data_format, images_dir)
    if str(data).rstrip("/\\") == DEFAULT_DATA and data_format in (None, "voc") and images_dir is None:
        repo_default = REPO_ROOT / DEFAULT_DATA
        layout = dataset_layout(repo_default, data_format)
        if layout is not None:
            return Dataset(repo_default, layout, data_format)
        demo = demo_data.ensure_demo_dataset()
        print(f"no dataset in {DEFAULT_DATA}/: using the demo dataset at {demo} "
              f"(classes model_data/demo_classes.txt)")
        return Dataset(demo, dataset_layout(demo, data_format), data_format)
    what = "does not exist" if not path.exists() else "is not a dataset"
    raise DatasetError(f"--data {path} {what}: expected {EXPECTED}")


def resolve_data(data=DEFAULT_DATA, data_format: Optional[str] = None, images_dir=None) -> Path:
    """The dataset folder or file to read: open_dataset(...).path."""
    return open_dataset(data, data_format, images_dir).path


def _classes_txt(root: Path) -> Tuple[Optional[Tuple[str, ...]], Optional[Path]]:
    """(names, file) of a classes.txt (one name a line) in `root`; (None, None) without one."""
    file = root / "classes.txt"
    if not file.is_file():
        return None, None
    names = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    return formats.check_names(names, str(file)), file


def folder_names(root: Path) -> Tuple[Optional[Tuple[str, ...]], Optional[Path]]:
    """(names, classes file) a bare YOLO folder declares in classes.txt or data.yaml; (None, None) if neither."""
    if (root / "classes.txt").is_file():
        return _classes_txt(root)
    for name in ("data.yaml", "data.yml"):
        if (root / name).is_file():
            return formats.read_data_yaml(root / name).names, None
    return None, None


def _declared_names(path: Path, layout: Optional[str]) -> Tuple[Optional[Tuple[str, ...]], Optional[Path]]:
    if layout == "yolo-yaml":
        return formats.read_data_yaml(path).names, None
    if layout == "coco":
        return formats.read_coco(path)[0], None
    if layout == "coco-root":
        return formats.read_coco(coco_root_splits(path)[_coco_root_default(path, "eval")])[0], None
    if layout == "yolo":
        return folder_names(path)
    if layout == "labelme":
        return _classes_txt(path)
    return None, None


def declared_names(data, data_format: Optional[str] = None,
                   images_dir=None) -> Tuple[Optional[Tuple[str, ...]], Optional[Path]]:
    """(class names, their classes file or None) a YOLO, COCO or labelme dataset declares; (None, None) for VOC
    and for a labelme folder without classes.txt. A COCO root declares its default evaluation JSON's categories.
    `data`: a Dataset, or a path whose layout is detected for this call."""
    return as_dataset(data, data_format, images_dir).declared_names()


def _seeded_val(stem: str, seed: int, val_fraction: float) -> bool:
    digest = hashlib.sha1(f"{seed}:{stem}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < val_fraction


def seeded_pick(stems: Sequence[str], split: str, seed: int, val_fraction: float, where: str) -> List[str]:
    if split == "all":
        return list(stems)
    if split not in ("train", "val"):
        raise DatasetError(f"{where}: unknown split {split!r}; valid: train, val, all (seeded split)")
    return [s for s in stems if _seeded_val(s, seed, val_fraction) == (split == "val")]


def dataset_of(values) -> Dataset:
    """The Dataset the flags --data, --data-format and --images name (parsed arguments, or their dict as train.py
    keeps them): open_dataset(values['data'], values['data_format'], values['images'])."""
    values = values if isinstance(values, dict) else vars(values)
    return open_dataset(values["data"], values["data_format"], values["images"])
