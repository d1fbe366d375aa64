"""The YOLO format's layouts: a YOLO data YAML (path, train, val, test, names) and a bare YOLO folder (`images/` +
`labels/`, split by the sub-folders of `images/` or seeded); see utils/data/layouts.py for their split names and
defaults. Read by utils/data/formats.py."""
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from utils.data import formats
from utils.data.annotations import DatasetError
from utils.data.layout_base import SEEDED_SPLITS, Layout, Names, Source, classes_txt, seeded_pick


def folder_names(root: Path) -> Names:
    """(names, classes file) a bare YOLO folder declares in classes.txt or data.yaml; (None, None) if neither."""
    if (root / "classes.txt").is_file():
        return classes_txt(root)
    for name in ("data.yaml", "data.yml"):
        if (root / name).is_file():
            return formats.read_data_yaml(root / name).names, None
    return None, None


def _read(source: Source, class_names):
    return formats.parse_yolo(source.image, source.annotation, source.names, class_names)


def _yolo_sources(images: Sequence[Path], names: Optional[Tuple[str, ...]]) -> List[Source]:
    return [Source(key=str(image), annotation=formats.label_path(image), image=image, names=names, kind="yolo",
                   where=str(formats.label_path(image)), read=_read) for image in dict.fromkeys(images)]


def _yaml_sources(path: Path, split: str, seed: int, val_fraction: float, images_dir=None) -> List[Source]:
    config = formats.read_data_yaml(path)
    return _yolo_sources(formats.yolo_split_images(config, split), config.names)


def _folder_sources(root: Path, split: str, seed: int, val_fraction: float, images_dir=None) -> List[Source]:
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


def _folder_splits(root: Path) -> List[str]:
    folders = sorted(p.name for p in (root / "images").iterdir() if p.is_dir())
    return folders or list(SEEDED_SPLITS)


YAML = Layout("yolo-yaml", "yolo", "a YOLO data YAML", "the YAML's images with their label files", 0,
              fits=lambda p: p.is_file() and p.suffix.lower() in formats.YAML_SUFFIXES, sources=_yaml_sources,
              declared_names=lambda p: (formats.read_data_yaml(p).names, None),
              listed_splits=lambda p: list(formats.read_data_yaml(p).splits))
FOLDER = Layout("yolo", "yolo", "a YOLO folder (images/ + labels/)", "images/ with label files in labels/", 20,
                fits=lambda p: (p / "images").is_dir() and (p / "labels").is_dir(), sources=_folder_sources,
                declared_names=folder_names, listed_splits=_folder_splits)
LAYOUTS = (YAML, FOLDER)
