"""One training run, from its settings to its run folder: `Trainer(values, make_parser).fit()`.

`values` are the run's raw settings, keyed by train.py's argument names (what train.parse_args gives, as a
dict); `make_parser` makes train.py's parser, whose defaults and flag names a `--resume` is checked against
(utils/engine/resume.py). train.py and `YOLO.train` (`train_run`, settings as keywords) both train through
here, so the same settings and seed give the same losses.
"""
import argparse
import contextlib
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple

import numpy as np
import torch

from utils.core.amp import amp_name, resolve_amp, select_device, set_threads
from utils.core.cli import EXIT_INTERRUPTED, EXIT_OK
from utils.core.config import DEFAULT_ANCHORS_MASK, read_anchors, read_classes, used_anchors
from utils.core.fileio import remove_stale_temporaries, write_text_atomic
from utils.core.folder_lock import FolderLock
from utils.core.paths import MODEL_DATA
from utils.core.settings import add_flags, check_overrides
from utils.data.anchors import box_sizes, format_anchors, refit_anchors
from utils.data.demo_data import demo_classes_file
from utils.data.image_cache import check_cache_fits
from utils.data.label_plots import plot_labels
from utils.data.layouts import dataset_of
from utils.data.voc import load_eval_samples, load_samples, resolve_classes
from utils.engine import distributed as dist
from utils.engine.build import build_loss, build_model, build_state, loss_class_weights
from utils.engine.checkpoint import read_checkpoint
from utils.engine.recipes import config_defaults
from utils.engine.loop import EpochLoop
from utils.engine.resume import check_resumed_data, resumed_values, run_data_record, schedule_epochs
from utils.engine.run_logger import describe_run, read_yaml, run_folder, write_yaml
from utils.engine.tb_logger import summary_writer_class
from utils.engine.train_config import TrainConfig, check_model, make_config
from utils.engine.trainer import restore_checkpoint

ParserFactory = Callable[[], argparse.ArgumentParser]


class RunData(NamedTuple):
    """The data of a run and the settings that name it (data, classes, train_split, val_split) as used."""

    class_names: List[str]
    train: list
    val: list
    is_demo: bool
    used: dict


def load_data(values: dict) -> RunData:
    """Class names and samples of the run's splits; an unreadable validation image stops the run. The dataset's
    layout is detected once (utils.data.layouts.dataset_of) and its Dataset read from then on."""
    data = dataset_of(values)
    used = {"data": str(data.path),
            "classes": str(resolve_classes(data, values["classes"] or MODEL_DATA / "voc_classes.txt")),
            "train_split": values["train_split"] or data.default_split("train"),
            "val_split": values["val_split"] or data.default_split("eval")}
    class_names = read_classes(used["classes"])
    train = load_samples(data, used["train_split"], class_names)
    val, _ = load_eval_samples(data, used["val_split"], class_names)
    return RunData(class_names, train, val, demo_classes_file(data.path) is not None, used)


def start_run(values: dict, make_parser: ParserFactory, explicit: Optional[dict] = None,
              folder: Optional[Path] = None):
    """(run folder, checkpoint to resume or None, raw settings): `folder` or a new one, or the resumed run's
    own folder and settings, with the flags in `explicit` (given on the command line; default: those whose
    value is not the parser's default) that may change them (utils/engine/resume.py)."""
    resume = values["resume"]
    if not resume:
        return folder or run_folder(resume, values["save_dir"], values["name"]), None, dict(values)
    ckpt = read_checkpoint(resume)
    if ckpt.get("optimizer") is None or ckpt.get("args") is None:
        raise ValueError(f"{resume} cannot be resumed: it holds no optimizer state or run arguments "
                         "(use --weights to start a new run from it)")
    parser = make_parser()
    if explicit is None:  # called without the command line: the settings whose value is not the default
        explicit = {k: v for k, v in values.items() if v != parser.get_default(k)}
    settled = resumed_values(parser, ckpt, {**explicit, "resume": resume}, resume)
    return Path(resume).resolve().parent, ckpt, settled


