"""Drawing detections and heatmaps on RGB images, and writing images atomically."""
import colorsys
import io
from functools import lru_cache
from pathlib import Path
from typing import List, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from utils.core.fileio import write_bytes_atomic

Color = Tuple[int, int, int]
Rect = Tuple[float, float, float, float]  # x1, y1, x2, y2 pixels


def class_colors(num_classes: int) -> List[Color]:
    """One bright RGB colour per class, hues spread by the golden ratio so neighbours differ."""
    colors = []
    for i in range(num_classes):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.85, 0.95)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors


@lru_cache(maxsize=32)
def label_font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's built-in scalable font (no download) at `size` pixels."""
    return ImageFont.load_default(size=size)


def font_size(image_hw: Tuple[int, int]) -> int:
    """Label text height that stays readable from thumbnails to 8K images."""
    return int(np.clip(round(0.03 * min(image_hw)), 11, 96))


def _text_color(background: Color) -> Color:
    luminance = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (0, 0, 0) if luminance > 150 else (255, 255, 255)


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_label(box: Sequence[float], label_wh: Tuple[float, float], image_hw: Tuple[int, int],
                taken: Sequence[Rect]) -> Rect:
    """The (x1, y1, x2, y2) pixels of a box's label that covers none of the labels `taken`: above the box, else
    inside it at the top, below it, inside at the bottom, else the first of these moved down (then up) until
    free; within the image where it fits. When nothing is free it sits above the box (or inside, at the top)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    (tw, th), (h, w) = label_wh, image_hw
    tx = min(max(0.0, x1), max(0.0, w - tw))
    fits = [y for y in (y1 - th, y1, max(y1, y2), max(y1, y2) - th) if 0 <= y <= h - th]
    start = fits[0] if fits else max(0.0, min(y1, h - th))
    steps = [start + k * th for k in range(1, int(h // max(th, 1)) + 1)]
    steps += [start - k * th for k in range(1, int(h // max(th, 1)) + 1)]
    for y in fits + [y for y in steps if 0 <= y <= h - th]:
        if not any(_overlaps((tx, y, tx + tw, y + th), other) for other in taken):
            return tx, y, tx + tw, y + th
    return tx, start, tx + tw, start + th


def draw_detections(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
                    class_names: Sequence[str]) -> np.ndarray:
    """A copy of HxWx3 uint8 RGB `image` with boxes (Tensor-like [K, 4] xyxy image pixels) and
    'name score' labels in the class colour; a label sits above its box (or inside it at the top edge), and
    elsewhere (place_label) where it would cover the label of an earlier detection."""
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    h, w = image.shape[:2]
    font = label_font(font_size((h, w)))
    thickness = max(1, round(min(h, w) / 300))
    colors = class_colors(len(class_names))
    taken: List[Rect] = []
    for box, score, cls in zip(np.asarray(boxes), np.asarray(scores), np.asarray(class_ids)):
        x1, y1, x2, y2 = [float(v) for v in box]
        draw.rectangle([x1, y1, max(x1, x2), max(y1, y2)], outline=colors[int(cls)], width=thickness)
    for box, score, cls in zip(np.asarray(boxes), np.asarray(scores), np.asarray(class_ids)):
        color = colors[int(cls)]
        text = f"{class_names[int(cls)]} {float(score):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        rect = place_label(box, (right - left + 4, bottom - top + 4), (h, w), taken)
        taken.append(rect)
        draw.rectangle([rect[0], rect[1], rect[2] - 1, rect[3] - 1], fill=color)  # the corner pixels inclusive
        draw.text((rect[0] + 2 - left, rect[1] + 2 - top), text, fill=_text_color(color), font=font)
    return np.asarray(pil)


def heat_colors(heat8: np.ndarray) -> np.ndarray:
    """uint8 values (any shape) -> their heatmap colours, RGB uint8 (OpenCV's JET: 0 blue, 255 red)."""
    return cv2.cvtColor(cv2.applyColorMap(heat8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a heatmap (HxW float in [0, 1], any size; resized to the image) over HxWx3 uint8 RGB."""
    heat = cv2.resize(heat.astype(np.float32), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    heat8 = np.clip(heat * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.addWeighted(image, 1.0 - alpha, heat_colors(heat8), alpha, 0.0)


SCALE_BAR = (3, 12)  # the colour scale's left margin and bar width, pixels


def with_color_scale(image: np.ndarray, low: str, high: str, size: int = 11) -> np.ndarray:
    """HxWx3 uint8 RGB with the heatmap's colour scale on its right, on white: a bar from `high` (red, top)
    to `low` (blue, bottom), each end labelled with its value."""
    font = label_font(size)
    h = image.shape[0]
    margin, bar = SCALE_BAR
    width = margin + bar + 3 + max(round(font.getlength(t)) for t in (low, high)) + 3
    pil = Image.new("RGB", (width, h), "white")
    ramp = np.linspace(255, 0, h).round().astype(np.uint8)[:, None].repeat(bar, axis=1)  # top: the high end
    pil.paste(Image.fromarray(heat_colors(ramp)), (margin, 0))
    draw = ImageDraw.Draw(pil)
    for text, y in ((high, 0), (low, max(0, h - size - 3))):
        draw.text((margin + bar + 3, y), text, fill=(0, 0, 0), font=font)
    return np.concatenate([image, np.asarray(pil)], axis=1)


def labelled_heat(overlay: np.ndarray, title: str, low: str, high: str) -> np.ndarray:
    """A heatmap overlay (HxWx3 uint8 RGB) with its colour scale from `low` to `high` on the right (with_color_scale)
    and `title` above it: what the map is and where in the network it comes from."""
    return captioned(with_color_scale(overlay, low, high), [title])


def heat_panel(image: np.ndarray, heat: np.ndarray, box: np.ndarray, score: float, class_id: int,
               class_names: Sequence[str], lines: Sequence[str], side: int = 320) -> np.ndarray:
    """HxWx3 uint8 RGB resized to `side` pixels on its longer side, with `heat` (HxW in [0, 1] of its maximum)
    overlaid, its colour scale on the right and one box ([4] xyxy image pixels) drawn, under a caption of `lines`."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    boxes = np.asarray(box, np.float32).reshape(1, 4) * scale
    drawn = draw_detections(heatmap_overlay(small, heat), boxes, [score], [class_id], class_names)
    return captioned(with_color_scale(drawn, "0", "max"), lines)


def captioned(image: np.ndarray, lines: Sequence[str], size: int = 13) -> np.ndarray:
    """HxWx3 uint8 RGB under a white bar holding `lines` of black text (each cut to the image width)."""
    font = label_font(size)
    line_h = size + 4
    pil = Image.new("RGB", (image.shape[1], image.shape[0] + line_h * len(lines) + 4), "white")
    pil.paste(Image.fromarray(image), (0, line_h * len(lines) + 4))
    draw = ImageDraw.Draw(pil)
    for i, line in enumerate(lines):
        while len(line) > 1 and draw.textlength(line, font=font) > image.shape[1] - 4:
            line = line[:-4] + "..."
        draw.text((2, 2 + i * line_h), line, fill=(0, 0, 0), font=font)
    return np.asarray(pil)


def tile(panels: Sequence[np.ndarray], columns: int, gap: int = 4) -> np.ndarray:
    """HxWx3 uint8 panels (any sizes) in rows of `columns`, left to right, top-aligned on white, `gap` px apart."""
    columns = max(1, min(columns, len(panels)))
    rows = [panels[i:i + columns] for i in range(0, len(panels), columns)]
    widths = [max(p.shape[1] for p in panels[c::columns]) for c in range(columns)]
    heights = [max(p.shape[0] for p in row) for row in rows]
    out = np.full((sum(heights) + gap * (len(rows) - 1), sum(widths) + gap * (columns - 1), 3), 255, np.uint8)
    top = 0
    for row, height in zip(rows, heights):
        left = 0
        for panel, width in zip(row, widths):
            out[top:top + panel.shape[0], left:left + panel.shape[1]] = panel
            left += width + gap
        top += height + gap
    return out


def save_image(path, image: np.ndarray, quality: int = 95) -> None:
    """Save HxWx3 uint8 RGB atomically; the format follows the suffix (.jpg when it has none Pillow knows)."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "JPEG")
    buffer = io.BytesIO()
    options = {"quality": quality} if fmt == "JPEG" else {}
    Image.fromarray(image).save(buffer, format=fmt, **options)
    write_bytes_atomic(path, buffer.getvalue())
