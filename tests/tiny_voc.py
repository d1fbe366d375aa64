"""A tiny generated VOC dataset for end-to-end tests of the scripts."""
from pathlib import Path

import cv2
import numpy as np

CLASSES = ["red", "blue"]
COLOURS = {"red": (255, 40, 40), "blue": (40, 40, 255)}


def write_tiny_voc(root: Path, n_images: int, seed: int = 0) -> Path:
    """Grey images with one or two filled rectangles per image, in VOC layout (train = val = all)."""
    rng = np.random.default_rng(seed)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(n_images):
        image = np.full((128, 128, 3), 120, np.uint8)
        objects = []
        for k in range(1 + i % 2):
            name = CLASSES[(i + k) % 2]
            w, h = rng.integers(36, 56, size=2)
            x1 = 8 + 64 * k if k else int(rng.integers(4, 128 - w - 4) // 2)
            y1 = int(rng.integers(4, 128 - h - 4))
            x1, w = min(x1, 124 - w), int(w)
            cv2.rectangle(image, (x1, y1), (x1 + w, y1 + int(h)), COLOURS[name][::-1], -1)
            objects.append((name, x1, y1, x1 + w, y1 + int(h)))
        stem = f"img{i:02d}"
        cv2.imwrite(str(root / "JPEGImages" / f"{stem}.png"), image)
        xml = "".join(f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
                      f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>" for n, a, b, c, d in objects)
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.png</filename><size><width>128</width><height>128</height>"
            f"<depth>3</depth></size>{xml}</annotation>")
        ids.append(stem)
    for split in ("train", "val"):
        (root / "ImageSets/Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root
