"""One setting of the schema (utils/core/settings.py): its name, type, default and help, written once.

A script's flag is generated from its Setting (`Setting.add_to`), so a flag that several scripts take has the
same name, type, choices and help in each of them. Where a tool needs another default for the same meaning (the
score threshold of mAP is 0.001, of a picture 0.5), the Setting declares it in `tool_defaults` and the help names
it, so that every default still lives in the schema alone.
"""
import argparse
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple, Union

REQUIRED = object()  # a tool_defaults value: the tool requires the flag

# The tools whose parsers the schema generates, and how their help names them.
TOOLS = {"train": "train.py", "get_map": "get_map.py", "predict": "predict.py", "ablate": "ablate.py",
         "anchors": "utils.data.anchors", "convert": "utils.data.convert", "demo_data": "utils.data.demo_data",
         "quantize": "utils.deploy.quantize", "summary": "nets.summary"}


class InputSizeError(argparse.ArgumentTypeError, ValueError):
    """A bad --input-size: argparse prints its message; code that calls input_size() may catch a ValueError."""


KINDS = ("value", "flag", "switch", "negated")  # --x V; --x (store_true); --x / --no-x; --no-x (store_false)


def input_size(text: Union[str, int, Sequence[int]]) -> Union[int, Tuple[int, int]]:
    """--input-size: '416' -> 416 (square), '384,640' -> (384, 640) (height, width); each a positive multiple of
    32. A number or a [h, w] list (a YAML config's value) is read the same way."""
    parts = [text] if isinstance(text, int) else (list(text) if not isinstance(text, str) else text.split(","))
    try:
        hw = [int(str(p).strip()) for p in parts]
    except ValueError:
        hw = []
    if len(hw) not in (1, 2) or min(hw) <= 0 or any(v % 32 for v in hw):
        raise InputSizeError(f"expected a positive multiple of 32 or H,W of two (e.g. 416 or 384,640), "
                                          f"found {text!r}")
    return hw[0] if len(hw) == 1 else (hw[0], hw[1])


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Setting:
    """A setting: `name` is its Python name (the flag's dest, a recipe's or a YAML config's key);
    `concern` the group it belongs to; `tools` the scripts that take it (keys of TOOLS)."""

    name: str
    default: Any
    help: str
    concern: str
    tools: Tuple[str, ...]
    type: Optional[Callable] = None
    kind: str = "value"
    choices: Optional[Tuple[Any, ...]] = None
    nargs: Optional[Union[int, str]] = None
    metavar: Any = None
    flag: Optional[str] = None           # the option string, when not --name-with-dashes
    default_text: Optional[str] = None   # how the help names the default, when not the value itself
    tool_defaults: Mapping[str, Any] = field(default_factory=dict)
    tool_choices: Mapping[str, Tuple[Any, ...]] = field(default_factory=dict)  # more choices a tool takes
    aliases: Tuple[str, ...] = ()        # older option strings that still work (renamed flags)
    habits: Tuple[Tuple[str, str], ...] = ()  # (option, project): another project's name for it, accepted too
    exclusive: Optional[str] = None      # a mutually exclusive group of a tool's flags

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"setting {self.name}: kind must be one of {', '.join(KINDS)}, found {self.kind!r}")
        unknown = [t for t in (*self.tools, *self.tool_defaults, *self.tool_choices) if t not in TOOLS]
        if unknown or any(t not in self.tools for t in (*self.tool_defaults, *self.tool_choices)):
            raise ValueError(f"setting {self.name}: tools must be keys of TOOLS, tool_defaults and tool_choices "
                             f"among its tools, found {unknown or [*self.tool_defaults, *self.tool_choices]}")

    @property
    def option(self) -> str:
        return self.flag or flag_name(self.name)

    def choices_for(self, tool: str) -> Optional[Tuple[Any, ...]]:
        return None if self.choices is None else tuple(self.choices) + tuple(self.tool_choices.get(tool, ()))

    def default_for(self, tool: str) -> Any:
        value = self.tool_defaults.get(tool, self.default)
        return None if value is REQUIRED else value

    def help_text(self) -> str:
        """The help, the same in every tool: the text, then the default and each tool's own."""
        shown = self.default_text or _shown(self.default, self.kind, self.name)
        own = [f"{TOOLS[t]}: {'required' if v is REQUIRED else _shown(v, self.kind)}"
               for t, v in self.tool_defaults.items()]
        former = f"; {', '.join(self.aliases)}, its former name, works for one more release" if self.aliases else ""
        habits = "".join(f"; {option} (the name {project} uses) works too" for option, project in self.habits)
        return f"{self.help} (default: {'; '.join([shown] + own)}){former}{habits}"

    def add_to(self, parser, tool: str) -> argparse.Action:
        """Add this setting's flag to an argparse parser or group, with `tool`'s default."""
        names = [self.option, *self.aliases, *(option for option, _ in self.habits)]
        extra = {"dest": self.name} if self.flag else {}
        if self.kind == "flag":
            return parser.add_argument(*names, action="store_true", help=self.help_text(), **extra)
        if self.kind == "negated":
            return parser.add_argument(*names, dest=self.name, action="store_false", help=self.help_text())
        if self.kind == "switch":
            return parser.add_argument(*names, action=argparse.BooleanOptionalAction, default=self.default_for(tool),
                                       help=self.help_text(), **extra)
        options = {k: v for k, v in (("type", self.type), ("choices", self.choices_for(tool)), ("nargs", self.nargs),
                                     ("metavar", self.metavar)) if v is not None}
        default = self.default_for(tool)
        if isinstance(default, tuple):
            default = list(default)
        return parser.add_argument(*names, default=default, required=self.tool_defaults.get(tool) is REQUIRED,
                                   help=self.help_text(), **options, **extra)

    def check(self, value: Any, where: str) -> Any:
        """`value` of a config file or recipe, checked against the type and choices; ValueError naming `where`."""
        if value is None and (self.default is None or self.default_text):
            return value
        expected = _expected(self)
        try:
            if value is None:
                raise TypeError
            checked = _converted(self, value)
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            raise ValueError(f"{where}: {self.name} must be {expected}, found {value!r}") from None
        if self.choices is not None and checked not in self.choices:
            raise ValueError(f"{where}: {self.name} must be one of {', '.join(map(str, self.choices))}, "
                             f"found {value!r}")
        return checked


