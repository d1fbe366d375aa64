"""The embedded demo dataset: coloured shapes over textured backgrounds, in VOC format.

Deterministic: every image is a pure function of (style seed, split, index) through its own
`numpy.random.default_rng([seed, split, index])`; no image depends on another, on the clock or on the
order of generation, so the same files come out on every run (byte-identical with the same OpenCV).

Layout (a VOC year folder, under `<repo>/demo_data/<style>/`, outside VOCdevkit so it never meets user
data): Annotations/, JPEGImages/, ImageSets/Main/{train,val}.txt, classes.txt. It is written to a
temporary folder and renamed into place; a `.complete` file marks a finished dataset, and one without
it (an interrupted run) is generated again.

In another format (`data_format` yolo or coco, `python -m utils.data.demo_data --format yolo`) the VOC
original is read with the scan's XML parser and written by utils/data/writers.py, the writers of
`python -m utils.data.convert`, into `<repo>/demo_data/<style>-<format>/` (a YOLO folder, or a COCO root
with annotations/instances_{train,val}.json), with its own `.complete` file. YOLO keeps no difficult flag.
(utils/data/convert.py itself reads through utils/data/voc.py, which imports this module.)
"""
import argparse
import json
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from utils.core.cli import run_main
from utils.core.settings import add_flags
from utils.core.paths import REPO_ROOT
from utils.data import writers
from utils.data.annotations import DatasetError, Sample, parse_xml
from utils.ops.boxes import box_iou_np

GENERATOR_VERSION = 1
MARKER = ".complete"
DEMO_FORMATS = writers.WRITE_FORMATS  # the VOC original and its conversions
DEMO_SPLITS = ("train", "val")


def _regular(n: int, radius: float = 0.5, phase: float = -90.0) -> np.ndarray:
    angles = np.deg2rad(phase + 360.0 * np.arange(n) / n)
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star() -> np.ndarray:
    points = _regular(10)
    points[1::2] *= 0.45
    return points


UNIT_SHAPES = {  # name -> polygons in a unit square centred at 0 (a second polygon is a hole)
    "circle": [_regular(48)],
    "square": [np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])],
    "triangle": [_regular(3, 0.58) + [0, 0.14]],
    "star": [_star()],
    "cross": [np.array([[-0.17, -0.5], [0.17, -0.5], [0.17, -0.17], [0.5, -0.17], [0.5, 0.17], [0.17, 0.17],
                        [0.17, 0.5], [-0.17, 0.5], [-0.17, 0.17], [-0.5, 0.17], [-0.5, -0.17], [-0.17, -0.17]])],
    "hexagon": [_regular(6, 0.5, 0.0)],
    "diamond": [np.array([[0.0, -0.5], [0.32, 0.0], [0.0, 0.5], [-0.32, 0.0]])],
    "ring": [_regular(48), _regular(48, 0.27)],
    "arrow": [np.array([[-0.5, -0.14], [0.05, -0.14], [0.05, -0.4], [0.5, 0.0], [0.05, 0.4], [0.05, 0.14], [-0.5, 0.14]])],
    "ellipse": [_regular(48) * [1.0, 0.55]],
    "pentagon": [_regular(5)],
}


def shape_polygons(name: str, centre, size: float, aspect: float, angle: float) -> List[np.ndarray]:
    """The shape's polygons in pixels: scaled to `size`, stretched by `aspect` (w/h), rotated by `angle` degrees."""
    if name not in UNIT_SHAPES:
        raise ValueError(f"unknown shape {name!r}; valid: {', '.join(UNIT_SHAPES)}")
    theta = np.deg2rad(angle)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    scale = size * np.array([np.sqrt(aspect), 1 / np.sqrt(aspect)])
    return [(poly * scale) @ rot.T + np.asarray(centre) for poly in UNIT_SHAPES[name]]


