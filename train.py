"""Train YOLOv4-tiny with pluggable attention: `python train.py --phi 2`.

With no dataset in VOCdevkit it trains on the embedded demo dataset (generated on first use) with a
schedule sized for it. `torchrun --nproc_per_node N train.py ...` trains with DistributedDataParallel.
Exit codes (utils/core/cli.py): 0 done, 1 bad input or training diverged, 130 interrupted (Ctrl-C).
"""
import argparse
import contextlib
import sys
import warnings
from pathlib import Path
from typing import List, NamedTuple, Optional

import numpy as np
import torch

from nets.yolo import YoloBody
from utils.core.amp import amp_name, resolve_amp, select_device
from utils.core.cli import EXIT_INTERRUPTED, EXIT_OK, run_main
from utils.core.settings import add_flags
from utils.core.config import DEFAULT_ANCHORS_MASK, read_anchors, read_classes, used_anchors
from utils.core.fileio import remove_stale_temporaries, write_text_atomic
from utils.core.folder_lock import FolderLock
from utils.engine import distributed as dist
from utils.engine.checkpoint import load_weights, read_checkpoint
from utils.engine.ema import ModelEMA
from utils.engine.loop import EpochLoop
from utils.engine.loss import HEAD_BALANCE, YOLOLoss, loss_settings
from utils.engine.optim import build_optimizer
from utils.engine.recipes import config_defaults
from utils.engine.resume import (check_resumed_data, explicit_flags, resumed_values, run_data_record,
                                 schedule_epochs)
from utils.engine.run_logger import describe_run, read_yaml, run_folder, write_yaml
from utils.engine.train_config import TrainConfig, make_config
from utils.engine.trainer import TrainState, TrainingDiverged, restore_checkpoint
from utils.data.anchors import box_sizes, format_anchors, refit_anchors
from utils.data.demo_data import demo_classes_file
from utils.data.label_plots import plot_labels
from utils.data.layouts import data_options
from utils.data.voc import default_split, load_eval_samples, load_samples, resolve_classes, resolve_data

ROOT = Path(__file__).resolve().parent


