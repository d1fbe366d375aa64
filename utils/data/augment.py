"""Training augmentation with OpenCV and NumPy: every function moves boxes exactly as it moves pixels.

Images are HxWx3 uint8 RGB; boxes are float32 [N, 4] xyxy in pixels of the image they travel with;
labels are int64 [N]. Randomness comes only from the `rng` argument (a numpy Generator).
"""
from dataclasses import dataclass
from typing import List, Tuple

import cv2
import numpy as np

from utils.core.settings import default
from utils.ops.boxes import Letterbox, image_to_input_boxes
from utils.ops.image import PAD_VALUE, resize

Annotated = Tuple[np.ndarray, np.ndarray, np.ndarray]  # image, boxes [N, 4], labels [N]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation knobs (the reference's values where it has them).

    jitter: aspect-ratio jitter, the new w/h is the old times rand(1-j, 1+j) / rand(1-j, 1+j).
    scale: range of the resized image's longer side relative to the input (single images).
    mosaic_scale: the same for each of the four mosaic tiles.
    flip: probability of a horizontal flip.
    hsv: hue, saturation and value gains; each is multiplied by a factor in [1-g, 1+g].
    min_box_size: boxes narrower or shorter than this (input pixels) after augmentation are dropped.
    fill: grey level of the padding.
    """

    jitter: float = default("jitter")
    scale: Tuple[float, float] = (0.5, 1.5)
    mosaic_scale: Tuple[float, float] = (0.4, 1.0)
    flip: float = default("flip")
    hsv: Tuple[float, float, float] = (0.1, 0.7, 0.4)
    min_box_size: float = 2.0
    fill: int = PAD_VALUE


def filter_boxes(boxes: np.ndarray, labels: np.ndarray, region: Tuple[float, float, float, float],
                 min_size: float) -> Tuple[np.ndarray, np.ndarray]:
    """Clip boxes [N, 4] to region (x1, y1, x2, y2) and drop those smaller than `min_size` on a side."""
    boxes = boxes.copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(region[0], region[2])
    boxes[:, 1::2] = boxes[:, 1::2].clip(region[1], region[3])
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
    return boxes[keep], labels[keep]


def random_size(rng: np.random.Generator, image_hw: Tuple[int, int], target_hw: Tuple[int, int],
                jitter: float, scale: Tuple[float, float]) -> Tuple[int, int]:
    """(new_w, new_h) with jittered aspect ratio and the longer side `scale` times the target's."""
    ih, iw = image_hw
    aspect = iw / ih * rng.uniform(1 - jitter, 1 + jitter) / rng.uniform(1 - jitter, 1 + jitter)
    s = rng.uniform(*scale)
    if aspect < 1:
        nh = s * target_hw[0]
        nw = nh * aspect
    else:
        nw = s * target_hw[1]
        nh = nw / aspect
    return max(1, int(nw)), max(1, int(nh))


def paste(canvas: np.ndarray, image: np.ndarray, x: int, y: int, region: Tuple[int, int, int, int]) -> None:
    """Copy `image` into `canvas` with its top-left at (x, y), only inside region (x1, y1, x2, y2)."""
    x1, y1 = max(x, region[0]), max(y, region[1])
    x2, y2 = min(x + image.shape[1], region[2]), min(y + image.shape[0], region[3])
    if x2 > x1 and y2 > y1:
        canvas[y1:y2, x1:x2] = image[y1 - y:y2 - y, x1 - x:x2 - x]


def resize_boxes(boxes: np.ndarray, image_hw: Tuple[int, int], new_wh: Tuple[int, int], x: int, y: int) -> np.ndarray:
    """Boxes of an image of `image_hw` resized to `new_wh` and placed with its top-left at (x, y)."""
    return image_to_input_boxes(boxes, Letterbox(new_wh[0] / image_hw[1], new_wh[1] / image_hw[0], x, y))


def hflip(image: np.ndarray, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mirror left-right: x -> width - x."""
    width = image.shape[1]
    flipped = boxes.copy()
    flipped[:, [0, 2]] = width - boxes[:, [2, 0]]
    return np.ascontiguousarray(image[:, ::-1]), flipped


def random_place(sample: Annotated, input_hw: Tuple[int, int], cfg: AugmentConfig, rng: np.random.Generator) -> Annotated:
    """Random aspect jitter, scale, position and flip of one image on a grey input-sized canvas."""
    image, boxes, labels = sample
    if rng.random() < cfg.flip:
        image, boxes = hflip(image, boxes)
    nw, nh = random_size(rng, image.shape[:2], input_hw, cfg.jitter, cfg.scale)
    # a random offset; negative when the image is larger than the input, so that it is cropped
    x, y = (int(v) for v in rng.random(2) * (input_hw[1] - nw, input_hw[0] - nh))
    canvas = np.full((input_hw[0], input_hw[1], 3), cfg.fill, dtype=np.uint8)
    paste(canvas, resize(image, (nw, nh)), x, y, (0, 0, input_hw[1], input_hw[0]))
    boxes = resize_boxes(boxes, image.shape[:2], (nw, nh), x, y)
    boxes, labels = filter_boxes(boxes, labels, (0, 0, input_hw[1], input_hw[0]), cfg.min_box_size)
    return canvas, boxes, labels


def mosaic(samples: List[Annotated], input_hw: Tuple[int, int], cfg: AugmentConfig, rng: np.random.Generator) -> Annotated:
    """Four images in the four quadrants around a random centre, each flipped and jittered on its own."""
    h, w = input_hw
    cx, cy = int(w * rng.uniform(0.3, 0.7)), int(h * rng.uniform(0.3, 0.7))
    canvas = np.full((h, w, 3), cfg.fill, dtype=np.uint8)
    regions = [(0, 0, cx, cy), (cx, 0, w, cy), (0, cy, cx, h), (cx, cy, w, h)]
    all_boxes, all_labels = [], []
    for (image, boxes, labels), region in zip(samples, regions):
        if rng.random() < cfg.flip:
            image, boxes = hflip(image, boxes)
        nw, nh = random_size(rng, image.shape[:2], input_hw, cfg.jitter, cfg.mosaic_scale)
        # the tile's corner that faces the centre sits on the centre
        x = cx - nw if region[0] == 0 else cx
        y = cy - nh if region[1] == 0 else cy
        paste(canvas, resize(image, (nw, nh)), x, y, region)
        placed = resize_boxes(boxes, image.shape[:2], (nw, nh), x, y)
        placed, kept = filter_boxes(placed, labels, region, cfg.min_box_size)
        all_boxes.append(placed)
        all_labels.append(kept)
    return canvas, np.concatenate(all_boxes).astype(np.float32), np.concatenate(all_labels)


def mixup(a: Annotated, b: Annotated) -> Annotated:
    """Average two input-sized images and keep the boxes of both."""
    image = cv2.addWeighted(a[0], 0.5, b[0], 0.5, 0.0)
    return image, np.concatenate([a[1], b[1]]).astype(np.float32), np.concatenate([a[2], b[2]])


def hsv_jitter(image: np.ndarray, gains: Tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """Multiply hue, saturation and value by random factors in [1-g, 1+g] through lookup tables."""
    r = rng.uniform(-1, 1, 3) * np.asarray(gains) + 1
    if np.allclose(r, 1):
        return image
    hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_RGB2HSV))
    x = np.arange(0, 256, dtype=np.float32)
    lut_hue = ((x * r[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * r[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
