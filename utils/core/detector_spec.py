"""DetectorSpec: the facts a detector owns, written with its weights and read back by every user.

A network's raw outputs become detections only with these facts: the class names, the anchors ((w, h) in
input pixels) and which of them each head uses (anchors_mask), the heads' strides (input pixels per cell,
P5 first), the input size ((h, w)), darknet's scale_x_y and whether images are letterboxed (aspect kept,
grey padding) or stretched; building the network again also needs its attention spec, FPN fusion and
whether its enc blocks carry SE-loss heads.

One frozen DetectorSpec holds them (strides may be () where they are not known: decoding reads each head's
stride from its output's size; only building graphs needs them). Checkpoints (utils/engine/loop.checkpoint_meta)
and ONNX metadata (utils/deploy/export.onnx_metadata) store `spec.record()`, a dict of plain values under the keys of
RECORD_KEYS; `DetectorSpec.from_record` reads it back, from today's files and from older ones:
  * checkpoints before fusion and se_loss were recorded (absent: concat, False);
  * checkpoints and ONNX graphs before strides and letterbox were recorded (absent: the model's strides,
    given by the reader, and letterbox on, the only way this project ever fed its networks).
Reference .pth and darknet .weights files carry no facts: nets/checkpoint.load_detector fills them from
its arguments and defaults. Nothing else reads these keys by name.
"""
import dataclasses
from dataclasses import dataclass
from typing import Mapping, Sequence, Tuple

import torch

RECORD_KEYS = ("class_names", "anchors", "anchors_mask", "strides", "input_size", "scale_x_y", "letterbox",
               "attention", "fusion", "se_loss")
REQUIRED_KEYS = ("class_names", "anchors", "anchors_mask", "input_size", "scale_x_y")  # in every file ever written
OLDER_DEFAULTS = {"attention": "none", "fusion": "concat", "se_loss": False, "letterbox": True}


@dataclass(frozen=True)
class DetectorSpec:
    """The facts of one detector (see the module docstring). Sequences are stored as tuples; input_size is (h, w)."""

    class_names: Tuple[str, ...]
    anchors: Tuple[Tuple[float, float], ...]
    anchors_mask: Tuple[Tuple[int, ...], ...]
    strides: Tuple[int, ...]
    input_size: Tuple[int, int]
    scale_x_y: float = 1.0
    letterbox: bool = True
    attention: str = "none"
    fusion: str = "concat"
    se_loss: bool = False

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "class_names", tuple(str(n) for n in self.class_names))
        set_(self, "anchors", tuple((float(w), float(h)) for w, h in _rows(self.anchors)))
        set_(self, "anchors_mask", tuple(tuple(int(i) for i in m) for m in self.anchors_mask))
        set_(self, "strides", tuple(int(s) for s in self.strides))
        set_(self, "input_size", tuple(int(s) for s in self.input_size))
        set_(self, "scale_x_y", float(self.scale_x_y))
        set_(self, "letterbox", bool(self.letterbox))
        set_(self, "se_loss", bool(self.se_loss))
        self._check()

    def _check(self) -> None:
        problems = []
        if len(self.input_size) != 2 or min(self.input_size) <= 0:
            problems.append(f"input_size must be (h, w) of positive pixels, found {self.input_size}")
        if self.strides and len(self.strides) != len(self.anchors_mask):
            problems.append(f"one stride per head: {len(self.anchors_mask)} heads in anchors_mask, "
                            f"strides {self.strides}")
        outside = [i for m in self.anchors_mask for i in m if not 0 <= i < len(self.anchors)]
        if outside:
            problems.append(f"anchors_mask {self.anchors_mask} names anchors {outside}, "
                            f"beyond the {len(self.anchors)} given")
        if problems:
            raise ValueError("detector spec: " + "; ".join(problems))

    @property
    def input_hw(self) -> Tuple[int, int]:
        return self.input_size

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def anchor_tensor(self) -> torch.Tensor:
        """Tensor[A, 2] float32 anchors (w, h) in input pixels, as decoding takes them."""
        return torch.tensor(self.anchors, dtype=torch.float32).view(-1, 2)

    def record(self) -> dict:
        """The spec as plain values (lists, not tuples) under RECORD_KEYS: what checkpoints and ONNX metadata store."""
        return {"class_names": list(self.class_names), "anchors": [list(a) for a in self.anchors],
                "anchors_mask": [list(m) for m in self.anchors_mask], "strides": list(self.strides),
                "input_size": list(self.input_size), "scale_x_y": self.scale_x_y, "letterbox": self.letterbox,
                "attention": self.attention, "fusion": self.fusion, "se_loss": self.se_loss}

    @classmethod
    def from_record(cls, record: Mapping, strides: Sequence[int], where: str = "the file") -> "DetectorSpec":
        """The spec in a checkpoint's or ONNX graph's record, today's or older (see the module docstring).
        `strides`: the model's, for records written before strides were; `where` names the file in errors."""
        missing = [k for k in REQUIRED_KEYS if record.get(k) is None]
        if missing:
            raise ValueError(f"{where}: its detector facts lack {', '.join(missing)}; "
                             f"expected {', '.join(REQUIRED_KEYS)}")
        values = {k: record[k] for k in RECORD_KEYS if record.get(k) is not None}
        values.setdefault("strides", tuple(strides))
        try:
            return cls(**{**OLDER_DEFAULTS, **values})
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None

    def replace(self, **changes) -> "DetectorSpec":
        """A copy with the given fields changed; a None value leaves its field as it is."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _rows(anchors) -> list:
    """[[w, h], ...] from a list, tuple, numpy array or Tensor of anchors."""
    if isinstance(anchors, torch.Tensor):
        return anchors.detach().cpu().view(-1, 2).tolist()
    return [tuple(a) for a in anchors]