def make_parser() -> argparse.ArgumentParser:
    """train.py's flags, generated from the schema (utils/core/settings.py) by concern."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(p, "train")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """Flags over a --config YAML over the --recipe's values over the parser's defaults (the schema's);
    the file is checked and, when it is a run's record, migrated (utils/engine/recipes.config_defaults)."""
    parser = make_parser()
    args, _ = parser.parse_known_args(argv)
    config = read_yaml(args.config) if args.config else {}
    given = args.recipe if args.recipe != parser.get_default("recipe") else None
    parser.set_defaults(**config_defaults(config, args.config, given))
    return parser.parse_args(argv)


class RunData(NamedTuple):
    """The data of a run and the settings that name it (data, classes, train_split, val_split) as used."""

    class_names: List[str]
    train: list
    val: list
    is_demo: bool
    used: dict


def load_data(values: dict) -> RunData:
    """Class names and samples of the run's splits; an unreadable validation image stops the run."""

    options = data_options(values)
    data = resolve_data(values["data"], **options)
    used = {"data": str(data),
            "classes": str(resolve_classes(data, values["classes"] or ROOT / "model_data/voc_classes.txt", **options)),
            "train_split": values["train_split"] or default_split(data, "train", **options),
            "val_split": values["val_split"] or default_split(data, "eval", **options)}
    class_names = read_classes(used["classes"])
    train = load_samples(data, used["train_split"], class_names, **options)
    val, _ = load_eval_samples(data, used["val_split"], class_names, **options)
    return RunData(class_names, train, val, demo_classes_file(data) is not None, used)


def _initialised(num_classes: int, attention, init: str, seed: int, **options) -> YoloBody:
    torch.manual_seed(seed)
    model = YoloBody(DEFAULT_ANCHORS_MASK, num_classes, attention=attention, **options)
    if init == "normal":
        model.init_normal()
    return model


def _take_shared(model: YoloBody, donor: dict, what: str) -> None:
    """Copy the tensors of `donor` (a state dict) whose shapes match `model`'s; every one must be in `model`."""
    own = model.state_dict()
    absent = [k for k in donor if k not in own]
    assert not absent, f"layers of the plain model missing from {what}: {absent[:3]}"
    model.load_state_dict({k: v for k, v in donor.items() if own[k].shape == v.shape}, strict=False)


def seeded_model(num_classes: int, attention, init: str, seed: int, fusion: str = "concat", input_size=None,
                 se_loss: bool = False) -> YoloBody:
    """A fresh model whose layers outside the attention blocks start exactly as the model without attention
    of the same seed and fusion does, so that variants trained with one seed differ only by their blocks (a
    paired comparison over seeds, ablate.py). The blocks draw from the same seed. The plain model of a
    gated or msf fusion in turn starts as the plain concat model in every tensor of the same shape (all
    but the P4 head's first conv), its fusion layers aside."""
    model = _initialised(num_classes, attention, init, seed, fusion=fusion, input_size=input_size, se_loss=se_loss)
    plain = _initialised(num_classes, None, init, seed, fusion=fusion)
    if plain.fusion != "concat":
        _take_shared(plain, _initialised(num_classes, None, init, seed).state_dict(), f"fusion {fusion}")
    _take_shared(model, plain.state_dict(), f"{attention} with fusion {fusion}")
    return model


def build_model(config: TrainConfig, num_classes: int, device: torch.device) -> torch.nn.Module:
    model = seeded_model(num_classes, config.attention, config.init, config.seed, fusion=config.fusion,
                         input_size=config.input_size, se_loss=config.se_loss > 0)
    if config.weights:
        load_weights(model, config.weights)
    if config.sync_bn and dist.world_size() > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if config.channels_last_on:
        model = model.to(memory_format=torch.channels_last)
    return model


def build_loss(config: TrainConfig, anchors: torch.Tensor, num_classes: int) -> YOLOLoss:
    return YOLOLoss(anchors, num_classes, DEFAULT_ANCHORS_MASK, YoloBody.strides, loss_settings(config),
                    config.input_size, HEAD_BALANCE)


def build_state(config: TrainConfig, model, loss_fn, device: torch.device, amp_dtype,
                schedule_end: Optional[int] = None) -> TrainState:
    """What one training step touches; base_lr is set by the loop for each phase's batch size.
    `schedule_end`: the epochs of the lr schedule, when a resumed run was extended beyond it."""
    return TrainState(model=model, loss_fn=loss_fn.to(device),
                      optimizer=build_optimizer(model, config.optimizer, config.lr, config.momentum,
                                                config.weight_decay),
                      device=device, amp_dtype=amp_dtype, base_lr=0.0, epochs=config.epochs,
                      warmup_epochs=config.warmup_epochs, min_lr_ratio=config.min_lr / config.lr,
                      lr_schedule=config.lr_schedule, channels_last=config.channels_last_on,
                      grad_clip=config.grad_clip, schedule_epochs=schedule_end,
                      ema=ModelEMA(model, tau=config.ema_tau) if config.ema and dist.is_main() else None,
                      scaler=torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None)


def start_run(args: argparse.Namespace, explicit: Optional[dict] = None, folder: Optional[Path] = None):
    """(run folder, checkpoint to resume or None, raw settings): `folder` or a new one, or the resumed run's
    own folder and settings, with the flags in `explicit` (given on the command line; default: those whose
    value is not the default) that may change them (utils/engine/resume.py)."""
    if not args.resume:
        return folder or run_folder(args.resume, args.save_dir, args.name), None, vars(args)
    ckpt = read_checkpoint(args.resume)
    if ckpt.get("optimizer") is None or ckpt.get("args") is None:
        raise ValueError(f"{args.resume} cannot be resumed: it holds no optimizer state or run arguments "
                         "(use --weights to start a new run from it)")
    if explicit is None:  # called without the command line: the flags whose value is not the default
        explicit = {k: v for k, v in vars(args).items() if v != make_parser().get_default(k)}
    values = resumed_values(make_parser(), ckpt, {**explicit, "resume": args.resume}, args.resume)
    return Path(args.resume).resolve().parent, ckpt, values


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


def write_labels_picture(path: Path, data: RunData, input_size: int, anchors: torch.Tensor) -> None:
    """labels.png of the training split; a resumed run keeps the one its folder holds (same split)."""
    if not path.exists():
        plot_labels(data.train, data.class_names, path, input_size, anchors.numpy())


def run(args: argparse.Namespace, explicit: Optional[dict] = None) -> int:
    """Train (or resume) the run `args` (from parse_args) describe, holding its folder (FolderLock) meanwhile;
    `explicit`: the flags given (see start_run). Returns 0, or 130 after Ctrl-C."""
    folder = run_folder(args.resume, args.save_dir, args.name)
    with FolderLock(folder) if folder else contextlib.nullcontext():
        return train_in(*start_run(args, explicit, folder), args.resume)


def train_in(run_dir: Optional[Path], resume: Optional[dict], values: dict, resume_path) -> int:
    """Train the run of raw settings `values` in `run_dir`, continuing `resume` (read from resume_path)."""
    device = dist.setup(select_device(values["device"]))
    amp_dtype = resolve_amp(values["amp"], device)
    data = load_data(values)
    record = run_data_record(data.train, data.val, data.used["data"], values["images"])
    if resume:
        check_resumed_data(resume, resume_path, {**values, **data.used}, data.class_names, record)
    config = make_config({**values, **data.used}, data.is_demo, amp_name(amp_dtype))
    anchors = run_anchors(config, data, resume)
    model = build_model(config, len(data.class_names), device)
    state = build_state(config, model, build_loss(config, anchors, len(data.class_names)), device, amp_dtype,
                        schedule_epochs(resume) if resume else None)
    if resume:
        restore_checkpoint(state, resume, resume_path)
    if dist.is_main():
        for stale in remove_stale_temporaries(run_dir):
            print(f"removed {stale}, a temporary file left by a write that was killed")
        describe_run(config, device, data, state.schedule_end)
        write_yaml(run_dir / "run_args.yaml", config.to_dict())
        write_labels_picture(run_dir / "labels.png", data, config.input_size, anchors)
        if config.auto_anchors:
            write_text_atomic(run_dir / "anchors.txt", format_anchors(anchors.numpy()) + "\n")
        print(f"run folder: {run_dir}")
    loop = EpochLoop(config, state, run_dir, data.class_names, anchors, data.train, data.val, resume, record)
    try:
        loop.run()
    except KeyboardInterrupt:
        if dist.is_main():
            loop.interrupted()
        return EXIT_INTERRUPTED
    if dist.is_main():
        loop.summary()
    return EXIT_OK


def main(argv=None) -> int:
    """train.py with `argv` (default: the command line); returns the exit code (utils/core/cli.py)."""
    try:
        return run_main("train.py", lambda: run(parse_args(argv), explicit_flags(make_parser(), argv)),
                        failures=(TrainingDiverged,))
    finally:
        dist.teardown()


if __name__ == "__main__":
    sys.exit(main())
