"""The peers' side of bench/bench_vs_peer.py that runs here: the dataset in YOLO format for ultralytics,
and the virtual environment the peers train in."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from utils.data.voc import Sample


def yolo_label_lines(sample: Sample) -> List[str]:
    """'class cx cy w h' per non-difficult box, normalised by the image size and clipped to [0, 1]."""
    keep = ~np.asarray(sample.difficult, dtype=bool)
    boxes = np.asarray(sample.boxes, dtype=np.float64).reshape(-1, 4)[keep]
    scale = np.array([sample.width, sample.height, sample.width, sample.height], dtype=np.float64)
    boxes = np.clip(boxes / scale, 0.0, 1.0)
    lines = []
    for (x1, y1, x2, y2), label in zip(boxes, np.asarray(sample.labels)[keep]):
        lines.append(f"{int(label)} {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {x2 - x1:.6f} {y2 - y1:.6f}")
    return lines


def yolo_data_yaml(root: Path, class_names: Sequence[str]) -> str:
    """An ultralytics detection data YAML for images/{train,val} under `root` (JSON is valid YAML)."""
    return json.dumps({"path": str(root.resolve()), "train": "images/train", "val": "images/val",
                       "names": list(class_names)}, indent=1) + "\n"


def write_yolo_image(sample: Sample, dst: Path) -> None:
    """Copy the image (a link could be re-saved: ultralytics fixes corrupt JPEGs); re-encode it when EXIF turns it."""
    from utils.ops.image import exif_rotates, open_image, read_image

    with open_image(sample.image_path) as image:
        rotates = exif_rotates(image)
    if rotates:  # write the pixels of the frame the boxes are in, with no EXIF left to disagree about
        import cv2
        pixels = read_image(sample.image_path, apply_exif=sample.exif_transpose)
        cv2.imwrite(str(dst.with_suffix(".png")), cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
        return
    shutil.copyfile(sample.image_path, dst)


def convert_to_yolo(splits: Dict[str, List[Sample]], class_names: Sequence[str], root: Path) -> Path:
    """Write `root`/images/<split>/, labels/<split>/ and data.yaml (from scratch); returns data.yaml."""
    shutil.rmtree(root, ignore_errors=True)
    for split, samples in splits.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i, sample in enumerate(samples):
            stem = f"{i:05d}_{Path(sample.image_path).stem}"
            write_yolo_image(sample, root / "images" / split / (stem + Path(sample.image_path).suffix.lower()))
            lines = yolo_label_lines(sample)
            (root / "labels" / split / f"{stem}.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    (root / "data.yaml").write_text(yolo_data_yaml(root, class_names), encoding="utf-8")
    return root / "data.yaml"


def yolo_val_images(root: Path) -> List[Path]:
    """The converted val images, in sample order (their names start with the sample index)."""
    return sorted((root / "images" / "val").iterdir())


def ensure_peer_venv(venv: Path, package: str) -> Path:
    """The venv's python with `package` installed, made on first use. It sees this interpreter's packages
    (torch above all, so the peers train with the same build as ours and nothing is downloaded twice)
    through a .pth file naming our site-packages, which --system-site-packages alone would not give when
    this interpreter is itself a virtual environment's."""
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if not python.exists():
        print(f"creating {venv}, with this interpreter's packages visible")
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
        link_our_packages(python)
    check = [str(python), "-c", "import importlib.metadata as m; print(m.version('ultralytics'))"]
    found = subprocess.run(check, capture_output=True, text=True)
    wanted = package.split("==")[1] if "==" in package else None
    if found.returncode != 0 or (wanted and found.stdout.strip() != wanted):
        print(f"installing {package} into {venv}")
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", package], check=True)
    return python




def link_our_packages(python: Path) -> None:
    """Write <venv site-packages>/bench-host-packages.pth listing this interpreter's site-packages."""
    ask = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.run([str(python), "-c", ask], capture_output=True, text=True, check=True).stdout.strip())
    ours = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (site / "bench-host-packages.pth").write_text("".join(f"{path}\n" for path in ours), encoding="utf-8")
