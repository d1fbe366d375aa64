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


@dataclass
class Source:
    """One image to read: its cache key, the files whose changes invalidate it, and how to parse it.

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


def default_split(data, purpose: str, data_format: Optional[str] = None, images_dir=None) -> str:
    """The split scripts use by default: purpose 'train' or 'eval' (see the module docstring)."""
    if purpose not in ("train", "eval"):
        raise ValueError(f"purpose must be 'train' or 'eval', got {purpose!r}")
    path = Path(data)
    layout = dataset_layout(path, data_format, images_dir)
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


def resolve_data(data=DEFAULT_DATA, data_format: Optional[str] = None, images_dir=None) -> Path:
    """The dataset folder or file to read; the demo dataset (VOC) when `data` is the default and empty and
    neither another format nor `images_dir` is asked for. Checks `data_format` and `images_dir` (dataset_layout)."""
    path = Path(data)
    if formats.is_image(path):
        raise DatasetError(f"--data {path} is an image, not a dataset: --data takes {EXPECTED}")
    if dataset_layout(path, data_format, images_dir) is not None:
        return path
    if str(data).rstrip("/\\") == DEFAULT_DATA and data_format in (None, "voc") and images_dir is None:
        repo_default = REPO_ROOT / DEFAULT_DATA
        if dataset_layout(repo_default, data_format) is not None:
            return repo_default
        demo = demo_data.ensure_demo_dataset()
        print(f"no dataset in {DEFAULT_DATA}/: using the demo dataset at {demo} "
              f"(classes model_data/demo_classes.txt)")
        return demo
    what = "does not exist" if not path.exists() else "is not a dataset"
    raise DatasetError(f"--data {path} {what}: expected {EXPECTED}")


def _classes_txt(root: Path) -> Tuple[Optional[Tuple[str, ...]], Optional[Path]]:
    """(names, file) of a classes.txt (one name a line) in `root`; (None, None) without one."""
    file = root / "classes.txt"
    if not file.is_file():
        return None, None
    names = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    return formats.check_names(names, str(file)), file


def _folder_names(root: Path) -> Tuple[Optional[Tuple[str, ...]], Optional[Path]]:
    """(names, classes file) a bare YOLO folder declares in classes.txt or data.yaml; (None, None) if neither."""
    if (root / "classes.txt").is_file():
        return _classes_txt(root)
    for name in ("data.yaml", "data.yml"):
        if (root / name).is_file():
            return formats.read_data_yaml(root / name).names, None
    return None, None


def declared_names(path: Path, data_format: Optional[str] = None,
                   images_dir=None) -> Tuple[Optional[Tuple[str, ...]], Optional[Path]]:
    """(class names, their classes file or None) a YOLO, COCO or labelme dataset declares; (None, None) for VOC
    and for a labelme folder without classes.txt. A COCO root declares its default evaluation JSON's categories."""
    layout = dataset_layout(path, data_format, images_dir)
    if layout == "yolo-yaml":
        return formats.read_data_yaml(path).names, None
    if layout == "coco":
        return formats.read_coco(path)[0], None
    if layout == "coco-root":
        return formats.read_coco(coco_root_splits(path)[_coco_root_default(path, "eval")])[0], None
    if layout == "yolo":
        return _folder_names(path)
    if layout == "labelme":
        return _classes_txt(path)
    return None, None


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


def _year_sources(year: Path, split: str, seed: int, val_fraction: float) -> List[Source]:
    annotations, images = year / "Annotations", year / "JPEGImages"
    main = year / "ImageSets" / "Main"
    if main.is_dir():
        ids: List[str] = []
        for part in split.split("+"):
            list_file = main / f"{part}.txt"
            if not list_file.is_file():
                raise DatasetError(f"{list_file} does not exist; splits in {main}: {', '.join(split_names(year))}")
            ids += [_image_id(line, annotations) for line in list_file.read_text(encoding="utf-8").splitlines()
                    if line.strip()]
    else:
        stems = sorted(p.stem for p in annotations.glob("*.xml"))
        ids = _pick(stems, split, seed, val_fraction, str(year))
    ids = list(dict.fromkeys(ids))
    return [Source(key=str(annotations / f"{i}.xml"), annotation=annotations / f"{i}.xml", images_dir=images,
                    where=str(annotations / f"{i}.xml")) for i in ids]


def _devkit_sources(root: Path, split: str, seed: int, val_fraction: float) -> List[Source]:
    years = {y.name: y for y in year_dirs(root)}
    sources: List[Source] = []
    for part in split.split("+"):
        if "/" in part:
            name, sub = part.split("/", 1)
            if name not in years:
                raise DatasetError(f"{root}: no year folder {name!r} for split {part!r}; found: {', '.join(years)}")
            sources += _year_sources(years[name], sub, seed, val_fraction)
            continue
        having = [y for y in years.values() if part in split_names(y)]
        if not having:
            raise DatasetError(f"{root}: no year folder has split {part!r}; found {', '.join(years)} "
                               f"with splits {sorted({s for y in years.values() for s in split_names(y)})}")
        for year in having:
            sources += _year_sources(year, part, seed, val_fraction)
    return list({s.key: s for s in sources}.values())


