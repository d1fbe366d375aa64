"""Training recipes: named, frozen sets of train.py arguments, and the YOLOLoss keywords they imply.

Keys are train.py's argument names (the dests of `train.make_parser`); flags given explicitly
override the recipe. None leaves the value to the data-dependent defaults (utils/engine/train_config.py).

"default" is this project's recipe for training from scratch on small data. "reference" is
bubbliiiing/yolov4-tiny-pytorch (https://github.com/bubbliiiing/yolov4-tiny-pytorch, commit 1bbb2f2):
the defaults of its train.py and the loss of its nets/yolo_training.py, reproduced by `loss_kwargs`.
What it cannot reproduce is listed in README.md ("The default recipe").
"""
from argparse import Namespace
from types import MappingProxyType
from typing import Any, Dict, Mapping, Sequence, Union

REFERENCE_INPUT = 416  # the reference weights objectness by 5 * (input / 416)^2 and classes by C / 80
REFERENCE_CLASSES = 80
HEAD_BALANCE = (0.4, 1.0)  # objectness weight of the P5 and P4 heads (the reference's balance[:2])

_DEFAULT = {
    # initialisation: PyTorch's conv init, head biases at priors (YoloBody.init_head_biases)
    "init": "prior", "auto_anchors": False,
    # optimizer and schedule; lr None: 0.01 for adam/adamw, 0.1 for sgd (per batch of 64)
    "optimizer": "adamw", "lr": None, "min_lr": None, "momentum": 0.937, "weight_decay": 5e-4,
    "lr_schedule": "cos", "warmup_epochs": 3.0, "epochs": None, "batch_size": 8, "input_size": None,
    "eval_period": None, "ema": True, "ema_tau": 2000.0, "amp": "auto", "channels_last": "on",
    # augmentation
    "mosaic": 0.5, "mixup": 0.0, "mosaic_ratio": 0.7, "jitter": 0.3, "scale": (0.5, 1.5), "flip": 0.5,
    "hsv": (0.1, 0.7, 0.4),
    # assignment and loss
    "assign_thres": 0.213, "neighbor_cells": True, "scale_x_y": 2.0, "hard_obj": False, "ignore_thres": 0.5,
    # box weight 8x the reference's: boxes tighter at the same mAP@0.5 (docs/recipe_measurements.md)
    "box_weight": 0.4, "obj_weight": 1.0, "cls_weight": 0.5, "obj_size_scale": False, "cls_count_scale": False,
    "label_smoothing": 0.0, "smooth_by_classes": False, "focal_loss": False, "bce_clip": 0.0,
    "box_loss": "ciou", "ciou_alpha_grad": False, "assigner": "shape", "topk": 10,
    # class target at positives: the predicted box's IoU, as objectness (docs/recipe_measurements.md)
    "iou_cls": True,
    # EncNet's SE-loss weight; 0 is off (the reference has no enc block)
    "se_loss": 0.0,
}

_REFERENCE = {
    **_DEFAULT,
    # weights_init: conv weights normal(0, 0.02), BN weights normal(1, 0.02), BN biases 0
    "init": "normal",
    # SGD (nesterov), Init_lr 1e-2 per batch of 64, Min_lr = Init_lr * 0.01, 300 epochs of batch 16
    "optimizer": "sgd", "lr": 0.01, "epochs": 300, "batch_size": 16, "input_size": 416, "eval_period": 10,
    "ema": False, "amp": "off", "channels_last": "off",
    # mosaic = False, mixup = False (the reference advises mosaic for training from scratch)
    "mosaic": 0.0, "mixup": 0.0, "scale": (0.25, 2.0),
    # best anchor only, own cell, no grid sensitivity, objectness target 1
    "assign_thres": 1.0, "neighbor_cells": False, "scale_x_y": 1.0, "hard_obj": True,
    # box_ratio 0.05, obj_ratio 5 * (input / 416)^2, cls_ratio C / 80
    "box_weight": 0.05, "obj_weight": 5.0, "cls_weight": 1.0, "obj_size_scale": True, "cls_count_scale": True,
    # BCELoss clips probabilities to [1e-7, 1 - 1e-7]; box_ciou keeps alpha in the graph
    "bce_clip": 1e-7, "ciou_alpha_grad": True, "smooth_by_classes": True, "iou_cls": False,
}

# What a run from before a setting existed ran with, where that is not today's default: a checkpoint
# or run_args.yaml without the key resumes or repeats as it was trained, not with the new default.
BEFORE_IT_EXISTED: Mapping[str, Any] = MappingProxyType({"iou_cls": False})

RECIPES: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {"default": MappingProxyType(_DEFAULT), "reference": MappingProxyType(_REFERENCE)})


def recipe_args(name: str, **overrides) -> Namespace:
    """A Namespace of the recipe's values with `overrides` on top (for tests and scripts)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    unknown = sorted(set(overrides) - set(RECIPES[name]))
    if unknown:
        raise ValueError(f"unknown recipe keys {', '.join(unknown)}; valid keys: {', '.join(RECIPES[name])}")
    return Namespace(**{**RECIPES[name], **overrides})


def loss_kwargs(args, num_classes: int, input_size: Union[int, Sequence[int]]) -> Dict[str, Any]:
    """YOLOLoss keyword arguments (all but anchors, num_classes, anchors_mask, strides) from train.py's args.

    `input_size` is the training input (an int or (h, w)). An argument that `args` lacks (a run_args.yaml
    from before it existed) takes the value runs had then (BEFORE_IT_EXISTED), else the default recipe's.
    """
    def get(key):
        return getattr(args, key, BEFORE_IT_EXISTED.get(key, _DEFAULT[key]))

    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    obj_weight = get("obj_weight") * (h * w / REFERENCE_INPUT ** 2 if get("obj_size_scale") else 1.0)
    cls_weight = get("cls_weight") * (num_classes / REFERENCE_CLASSES if get("cls_count_scale") else 1.0)
    return {"box_weight": get("box_weight"), "obj_weight": obj_weight, "cls_weight": cls_weight,
            "balance": HEAD_BALANCE, "ignore_thres": get("ignore_thres"), "assign_thres": get("assign_thres"),
            "iou_aware": not get("hard_obj"), "label_smoothing": get("label_smoothing"),
            "smooth_by_classes": get("smooth_by_classes"), "focal": get("focal_loss"),
            "scale_x_y": get("scale_x_y"), "neighbor_cells": get("neighbor_cells"), "bce_clip": get("bce_clip"),
            "box_loss": get("box_loss"), "ciou_alpha_grad": get("ciou_alpha_grad"), "se_weight": get("se_loss"),
            "assigner": get("assigner"), "topk": get("topk"), "iou_cls": get("iou_cls")}