def run_anchors(config: TrainConfig, data: RunData, resume: Optional[dict]) -> torch.Tensor:
    """The anchors of the run: a resumed run's own, else --anchors, refit on the training boxes with
    --auto-anchors (the comparison printed by the main process)."""
    if resume:
        return torch.as_tensor(resume["anchors"], dtype=torch.float32)
    anchors = read_anchors(config.anchors)
    if not config.auto_anchors:
        return anchors
    wh = box_sizes(data.train, config.input_size)
    used = used_anchors(DEFAULT_ANCHORS_MASK)
    try:
        fitted, new_iou, old_iou = refit_anchors(wh, anchors.numpy(), used, config.seed)
    except ValueError as e:  # fewer distinct box sizes than anchors
        warnings.warn(f"--auto-anchors: keeping {config.anchors}: {e}")
        return anchors
    if dist.is_main():
        kept = "refit kept" if new_iou > old_iou else f"keeping {config.anchors}"
        print(f"auto-anchors: {len(wh)} training boxes at {config.input_size}: avg best IoU {old_iou:.3f} with "
              f"{config.anchors} ({format_anchors(anchors.numpy()[used])}), {new_iou:.3f} refit "
              f"({format_anchors(np.asarray(fitted)[used])}); {kept}")
    return torch.as_tensor(fitted, dtype=torch.float32)


def write_run_files(run_dir: Path, config: TrainConfig, device, data: RunData, anchors: torch.Tensor,
                    schedule_end: Optional[int]) -> None:
    """The main process's start of a run: stale temporaries removed, the run described, run_args.yaml,
    labels.png (a resumed run keeps the one its folder holds: same split) and the refit anchors.txt."""
    for stale in remove_stale_temporaries(run_dir):
        print(f"removed {stale}, a temporary file left by a write that was killed")
    describe_run(config, device, data, schedule_end)
    write_yaml(run_dir / "run_args.yaml", config.to_dict())
    if not (run_dir / "labels.png").exists():
        plot_labels(data.train, data.class_names, run_dir / "labels.png", config.input_size, anchors.numpy())
    if config.auto_anchors:
        write_text_atomic(run_dir / "anchors.txt", format_anchors(anchors.numpy()) + "\n")
    print(f"run folder: {run_dir}")


def announce(config: TrainConfig, resume: Optional[dict], path) -> None:
    """Where a resumed run goes on ('resuming at epoch N of M from PATH'); a warning for a new run whose epochs all
    fall inside the learning-rate warmup."""
    if resume:
        next_epoch = resume["epoch"] + 2
        if next_epoch > config.epochs:
            print(f"{path} has finished all its {config.epochs} epochs: nothing left to train (give --epochs more "
                  "than that to train on)")
        else:
            print(f"resuming at epoch {next_epoch} of {config.epochs} from {path}")
    elif config.epochs <= config.warmup_epochs:
        warnings.warn(f"--epochs {config.epochs} ends inside the {config.warmup_epochs:g}-epoch learning-rate warmup "
                      "(--warmup-epochs): the learning rate never reaches its full value and the run stops before "
                      "it learns much; give more epochs or a shorter --warmup-epochs", stacklevel=2)


