"""Dataset layouts and splits: which images a `--data` path and a split name stand for.

`--data` may be:
  * a VOCdevkit root: every sub-folder holding `Annotations/` (VOC2007, VOC2012, ...) is a year;
  * one year folder: `Annotations/`, `JPEGImages/`, `ImageSets/Main/<split>.txt`;
  * a folder with `Annotations/` and `JPEGImages/` but no `ImageSets/Main`: seeded train/val split;
  * an annotation-lines file of the reference implementation: `path x1,y1,x2,y2,cls ...` per line;
  * a YOLO data YAML (`*.yaml`/`*.yml`: path, train, val, test, names) or a bare YOLO folder (`images/` +
    `labels/`), and a COCO detection JSON (`*.json`): see utils/data/formats.py.

Split names:
  * year folder: the stems of `ImageSets/Main/*.txt` (train, val, trainval, test); `a+b` joins splits.
  * VOCdevkit root: `trainval` means trainval of every year that has it; `VOC2007/test` picks one
    year; `+` joins parts (`VOC2007/trainval+VOC2012/trainval`).
  * folder without ImageSets and annotation-lines file: `train`, `val` (a seeded split: an image is in
    val when a hash of (seed, file stem) falls below `val_fraction`, so adding files moves no others)
    and `all`. COCO JSON: the same seeded `train`, `val`, `all`.
  * YOLO data YAML: the keys `train`, `val`, `test` it sets; bare YOLO folder: the sub-folders of `images/`
    (`images/train`, ...), or the seeded `train`, `val`, `all` when images lie directly in `images/`.
  Defaults (`default_split`): when a `test` split exists, train on `trainval` (of every year) and
  evaluate on `test` (VOC2007 test for VOC07+12); otherwise train on `train`, evaluate on `val`.
  Annotation-lines files and COCO JSON default to `all` for both; YOLO to `train` and `val`. The demo dataset has train and val.
"""
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from utils.core.fileio import atomic_open
from utils.core.paths import REPO_ROOT
from utils.data import demo_data, formats
from utils.data.annotations import DatasetError

DEFAULT_DATA = "VOCdevkit"