def draw_shape(image: np.ndarray, polygons: List[np.ndarray], colour) -> None:
    """Fill the outer polygon, cut the holes back to zero, and outline in a darker shade."""
    pts = [np.round(p).astype(np.int32) for p in polygons]
    cv2.fillPoly(image, pts[:1], colour, lineType=cv2.LINE_AA)
    if len(pts) > 1:
        cv2.fillPoly(image, pts[1:], (0, 0, 0), lineType=cv2.LINE_AA)
    cv2.polylines(image, pts, True, tuple(max(1, int(c * 0.4)) for c in colour), 2, lineType=cv2.LINE_AA)


def _inside(polygons: List[np.ndarray], width: int, height: int) -> List[np.ndarray]:
    """Shift polygons so the outer one lies within the image (rotation can push corners out)."""
    low, high = polygons[0].min(axis=0), polygons[0].max(axis=0)
    shift = np.maximum(0, 1 - low) - np.maximum(0, high - np.array([width - 2, height - 2]))
    return [p + shift for p in polygons]


def _box(polygons: List[np.ndarray]) -> Tuple[float, float, float, float]:
    outer = polygons[0]
    return (*outer.min(axis=0).tolist(), *outer.max(axis=0).tolist())


@dataclass(frozen=True)
class DemoStyle:
    """What one demo dataset looks like; sizes are fractions of the image's shorter side."""

    classes: Tuple[str, ...]
    classes_file: str
    seed: int
    n_train: int = 400
    n_val: int = 100
    size_range: Tuple[float, float] = (0.16, 0.45)
    max_objects: int = 4
    clutter: int = 0
    rotation: float = 15.0
    difficult_rate: float = 0.05
    background_rate: float = 0.04


STYLES = {
    "demo": DemoStyle(("circle", "square", "triangle", "star", "cross"), "demo_classes.txt", seed=1),
    "alt": DemoStyle(("hexagon", "diamond", "ring", "arrow", "ellipse", "pentagon"), "demo_alt_classes.txt",
                     seed=2, n_train=300, size_range=(0.08, 0.3), max_objects=9, clutter=8, rotation=40.0),
}


def _style(style: str) -> DemoStyle:
    if style not in STYLES:
        raise ValueError(f"unknown demo style {style!r}; valid: {', '.join(STYLES)}")
    return STYLES[style]