def _lines_sources(path: Path, split: str, seed: int, val_fraction: float) -> List[Source]:
    lines = path.read_text(encoding="utf-8").splitlines()
    numbered = [(n, line.strip()) for n, line in enumerate(lines, 1) if line.strip()]
    keep = set(_pick([str(n) for n, _ in numbered], split, seed, val_fraction, str(path)))
    return [Source(key=f"{path}:{n}", line=line, images_dir=path.parent, where=f"{path} line {n}", kind="line")
            for n, line in numbered if str(n) in keep]


def _yolo_sources(images: Sequence[Path], names: Optional[Tuple[str, ...]]) -> List[Source]:
    return [Source(key=str(image), annotation=formats.label_path(image), image=image, names=names, kind="yolo",
                   where=str(formats.label_path(image))) for image in dict.fromkeys(images)]


def _yolo_folder_sources(root: Path, split: str, seed: int, val_fraction: float) -> List[Source]:
    images_dir = root / "images"
    subdirs = {p.name: p for p in sorted(images_dir.iterdir()) if p.is_dir()}
    if subdirs:
        images: List[Path] = []
        for part in split.split("+"):
            if part not in subdirs:
                raise DatasetError(f"{images_dir}: no split folder {part!r}; found: {', '.join(subdirs)}")
            images += sorted(p for p in subdirs[part].rglob("*") if formats.is_image(p))
    else:
        by_stem = {p.stem: p for p in sorted(images_dir.iterdir()) if formats.is_image(p)}
        images = [by_stem[s] for s in _pick(sorted(by_stem), split, seed, val_fraction, str(root))]
    return _yolo_sources(images, _folder_names(root)[0])


def _coco_sources(path: Path, split: str, seed: int, val_fraction: float, images_dir=None) -> List[Source]:
    _, images = formats.read_coco(path)
    keep = set(_pick([im.file_name for im in images], split, seed, val_fraction, str(path)))
    return [Source(key=f"{path}:{im.id}", annotation=path, coco=im, kind="coco", images_dir=images_dir,
                   where=f"{path} image {im.id} ({im.file_name})") for im in images if im.file_name in keep]


def _coco_root_sources(root: Path, split: str, images_dir=None) -> List[Source]:
    splits, sources = coco_root_splits(root), []
    for part in split.split("+"):
        if part not in splits:
            raise DatasetError(f"{root / 'annotations'}: no {formats.COCO_PREFIX}{part}.json for split {part!r}; "
                               f"splits: {', '.join(splits)}")
        sources += _coco_sources(splits[part], "all", 0, 0.0, images_dir)
    return sources


def _labelme_sources(root: Path, split: str, seed: int, val_fraction: float) -> List[Source]:
    files = {p.stem: p for p in labelme.labelme_files(root)}
    return [Source(key=str(files[s]), annotation=files[s], where=str(files[s]), kind="labelme")
            for s in _pick(sorted(files), split, seed, val_fraction, str(root))]


def find_sources(path: Path, split: str, seed: int, val_fraction: float, data_format: Optional[str] = None,
                 images_dir=None) -> List[Source]:
    """One Source per image of `split` of the dataset at `path` (see the module docstring)."""
    layout = dataset_layout(path, data_format, images_dir)
    images_dir = Path(images_dir).resolve() if images_dir is not None else None
    if layout is None:
        raise DatasetError(f"{path}: not a dataset; expected {EXPECTED}")
    if layout == "lines":
        return _lines_sources(path, split, seed, val_fraction)
    if layout == "yolo-yaml":
        config = formats.read_data_yaml(path)
        return _yolo_sources(formats.yolo_split_images(config, split), config.names)
    if layout == "yolo":
        return _yolo_folder_sources(path, split, seed, val_fraction)
    if layout == "coco":
        return _coco_sources(path, split, seed, val_fraction, images_dir)
    if layout == "coco-root":
        return _coco_root_sources(path, split, images_dir)
    if layout == "labelme":
        return _labelme_sources(path, split, seed, val_fraction)
    if layout == "devkit":
        return _devkit_sources(path, split, seed, val_fraction)
    return _year_sources(path, split, seed, val_fraction)


def data_options(args) -> Dict[str, Optional[str]]:
    """{'data_format', 'images_dir'} from the flags --data-format and --images (parsed arguments, or their dict as
    train.py keeps them), for resolve_data, default_split, resolve_classes, load_samples and load_eval_samples."""
    values = args if isinstance(args, dict) else vars(args)
    return {"data_format": values["data_format"], "images_dir": values["images"]}
