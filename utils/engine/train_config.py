"""The settings of one training run, built once into a frozen TrainConfig and never changed afterwards.

Where the values come from, last wins: the parser's defaults, the --recipe (utils/engine/recipes.py),
a --config file, the flags (train.parse_args); or, with --resume, the resumed run's own. Then
`make_config` fills the defaults that depend on the data (SCHEDULE_DEFAULTS, the learning rates),
checks them and adds what the run found out (the precision in use). `TrainConfig.to_dict()` is what
checkpoints (`ckpt['args']`) and run_args.yaml hold: train.py's argument names, plus DERIVED_KEYS.
"""
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Mapping, Optional, Tuple

from nets.attention import SITE_CHANNELS, attention_to_str, check_fusion, parse_attention, site_facts

# Defaults that depend on the data: the demo dataset gets a schedule that finishes in about
# 15 minutes on 2 CPU cores; a real dataset gets a full schedule. Values given explicitly win.
SCHEDULE_DEFAULTS = {
    "dataset": {"epochs": 100, "input_size": 416, "eval_period": 5},
    "demo": {"epochs": 25, "input_size": 320, "eval_period": 5},
}
# Recorded in run_args.yaml and checkpoints, but found out by the run, not set: a --config file may hold them
DERIVED_KEYS = ("amp_used", "channels_last_on")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a run, named as train.py's flags (see `python train.py --help` for each one)."""

    config: Optional[str]
    recipe: str
    init: str
    phi: int
    attention: str             # normalised placement spec (nets.attention.attention_to_str)
    fusion: str                # the FPN merge before the P4 head (nets.attention.FUSION_NAMES)
    data: str                  # the dataset resolved (utils.data.voc.resolve_data)
    data_format: Optional[str]  # --data-format (None: detected)
    images: Optional[str]      # --images, the image folder of a COCO JSON
    classes: str               # the classes file in use
    train_split: str
    val_split: str
    anchors: str
    auto_anchors: bool
    input_size: int
    epochs: int
    freeze_epochs: int
    freeze_batch_size: int
    batch_size: int
    lr: float                  # for a batch of 64
    min_lr: float
    optimizer: str
    momentum: float
    weight_decay: float
    lr_schedule: str
    warmup_epochs: float
    mosaic: float
    mixup: float
    mosaic_ratio: float
    jitter: float
    scale: Tuple[float, float]
    flip: float
    hsv: Tuple[float, float, float]
    label_smoothing: float
    smooth_by_classes: bool
    focal_loss: bool
    box_weight: float
    obj_weight: float
    cls_weight: float
    se_loss: float             # EncNet's SE-loss weight; 0: off, and the enc blocks have no SE-loss head
    obj_size_scale: bool
    cls_count_scale: bool
    bce_clip: float
    box_loss: str              # ciou or giou (utils.engine.loss.BOX_LOSSES)
    ciou_alpha_grad: bool
    assign_thres: float
    hard_obj: bool
    ignore_thres: float
    scale_x_y: float
    neighbor_cells: bool
    assigner: str              # positives: shape or aligned (utils.engine.loss.ASSIGNERS)
    topk: int
    iou_cls: bool
    weights: Optional[str]
    resume: Optional[str]
    save_dir: str
    name: str
    save_period: int
    eval_period: int
    patience: int
    val_loss: bool
    workers: int
    device: str
    seed: int
    amp: str
    ema: bool
    ema_tau: float
    sync_bn: bool
    channels_last: str
    grad_clip: float
    quiet: bool
    amp_used: str              # the precision --amp resolved to (utils.core.amp.amp_name)
    channels_last_on: bool

    def to_dict(self) -> Dict[str, Any]:
        """Plain YAML-safe values (tuples as lists), as ckpt['args'] and run_args.yaml hold them."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


SETTING_NAMES = tuple(f.name for f in fields(TrainConfig) if f.name not in DERIVED_KEYS)


def make_config(values: Mapping[str, Any], is_demo: bool, amp_used: str) -> TrainConfig:
    """The run's TrainConfig from its raw settings (`values`: every name of SETTING_NAMES, None where the
    data decide), with the data-dependent defaults filled in and checked; ValueError for a bad value."""
    v = {k: values[k] for k in SETTING_NAMES}
    for key, default in SCHEDULE_DEFAULTS["demo" if is_demo else "dataset"].items():
        if v[key] is None:
            v[key] = default
    if v["lr"] is None:
        v["lr"] = 0.1 if v["optimizer"] == "sgd" else 0.01
    if v["min_lr"] is None:
        v["min_lr"] = v["lr"] / 100
    if v["input_size"] % 32 or v["input_size"] < 32:
        raise ValueError(f"--input-size must be a positive multiple of 32, got {v['input_size']}")
    if v["epochs"] < 1 or v["freeze_epochs"] > v["epochs"]:
        raise ValueError(f"--epochs must be >= 1 and >= --freeze-epochs, got {v['epochs']} and {v['freeze_epochs']}")
    v["attention"], v["fusion"] = check_model(v)
    v["scale"], v["hsv"] = tuple(v["scale"]), tuple(v["hsv"])
    # "auto" in an older checkpoint meant on
    return TrainConfig(**v, amp_used=amp_used, channels_last_on=v["channels_last"] != "off")


def check_model(values: Mapping[str, Any]) -> Tuple[str, str]:
    """(normalised attention, fusion) of raw settings; ValueError for a bad --se-loss."""
    placement = parse_attention(values["attention"] if values["attention"] is not None else values["phi"])
    if values["se_loss"] < 0:
        raise ValueError(f"--se-loss must be >= 0 (0: off), got {values['se_loss']}")
    if values["se_loss"] > 0 and not any("num_classes" in site_facts(placement[site]) for site in SITE_CHANNELS):
        raise ValueError(f"--se-loss {values['se_loss']:g} needs an enc block, whose SE-loss head it trains, and "
                         f"attention {attention_to_str(placement)!r} has none; add one (--attention enc, or "
                         "feat2=enc,...) or drop --se-loss")
    return attention_to_str(placement), check_fusion(values["fusion"])