def _background(rng: np.random.Generator, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """Low-contrast texture (a blurred colour field, optional stripes, fine noise) and its mean colour."""
    base = rng.uniform(60, 190, size=3).astype(np.float32)
    coarse = base + rng.normal(0, 25, size=(rng.integers(3, 9), rng.integers(3, 9), 3)).astype(np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.5:
        period, angle = rng.uniform(8, 40), rng.uniform(0, np.pi)
        phase = (np.arange(width, dtype=np.float32)[None, :] * np.cos(angle)
                 + np.arange(height, dtype=np.float32)[:, None] * np.sin(angle)) * (2 * np.pi / period)
        image += (12 * np.sin(phase))[..., None]
    image += rng.standard_normal(size=image.shape, dtype=np.float32) * 6
    return np.clip(image, 0, 255).astype(np.uint8), coarse.reshape(-1, 3).mean(axis=0)


def _colour(rng: np.random.Generator, avoid: np.ndarray) -> Tuple[int, int, int]:
    """A saturated colour far from the background's mean colour."""
    for _ in range(20):
        hsv = np.uint8([[[rng.integers(0, 180), rng.integers(150, 256), rng.integers(150, 256)]]])
        rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(float)
        if np.abs(rgb - avoid).sum() > 150:
            break
    return tuple(int(v) for v in rgb)


def make_image(style: DemoStyle, rng: np.random.Generator) -> Tuple[np.ndarray, List[tuple]]:
    """One image (HxWx3 RGB) and its objects [(class name, x1, y1, x2, y2, difficult)]."""
    height, width = int(rng.integers(240, 513)), int(rng.integers(320, 641))
    image, mean = _background(rng, height, width)
    for _ in range(style.clutter):  # thin lines and dots that are not objects
        p1, p2 = rng.uniform(0, [width, height]), rng.uniform(0, [width, height])
        cv2.line(image, tuple(int(v) for v in p1), tuple(int(v) for v in p2), _colour(rng, mean), int(rng.integers(1, 3)))
    if rng.random() < style.background_rate:
        return image, []
    objects: List[tuple] = []
    for _ in range(int(rng.integers(1, style.max_objects + 1))):
        for _try in range(20):
            cls = int(rng.integers(len(style.classes)))
            size = rng.uniform(*style.size_range) * min(height, width)
            centre = rng.uniform([size / 2, size / 2], [width - size / 2, height - size / 2])
            aspect = float(np.exp(rng.uniform(-0.2, 0.2)))
            angle = rng.uniform(-style.rotation, style.rotation)
            polygons = _inside(shape_polygons(style.classes[cls], centre, size, aspect, angle), width, height)
            box = _box(polygons)
            if not objects or box_iou_np(np.array(box), np.array([o[1:5] for o in objects])).max() < 0.1:
                break
        else:
            continue
        difficult = rng.random() < style.difficult_rate
        alpha = 0.35 if difficult else 1.0
        x1, y1 = max(0, int(box[0]) - 3), max(0, int(box[1]) - 3)
        x2, y2 = min(width, int(box[2]) + 4), min(height, int(box[3]) + 4)
        layer = np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
        draw_shape(layer, [q - [x1, y1] for q in polygons], _colour(rng, mean))
        mask = layer.any(axis=2)
        patch = image[y1:y2, x1:x2]
        patch[mask] = (alpha * layer[mask] + (1 - alpha) * patch[mask]).astype(np.uint8)
        objects.append((style.classes[cls], *box, difficult))
    return image, objects


def _write_xml(path: Path, image_name: str, width: int, height: int, objects: List[tuple]) -> None:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "demo"
    ET.SubElement(root, "filename").text = image_name
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    for name, x1, y1, x2, y2, difficult in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "difficult").text = str(int(difficult))
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), (x1, y1, x2, y2)):
            ET.SubElement(bndbox, tag).text = str(int(round(value)))
    ET.ElementTree(root).write(path, encoding="utf-8")


