"""The VOC format's layouts: a year folder with ImageSets, one without, a VOCdevkit root of year folders, and an
annotation-lines file of the reference implementation (`path x1,y1,x2,y2,cls ...` per line); see
utils/data/layouts.py for their split names and defaults. Read by utils/data/annotations.py."""
from pathlib import Path
from typing import List

from utils.data.annotations import DatasetError, parse_line, parse_xml
from utils.data.layout_base import Layout, Source, has_folder, seeded_pick


def year_dirs(root: Path) -> List[Path]:
    """The year folders (those holding Annotations/) of a VOCdevkit root."""
    return sorted(p for p in root.iterdir() if p.is_dir() and has_folder(p, "Annotations"))


def split_names(year: Path) -> List[str]:
    """The split names of a year folder: its ImageSets/Main lists, or the seeded train, val and all."""
    main = year / "ImageSets" / "Main"
    if not main.is_dir():
        return ["train", "val", "all"]
    return sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem)


def _read_xml(source: Source, class_names):
    return parse_xml(source.annotation, source.images_dir, class_names)


def _read_line(source: Source, class_names):
    return parse_line(source.line, source.where, source.images_dir, class_names)


def _image_id(line: str, annotations: Path) -> str:
    """The id on an ImageSets line; ids may hold spaces, class lists add a ` 1` / ` -1` column."""
    whole, first = line.strip(), line.split()[0]
    return first if whole != first and not (annotations / f"{whole}.xml").exists() else whole


def year_sources(year: Path, split: str, seed: int, val_fraction: float, images_dir=None) -> List[Source]:
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
                   where=str(annotations / f"{i}.xml"), read=_read_xml) for i in ids]


def _devkit_sources(root: Path, split: str, seed: int, val_fraction: float, images_dir=None) -> List[Source]:
    years = {y.name: y for y in year_dirs(root)}
    sources: List[Source] = []
    for part in split.split("+"):
        if "/" in part:
            name, sub = part.split("/", 1)
            if name not in years:
                raise DatasetError(f"{root}: no year folder {name!r} for split {part!r}; found: {', '.join(years)}")
            sources += year_sources(years[name], sub, seed, val_fraction)
            continue
        having = [y for y in years.values() if part in split_names(y)]
        if not having:
            raise DatasetError(f"{root}: no year folder has split {part!r}; found {', '.join(years)} "
                               f"with splits {sorted({s for y in years.values() for s in split_names(y)})}")
        for year in having:
            sources += year_sources(year, part, seed, val_fraction)
    return list({s.key: s for s in sources}.values())


def _lines_sources(path: Path, split: str, seed: int, val_fraction: float, images_dir=None) -> List[Source]:
    lines = path.read_text(encoding="utf-8").splitlines()
    numbered = [(n, line.strip()) for n, line in enumerate(lines, 1) if line.strip()]
    keep = set(seeded_pick([str(n) for n, _ in numbered], split, seed, val_fraction, str(path)))
    return [Source(key=f"{path}:{n}", line=line, images_dir=path.parent, where=f"{path} line {n}", kind="line",
                   read=_read_line) for n, line in numbered if str(n) in keep]


def _years_default(years: List[Path], purpose: str, devkit: bool) -> str:
    """When a `test` split exists: train on trainval (of every year), evaluate on test (VOC2007 test for
    VOC07+12); otherwise train and val."""
    with_test = [y for y in years if "test" in split_names(y)]
    if not with_test:
        return "train" if purpose == "train" else "val"
    if purpose == "train":
        return "trainval"
    return "+".join(f"{y.name}/test" for y in with_test) if devkit else "test"


def _is_annotations_folder(path: Path) -> bool:
    return path.is_dir() and has_folder(path, "Annotations")


# a file is of the first file layout that fits: any file not taken before (a YAML, a JSON) holds annotation lines
LINES = Layout("lines", "voc", "an annotation-lines file", "annotation lines", 9, fits=lambda p: p.is_file(),
               sources=_lines_sources, default_split=lambda p, purpose: "all")
YEAR = Layout("year", "voc", "a VOC year folder with ImageSets", "Annotations/*.xml with images in JPEGImages/", 10,
              fits=lambda p: _is_annotations_folder(p) and (p / "ImageSets" / "Main").is_dir(),
              sources=year_sources, default_split=lambda p, purpose: _years_default([p], purpose, False),
              listed_splits=split_names)
FLAT = Layout("flat", "voc", "a VOC folder (Annotations/, JPEGImages/) without ImageSets",
              "Annotations/*.xml with images in JPEGImages/", 11,
              fits=lambda p: _is_annotations_folder(p) and not (p / "ImageSets" / "Main").is_dir(),
              sources=year_sources, default_split=lambda p, purpose: _years_default([p], purpose, False))
DEVKIT = Layout("devkit", "voc", "a VOCdevkit root", "Annotations/*.xml with images in JPEGImages/", 50,
                fits=lambda p: p.is_dir() and bool(year_dirs(p)), sources=_devkit_sources,
                default_split=lambda p, purpose: _years_default(year_dirs(p), purpose, True),
                listed_splits=lambda p: sorted({s for year in year_dirs(p) for s in split_names(year)}))
LAYOUTS = (LINES, YEAR, FLAT, DEVKIT)

