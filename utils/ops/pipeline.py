"""The torch detection pipeline, composed once: letterbox -> forward -> decode -> select -> image pixels.

`detect_letterboxed` (already letterboxed images, as a DataLoader's workers make them: utils/eval/detect.py)
and `detect_images` (RGB arrays: yolo.YOLO.detect) run it whole. Its pieces are what the other users call:
YOLO's preprocess / forward / postprocess (timed apart by predict --speed), the CAM (utils/deploy/cam.py,
which keeps the graph and needs the rows kept), and the exported graph (utils.deploy.export.RawToDetections
traces decode_select). The facts come from the detector's DetectorSpec (utils/core/detector_spec.py); the
thresholds are a Thresholds.
"""
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from utils.core.settings import default
from utils.core.amp import autocast
from utils.core.detector_spec import DetectorSpec
from utils.ops.boxes import (MAX_NMS, Letterbox, decode_candidates, detection_rows, detections_to_image,
                             rows_to_detections, split_by_image)
from utils.ops.image import letterbox_image, to_unit_float


class Thresholds(NamedTuple):
    """Which decoded boxes become detections: score >= conf, NMS at IoU nms (class-aware; with `agnostic`, across
    classes), at most max_det per image."""

    conf: float = default("conf")
    nms: float = default("nms")
    max_det: int = default("max_det")
    agnostic: bool = default("agnostic_nms")


class Letterboxed(NamedTuple):
    """An image made ready for the network: input (HxWx3 uint8 at the input size), how it maps (Letterbox),
    and the image's own (h, w)."""

    input: np.ndarray
    lb: Letterbox
    image_hw: Tuple[int, int]


def letterbox_input(image: np.ndarray, spec: DetectorSpec) -> Letterboxed:
    """HxWx3 uint8 RGB -> Letterboxed at the spec's input size, letterboxed or stretched as the spec says."""
    resized, lb = letterbox_image(image, spec.input_size, spec.letterbox)
    return Letterboxed(resized, lb, tuple(image.shape[:2]))


def input_batch(inputs: Sequence[np.ndarray], device, float_on_device: bool = True) -> Tensor:
    """HxWx3 uint8 inputs -> Tensor[B, 3, H, W] float in [0, 1] on `device`; the HWC memory viewed as NCHW is
    channels-last, which the network keeps. With `float_on_device` the uint8 pixels travel and become floats
    there (YOLO: a quarter of the transfer); else on the CPU first (evaluation, whose numbers were made so:
    CUDA divides by 255 as a multiply by 1/255, which can differ from the CPU's division in the last bit)."""
    batch = torch.from_numpy(inputs[0])[None] if len(inputs) == 1 else torch.from_numpy(np.stack(inputs))
    batch = batch.permute(0, 3, 1, 2)
    if float_on_device:
        return to_unit_float(batch.to(device, non_blocking=True))
    return to_unit_float(batch).to(device)


def forward_fp32(model, batch: Tensor, amp: Optional[torch.dtype] = None) -> List[Tensor]:
    """The network's raw head outputs (P5 first) for a batch, run under autocast `amp` (None: fp32), as fp32."""
    with autocast(batch.device, amp):
        outputs = model(batch)
    return [o.float() for o in outputs]


def decode_select_rows(outputs: Sequence[Tensor], anchors: Tensor, anchors_mask, input_hw: Tuple[int, int],
                       scale_x_y: float, thresholds: Thresholds, num_images: int,
                       max_nms: int = MAX_NMS) -> Tuple[Tensor, Tensor, Tensor]:
    """(decode_candidates' pred and image index, the rows select_detections keeps, in its order)."""
    pred, image = decode_candidates(outputs, anchors, anchors_mask, input_hw, scale_x_y, thresholds.conf)
    rows = detection_rows(pred, image, num_images, thresholds.conf, thresholds.nms, thresholds.max_det, max_nms,
                          thresholds.agnostic)
    return pred, image, rows


def decode_select(outputs: Sequence[Tensor], anchors: Tensor, anchors_mask, input_hw: Tuple[int, int],
                  scale_x_y: float, thresholds: Thresholds, num_images: int, max_nms: int = MAX_NMS) -> Tensor:
    """Raw outputs -> select_detections' Tensor[K, 7] (image index, x1, y1, x2, y2 input pixels, score, class id):
    decoding, score threshold, candidate cap, NMS (class-aware unless thresholds.agnostic), max_det. Traceable (the
    exported graphs)."""
    pred, image, rows = decode_select_rows(outputs, anchors, anchors_mask, input_hw, scale_x_y, thresholds,
                                           num_images, max_nms)
    return rows_to_detections(pred, image, rows)


def spec_decode_select(outputs: Sequence[Tensor], spec: DetectorSpec, thresholds: Thresholds, num_images: int,
                       anchors: Optional[Tensor] = None) -> Tensor:
    """decode_select with the spec's facts (`anchors`: spec.anchor_tensor() made once by the caller, or None)."""
    anchors = spec.anchor_tensor() if anchors is None else anchors
    return decode_select(outputs, anchors, spec.anchors_mask, spec.input_size, spec.scale_x_y, thresholds, num_images)


def to_image_pixels(det: Tensor, items: Sequence[Letterboxed]) -> List[Tensor]:
    """select_detections' Tensor[K, 7] for a batch -> one Tensor[K_i, 6] per item in its image's pixels
    (x1, y1, x2, y2 clipped, boxes without area dropped, score, class id), on the CPU."""
    return [detections_to_image(found.cpu(), item.lb, item.image_hw)
            for found, item in zip(split_by_image(det, len(items)), items)]


def detect_letterboxed(model, items: Sequence[Letterboxed], spec: DetectorSpec, thresholds: Thresholds,
                       device, amp: Optional[torch.dtype] = None, anchors: Optional[Tensor] = None,
                       float_on_device: bool = True) -> List[Tensor]:
    """The pipeline on letterboxed images: forward (autocast `amp`), decode and select in fp32, image pixels.
    Returns one Tensor[K_i, 6] per item (to_image_pixels). The model must be in eval mode."""
    with torch.no_grad():
        outputs = forward_fp32(model, input_batch([item.input for item in items], device, float_on_device), amp)
        det = spec_decode_select(outputs, spec, thresholds, len(items), anchors)
    return to_image_pixels(det, items)


def detect_images(model, images: Sequence[np.ndarray], spec: DetectorSpec, thresholds: Thresholds, device,
                  amp: Optional[torch.dtype] = None, anchors: Optional[Tensor] = None) -> List[Tensor]:
    """The whole pipeline on HxWx3 uint8 RGB images: letterbox_input, then detect_letterboxed."""
    return detect_letterboxed(model, [letterbox_input(image, spec) for image in images], spec, thresholds, device,
                              amp, anchors)
