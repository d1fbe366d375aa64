"""Every setting once: the schema, the flags generated from it, and override dicts checked against it.

The schema (SETTINGS: utils/core/schema_train.py, utils/core/schema_tools.py) holds each setting's name, type,
default and help, grouped by concern (model, data, schedule, augmentation, loss, run, detection, evaluation, and
the tools' own). `add_flags(parser, tool)` gives a script its flags, so a flag that several scripts take is the
same everywhere (`--input-size` takes 416 or 384,640 in each). A recipe, a --config YAML and a run_args.yaml are
override dicts: `check_overrides` refuses an unknown key with the nearest valid name and a value of the wrong
type. `settings_class(concern)` is the frozen dataclass of one concern, its defaults the schema's.
"""
import argparse
import difflib
from dataclasses import field, make_dataclass
from types import MappingProxyType
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

from utils.core.schema_tools import TOOLS_SETTINGS
from utils.core.schema_train import TRAINING
from utils.core.setting import REQUIRED, TOOLS, Setting, input_size  # noqa: F401 (re-exported)


def _by_name(settings: Iterable[Setting]) -> Mapping[str, Setting]:
    table = {}
    for s in settings:
        if s.name in table:
            raise ValueError(f"the schema names the setting {s.name!r} twice; each setting is written once")
        table[s.name] = s
    return MappingProxyType(table)


SETTINGS: Mapping[str, Setting] = _by_name(TRAINING + TOOLS_SETTINGS)
CONCERN_TITLES = {
    "recipe": "recipe and config file", "model": "model", "data": "data", "schedule": "schedule and optimizer", "augmentation": "augmentation",
    "loss": "loss and label assignment", "run": "the run: weights, folders, devices, precision",
    "detection": "detection", "slicing": "sliced inference for small objects (--slice)",
    "evaluation": "evaluation", "source": "what to detect in", "export": "export",
    "speed": "speed (--fps)", "maps": "maps per image", "outputs": "outputs per image", "ablation": "ablation",
    "anchors": "anchors", "convert": "conversion", "demo": "demo dataset", "quantize": "quantization",
}
# The TrainConfig fields that a run finds out rather than sets, and the version of its record (utils/core/migrate.py):
# run_args.yaml and ckpt['args'] record them, a config may hold them
DERIVED_KEYS = ("amp_used", "channels_last_on", "settings_version")


def tool_settings(tool: str, concerns: Optional[Sequence[str]] = None) -> Tuple[Setting, ...]:
    """The settings `tool` takes (of `concerns`, when given), in schema order."""
    if tool not in TOOLS:
        raise ValueError(f"unknown tool {tool!r}; the schema knows {', '.join(TOOLS)}")
    return tuple(s for s in SETTINGS.values() if tool in s.tools and (concerns is None or s.concern in concerns))


def default(name: str, tool: Optional[str] = None) -> Any:
    """The schema's default of setting `name` (for `tool`, where it declares its own)."""
    return SETTINGS[name].default_for(tool) if tool else SETTINGS[name].default


def add_flags(parser, tool: str, concerns: Optional[Sequence[str]] = None, names: Optional[Sequence[str]] = None,
              grouped: bool = True) -> Dict[str, argparse.Action]:
    """Add `tool`'s flags to `parser` (a parser or an argument group): those named in `names` (in that order), or
    those of `concerns`, or all; one argument group per concern when `grouped` and no `names` are given. Flags of
    one `exclusive` name share a mutually exclusive group. Returns {name: action}."""
    if names is not None:
        own = {s.name: s for s in tool_settings(tool)}
        unknown = [n for n in names if n not in own]
        if unknown:
            raise ValueError(f"{TOOLS[tool]} takes no setting {', '.join(unknown)} in the schema"
                             f"{nearest(unknown[0], own)}")
        chosen, grouped = [own[n] for n in names], False
    else:
        chosen = tool_settings(tool, concerns)
    groups: Dict[str, Any] = {}
    actions = {}
    for s in chosen:
        key = f"exclusive:{s.exclusive}" if s.exclusive else (s.concern if grouped else "")
        if key not in groups:
            groups[key] = (parser.add_mutually_exclusive_group() if s.exclusive else
                           parser.add_argument_group(CONCERN_TITLES[s.concern]) if grouped else parser)
        actions[s.name] = s.add_to(groups[key], tool)
    return actions


def nearest(name: str, valid: Iterable[str]) -> str:
    """' (did you mean X?)' for the valid name closest to `name`, or '' when none is close."""
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def check_overrides(values: Mapping[str, Any], where: str, tool: str = "train",
                    allowed: Iterable[str] = ()) -> Dict[str, Any]:
    """`values` (a recipe, a --config YAML, a run's run_args.yaml) checked against `tool`'s settings: an unknown
    key is refused with the nearest valid name, a value of the wrong type or not among the choices naming it;
    keys in `allowed` pass unchecked. Lists stay lists. ValueError naming `where`."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{where}: expected a mapping of setting names to values, found {type(values).__name__}")
    known = {s.name: s for s in tool_settings(tool)}
    allowed = set(allowed)
    checked = {}
    for key, value in values.items():
        if key in allowed:
            checked[key] = value
        elif key not in known:
            raise ValueError(f"{where}: unknown setting {key!r}{nearest(key, known)}; `{TOOLS[tool]} --help` lists "
                             "the settings, written with _ for -")
        else:
            value = known[key].check(value, where)
            checked[key] = list(value) if isinstance(value, tuple) and known[key].nargs else value
    return checked


def _annotation(s: Setting):
    if s.kind != "value":
        return bool
    scalar = s.type if s.type in (int, float) else (Any if s.type is input_size else str)
    return Tuple[(scalar,) * s.nargs] if isinstance(s.nargs, int) else scalar


def settings_class(name: str, settings: Sequence[Setting], tool: str = "train", extra: Sequence = (),
                   namespace: Optional[dict] = None, defaults: bool = True):
    """A frozen dataclass named `name` with one field per setting (type from the schema; its default the schema's
    for `tool` when `defaults`), then the `extra` (name, type) fields without defaults."""
    fields = []
    for s in settings:
        value = s.default_for(tool)
        value = tuple(value) if isinstance(value, list) else value
        fields.append((s.name, _annotation(s), field(default=value)) if defaults else (s.name, _annotation(s)))
    return make_dataclass(name, fields + list(extra), frozen=True, namespace=namespace or {})