def _converted(s: Setting, value: Any) -> Any:
    if s.kind != "value":
        if not isinstance(value, bool):
            raise TypeError
        return value
    if s.nargs is not None:
        if not isinstance(value, (list, tuple)) or (isinstance(s.nargs, int) and len(value) != s.nargs):
            raise TypeError
        return [_scalar(s.type, v) for v in value]
    if s.type is input_size:
        if isinstance(value, bool):
            raise TypeError
        return input_size(value)
    return _scalar(s.type, value)


def _scalar(kind: Optional[Callable], value: Any) -> Any:
    if isinstance(value, bool) or (kind in (int, float) and not isinstance(value, (int, float))):
        raise TypeError
    if kind is int and not float(value).is_integer():
        raise TypeError
    return (kind or str)(value) if kind in (None, int, float, str) else kind(value)


def _expected(s: Setting) -> str:
    if s.kind != "value":
        return "true or false"
    what = {int: "a whole number", float: "a number", input_size: "a multiple of 32 or [h, w]"}.get(s.type, "text")
    return f"a list of {s.nargs} values, each {what}" if s.nargs is not None else what


def _shown(value: Any, kind: str, name: str = "") -> str:
    if kind == "negated":  # --no-x: not given by default, so x is on
        return f"not given, so {name} is true"
    if kind in ("flag", "switch"):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return "none" if value is None else str(value)
