"""What `train.py --resume` may change: the run continues as its checkpoint records it.

Flags that only say where and how the run computes (RUNTIME_FLAGS) may be given. `--epochs` may extend the
run: the recorded schedule stays as it was (learning rate and mosaic), and the epochs added after its end
train at its final learning rate, so the extended run's first epochs are exactly those of the run as planned.
The data flags (DATA_FLAGS) may point at the run's dataset where it moved: its scan must match the
fingerprint the checkpoint records (`data_fingerprint`: image names, sizes and boxes, in order) and its
class names the recorded ones. Any other flag given with a value other than the recorded one is refused,
naming it. A flag counts as given when it is on the command line, whatever its value (`explicit_flags`).
"""
import argparse
import hashlib
import os
import warnings
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from utils.core.cli import UserError
from utils.core.migrate import migrate

RUNTIME_FLAGS = ("resume", "workers", "threads", "device", "quiet", "amp", "channels_last", "save_period",
                 "logger", "compile", "cache")
DATA_FLAGS = ("data", "images", "data_format", "classes")


def explicit_flags(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> Dict[str, Any]:
    """{dest: value} of the flags on the command line `argv` (None: sys.argv), whether or not a value equals
    its default: `argv` parsed again with every default suppressed. `parser` is changed: pass a fresh one."""
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    known, _ = parser.parse_known_args(argv)
    return vars(known)


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _flag(parser: argparse.ArgumentParser, dest: str) -> str:
    names = [a.option_strings[0] for a in parser._actions if a.dest == dest and a.option_strings]
    return names[0] if names else f"--{dest.replace('_', '-')}"


def resumed_values(parser: argparse.ArgumentParser, ckpt: Mapping, explicit: Mapping[str, Any],
                   path) -> Dict[str, Any]:
    """The settings of the resumed run `path`: the recorded ones, with the flags given that may change
    (see the module docstring); UserError naming every flag that would change the run."""
    # what the checkpoint records, migrated from its version (what it lacks: the value before the setting existed)
    recorded = migrate(ckpt["args"], "the run arguments the checkpoint records")
    changed = {k: v for k, v in explicit.items() if _plain(v) != _plain(recorded.get(k))}
    refused = [k for k in changed if k not in RUNTIME_FLAGS + DATA_FLAGS + ("epochs",)]
    if refused:
        named = ", ".join(f"{_flag(parser, k)} {changed[k]} (recorded {recorded.get(k)})" for k in refused)
        raise UserError(f"--resume {path} continues that run with the settings it recorded, and these flags would "
                        f"change it: {named}; with --resume give only the flags `train.py --help` lists under "
                        f"--resume, or start a new run from it with --weights {path}")
    if "epochs" in changed and changed["epochs"] < recorded["epochs"]:
        raise UserError(f"--epochs {changed['epochs']} is fewer than the {recorded['epochs']} epochs {path} "
                        "records: with --resume, --epochs can only extend a run")
    values = {**recorded, **changed}
    if any(k in changed for k in DATA_FLAGS):
        values.update(_relocated(recorded, changed))
    return values


def _relocated(recorded: Mapping[str, Any], changed: Mapping[str, Any]) -> Dict[str, Any]:
    """The recorded classes file and image folder moved along with --data, where they lay inside the old
    dataset folder (or the folder of the old dataset file) and were not given again."""
    if "data" not in changed or recorded.get("data") is None:
        return {}
    old, new = os.path.abspath(recorded["data"]), os.path.abspath(changed["data"])
    if not os.path.isdir(new):
        old, new = os.path.dirname(old), os.path.dirname(new)
    moved = {}
    for key in ("classes", "images"):
        path = recorded.get(key)
        if key in changed or path is None:
            continue
        inside = os.path.relpath(os.path.abspath(path), old)
        if not inside.startswith(os.pardir):
            moved[key] = os.path.join(new, inside)
    return moved


def data_fingerprint(samples: Sequence, data, images=None) -> str:
    """sha256 over the samples in order: each image's path relative to the dataset (its folder, the folder of
    a dataset file, or --images), its size, boxes, labels and difficult flags. A moved copy gives the same."""
    data = os.path.abspath(data)
    bases = [b for b in (data if os.path.isdir(data) else os.path.dirname(data),
                         os.path.abspath(images) if images else None) if b]
    digest = hashlib.sha256()
    for s in samples:
        path = os.path.abspath(s.image_path)
        relative = [os.path.relpath(path, b) for b in bases if not os.path.relpath(path, b).startswith(os.pardir)]
        digest.update((relative[0] if relative else path).replace(os.sep, "/").encode("utf-8") + b"\0")
        digest.update(np.asarray([s.width, s.height, len(s.labels)], np.int64).tobytes())
        for array, dtype in ((s.boxes, np.float32), (s.labels, np.int64), (s.difficult, np.bool_)):
            digest.update(np.ascontiguousarray(array, dtype).tobytes())
    return digest.hexdigest()


def run_data_record(train, val, data, images=None) -> Dict[str, Any]:
    """What a checkpoint records of its data (ckpt['data_fingerprint'])."""
    return {"train": data_fingerprint(train, data, images), "val": data_fingerprint(val, data, images),
            "train_images": len(train), "val_images": len(val)}


def check_resumed_data(ckpt: Mapping, path, used: Mapping[str, Any], class_names: Sequence[str],
                       record: Mapping[str, Any]) -> None:
    """Refuse a resumed run's data that is not the run's own: other class names, or (where the data flags
    moved it) a scan other than the recorded one; a changed scan at the recorded place is warned about."""
    recorded = ckpt["args"]
    if ckpt.get("class_names") is not None and list(class_names) != list(ckpt["class_names"]):
        raise UserError(f"{used['classes']} names the classes {list(class_names)}, and {path} was trained on "
                        f"{list(ckpt['class_names'])}; give --classes the run's classes file")
    moved = [k for k in DATA_FLAGS if _plain(used.get(k)) != _plain(recorded.get(k))]
    before = ckpt.get("data_fingerprint")
    if moved and before is None:
        raise UserError(f"{path} records no fingerprint of its dataset (written by an older version), so "
                        f"--data {used['data']} cannot be checked against it; make the dataset reachable at its "
                        f"recorded path {recorded.get('data')}")
    same = before is None or all(record[k] == before.get(k) for k in ("train", "val"))
    if same:
        return
    found = (f"its scan (train {record['train_images']}, val {record['val_images']} images) differs from the one "
             f"{path} records (train {before.get('train_images')}, val {before.get('val_images')} images: the same "
             "image names, sizes and boxes in the same order expected)")
    if moved:
        raise UserError(f"--data {used['data']} does not hold the dataset of the run: {found}; point --data at "
                        "a copy of the run's dataset, or start a new run from it with --weights")
    warnings.warn(f"the dataset at {used['data']} changed since the run was saved: {found}; the resumed run "
                  "trains and evaluates on it as it is now")


def schedule_epochs(ckpt: Mapping) -> int:
    """The epochs of the resumed run's learning-rate and mosaic schedule: those it was started with."""
    return int((ckpt.get("scheduler") or {}).get("schedule_epochs") or ckpt["args"]["epochs"])
