"""Training recipes: named, frozen sets of train.py arguments, and the --config files over them.

Keys are train.py's argument names (the dests of `train.make_parser`); flags given explicitly
override the recipe. None leaves the value to the data-dependent defaults (utils/engine/train_config.py).

"default" is this project's recipe for training from scratch on small data. "reference" is
bubbliiiing/yolov4-tiny-pytorch (https://github.com/bubbliiiing/yolov4-tiny-pytorch, commit 1bbb2f2):
the defaults of its train.py and the loss of its nets/yolo_training.py, reproduced by YOLOLoss with the
recipe's LossSettings (utils.engine.loss.loss_settings).
What it cannot reproduce is listed in README.md ("The default recipe").
"""
from argparse import Namespace
from types import MappingProxyType
from typing import Any, Dict, Mapping, Optional

from utils.core.migrate import BEFORE_IT_EXISTED, is_run_record, migrate, rename_values
from utils.core.settings import check_overrides, nearest, tool_settings

NOT_IN_RECIPES = ("config", "recipe")

# The default recipe is the schema's defaults (utils/core/schema_train.py): box weight 8x the reference's (boxes
# tighter at the same mAP@0.5) and IoU class targets (docs/recipe_measurements.md); lr None: 0.01 for
# adam/adamw, 0.1 for sgd (per batch of 64); epochs, input size and eval period None: by the data.
_DEFAULT = {s.name: s.default_for("train") for s in tool_settings("train") if s.name not in NOT_IN_RECIPES}

# bubbliiiing/yolov4-tiny-pytorch: what differs from the default recipe
_REFERENCE = {
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


def _recipe(overrides: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """The default recipe with `overrides` (checked against the schema), frozen; sequences as tuples."""
    checked = check_overrides(overrides, f"recipe {name!r}")
    values = {**_DEFAULT, **checked}
    return MappingProxyType({k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


RECIPES: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {"default": _recipe({}, "default"), "reference": _recipe(_REFERENCE, "reference")})


def recipe_args(name: str, **overrides) -> Namespace:
    """A Namespace of the recipe's values with `overrides` on top (for tests and scripts)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}{nearest(name, RECIPES)}; choose one of {', '.join(RECIPES)}")
    unknown = sorted(set(overrides) - set(RECIPES[name]))
    if unknown:
        raise ValueError(f"unknown recipe keys {', '.join(unknown)}{nearest(unknown[0], RECIPES[name])}; valid keys: "
                         f"{', '.join(RECIPES[name])}")
    return Namespace(**{**RECIPES[name], **overrides})


def config_defaults(config: Mapping[str, Any], where: Optional[str], recipe_given: Optional[str]) -> Dict[str, Any]:
    """The defaults of train.py's parser under a --config file's values `config` (read from `where`): the
    recipe's values (`recipe_given` on the command line, else the file's, else default), then the file's. A run's
    own record (run_args.yaml) is migrated from its version (utils/core/migrate.py): what it lacks, it ran
    without; a hand-written file is checked against the schema (an unknown key named with the nearest valid one)."""
    if not isinstance(config, Mapping):
        raise ValueError(f"{where}: expected a mapping of setting names to values (name: value lines), found "
                         f"{type(config).__name__}")
    # A run's record of how it was started (--config, and --resume once resumed) is not a setting to repeat.
    dropped = ("config", "resume") if is_run_record(config) else ("config",)
    config = {k: v for k, v in config.items() if k not in dropped}
    values = migrate(config, where) if is_run_record(config) else check_overrides(rename_values(config), where)
    recipe = recipe_given or values.get("recipe") or "default"
    if recipe not in RECIPES:
        raise ValueError(f"{where}: unknown recipe {recipe!r}{nearest(recipe, RECIPES)}; choose one of "
                         f"{', '.join(RECIPES)}")
    given = values if not is_run_record(config) else {k: v for k, v in values.items() if k in config or
                                                      k in BEFORE_IT_EXISTED}
    merged = {**RECIPES[recipe], **given, "recipe": recipe}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in merged.items()}
