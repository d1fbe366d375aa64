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


def draw_detections(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
                    class_names: Sequence[str]) -> np.ndarray:
    """A copy of HxWx3 uint8 RGB `image` with boxes (Tensor-like [K, 4] xyxy image pixels) and
    'name score' labels in the class colour; labels sit above the box, or inside it at the top edge."""
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    h, w = image.shape[:2]
    size = font_size((h, w))
    font = label_font(size)
    thickness = max(1, round(min(h, w) / 300))
    colors = class_colors(len(class_names))
    for box, score, cls in zip(np.asarray(boxes), np.asarray(scores), np.asarray(class_ids)):
        color = colors[int(cls)]
        x1, y1, x2, y2 = [float(v) for v in box]
        draw.rectangle([x1, y1, max(x1, x2), max(y1, y2)], outline=color, width=thickness)
        text = f"{class_names[int(cls)]} {float(score):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 4, bottom - top + 4
        ty = y1 - th if y1 - th >= 0 else y1
        tx = min(max(0.0, x1), max(0.0, w - tw))
        draw.rectangle([tx, ty, tx + tw, ty + th], fill=color)
        draw.text((tx + 2 - left, ty + 2 - top), text, fill=_text_color(color), font=font)
    return np.asarray(pil)


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a heatmap (HxW float in [0, 1], any size; resized to the image) over HxWx3 uint8 RGB."""
    heat = cv2.resize(heat.astype(np.float32), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    heat8 = np.clip(heat * 255.0 + 0.5, 0, 255).astype(np.uint8)
    colored = cv2.cvtColor(cv2.applyColorMap(heat8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image, 1.0 - alpha, colored, alpha, 0.0)


def heat_panel(image: np.ndarray, heat: np.ndarray, box: np.ndarray, score: float, class_id: int,
               class_names: Sequence[str], lines: Sequence[str], side: int = 320) -> np.ndarray:
    """HxWx3 uint8 RGB resized to `side` pixels on its longer side, with `heat` (HxW in [0, 1]) overlaid and
    one box ([4] xyxy image pixels) drawn, under a caption of `lines`."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    boxes = np.asarray(box, np.float32).reshape(1, 4) * scale
    return captioned(draw_detections(heatmap_overlay(small, heat), boxes, [score], [class_id], class_names), lines)


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
