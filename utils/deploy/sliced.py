"""YOLO.detect(image, slice=...) on every backend: utils.ops.slicing's tiles and merge around the backend's own
pipeline (torch: utils.ops.pipeline.detect_letterboxed; onnx: the session, whose graph decodes and selects).

`yolo` is a detector with yolo.YOLO's attributes (this module does not import yolo.py, which is above it).
"""
from typing import Callable, List, Optional

import numpy as np
import torch
from torch import Tensor

from utils.ops.pipeline import Letterboxed, detect_letterboxed, to_image_pixels
from utils.ops.slicing import Slicing, as_slicing, detect_sliced


def slicing_of(yolo, value) -> Optional[Slicing]:
    """The Slicing of a detect() call: `value` (what utils.ops.slicing.as_slicing takes), or None for the
    detector's own (yolo.slice); None when neither slices."""
    return as_slicing(yolo.slice if value is None else value, yolo.input_hw)


def backend_runner(yolo) -> Callable[[List[Letterboxed]], List[Tensor]]:
    """The detector's pipeline on a batch of letterboxed images -> one Tensor[K_i, 6] per item in its pixels."""
    if yolo.backend == "torch":
        def run(items: List[Letterboxed]) -> List[Tensor]:
            with torch.inference_mode():
                return detect_letterboxed(yolo.model, items, yolo.spec, yolo.thresholds, yolo.device, yolo.amp,
                                          yolo.anchors)
        return run

    def run_graph(items: List[Letterboxed]) -> List[Tensor]:  # infer: Tensor[K, 7] with the batch index
        return to_image_pixels(yolo.infer(torch.from_numpy(np.stack([item.input for item in items]))), items)
    return run_graph


def yolo_detect_sliced(yolo, image: np.ndarray, slicing: Slicing) -> Tensor:
    """Sliced detection of an HxWx3 uint8 RGB image with the detector's thresholds -> Tensor[K, 6] image pixels."""
    return detect_sliced(image, yolo.spec, yolo.thresholds, slicing, backend_runner(yolo))
