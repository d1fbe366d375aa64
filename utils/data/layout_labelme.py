"""The labelme format's layout: a folder of labelme JSON files (seeded split; classes.txt, when present, declares
the class names); see utils/data/layouts.py. Read by utils/data/labelme.py."""
from pathlib import Path
from typing import List

from utils.data import labelme
from utils.data.layout_base import Layout, Source, classes_txt, seeded_pick


def _read(source: Source, class_names):
    return labelme.parse_labelme(source.annotation, class_names)


def _sources(root: Path, split: str, seed: int, val_fraction: float, images_dir=None) -> List[Source]:
    files = {p.stem: p for p in labelme.labelme_files(root)}
    return [Source(key=str(files[s]), annotation=files[s], where=str(files[s]), kind="labelme", read=_read)
            for s in seeded_pick(sorted(files), split, seed, val_fraction, str(root))]


FOLDER = Layout("labelme", "labelme", "a folder of labelme JSON files", "the labelme JSON files and their images", 40,
                fits=lambda p: p.is_dir() and labelme.is_labelme_folder(p), sources=_sources,
                declared_names=classes_txt)
LAYOUTS = (FOLDER,)
