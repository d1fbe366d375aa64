"""Sliced inference for small objects: the image cut into overlapping tiles, each run through the one detection
pipeline (utils/ops/pipeline.py), the detections mapped back and merged across tiles.

The method is SAHI's (Akyon et al., "Slicing Aided Hyper Inference and Fine-tuning for Small Object Detection",
ICIP 2022, https://github.com/obss/sahi): a small object that the whole image, shrunk to the network's input,
makes a few pixels wide keeps its own size in a tile of the input's size.

Tiles: `tile` image pixels (h, w), neighbours `overlap` of a tile apart, the last row and column shifted back so
that every tile lies inside the image (a side shorter than the tile is one tile of that side). With `full`, the
whole image is detected too (objects larger than a tile). Every tile is letterboxed to the input size, as an
image is, so a tile of the input's size goes in unscaled.

Merging (merge_tiles): NMS across tiles, not box merging. A box that ends within EDGE_MARGIN of a tile edge that
lies inside the image is "cut" (the tile saw part of its object); cut boxes rank below whole ones, then by score;
NMS at the thresholds' IoU (class-aware, or class-agnostic) runs over every tile and the whole image at once, and
a cut box mostly inside a kept box of its class (intersection over its own area >= CUT_INSIDE) goes too. So an
object cut by a tile border comes out once, as the whole box of the tile that saw it whole (the overlap makes
one exist for objects smaller than it). NMS keeps boxes as the network predicted them; box merging (SAHI's
NMM) would join neighbouring small objects of a class into one box. Objects larger than the overlap that only
tiles see may come out as pieces: keep `full` on for them.
"""
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torchvision
from torch import Tensor

from utils.core.detector_spec import DetectorSpec
from utils.core.settings import default
from utils.ops.pipeline import Letterboxed, Thresholds, letterbox_input

EDGE_MARGIN = 2.0  # image pixels: a box this close to an inner tile edge was cut by it
CUT_INSIDE = 0.5  # a cut box this much inside a kept box of its class (over its own area) is a piece of it
TILE_BATCH = 16  # tiles per forward pass
Size = Union[int, Tuple[int, int]]


class Slicing(NamedTuple):
    """How to slice: tile (h, w) in image pixels (an int: square; None: the network's input size), overlap as a
    fraction of the tile in [0, 1), and whether the whole image is detected too."""

    tile: Optional[Size] = None
    overlap: float = default("overlap")
    full: bool = default("slice_full")


def flag_slicing(slice: int, overlap: float, slice_full: bool) -> Optional[Slicing]:
    """The flags --slice, --overlap and --slice-full (get_map.py's and predict.py's) as a Slicing, None without
    --slice; ValueError when one is out of range."""
    return as_slicing(Slicing(slice, overlap, slice_full), (1, 1)) if slice else None


def slice_settings(value, input_hw: Tuple[int, int]) -> dict:
    """A detector's `slice` as get_map.py's flags (slice, overlap, slice_full); {} for no slicing. get_map.py slices
    in square tiles: ValueError for another tile."""
    s = as_slicing(value, input_hw)
    if s is None:
        return {}
    if s.tile[0] != s.tile[1]:
        raise ValueError(f"slice {s.tile}: get_map.py --slice scores square tiles (N x N); give one size")
    return {"slice": int(s.tile[0]), "overlap": s.overlap, "slice_full": s.full}


def as_slicing(value, input_hw: Tuple[int, int]) -> Optional[Slicing]:
    """What YOLO.detect's `slice` takes -> a Slicing with its tile as (h, w), or None for no slicing.

    None, False or 0: off; True: tiles of the input size; N: N x N tiles; (h, w); or a Slicing (tile 0: off)."""
    if value is None or value is False or (isinstance(value, int) and not isinstance(value, bool) and value == 0):
        return None
    s = value if isinstance(value, Slicing) else Slicing(None if value is True else value)
    tile = tuple(input_hw) if s.tile is None or s.tile is True else s.tile
    tile = (tile, tile) if isinstance(tile, (int, np.integer)) else tuple(tile)
    if tile == (0, 0):
        return None
    if len(tile) != 2 or min(tile) < 1:
        raise ValueError(f"--slice {s.tile}: expected a tile size in pixels (N, or (h, w)) of at least 1, "
                         "or 0 for no slicing")
    if not 0 <= s.overlap < 1:
        raise ValueError(f"--overlap {s.overlap}: expected a fraction of the tile in [0, 1), e.g. 0.2")
    return Slicing((int(tile[0]), int(tile[1])), float(s.overlap), bool(s.full))


def _starts(length: int, tile: int, overlap: float) -> List[int]:
    """Tile starts along one side: `tile - round(tile * overlap)` apart, the last ending at `length`."""
    if length <= tile:
        return [0]
    step = max(1, tile - int(round(tile * overlap)))
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def tile_windows(image_hw: Tuple[int, int], slicing: Slicing) -> List[Tuple[int, int, int, int]]:
    """(x1, y1, x2, y2) image pixels of each tile, row by row; every one inside the image."""
    (h, w), (th, tw) = image_hw, slicing.tile
    return [(x, y, min(x + tw, w), min(y + th, h))
            for y in _starts(h, th, slicing.overlap) for x in _starts(w, tw, slicing.overlap)]


