"""The COCO format's layouts: a COCO detection JSON (seeded split) and a COCO root holding
`annotations/instances_<split>.json` (the COCO download; the split name picks the JSON); see
utils/data/layouts.py for their split names and defaults. Read by utils/data/coco_records.py; the images are in
`--images` when given."""
from pathlib import Path
from typing import Dict, List

from utils.data import formats
from utils.data.annotations import DatasetError
from utils.data.coco_records import parse_coco
from utils.data.layout_base import Layout, Source, has_folder, seeded_pick


def coco_root_splits(root: Path) -> Dict[str, Path]:
    """{split: JSON} of a COCO root folder: `annotations/instances_<split>.json`; {} for other paths."""
    if not root.is_dir() or not has_folder(root, "annotations"):
        return {}
    found = sorted(p for p in (root / "annotations").glob(f"{formats.COCO_PREFIX}*.json") if p.is_file())
    return {formats.coco_tag(p): p for p in found}


def root_default(root: Path, purpose: str) -> str:
    """A COCO root's default split: its last `train*` (and `val*` to evaluate) by name (train2017, val2017)."""
    splits = sorted(coco_root_splits(root))
    trains, vals = [s for s in splits if s.startswith("train")], [s for s in splits if s.startswith("val")]
    train = trains[-1] if trains else splits[0]
    return train if purpose == "train" else vals[-1] if vals else train


def _read(source: Source, class_names):
    return parse_coco(source.coco, source.annotation, class_names, source.images_dir)


def _json_sources(path: Path, split: str, seed: int, val_fraction: float, images_dir=None) -> List[Source]:
    _, images = formats.read_coco(path)
    keep = set(seeded_pick([im.file_name for im in images], split, seed, val_fraction, str(path)))
    return [Source(key=f"{path}:{im.id}", annotation=path, coco=im, kind="coco", images_dir=images_dir, read=_read,
                   where=f"{path} image {im.id} ({im.file_name})") for im in images if im.file_name in keep]


def _root_sources(root: Path, split: str, seed: int, val_fraction: float, images_dir=None) -> List[Source]:
    splits, sources = coco_root_splits(root), []
    for part in split.split("+"):
        if part not in splits:
            raise DatasetError(f"{root / 'annotations'}: no {formats.COCO_PREFIX}{part}.json for split {part!r}; "
                               f"splits: {', '.join(splits)}")
        sources += _json_sources(splits[part], "all", 0, 0.0, images_dir)
    return sources


def _root_files(root: Path, split: str) -> List[Path]:
    splits = coco_root_splits(root)
    return [splits[part] for part in split.split("+") if part in splits]


JSON = Layout("coco", "coco", "a JSON file, read as COCO", "the JSON's images and annotations", 1,
              fits=lambda p: p.is_file() and p.suffix.lower() == ".json", sources=_json_sources,
              default_split=lambda p, purpose: "all", declared_names=lambda p: (formats.read_coco(p)[0], None),
              coco_files=lambda p, split: [p])
ROOT = Layout("coco-root", "coco", "a COCO root (annotations/instances_*.json)",
              "the split's JSON, its images and annotations", 30,
              fits=lambda p: bool(coco_root_splits(p)), sources=_root_sources, default_split=root_default,
              declared_names=lambda p: (formats.read_coco(coco_root_splits(p)[root_default(p, "eval")])[0], None),
              listed_splits=lambda p: list(coco_root_splits(p)), coco_files=_root_files)
LAYOUTS = (JSON, ROOT)