def _generate(style: DemoStyle, out: Path) -> None:
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for split_id, (split, count) in enumerate(zip(DEMO_SPLITS, (style.n_train, style.n_val))):
        ids = []
        for i in range(count):
            image_id = f"{split}_{i:05d}"
            image, objects = make_image(style, np.random.default_rng([style.seed, split_id, i]))
            ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
            (out / "JPEGImages" / f"{image_id}.jpg").write_bytes(data.tobytes())
            _write_xml(out / "Annotations" / f"{image_id}.xml", f"{image_id}.jpg", image.shape[1], image.shape[0], objects)
            ids.append(image_id)
        (out / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    (out / "classes.txt").write_text("\n".join(style.classes) + "\n", encoding="utf-8")


def _marker(style_name: str, style: DemoStyle, data_format: str = "voc") -> str:
    extra = {"format": data_format} if data_format != "voc" else {}
    return json.dumps({"style": style_name, "version": GENERATOR_VERSION, **asdict(style), **extra}, sort_keys=True)


def _is_complete(folder: Path, marker: str) -> bool:
    return (folder / MARKER).is_file() and (folder / MARKER).read_text(encoding="utf-8") == marker


def _ensure_voc(root: Path, style: str, spec: DemoStyle) -> Path:
    final = root / style
    marker = _marker(style, spec)
    if _is_complete(final, marker):
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{style}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"generating the {style} dataset in {final} ({spec.n_train} train, {spec.n_val} val images)")
    _generate(spec, tmp)
    (tmp / MARKER).write_text(marker, encoding="utf-8")
    if final.exists():
        old = root / f".{style}.old-{os.getpid()}"
        os.replace(final, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(tmp, final)
    except OSError:  # another process finished first: use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def read_demo_splits(voc: Path, classes: Tuple[str, ...]) -> Dict[str, List[Sample]]:
    """{split: Samples} of a generated VOC demo, read by annotations.parse_xml (the scan's XML parser)."""
    splits = {}
    for split in DEMO_SPLITS:
        ids = (voc / "ImageSets" / "Main" / f"{split}.txt").read_text(encoding="utf-8").split()
        records = [parse_xml(voc / "Annotations" / f"{i}.xml", voc / "JPEGImages", classes) for i in ids]
        unread = [r.where for r in records if r.sample is None]
        if unread:
            raise DatasetError(f"{voc}: demo files that do not read back: {', '.join(unread[:5])}; delete {voc}")
        splits[split] = [r.sample for r in records]
    return splits


def _ensure_converted(voc: Path, style: str, spec: DemoStyle, data_format: str) -> Path:
    final = voc.parent / f"{style}-{data_format}"
    marker = _marker(style, spec, data_format)
    if _is_complete(final, marker):
        return final
    shutil.rmtree(final, ignore_errors=True)  # incomplete, or of an older generator
    print(f"writing the {style} dataset as {data_format} in {final}")
    report = writers.write_dataset(final, read_demo_splits(voc, spec.classes), spec.classes, data_format)
    for message in report.warnings:
        print(f"warning: {message}", file=sys.stderr)
    (final / MARKER).write_text(marker, encoding="utf-8")
    return final


def ensure_demo_dataset(root=None, style: str = "demo", data_format: str = "voc") -> Path:
    """Path of the demo dataset `style` under `root` (default <repo>/demo_data), generated if absent or incomplete.

    `data_format` yolo or coco: the VOC original converted into `<root>/<style>-<format>/` (see the module
    docstring), written again when absent or incomplete."""
    spec = _style(style)
    if data_format not in DEMO_FORMATS:
        raise ValueError(f"unknown demo format {data_format!r}; valid: {', '.join(DEMO_FORMATS)}")
    voc = _ensure_voc(Path(root) if root is not None else REPO_ROOT / "demo_data", style, spec)
    return voc if data_format == "voc" else _ensure_converted(voc, style, spec, data_format)


def demo_classes_file(data_path) -> Optional[Path]:
    """model_data/<classes file> when `data_path` is a generated demo dataset, else None."""
    marker = Path(data_path) / MARKER
    if not marker.is_file():
        return None
    try:
        name = json.loads(marker.read_text(encoding="utf-8")).get("style")
    except (OSError, ValueError):
        return None
    return REPO_ROOT / "model_data" / STYLES[name].classes_file if name in STYLES else None


def make_parser() -> argparse.ArgumentParser:
    """The command's flags, generated from the schema (utils/core/settings.py)."""
    p = argparse.ArgumentParser(prog="python -m utils.data.demo_data",
                                description="Write the demo dataset if it is absent or incomplete, and print its path.")
    add_flags(p, "demo_data", grouped=False)
    return p


LAYOUTS = {"voc": "Annotations/, JPEGImages/, ImageSets/Main/<split>.txt",
           "yolo": "data.yaml, classes.txt, images/<split>/, labels/<split>/",
           "coco": "annotations/instances_<split>.json, images in <split>/"}


def describe_demo(path: Path, style: str, data_format: str) -> List[str]:
    """What the demo command says of the dataset at `path`: what is there, and how the scripts read it."""
    spec = _style(style)
    return [f"the {style} dataset in {data_format} format is in {path}: {LAYOUTS[data_format]}; splits train "
            f"({spec.n_train} images) and val ({spec.n_val}); classes {', '.join(spec.classes)}",
            f"use it with --data: python train.py --data {path} (get_map.py and ablate.py take the same --data)"]


def _run(args: argparse.Namespace) -> None:
    path = ensure_demo_dataset(args.root, args.style, args.demo_format)
    print("\n".join(describe_demo(path, args.style, args.demo_format)))
    print(path)


def main(argv=None) -> int:
    """The demo command with `argv` (default: the command line); returns the exit code (utils/core/cli.py)."""
    return run_main("demo_data", lambda: _run(make_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
