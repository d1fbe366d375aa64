"""One versioned migration: a run's recorded settings (ckpt['args'], run_args.yaml) of any earlier format into
today's train.py settings.

A record names its format in `settings_version` (written since version 7); an older one is known by its keys.
Each version added the keys in ADDED; a record that lacks one ran before it existed, so it takes the value runs
had then (BEFORE_IT_EXISTED) where that is not today's default. Values that were renamed (channels_last 'auto' of
version 0, which meant on) are mapped. tests/fixtures/run_args/ holds one record of every version.
"""
from types import MappingProxyType
from typing import Any, Dict, Mapping

from utils.core.settings import DERIVED_KEYS, check_overrides, tool_settings

SETTINGS_VERSION = 9
ADDED: Mapping[int, tuple] = MappingProxyType({
    # 0: train.py of 2026-11-21 (a37edd0): the first checkpoints
    1: ("recipe", "init", "jitter", "scale", "flip", "hsv", "smooth_by_classes", "obj_size_scale", "cls_count_scale",
        "bce_clip", "ciou_alpha_grad", "neighbor_cells", "grad_clip"),   # the recipes (2026-12-01)
    2: ("data_format", "images"),                                        # dataset formats (f281de2)
    3: ("fusion", "se_loss"),                                            # FPN merges, SE-loss (21cfd45)
    4: ("auto_anchors", "assigner", "topk", "iou_cls", "ema_tau"),       # tighter-box pieces (abc5ef2)
    5: ("val_loss",),                                                    # --no-val-loss (620af8b)
    6: ("box_loss",),                                                    # --box-loss (562c64b)
    7: (),                                                               # settings_version recorded (issue 28)
    8: ("cls_weights", "cls_weights_power", "compile", "cache", "logger", "threads"),  # issues 29, 31, 33
    9: ("progressive_size", "progressive_ratio"),                       # progressive resizing (issue 29)
})
# What a run from before a setting existed ran with, where that is not today's default.
BEFORE_IT_EXISTED: Mapping[str, Any] = MappingProxyType({"iou_cls": False})
RENAMED_VALUES: Mapping[str, Mapping[Any, Any]] = MappingProxyType({"channels_last": {"auto": "on"}})
VERSION_KEY = "settings_version"
FIRST_RECORDED = 7  # the first version that writes VERSION_KEY


def is_run_record(values: Mapping) -> bool:
    """A run's own record (it holds what the run found out, DERIVED_KEYS), not a hand-written config."""
    return VERSION_KEY in values or any(k in values for k in DERIVED_KEYS)


def record_version(record: Mapping, where: str) -> int:
    """The format version of `record`: its settings_version, else the newest whose keys it holds."""
    if VERSION_KEY in record:
        version = record[VERSION_KEY]
        if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= SETTINGS_VERSION:
            raise ValueError(f"{where}: settings_version {version!r} is not one this code reads (0..{SETTINGS_VERSION})"
                             "; a newer version wrote it: update the code, or give the settings as flags")
        return version
    version = 0
    for v in range(1, FIRST_RECORDED):  # a record without settings_version is older than version 7
        if not all(k in record for k in ADDED[v]):
            break
        version = v
    return version


def rename_values(values: Mapping[str, Any]) -> Dict[str, Any]:
    """`values` with the renamed values of older versions mapped to today's (any config may hold them)."""
    return {k: RENAMED_VALUES.get(k, {}).get(v, v) if _hashable(v) else v for k, v in values.items()}


def migrate(record: Mapping[str, Any], where: str) -> Dict[str, Any]:
    """Today's settings (every train.py setting, schema order) of a run's record of any version: each key it lacks
    the value runs had before it existed, else today's default; renamed values mapped; the derived keys dropped.
    An unknown key or a value of the wrong type is refused naming `where` (utils.core.settings.check_overrides)."""
    record_version(record, where)
    kept = {k: v for k, v in record.items() if k not in DERIVED_KEYS and k != VERSION_KEY}
    checked = check_overrides(rename_values(kept), where)
    out = {}
    for s in tool_settings("train"):
        if s.name in checked:
            out[s.name] = checked[s.name]
        else:
            value = BEFORE_IT_EXISTED.get(s.name, s.default_for("train"))
            out[s.name] = list(value) if isinstance(value, tuple) else value
    return out


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
