"""Converting a dataset to another format, read through the same scan as every script.

  python -m utils.data.convert --from voc --to yolo VOCdevkit/VOC2007 data/voc07-yolo
  python -m utils.data.convert --from coco --to voc coco/annotations/instances_val2017.json data/val2017-voc

SRC is read with utils/data/voc.py load_samples, so bad input stops or is warned about exactly as in
training, and the scan summary is printed for every split. DST must not exist or be an empty folder and
must not lie inside SRC; it is written by utils/data/writers.py (layouts and what each format keeps are
described there) into a hidden sibling folder renamed to DST at the end. SRC is only read.

Splits (`--splits`, default: every split SRC lists) are the split names of `--data` (utils/data/layouts.py):
a VOC year folder lists the stems of ImageSets/Main, a VOCdevkit root the union of its years' (`trainval` =
every year's trainval), a YOLO data YAML its train / val / test, a YOLO folder its images/<split> folders, a
COCO root (annotations/instances_<split>.json, what `--to coco` writes) its JSONs. Sources without split
lists (a VOC folder without ImageSets, an annotation-lines file, a labelme folder, a YOLO folder with the
images directly in images/) give their seeded `train` and `val`. A COCO JSON file is one split named after
the JSON (`instances_val2017.json` -> `val2017`) unless `--splits` names seeded ones (train, val, all).

Classes (`--classes`, default: what SRC declares, as utils.data.voc.resolve_classes finds it): a YOLO data
YAML's or folder's names, a COCO JSON's categories in ascending id order, a labelme folder's classes.txt,
the demo's classes on the demo dataset; for VOC a `classes.txt` in the SRC folder (what `--to voc` writes),
else model_data/voc_classes.txt. Objects of other names and images the scan skips are not written; a
warning counts them.
Images are read only inside SRC's folders: a COCO `file_name` or labelme `imagePath` that leads out of them
(`../`, an absolute path) stops the conversion with one line naming the file and the entry, before anything
is written; for COCO, `--images` with the folder that holds such images reads them.
Exit codes (utils/core/cli.py): 0 done, 1 bad input, 130 interrupted.
"""
import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from utils.core.cli import UserError, run_main
from utils.core.settings import add_flags
from utils.core.config import read_classes
from utils.core.paths import MODEL_DATA
from utils.data.annotations import DatasetError, Sample
from utils.data.formats import coco_tag
from utils.data.layouts import DATA_FORMATS, LAYOUT, LAYOUTS, Dataset, dataset_layout
from utils.data.voc import ScanStats, load_samples, resolve_classes
from utils.data.writers import WRITE_FORMATS, Report, check_destination, write_dataset

VOC_CLASSES = MODEL_DATA / "voc_classes.txt"


@dataclass(frozen=True)
class SourceSplit:
    """One split to convert: its name in DST and the split name load_samples reads from SRC."""

    name: str
    split: str


def check_source(src: Path, data_format: str, images_dir=None) -> str:
    """The layout (layouts.LAYOUTS) of SRC read as `data_format`; DatasetError when SRC does not exist, is no
    dataset, or is a dataset of another format."""
    if not src.exists():
        raise DatasetError(f"{src} does not exist")
    found = dataset_layout(src)
    if found is None:
        raise DatasetError(f"{src} is not a dataset the scan reads (see utils/data/layouts.py)")
    if LAYOUTS[found][0] != data_format:
        try:
            dataset_layout(src, data_format)
        except DatasetError:
            raise DatasetError(f"{src} is {LAYOUTS[found][1]}, a {LAYOUTS[found][0]} dataset, not {data_format}; "
                               f"pass --from {LAYOUTS[found][0]}") from None
    return dataset_layout(src, data_format, images_dir)


def listed_splits(src: Path, layout: str) -> List[str]:
    """The splits SRC lists (see the module docstring; its Layout's listed_splits); the seeded train and val
    where it lists none."""
    return LAYOUT[layout].listed_splits(src)


def source_splits(src: Path, layout: str, wanted: Optional[Sequence[str]] = None) -> List[SourceSplit]:
    """The splits to read for `--splits wanted` (None: the default, see the module docstring)."""
    if wanted:
        return [SourceSplit(s, s) for s in dict.fromkeys(wanted)]
    if layout == "coco":
        return [SourceSplit(coco_tag(src), "all")]
    return [SourceSplit(s, s) for s in listed_splits(src, layout)]