def slice_windows(image_hw: Tuple[int, int], slicing: Slicing) -> List[Tuple[int, int, int, int]]:
    """The windows detected: the tiles, then the whole image when slicing.full and it is not a tile already."""
    tiles = tile_windows(image_hw, slicing)
    whole = (0, 0, image_hw[1], image_hw[0])
    return tiles + [whole] if slicing.full and whole not in tiles else tiles


def to_image_coordinates(det: Tensor, window: Tuple[int, int, int, int]) -> Tensor:
    """Tensor[K, 6] boxes in a window's pixels (x1, y1, x2, y2, score, class) -> in image pixels (exact: a shift)."""
    det = det.clone()
    det[:, 0:4:2] += window[0]
    det[:, 1:4:2] += window[1]
    return det


def cut_boxes(boxes: Tensor, window: Tuple[int, int, int, int], image_hw: Tuple[int, int],
              margin: float = EDGE_MARGIN) -> Tensor:
    """Tensor[K] bool: boxes (image pixels) of `window` that end within `margin` of one of its edges that lies
    inside the image (the window saw only part of their object)."""
    x1, y1, x2, y2 = window
    h, w = image_hw
    cut = torch.zeros(len(boxes), dtype=torch.bool)
    for side, edge, inner in ((0, x1, x1 > 0), (1, y1, y1 > 0), (2, x2, x2 < w), (3, y2, y2 < h)):
        if inner:
            cut |= (boxes[:, side] - edge).abs() <= margin
    return cut


def merge_tiles(per_window: Sequence[Tensor], windows: Sequence[Tuple[int, int, int, int]],
                image_hw: Tuple[int, int], thresholds: Thresholds) -> Tensor:
    """Detections of each window (Tensor[K_i, 6] in window pixels) -> one Tensor[K, 6] in image pixels, best first:
    NMS across windows with cut boxes ranked last, then cut boxes inside kept ones dropped (module docstring)."""
    det = torch.cat([to_image_coordinates(d.float(), win) for d, win in zip(per_window, windows)]
                    + [torch.zeros(0, 6)])
    cut = torch.cat([cut_boxes(to_image_coordinates(d.float(), win)[:, :4], win, image_hw)
                     for d, win in zip(per_window, windows)] + [torch.zeros(0, dtype=torch.bool)])
    group = torch.zeros(len(det), dtype=torch.long) if thresholds.agnostic else det[:, 5].long()
    rank = det[:, 4] - 2.0 * cut.float()  # scores lie in [0, 1]: every whole box before every cut one
    kept = torchvision.ops.batched_nms(det[:, :4], rank, group, thresholds.nms)
    kept = kept[~_pieces(det[kept, :4], cut[kept], group[kept])]
    kept = kept[det[kept, 4].argsort(descending=True, stable=True)]
    return det[kept[:thresholds.max_det]]


def _pieces(boxes: Tensor, cut: Tensor, group: Tensor) -> Tensor:
    """Tensor[K] bool: cut boxes whose area lies CUT_INSIDE or more inside a whole box of their group
    (boxes in NMS order: whole ones first)."""
    pieces = torch.zeros(len(boxes), dtype=torch.bool)
    whole = ~cut
    if not cut.any() or not whole.any():
        return pieces
    a, b = boxes[cut], boxes[whole]
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area = (a[:, 2:] - a[:, :2]).clamp(min=1e-9).prod(dim=1)
    same = group[cut][:, None] == group[whole][None, :]
    pieces[cut] = ((inter / area[:, None] >= CUT_INSIDE) & same).any(dim=1)
    return pieces


def window_items(image: np.ndarray, windows: Sequence[Tuple[int, int, int, int]],
                 spec: DetectorSpec) -> List[Letterboxed]:
    """Each window of an HxWx3 image cut out and letterboxed to the spec's input size."""
    return [letterbox_input(np.ascontiguousarray(image[y1:y2, x1:x2]), spec) for x1, y1, x2, y2 in windows]


def detect_sliced(image: np.ndarray, spec: DetectorSpec, thresholds: Thresholds, slicing: Slicing,
                  run: Callable[[List[Letterboxed]], List[Tensor]], batch: int = TILE_BATCH) -> Tensor:
    """Sliced detection of an HxWx3 uint8 RGB image -> Tensor[K, 6] in image pixels (x1, y1, x2, y2, score, class).

    run: a backend's pipeline on letterboxed images -> one Tensor[K_i, 6] per item in its own pixels
    (utils.ops.pipeline.detect_letterboxed for torch); called with at most `batch` windows at a time."""
    image_hw = tuple(image.shape[:2])
    windows = slice_windows(image_hw, slicing)
    found: List[Tensor] = []
    for start in range(0, len(windows), batch):
        found += run(window_items(image, windows[start:start + batch], spec))
    return merge_tiles(found, windows, image_hw, thresholds)