class Trainer:
    """Train (or resume, values["resume"]) one run, holding its folder (FolderLock) meanwhile.

    `explicit`: the settings given on the command line (train.py's explicit_flags; default: those whose value
    is not the parser's default). After `fit`, `run_dir` is the run folder and `history` the rows of its
    results.csv (the main process's; empty on the others)."""

    def __init__(self, values: dict, make_parser: ParserFactory, explicit: Optional[dict] = None):
        self.values, self.make_parser, self.explicit = dict(values), make_parser, explicit
        self.run_dir: Optional[Path] = None
        self.history: List[dict] = []

    def fit(self) -> int:
        """Train; returns EXIT_OK, or EXIT_INTERRUPTED after Ctrl-C (last.pth at the last complete epoch)."""
        folder = run_folder(self.values["resume"], self.values["save_dir"], self.values["name"])
        with FolderLock(folder) if folder else contextlib.nullcontext():
            run_dir, resume, values = start_run(self.values, self.make_parser, self.explicit, folder)
            # the settled value (a resume's recorded one unless given), before any parallel work, so that the
            # inter-op count is set too
            set_threads(values.get("threads"))
            self.run_dir = run_dir
            return self._train(run_dir, resume, values)

    def _train(self, run_dir: Optional[Path], resume: Optional[dict], values: dict) -> int:
        check_model(values)  # a bad --phi, --attention or --fusion: said before the dataset scan
        if values.get("logger") == "tensorboard":
            summary_writer_class()  # the package missing: said before the scan, not after it
        device = dist.setup(select_device(values["device"]))
        amp_dtype = resolve_amp(values["amp"], device)
        data = load_data(values)
        if values.get("cache") == "ram":
            check_cache_fits([*data.train, *data.val])  # refused before the run writes anything
        record = run_data_record(data.train, data.val, data.used["data"], values["images"])
        if resume:
            check_resumed_data(resume, self.values["resume"], {**values, **data.used}, data.class_names, record)
        config = make_config({**values, **data.used}, data.is_demo, amp_name(amp_dtype))
        anchors = run_anchors(config, data, resume)
        model = build_model(config, len(data.class_names), device)
        loss_fn = build_loss(config, anchors, len(data.class_names),
                             loss_class_weights(config, data.class_names, data.train, resume))
        state = build_state(config, model, loss_fn, device, amp_dtype, schedule_epochs(resume) if resume else None)
        if resume:
            restore_checkpoint(state, resume, self.values["resume"])
        if dist.is_main():
            announce(config, resume, self.values["resume"])
            write_run_files(run_dir, config, device, data, anchors, state.schedule_end)
        loop = EpochLoop(config, state, run_dir, data.class_names, anchors, data.train, data.val, resume, record)
        try:
            loop.run()
        except KeyboardInterrupt:
            if dist.is_main():
                loop.interrupted()
            return EXIT_INTERRUPTED
        finally:
            self.history = list(loop.results.rows) if loop.results else []
        if dist.is_main():
            loop.summary()
        return EXIT_OK


def train_parser() -> argparse.ArgumentParser:
    """train.py's flags (the schema's, utils/core/settings.py): the defaults and flag names a resume checks."""
    parser = argparse.ArgumentParser(prog="train.py")
    add_flags(parser, "train")
    return parser


def train_values(settings: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(values, given): the run's raw settings from keywords named as train.py's flags (`input_size`, `no_ema`'s
    `ema`), over a `config` YAML over the recipe's values over the schema's defaults, as train.parse_args builds
    them from flags; `given`: the keywords, checked (an unknown name is refused naming the nearest)."""
    given = check_overrides(settings, "training settings (train.py's flags, written with _)")
    parser = train_parser()
    config = read_yaml(given["config"]) if given.get("config") else {}
    recipe = given.get("recipe") if given.get("recipe") != parser.get_default("recipe") else None
    parser.set_defaults(**config_defaults(config, given.get("config"), recipe))
    return {**vars(parser.parse_args([])), **given}, given


class TrainRun(NamedTuple):
    """What `train_run` (YOLO.train) returns: the run folder (last.pth, best.pth, results.csv), the last epoch's
    row of results.csv (losses, lr and, when evaluated, map50 and map50_95) and every epoch's row."""

    run_dir: Path
    metrics: Dict[str, Any]
    history: List[Dict[str, Any]]


def train_run(settings: Mapping[str, Any]) -> TrainRun:
    """Train (or resume, `resume=`) the run `python train.py` makes with the flags `settings` name; Ctrl-C
    leaves last.pth at the last complete epoch and raises KeyboardInterrupt."""
    values, given = train_values(settings)
    trainer = Trainer(values, train_parser, explicit=given)
    try:
        code = trainer.fit()
    finally:
        dist.teardown()
    if code == EXIT_INTERRUPTED:
        raise KeyboardInterrupt(f"training interrupted; resume with resume='{trainer.run_dir}/last.pth'")
    return TrainRun(trainer.run_dir, dict(trainer.history[-1]) if trainer.history else {}, trainer.history)