def default_classes(dataset: Dataset) -> Path:
    """The classes file SRC implies (see the module docstring)."""
    src = dataset.path
    found = Path(resolve_classes(dataset, VOC_CLASSES))
    beside = src / "classes.txt"
    if found == VOC_CLASSES and src.is_dir() and beside.is_file():
        return beside
    return found


def _losses(stats: ScanStats, where: str) -> List[str]:
    """Warnings for what the scan of one split read but the conversion cannot write."""
    lost = []
    if stats.unknown:
        names = ", ".join(f"{k} ({n})" for k, n in stats.unknown.most_common())
        lost.append(f"{where}: {sum(stats.unknown.values())} objects of names not in the classes are not written: "
                    f"{names}; pass --classes with every name to keep them")
    if stats.skipped:
        reasons = ", ".join(f"{n} {r}" for r, n in stats.skipped.most_common())
        lost.append(f"{where}: {sum(stats.skipped.values())} images the scan skipped are not written ({reasons})")
    return lost


def read_splits(dataset: Dataset, parts: Sequence[SourceSplit],
                class_names: Sequence[str]) -> Tuple[Dict[str, List[Sample]], List[str]]:
    """({DST split name: samples}, warnings about what is not written)."""
    splits: Dict[str, List[Sample]] = {}
    warnings: List[str] = []
    for part in parts:
        stats = ScanStats()
        splits[part.name] = load_samples(dataset, part.split, class_names, stats=stats)
        warnings += _losses(stats, f"{dataset.path} [{part.split}]")
    return splits, warnings


def _check_paths(src: Path, dst: Path) -> None:
    src_dir, target = src.resolve(), dst.resolve()
    if src.is_dir() and (target == src_dir or src_dir in target.parents):
        raise UserError(f"DST {dst} lies inside SRC {src}; SRC is never written to: give a folder outside it")


def convert(src, dst, from_format: str, to_format: str, classes=None, splits: Optional[Sequence[str]] = None,
            images_dir=None) -> Report:
    """Convert dataset `src` (a `from_format` dataset, with the COCO images in `images_dir` when given) into a
    new `to_format` dataset at `dst`; see the module docstring. Returns the warnings (what was not kept) and
    notes."""
    src, dst = Path(src), Path(dst)
    if from_format not in DATA_FORMATS:
        raise UserError(f"--from {from_format!r}: valid: {', '.join(DATA_FORMATS)}")
    if to_format not in WRITE_FORMATS:
        raise UserError(f"--to {to_format!r}: valid: {', '.join(WRITE_FORMATS)}")
    layout = check_source(src, from_format, images_dir)
    dataset = Dataset(src, layout, from_format, images_dir)  # SRC's layout, read from here on
    _check_paths(src, dst)
    check_destination(dst)
    parts = source_splits(src, layout, splits)
    class_names = read_classes(classes or default_classes(dataset))
    samples, warnings = read_splits(dataset, parts, class_names)
    report = write_dataset(dst, samples, class_names, to_format)
    report.warnings[:0] = warnings
    return report


def make_parser() -> argparse.ArgumentParser:
    """The command's flags, generated from the schema (utils/core/settings.py), and its two paths."""
    p = argparse.ArgumentParser(prog="python -m utils.data.convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="the dataset to read (what --data takes)")
    p.add_argument("dst", help="the new dataset folder (must not exist, or be empty)")
    add_flags(p, "convert", grouped=False)
    return p


def run(args: argparse.Namespace) -> None:
    report = convert(args.src, args.dst, args.from_format, args.to_format, args.classes, args.splits, args.images)
    for message in report.warnings:
        print(f"warning: {message}", file=sys.stderr)
    for message in report.notes:
        print(f"note: {message}")
    counts = ", ".join(f"{split} {n}" for split, n in report.images.items())
    print(f"wrote {args.dst}: {args.to_format}, images per split: {counts}")


def main(argv=None) -> int:
    """The converter with `argv` (default: the command line); returns the exit code (utils/core/cli.py)."""
    return run_main("convert", lambda: run(make_parser().parse_args(argv)),
                    interrupted="DST was not written")


if __name__ == "__main__":
    sys.exit(main())
