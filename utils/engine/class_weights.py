"""Per-class weights of the class loss (train.py --cls-weights, --cls-weights-power).

`--cls-weights` is none (every class 1: the loss as without the flag), `auto`, a file or w1,w2,... . `auto` is
the inverse class frequency of the training split's objects (those the loss sees: difficult ones left out), to
the power --cls-weights-power, normalised to mean 1 over the classes that have objects; a class without any
training object gets 1, as without weights (its inverse frequency is infinite), and is named in a warning. A
file holds one number a line, in the classes file's order (blank lines and lines starting with # are skipped).
Weights must be finite and >= 0, and not all 0. YOLOLoss multiplies each class's BCE by its weight.

A run prints its weights at the start, one per class name, and its checkpoints record them
(ckpt['class_weights']); a resumed run takes them from there, so a file edited since, or a scan that changed
at the recorded place, does not change them.
"""
import math
import textwrap
import warnings
from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np

from utils.core.cli import UserError

AUTO = "auto"
FLAG = "--cls-weights"
CKPT_KEY = "class_weights"
Weights = Optional[Tuple[float, ...]]


def class_counts(samples: Sequence, num_classes: int) -> np.ndarray:
    """Objects per class of `samples` (Samples of the training split), difficult ones left out: int64[C]."""
    counts = np.zeros(num_classes, np.int64)
    for s in samples:
        labels = np.asarray(s.labels, np.int64)[~np.asarray(s.difficult, bool)]
        counts += np.bincount(labels, minlength=num_classes)[:num_classes]
    return counts


def auto_weights(counts: Sequence[int], power: float) -> Tuple[float, ...]:
    """(total / count_c) ** power of each class with objects, normalised to mean 1 over those; 1 where count_c
    is 0 (and everywhere when no class has objects)."""
    counts = np.asarray(counts, np.float64)
    weights = np.ones(len(counts))
    present = counts > 0
    if present.any():
        inverse = (counts[present].sum() / counts[present]) ** power
        weights[present] = inverse / inverse.mean()
    return tuple(float(w) for w in weights)


def _number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{where}: expected a number (a class's weight), found {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise UserError(f"{where}: expected a finite weight >= 0, found {text!r}")
    return value


def _file_weights(path: Path) -> Tuple[float, ...]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{FLAG} {path}: cannot read it as a text file of weights ({e})") from None
    return tuple(_number(line.strip(), f"{FLAG} {path} line {i}") for i, line in enumerate(lines, 1)
                 if line.strip() and not line.strip().startswith("#"))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def given_weights(spec: str, class_names: Sequence[str], classes_file=None) -> Tuple[float, ...]:
    """The weights a file or a w1,w2,... list gives, one per class; UserError naming the file or the flag."""
    path = Path(spec)
    if path.is_file():
        weights, where = _file_weights(path), f"{FLAG} {path}"
    elif "," in spec or _is_number(spec):
        weights, where = tuple(_number(p.strip(), f"{FLAG} {spec}") for p in spec.split(",")), f"{FLAG} {spec}"
    else:
        raise UserError(f"{FLAG} {spec}: no such file; expected auto, a file of one weight per class, or w1,w2,...")
    if len(weights) != len(class_names):
        source = f" of {classes_file}" if classes_file else ""
        raise UserError(f"{where}: expected {len(class_names)} weights, one per class{source} "
                        f"({', '.join(class_names)}), in that order; found {len(weights)}")
    if not any(weights):
        raise UserError(f"{where}: every weight is 0, which turns the class loss off; give --cls-weight 0 for that, "
                        "or a positive weight for at least one class")
    return weights


def power_problem(power: float) -> Optional[str]:
    """What is wrong with --cls-weights-power `power` (it must be a finite number >= 0), or None; the one rule,
    which the loss checks too (utils.engine.loss.check_loss_settings)."""
    if math.isfinite(power) and power >= 0:
        return None
    return f"--cls-weights-power must be a finite number >= 0, found {power}"


def resolve_class_weights(spec: Optional[str], power: float, class_names: Sequence[str], samples: Sequence,
                          classes_file=None) -> Tuple[Weights, str]:
    """(weights or None, how they were found) of --cls-weights `spec` for a new run on `samples`."""
    if spec is None:
        return None, ""
    if spec != AUTO:
        return given_weights(spec, class_names, classes_file), f"from {spec}"
    problem = power_problem(power)
    if problem:
        raise UserError(problem)
    counts = class_counts(samples, len(class_names))
    absent = [name for name, n in zip(class_names, counts) if n == 0]
    if absent:
        warnings.warn(f"{FLAG} auto: no training object of {', '.join(absent)}; "
                      f"{'that class gets' if len(absent) == 1 else 'those classes get'} weight 1")
    counted = ", ".join(f"{name} {n}" for name, n in zip(class_names, counts))
    return auto_weights(counts, power), f"auto: inverse class frequency ^ {power:g}, mean 1; training objects {counted}"


def run_class_weights(spec: Optional[str], power: float, class_names: Sequence[str], samples: Sequence,
                      resume: Optional[Mapping] = None, classes_file=None) -> Tuple[Weights, str]:
    """The run's weights: a resumed run's recorded ones (when its checkpoint holds them), else resolved."""
    if resume is not None and resume.get(CKPT_KEY) is not None:
        return tuple(float(w) for w in resume[CKPT_KEY]), "restored from the resumed checkpoint"
    return resolve_class_weights(spec, power, class_names, samples, classes_file)


def describe_class_weights(weights: Weights, class_names: Sequence[str], how: str) -> str:
    """What a run prints of its weights: how they were found, then each class name with its weight."""
    pairs = ", ".join(f"{name} {w:.4g}" for name, w in zip(class_names, weights))
    return "\n".join(textwrap.fill(text, width=118, subsequent_indent="  ", initial_indent=indent)
                     for text, indent in ((f"class loss weights ({how}):", ""), (pairs, "  ")))
