"""The one checkpoint factory of the tests, random BN statistics and random images."""
import numpy as np
import torch

from nets.yolo import YoloBody
from utils.core.config import DEFAULT_ANCHORS_MASK, read_anchors
from utils.engine.checkpoint import CHECKPOINT_FORMAT, save_atomic

ANCHORS_MASK = DEFAULT_ANCHORS_MASK  # the reference's [[3, 4, 5], [1, 2, 3]]
ANCHORS = [[8, 8], [24, 16], [16, 16], [32, 32], [64, 64], [96, 96]]
CLASSES = ["cat", "dog"]


def random_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BN layer non-trivial statistics so folding and file layouts are really exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


def random_model(num_classes: int, seed: int = 0) -> YoloBody:
    """A phi-0 model with random weights (seeded) and random BN statistics."""
    torch.manual_seed(seed)
    return random_bn(YoloBody(ANCHORS_MASK, num_classes), seed)


def make_checkpoint(path, input_size=(64, 96), obj_bias=2.0, seed: int = 0, *, class_names=CLASSES,
                    anchors=ANCHORS, head_std: float = 0.05, cls_bias=3.0, extra=None):
    """A checkpoint in our format of a random model (seeded, random BN statistics, head weights drawn with
    head_std). By default 2 classes whose random model still finds objects (objectness biased up by obj_bias,
    the class logits by cls_bias; None leaves a bias as drawn). extra: more keys of the checkpoint."""
    model = random_model(len(class_names), seed)
    with torch.no_grad():
        for head in (model.yolo_headP5[1], model.yolo_headP4[1]):
            head.weight.normal_(0, head_std)
            if obj_bias is not None:
                head.bias.view(3, -1)[:, 4] = obj_bias
            if cls_bias is not None:
                head.bias.view(3, -1)[:, 5] = cls_bias
    save_atomic({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "class_names": class_names,
                 "anchors": anchors, "anchors_mask": ANCHORS_MASK, "attention": "none",
                 "input_size": list(input_size), "scale_x_y": 1.0, **(extra or {})}, path)
    return path


def save_random_checkpoint(path, class_names, seed=1):
    """make_checkpoint for get_map: a random model whose scores are spread out (no biases set, head weights
    drawn small, the model_data anchors, 64x64), so the ranking of its detections, and with it the mAP, does
    not hang on rounding; on get_map's split both classes get AP ~0.1."""
    return make_checkpoint(path, (64, 64), None, seed, class_names=class_names, head_std=0.02, cls_bias=None,
                           anchors=read_anchors("model_data/yolo_anchors.txt").tolist(), extra={"epoch": 0})


def rgb(h, w, seed=0):
    """A random HxWx3 uint8 image."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
