"""The settings of one training run, built once into a frozen TrainConfig and never changed afterwards.

Where the values come from, last wins: the parser's defaults, the --recipe (utils/engine/recipes.py),
a --config file, the flags (train.parse_args); or, with --resume, the resumed run's own. Then
`make_config` fills the defaults that depend on the data (SCHEDULE_DEFAULTS, the learning rates),
checks them and adds what the run found out (the precision in use). `TrainConfig.to_dict()` is what
checkpoints (`ckpt['args']`) and run_args.yaml hold: train.py's argument names, plus DERIVED_KEYS.
"""
from dataclasses import asdict, field
from typing import Any, Dict, Mapping, Tuple

from nets.attention import SITE_CHANNELS, attention_to_str, check_fusion, parse_attention, site_facts
from utils.core.migrate import SETTINGS_VERSION
from utils.core.setting import input_size as parse_size
from utils.core.settings import DERIVED_KEYS, settings_class, tool_settings

# Defaults that depend on the data: the demo dataset gets a schedule that finishes in about
# 15 minutes on 2 CPU cores; a real dataset gets a full schedule. Values given explicitly win.
SCHEDULE_DEFAULTS = {
    "dataset": {"epochs": 100, "input_size": 416, "eval_period": 5},
    "demo": {"epochs": 25, "input_size": 320, "eval_period": 5},
}


def _to_dict(self) -> Dict[str, Any]:
    """Plain YAML-safe values (tuples as lists), as ckpt['args'] and run_args.yaml hold them."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# Every setting of a run, named as train.py's flags (`python train.py --help`, utils/core/schema_train.py), each
# field's type and default the schema's; then what the run found out: the precision --amp resolved to
# (utils.core.amp.amp_name) and whether channels-last is on; and the version of this record (utils/core/migrate.py).
TrainConfig = settings_class(
    "TrainConfig", tool_settings("train"),
    extra=[("amp_used", str, field(kw_only=True)), ("channels_last_on", bool, field(kw_only=True)),
           ("settings_version", int, field(kw_only=True, default=SETTINGS_VERSION))],
    namespace={"to_dict": _to_dict, "__module__": __name__})
SETTING_NAMES = tuple(s.name for s in tool_settings("train"))
assert DERIVED_KEYS == ("amp_used", "channels_last_on", "settings_version")


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
    v["input_size"] = _input_size(v["input_size"])
    if v["epochs"] < 1 or v["freeze_epochs"] > v["epochs"]:
        raise ValueError(f"--epochs must be >= 1 and >= --freeze-epochs, got {v['epochs']} and {v['freeze_epochs']}")
    v["attention"], v["fusion"] = check_model(v)
    check_progressive(v["progressive_size"], v["progressive_ratio"], v["input_size"], v["epochs"], v["attention"])
    v["scale"], v["hsv"] = tuple(v["scale"]), tuple(v["hsv"])
    if v["channels_last"] not in ("on", "off"):  # an older record's 'auto' is migrated (utils/core/migrate.py)
        raise ValueError(f"--channels-last must be on or off, got {v['channels_last']!r}")
    return TrainConfig(**v, amp_used=amp_used, channels_last_on=v["channels_last"] == "on")


def _input_size(size):
    """The training input: one multiple of 32 (square), or (h, w) (H,W of two equal sides reads as one)."""
    try:
        size = parse_size(size)
    except ValueError as e:
        raise ValueError(f"--input-size: {e}") from None
    return size[0] if isinstance(size, tuple) and size[0] == size[1] else size


def check_progressive(start: int, ratio: float, input_size, epochs: int, attention: str) -> None:
    """ValueError unless --progressive-size is 0, or a multiple of 32 below the input's longer side with at least
    one epoch to grow over and no attention block fixed to one map size; and --progressive-ratio in (0, 1]."""
    if not 0 < ratio <= 1:
        raise ValueError(f"--progressive-ratio must be in (0, 1], got {ratio}")
    if not start:
        return
    longer = max(input_size) if isinstance(input_size, tuple) else input_size
    if start % 32 or not 32 <= start < longer:
        raise ValueError(f"--progressive-size must be 0 (off) or a multiple of 32 below --input-size's longer side "
                         f"({longer}), got {start}")
    if int(epochs * ratio) < 1:
        raise ValueError(f"--progressive-ratio {ratio:g} of {epochs} epochs leaves no epoch for --progressive-size "
                         "to grow over; raise either")
    fixed = [block for block in parse_attention(attention).values() if "map_size" in site_facts(block)]
    if fixed:
        raise ValueError(f"--progressive-size: attention {attention!r} holds {fixed[0]}, whose weights fix the map "
                         "size, so it trains at --input-size only; drop --progressive-size")


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
