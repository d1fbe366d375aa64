"""Dataset layouts and splits: which images a `--data` path and a split name stand for.

`--data` may be (format in brackets; detection takes the first that fits, in this order, files by suffix). Each
format is one module of Layouts (utils/data/layout_voc.py, layout_yolo.py, layout_coco.py, layout_labelme.py;
what a Layout answers: utils/data/layout_base.py) and one entry of REGISTRY below; a Layout's rank places it in
the detection order:
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
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from utils.core.paths import REPO_ROOT
from utils.data import demo_data, formats, layout_coco, layout_labelme, layout_voc, layout_yolo
from utils.data.annotations import DatasetError
from utils.data.layout_base import Layout, Names, Source, _seeded_val  # noqa: F401 (_seeded_val re-exported)

DEFAULT_DATA = "VOCdevkit"
# the formats, in the order --data-format lists them: {format: its module's Layouts}. A new format is one module
# of Layouts and one entry here (and its name in --data-format's choices, utils/core/schema_train.py)
REGISTRY = {"voc": layout_voc.LAYOUTS, "yolo": layout_yolo.LAYOUTS, "coco": layout_coco.LAYOUTS,
            "labelme": layout_labelme.LAYOUTS}


def indexed(registry: Dict[str, Tuple[Layout, ...]]):
    """(DATA_FORMATS, DETECTION: the layouts by rank, LAYOUT: {name: Layout}, LAYOUTS: {name: (format, what)})
    of a registry."""
    detection = tuple(sorted((x for group in registry.values() for x in group), key=lambda x: x.rank))
    return (tuple(registry), detection, {x.name: x for x in detection},
            {x.name: (x.format, x.what) for x in detection})


# LAYOUT: every layout dataset_layout returns, by name; LAYOUTS: its format and how an error message names it
DATA_FORMATS, DETECTION, LAYOUT, LAYOUTS = indexed(REGISTRY)
EXPECTED = ("a VOCdevkit root (VOC*/Annotations), a year folder (Annotations/, JPEGImages/), an annotation-lines "
            "file, a YOLO data YAML or folder (images/ + labels/), a COCO JSON or root (annotations/instances_*.json), "
            "or a folder of labelme JSON files")


def _layouts(path: Path):
    """Every layout `path` fits, in detection order (a file fits one: the first); the first is the one detected."""
    for layout in DETECTION:
        if layout.fits(path):
            yield layout.name
            if path.is_file():
                return


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

    @property
    def kind(self) -> Layout:
        """The registry's Layout (a VOC year folder's for a path that is no dataset)."""
        return LAYOUT.get(self.layout, layout_voc.YEAR)

    def default_split(self, purpose: str) -> str:
        """The split scripts use by default for `purpose` 'train' or 'eval' (see the module docstring)."""
        if purpose not in ("train", "eval"):
            raise ValueError(f"purpose must be 'train' or 'eval', got {purpose!r}")
        return self.kind.default_split(self.path, purpose)

    def declared_names(self) -> Names:
        """(class names, their classes file or None) the dataset declares; (None, None) for VOC."""
        return self.kind.declared_names(self.path) if self.layout else (None, None)

    def sources(self, split: str, seed: int, val_fraction: float) -> List[Source]:
        """One Source per image of `split` (see the module docstring), under the resolved path."""
        if self.layout is None:
            raise DatasetError(f"{self.path.resolve()}: not a dataset; expected {EXPECTED}")
        images_dir = Path(self.images_dir).resolve() if self.images_dir is not None else None
        return self.kind.sources(self.path.resolve(), split, seed, val_fraction, images_dir)

    def coco_files(self, split: str) -> Optional[List[Path]]:
        """The COCO JSON(s) `split` is read from, None for a dataset of another format."""
        return self.kind.coco_files(self.path, split) if self.layout and self.kind.coco_files else None

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


def dataset_of(values) -> Dataset:
    """The Dataset the flags --data, --data-format and --images name (parsed arguments, or their dict as train.py
    keeps them): open_dataset(values['data'], values['data_format'], values['images'])."""
    values = values if isinstance(values, dict) else vars(values)
    return open_dataset(values["data"], values["data_format"], values["images"])
