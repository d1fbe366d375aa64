"""Reading and writing darknet `.weights` files for YoloBody (layout of yolov4-tiny.cfg).

A file is a header (int32 major, minor, revision, then `seen` as int64 when major*10+minor >= 2,
else int32) followed by float32 values per `[convolutional]` layer in cfg order: for layers with
batch_normalize=1 the BN beta, gamma, running mean, running variance, then the kernel; for the two
output convs the bias, then the kernel. Kernels are stored [out, in, kh, kw], as in PyTorch.
"""
from pathlib import Path
from typing import Iterator, List, Tuple

import numpy as np
import torch
import torch.nn as nn
from utils.core.fileio import atomic_open

HEADER_INT32 = 3


def darknet_layers(model: nn.Module) -> List[Tuple[str, nn.Conv2d, nn.BatchNorm2d]]:
    """The model's convolutions in the order of yolov4-tiny.cfg: (name, conv, bn or None)."""
    names = ["backbone.conv1", "backbone.conv2"]
    for block in ("resblock_body1", "resblock_body2", "resblock_body3"):
        names += [f"backbone.{block}.conv{i}" for i in (1, 2, 3, 4)]
    # cfg: conv3, conv_for_P5, head P5; `[route] layers=-4` back to conv_for_P5; upsample conv; head P4
    names += ["backbone.conv3", "conv_for_P5", "yolo_headP5.0", "yolo_headP5.1",
              "upsample.upsample.0", "yolo_headP4.0", "yolo_headP4.1"]
    modules = dict(model.named_modules())
    layers = []
    for name in names:
        module = modules[name]
        if isinstance(module, nn.Conv2d):
            layers.append((name, module, None))
        else:
            layers.append((name, module.conv, module.bn))
    return layers


def layer_tensors(conv: nn.Conv2d, bn) -> List[torch.Tensor]:
    """The tensors of one layer in file order."""
    if bn is None:
        return [conv.bias, conv.weight]
    return [bn.bias, bn.weight, bn.running_mean, bn.running_var, conv.weight]


def expected_floats(model: nn.Module) -> int:
    """How many float32 values a darknet file for `model` holds after its header."""
    return sum(t.numel() for _, conv, bn in darknet_layers(model) for t in layer_tensors(conv, bn))


def header_bytes(major: int, minor: int) -> int:
    return HEADER_INT32 * 4 + (8 if major * 10 + minor >= 2 else 4)


def classes_for_floats(model: nn.Module, found: int):
    """The class count a file of `found` floats fits with this model's layout, or None if none does."""
    # each class adds one output channel per anchor to both heads: kernel plus bias
    heads = (model.yolo_headP5[1], model.yolo_headP4[1])
    per_class = sum(len(mask) * (conv.in_channels + 1) for mask, conv in zip(model.anchors_mask, heads))
    diff = found - expected_floats(model)
    classes = model.num_classes + diff // per_class
    return classes if diff % per_class == 0 and classes >= 1 else None


def darknet_file_classes(model: nn.Module, path):
    """The class count of the yolov4-tiny in a darknet `.weights` file, or None when it is not one."""
    data = Path(path).read_bytes()
    if len(data) < header_bytes(0, 2):
        return None
    major, minor, _ = np.frombuffer(data, dtype="<i4", count=HEADER_INT32)
    body = len(data) - header_bytes(int(major), int(minor))
    return classes_for_floats(model, body // 4) if body % 4 == 0 else None


def _class_hint(model: nn.Module, found: int) -> str:
    """Explain a size mismatch: another class count if the difference fits one, else another network."""
    classes = classes_for_floats(model, found)
    if classes is not None:
        return (f"the file fits {classes} classes but the model has {model.num_classes}; "
                f"give a classes file with {classes} names (--classes)")
    return "the file is truncated or is not a yolov4-tiny network (compare with the cfg in the README)"


def load_darknet_weights(model: nn.Module, path) -> int:
    """Fill `model` (a YoloBody) from a darknet `.weights` file; returns the number of floats read.

    Attention blocks have no counterpart in darknet and are left as they are. Raises ValueError
    naming the file with expected vs found float (or class) counts when the file does not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"darknet weights file {path} does not exist")
    data = path.read_bytes()
    if len(data) < header_bytes(0, 2):
        raise ValueError(f"{path}: {len(data)} bytes is too short for a darknet .weights header")
    major, minor, revision = np.frombuffer(data, dtype="<i4", count=HEADER_INT32)
    if not (0 <= major < 1000 and 0 <= minor < 1000):
        raise ValueError(f"{path}: header version {major}.{minor}.{revision} is not a darknet .weights file")
    body = data[header_bytes(int(major), int(minor)):]
    expected = expected_floats(model)
    found = len(body) / 4
    if found != expected:
        raise ValueError(f"{path}: expected {expected:,} floats for yolov4-tiny with {model.num_classes} classes, "
                         f"found {found:,.0f}; " + _class_hint(model, int(found)))
    values = torch.from_numpy(np.frombuffer(body, dtype="<f4").copy())
    offset = 0
    with torch.no_grad():
        for _, conv, bn in darknet_layers(model):
            for tensor in layer_tensors(conv, bn):
                n = tensor.numel()
                tensor.copy_(values[offset:offset + n].view_as(tensor))
                offset += n
    return offset


def _chunks(model: nn.Module) -> Iterator[bytes]:
    for _, conv, bn in darknet_layers(model):
        for tensor in layer_tensors(conv, bn):
            yield tensor.detach().cpu().float().numpy().astype("<f4").tobytes()


def save_darknet_weights(model: nn.Module, path, major: int = 0, minor: int = 2, revision: int = 5,
                         seen: int = 0) -> None:
    """Write `model` (a YoloBody) as a darknet `.weights` file, atomically."""
    seen_type = "<i8" if major * 10 + minor >= 2 else "<i4"
    with atomic_open(path, "wb") as f:
        f.write(np.array([major, minor, revision], dtype="<i4").tobytes())
        f.write(np.array([seen], dtype=seen_type).tobytes())
        for chunk in _chunks(model):
            f.write(chunk)
