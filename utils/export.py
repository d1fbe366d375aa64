"""ONNX export (opset 17, dynamic batch) checked against torch, and ONNX Runtime sessions.

Two graphs can be written:
  raw: input `images` Tensor[B, 3, H, W] float in [0, 1]; outputs `out0`, `out1`, the raw head logits
       exactly as YoloBody.forward returns them (decode them with utils.boxes.decode_outputs).
  nms: same input; one output `detections` Tensor[K, 7]: batch index, x1, y1, x2, y2 (input pixels),
       score, class id, with decoding, score threshold, class-aware NMS and max_det per image inside.
H and W are fixed at export time (the input size); only the batch is dynamic.
"""
import os
import tempfile
import warnings
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torchvision
from torch import Tensor

from utils.boxes import decode_outputs

OPSET = 17


class Uint8NHWC(nn.Module):
    """Takes Tensor[B, H, W, 3] uint8 RGB and runs `model` on it as float NCHW in [0, 1].

    Used for the ONNX Runtime backend so the layout change and scaling run inside the runtime
    instead of as separate numpy passes.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor):
        return self.model(images.permute(0, 3, 1, 2).float() * (1.0 / 255.0))


class DecodeNMS(nn.Module):
    """YoloBody plus decoding and class-aware NMS, traceable for ONNX export (see module docstring).

    With `raw_outputs` the raw head outputs are returned too: (detections, out0, out1).
    """

    def __init__(self, model: nn.Module, anchors: Tensor, anchors_mask: Sequence[Sequence[int]],
                 input_hw: Tuple[int, int], scale_x_y: float = 1.0, conf: float = 0.5, nms: float = 0.3,
                 max_det: int = 300, raw_outputs: bool = False):
        super().__init__()
        self.model, self.raw_outputs = model, raw_outputs
        self.register_buffer("anchors", anchors.float().clone())
        self.anchors_mask = [list(m) for m in anchors_mask]
        self.input_hw = tuple(input_hw)
        self.scale_x_y, self.conf, self.nms, self.max_det = scale_x_y, conf, nms, max_det

    def forward(self, images: Tensor):
        raw = self.model(images)
        pred = decode_outputs(raw, self.anchors, self.anchors_mask, self.input_hw, self.scale_x_y)
        b, n, _ = pred.shape
        cls_prob, cls_id = pred[..., 5:].max(dim=-1)
        score = (pred[..., 4] * cls_prob).reshape(-1)
        batch = torch.arange(b, device=pred.device).view(-1, 1).expand(b, n).reshape(-1)
        boxes, cls_id = pred[..., :4].reshape(-1, 4), cls_id.reshape(-1)
        keep = torch.nonzero(score >= self.conf).view(-1)
        boxes, score, cls_id, batch = boxes[keep], score[keep], cls_id[keep], batch[keep]
        # one NMS over all images and classes: shift every (image, class) group to its own region
        group = (batch * (pred.shape[-1] - 5) + cls_id).float()
        span = torch.cat([boxes.abs().reshape(-1), boxes.new_zeros(1)]).max() * 2 + 1  # works when empty
        shift = group.view(-1, 1) * span
        kept = torchvision.ops.nms(boxes + shift, score, self.nms)  # sorted by score, descending
        boxes, score, cls_id, batch = boxes[kept], score[kept], cls_id[kept], batch[kept]
        # rank of each detection within its image, to cap detections per image
        onehot = (batch.view(-1, 1) == torch.arange(b, device=pred.device).view(1, -1)).long()
        rank = (onehot.cumsum(dim=0) * onehot).sum(dim=1)
        cap = torch.nonzero(rank <= self.max_det).view(-1)
        out = torch.cat([batch.view(-1, 1).float(), boxes, score.view(-1, 1), cls_id.view(-1, 1).float()], dim=1)
        return (out[cap], *raw) if self.raw_outputs else out[cap]


def ort_session(path, device: str = "cpu", threads: int = 0):
    """An onnxruntime InferenceSession on CPU (or CUDA when `device` is cuda and available)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    # idle ORT threads would otherwise spin and steal the cores that pre/post-processing run on
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def _export_atomic(module: nn.Module, path: Path, example: Tensor, output_names: Sequence[str],
                   dynamic_axes: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            # the TorchScript exporter is deprecated but handles torchvision's NMS; the new one needs onnxscript
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), tmp, opset_version=OPSET, dynamo=False,
                              input_names=["images"], output_names=list(output_names), dynamic_axes=dynamic_axes)
        import onnx
        onnx.checker.check_model(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_onnx(model: nn.Module, path, input_hw: Tuple[int, int], check: bool = True, atol: float = 1e-4,
                uint8_nhwc: bool = False) -> Path:
    """Write the raw graph of `model` (eval mode, on CPU) to `path`; with `check`, compare ONNX Runtime
    against torch on a batch of 2 random images and raise RuntimeError beyond `atol`.

    With `uint8_nhwc` the input `images` is Tensor[B, H, W, 3] uint8 RGB instead (see Uint8NHWC).
    """
    path = Path(path)
    model = model.eval().cpu()
    module = Uint8NHWC(model).eval() if uint8_nhwc else model
    example = torch.randint(0, 256, (1, *input_hw, 3), dtype=torch.uint8) if uint8_nhwc else torch.rand(1, 3, *input_hw)
    axes = {"images": {0: "batch"}, "out0": {0: "batch"}, "out1": {0: "batch"}}
    with torch.no_grad():
        _export_atomic(module, path, example, ["out0", "out1"], axes)
    if check:
        images = example.repeat(2, 1, 1, 1) if uint8_nhwc else torch.rand(2, 3, *input_hw)
        error = max_abs_error(module, path, images)
        if error > atol:
            raise RuntimeError(f"{path}: ONNX Runtime differs from torch by {error:.3g} (more than {atol:g})")
    return path


def export_onnx_nms(model: nn.Module, path, anchors: Tensor, anchors_mask, input_hw: Tuple[int, int],
                    scale_x_y: float = 1.0, conf: float = 0.5, nms: float = 0.3, max_det: int = 300,
                    uint8_nhwc: bool = False, raw_outputs: bool = False) -> Path:
    """Write the graph with decoding and NMS inside (output `detections`, see module docstring).

    `uint8_nhwc` takes Tensor[B, H, W, 3] uint8 input (see Uint8NHWC); `raw_outputs` adds out0, out1.
    """
    path = Path(path)
    model = model.eval().cpu()
    model = Uint8NHWC(model).eval() if uint8_nhwc else model
    module = DecodeNMS(model, anchors, anchors_mask, input_hw, scale_x_y, conf, nms, max_det, raw_outputs).eval()
    example = torch.randint(0, 256, (1, *input_hw, 3), dtype=torch.uint8) if uint8_nhwc else torch.rand(1, 3, *input_hw)
    names = ["detections", "out0", "out1"] if raw_outputs else ["detections"]
    axes = {"images": {0: "batch"}, "detections": {0: "count"}, "out0": {0: "batch"}, "out1": {0: "batch"}}
    with torch.no_grad():
        _export_atomic(module, path, example, names, {k: v for k, v in axes.items() if k in names + ["images"]})
    return path


def max_abs_error(model: nn.Module, path, images: Tensor) -> float:
    """Largest absolute difference between the torch model and the raw ONNX graph on `images`."""
    with torch.no_grad():
        expected = [t.numpy() for t in model(images)]
    found = ort_session(path).run(None, {"images": images.numpy()})
    return max(float(np.abs(e - f).max()) for e, f in zip(expected, found))
