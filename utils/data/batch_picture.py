"""train_batch0.jpg: a training batch as the model sees it, with its target boxes and class names.

The batch is the one `yolo_collate` makes (utils/data/dataloader.py): images uint8 Tensor[B, 3, H, W] RGB,
targets float32 Tensor[M, 6] rows (batch index, class, cx, cy, w, h), the box normalised to the input.
"""
import math
from pathlib import Path
from typing import Sequence, Tuple

import cv2
import numpy as np
import torch

from utils.core.fileio import write_bytes_atomic
from utils.core.plotting import plt

MAX_IMAGES = 16
MAX_SIDE = 1920  # the grid is scaled down to fit this many pixels a side
BORDER = (255, 255, 255)
Color = Tuple[int, int, int]


def class_color(index: int) -> Color:
    """The RGB colour of class `index`: matplotlib's tab20, repeating after 20 classes."""
    r, g, b, _ = plt.get_cmap("tab20")(index % 20)
    return int(r * 255), int(g * 255), int(b * 255)


def grid_shape(num_images: int) -> Tuple[int, int]:
    """(rows, columns) of the smallest near-square grid holding `num_images`."""
    cols = math.ceil(math.sqrt(num_images))
    return math.ceil(num_images / cols), cols


def tile_images(images: np.ndarray, scale: float) -> np.ndarray:
    """[B, H, W, 3] uint8 -> one grid image, each tile resized by `scale`, white lines between tiles."""
    rows, cols = grid_shape(len(images))
    h, w = round(images.shape[1] * scale), round(images.shape[2] * scale)
    grid = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i, image in enumerate(images):
        y, x = (i // cols) * h, (i % cols) * w
        grid[y:y + h, x:x + w] = image if scale == 1 else cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        cv2.rectangle(grid, (x, y), (x + w - 1, y + h - 1), BORDER, 1)
    return grid


def draw_box(grid: np.ndarray, box: Sequence[float], name: str, color: Color, thickness: int = 1) -> None:
    """A box outline (xyxy grid pixels) and, above its top-left corner, the class name on the box colour."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    cv2.rectangle(grid, (x1, y1), (x2, y2), color, thickness)
    (tw, th), base = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1)
    ty = y1 - th - base - 1 if y1 - th - base - 1 >= 0 else y1
    cv2.rectangle(grid, (x1, ty), (x1 + tw + 2, ty + th + base + 1), color, -1)
    dark = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2] < 150
    cv2.putText(grid, name, (x1 + 1, ty + th), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                (255, 255, 255) if dark else (0, 0, 0), 1, cv2.LINE_AA)


def batch_picture(images: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str]) -> np.ndarray:
    """HxWx3 uint8 RGB grid of the first MAX_IMAGES images of a batch with their target boxes drawn.

    Reads the batch and changes nothing in it.
    """
    batch = np.ascontiguousarray(images[:MAX_IMAGES].detach().cpu().permute(0, 2, 3, 1).numpy())  # B, H, W, 3
    b, h, w = batch.shape[:3]
    rows, cols = grid_shape(b)
    scale = min(1.0, MAX_SIDE / max(rows * h, cols * w))
    grid = tile_images(batch, scale)
    th, tw = round(h * scale), round(w * scale)
    thickness = max(1, round(min(th, tw) / 200))  # 2 pixels from 300-pixel tiles up
    for row in targets.detach().cpu().double().numpy():
        i, cls = int(row[0]), int(row[1])
        if i >= b:
            continue
        ox, oy = (i % cols) * tw, (i // cols) * th
        cx, cy, bw, bh = row[2] * tw, row[3] * th, row[4] * tw, row[5] * th
        name = class_names[cls] if 0 <= cls < len(class_names) else str(cls)
        box = (ox + cx - bw / 2, oy + cy - bh / 2, ox + cx + bw / 2, oy + cy + bh / 2)
        draw_box(grid, box, name, class_color(cls), thickness)
    return grid


def save_batch_picture(path, images: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str]) -> Path:
    """Write batch_picture(...) as a JPEG to `path`, atomically."""
    grid = batch_picture(images, targets, class_names)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError(f"{path}: OpenCV could not encode the batch picture as JPEG")
    write_bytes_atomic(path, encoded.tobytes())
    return Path(path)
