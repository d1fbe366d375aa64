"""Reading the small text files in model_data/ (class names, anchors) and checking the input size."""
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import torch

DEFAULT_ANCHORS_MASK = [[3, 4, 5], [1, 2, 3]]


def used_anchors(anchors_mask) -> list:
    """The sorted indices of the anchors some head uses (YOLOv4-tiny's heads leave anchor 0 unused)."""
    return sorted({i for mask in anchors_mask for i in mask})


def classes_text(names: Sequence[str]) -> str:
    """The text of a classes file holding `names` (what read_classes reads back)."""
    return "".join(f"{n}\n" for n in names)


def read_classes(path) -> List[str]:
    """One class name per line; blank lines ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classes file {path} does not exist; give one with --classes (one name per line)")
    lines = [(n, line.strip()) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)]
    names = [name for _, name in lines if name]
    if not names:
        raise ValueError(f"classes file {path} holds no class names")
    if len(set(names)) != len(names):
        raise ValueError(f"classes file {path} repeats a class name: {_repeats(lines)}; each class once")
    return names


def _repeats(lines: Sequence[Tuple[int, str]]) -> str:
    """[(line number, name)] -> "'red' on lines 1 and 4, ..." for the names that occur more than once."""
    at = {}
    for n, name in lines:
        if name:
            at.setdefault(name, []).append(str(n))
    return ", ".join(f"{name!r} on lines {', '.join(ns[:-1])} and {ns[-1]}" for name, ns in at.items() if len(ns) > 1)


def read_anchors(path) -> torch.Tensor:
    """Comma-separated `w,h` pairs (pixels at the training input size) -> Tensor[A, 2]."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"anchors file {path} does not exist; give one with --anchors")
    text = path.read_text(encoding="utf-8").replace("\n", ",")
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise ValueError(f"anchors file {path}: expected comma-separated numbers ({e})") from None
    if not values or len(values) % 2:
        raise ValueError(f"anchors file {path}: expected an even count of numbers (w,h pairs), found {len(values)}")
    return torch.tensor(values).view(-1, 2)


def parse_input_size(size) -> Tuple[int, int]:
    """An int or (h, w), each a positive multiple of 32 -> (h, w): the one check of a network input size."""
    hw = (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size)
    if len(hw) != 2 or min(hw) <= 0 or hw[0] % 32 or hw[1] % 32:
        raise ValueError(f"input size must be a positive multiple of 32 (e.g. 416 or 416,608), found {size}")
    return hw