@dataclass
class Source:
    """One image to read: its cache key, the files whose changes invalidate it, and how to parse it.

    kind: 'xml' (annotation, images_dir), 'line' (line, images_dir), 'yolo' (image, annotation = its label
    file, names = the dataset's class names or None for the classes file's), 'coco' (coco, annotation = the JSON).
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


def _has_year_layout(path: Path) -> bool:
    return (path / "Annotations").is_dir()


def _year_dirs(root: Path) -> List[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and _has_year_layout(p))


def _is_yolo_folder(path: Path) -> bool:
    return (path / "images").is_dir() and (path / "labels").is_dir()


def dataset_layout(path: Path) -> Optional[str]:
    """'lines', 'year' (with ImageSets), 'flat' (no ImageSets), 'devkit', 'yolo-yaml', 'yolo' (a bare
    images/ + labels/ folder), 'coco', or None when not a dataset. Files are told apart by suffix."""
    if path.is_file():
        suffix = path.suffix.lower()
        return "yolo-yaml" if suffix in formats.YAML_SUFFIXES else "coco" if suffix == ".json" else "lines"
    if not path.is_dir():
        return None
    if _has_year_layout(path):
        return "year" if (path / "ImageSets" / "Main").is_dir() else "flat"
    if _is_yolo_folder(path):
        return "yolo"
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
    layout = dataset_layout(path)
    if layout in ("lines", "coco"):
        return "all"
    if layout in ("yolo", "yolo-yaml"):
        return "train" if purpose == "train" else "val"
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
    if dataset_layout(path) is not None:
        return path
    if str(data).rstrip("/\\") == DEFAULT_DATA:
        repo_default = REPO_ROOT / DEFAULT_DATA
        if dataset_layout(repo_default) is not None:
            return repo_default
        demo = demo_data.ensure_demo_dataset()
        print(f"no dataset in {DEFAULT_DATA}/: using the demo dataset at {demo} "
              f"(classes model_data/demo_classes.txt)")
        return demo
    what = "does not exist" if not path.exists() else "is not a dataset"
    raise DatasetError(f"--data {path} {what}: expected a VOCdevkit root (VOC*/Annotations), a year folder "
                       f"(Annotations/, JPEGImages/), an annotation-lines file, a YOLO data YAML or folder "
                       f"(images/ + labels/), or a COCO JSON")


def _folder_names(root: Path) -> Tuple[Optional[Tuple[str, ...]], Optional[Path]]:
    """(names, classes file) a bare YOLO folder declares in classes.txt or data.yaml; (None, None) if neither."""
    if (root / "classes.txt").is_file():
        text = (root / "classes.txt").read_text(encoding="utf-8")
        names = [line.strip() for line in text.splitlines() if line.strip()]
        return formats.check_names(names, str(root / "classes.txt")), root / "classes.txt"
    for name in ("data.yaml", "data.yml"):
        if (root / name).is_file():
            return formats.read_data_yaml(root / name).names, None
    return None, None


def declared_names(path: Path) -> Tuple[Optional[Tuple[str, ...]], Optional[Path]]:
    """(class names, their classes file or None) a YOLO or COCO dataset declares; (None, None) for VOC."""
    layout = dataset_layout(path)
    if layout == "yolo-yaml":
        return formats.read_data_yaml(path).names, None
    if layout == "coco":
        return formats.read_coco(path)[0], None
    if layout == "yolo":
        return _folder_names(path)
    return None, None


def _written_classes(path: Path, names: Sequence[str]) -> Path:
    """A classes file holding `names`, in the scan cache folder (never in the dataset)."""
    base = Path(os.environ.get("YOLO_SCAN_CACHE") or REPO_ROOT / ".cache" / "voc_scan") / "classes"
    text = "".join(f"{n}\n" for n in names)
    digest = hashlib.sha1(f"{path.resolve()}\n{text}".encode("utf-8")).hexdigest()[:16]
    target = base / f"{path.stem}-{digest}.txt"
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        with atomic_open(target, "w") as f:
            f.write(text)
    return target


def resolve_classes(data_path, classes) -> Path:
    """The classes file to use. When `classes` is the VOC default (voc_classes.txt): the demo's own for a demo
    dataset, the names a YOLO or COCO dataset declares (a classes.txt in a YOLO folder, or a file written to the
    scan cache folder for the YAML's `names` / the JSON's categories in ascending id order); else `classes`."""
    if Path(classes).name != "voc_classes.txt":
        return Path(classes)
    demo = demo_data.demo_classes_file(data_path)
    if demo is not None:
        return demo
    names, file = declared_names(Path(data_path))
    if names is None:
        return Path(classes)
    return file if file is not None else _written_classes(Path(data_path), names)


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
                raise DatasetError(f"{list_file} does not exist; splits in {main}: {', '.join(_split_names(year))}")
            ids += [_image_id(line, annotations) for line in list_file.read_text(encoding="utf-8").splitlines()
                    if line.strip()]
    else:
        stems = sorted(p.stem for p in annotations.glob("*.xml"))
        ids = _pick(stems, split, seed, val_fraction, str(year))
    ids = list(dict.fromkeys(ids))
    return [Source(key=str(annotations / f"{i}.xml"), annotation=annotations / f"{i}.xml", images_dir=images,
                    where=str(annotations / f"{i}.xml")) for i in ids]


def _devkit_sources(root: Path, split: str, seed: int, val_fraction: float) -> List[Source]:
    years = {y.name: y for y in _year_dirs(root)}
    sources: List[Source] = []
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


def _coco_sources(path: Path, split: str, seed: int, val_fraction: float) -> List[Source]:
    _, images = formats.read_coco(path)
    keep = set(_pick([im.file_name for im in images], split, seed, val_fraction, str(path)))
    return [Source(key=f"{path}:{im.id}", annotation=path, coco=im, kind="coco",
                   where=f"{path} image {im.id} ({im.file_name})") for im in images if im.file_name in keep]


def find_sources(path: Path, split: str, seed: int, val_fraction: float) -> List[Source]:
    layout = dataset_layout(path)
    if layout is None:
        raise DatasetError(f"{path}: not a dataset (expected VOC*/Annotations, Annotations/ + JPEGImages/, "
                           f"an annotation-lines file, a YOLO data YAML or images/ + labels/ folder, or a COCO JSON)")
    if layout == "lines":
        return _lines_sources(path, split, seed, val_fraction)
    if layout == "yolo-yaml":
        config = formats.read_data_yaml(path)
        return _yolo_sources(formats.yolo_split_images(config, split), config.names)
    if layout == "yolo":
        return _yolo_folder_sources(path, split, seed, val_fraction)
    if layout == "coco":
        return _coco_sources(path, split, seed, val_fraction)
    if layout == "devkit":
        return _devkit_sources(path, split, seed, val_fraction)
    return _year_sources(path, split, seed, val_fraction)

