"""The images of a split: one Source per image of a Dataset's split, read by the scan (utils/data/voc.py).

What the layouts and split names mean is told in utils/data/layouts.py; the Dataset carries its layout, detected
once by open_dataset, so nothing here detects it again.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from utils.data import formats, labelme
from utils.data.annotations import DatasetError
from utils.data.layouts import (EXPECTED, Dataset, coco_root_splits, folder_names, seeded_pick, split_names,
                                year_dirs)


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
        ids = seeded_pick(stems, split, seed, val_fraction, str(year))
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
    keep = set(seeded_pick([str(n) for n, _ in numbered], split, seed, val_fraction, str(path)))
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
        images = [by_stem[s] for s in seeded_pick(sorted(by_stem), split, seed, val_fraction, str(root))]
    return _yolo_sources(images, folder_names(root)[0])


def _coco_sources(path: Path, split: str, seed: int, val_fraction: float, images_dir=None) -> List[Source]:
    _, images = formats.read_coco(path)
    keep = set(seeded_pick([im.file_name for im in images], split, seed, val_fraction, str(path)))
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
            for s in seeded_pick(sorted(files), split, seed, val_fraction, str(root))]


def find_sources(dataset: Dataset, split: str, seed: int, val_fraction: float) -> List[Source]:
    """One Source per image of `split` of `dataset` (see utils/data/layouts.py), under its resolved path."""
    path, layout = dataset.path.resolve(), dataset.layout
    images_dir = Path(dataset.images_dir).resolve() if dataset.images_dir is not None else None
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
