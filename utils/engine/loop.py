"""The epochs of a training run: phases (frozen backbone or not), validation, mAP, checkpoints, early stopping.

train.py builds the model, loss, TrainState and data, then hands them to EpochLoop.run.
"""
import copy
import math
from typing import Optional

import torch

from utils.core.cli import UserError
from utils.core.config import DEFAULT_ANCHORS_MASK, parse_input_size
from utils.core.detector_spec import DetectorSpec
from nets.yolo import YoloBody
from utils.data.augment import AugmentConfig
from utils.data.batch_picture import save_batch_picture
from utils.data.dataloader import YoloDataset, build_dataloader, epoch_input_size, mosaic_enabled
from utils.data.image_cache import build_image_cache
from utils.engine import distributed as dist
from utils.engine.checkpoint import save_atomic
from utils.engine.compile import compile_model
from utils.engine.distributed import unwrap
from utils.engine.eta import RunClock
from utils.engine.optim import scaled_lr
from utils.engine.run_logger import ResultsLog
from utils.engine.tb_logger import NoBoard, open_board
from utils.engine.train_config import TrainConfig
from utils.engine.trainer import (TrainState, TrainingDiverged, make_checkpoint, nonfinite_tensors, train_one_epoch,
                                  validation_loss)
from utils.eval.evaluator import evaluate_model


def build_loaders(config: TrainConfig, train_samples, val_samples, batch_size: int, cache=None):
    """(train loader, val loader): augmented, sharded across ranks under torchrun; letterbox only. `cache`: the
    decoded images of --cache ram (utils/data/image_cache.py), filled before the workers fork."""
    size = config.input_size  # an int or (h, w)
    augment = AugmentConfig(jitter=config.jitter, scale=config.scale, flip=config.flip, hsv=config.hsv)
    train_set = YoloDataset(train_samples, size, train=True, mosaic=config.mosaic, mixup=config.mixup, augment=augment,
                            seed=config.seed, cache=cache)
    val_set = YoloDataset(val_samples, size, train=False, seed=config.seed, cache=cache)
    distributed = dist.world_size() > 1
    train_loader = build_dataloader(train_set, batch_size, config.workers, shuffle=True, seed=config.seed,
                                    distributed=distributed, drop_last=len(train_set) >= 2 * batch_size)
    val_loader = build_dataloader(val_set, batch_size, config.workers, shuffle=False, seed=config.seed)
    return train_loader, val_loader


def set_backbone_frozen(model: torch.nn.Module, frozen: bool) -> None:
    for p in unwrap(model).backbone.parameters():
        p.requires_grad_(not frozen)


def evaluate(config: TrainConfig, model, val_samples, class_names, anchors, state: TrainState) -> dict:
    """mAP with the evaluator and settings get_map.py uses.

    The model is evaluated as get_map.py will load it from the checkpoint (contiguous memory, the
    evaluator's batch size), so both print the same numbers.
    """
    model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    if config.compile in ("eval", "all"):
        model = compile_model(model)
    return evaluate_model(model, val_samples, class_names, spec=training_spec(config, class_names, anchors),
                          workers=config.workers, device=state.device, amp=state.amp_dtype, progress=not config.quiet)


def training_spec(config: TrainConfig, class_names, anchors) -> DetectorSpec:
    """The DetectorSpec of the detector a run trains: what its checkpoints record and its evaluation decodes with."""
    return DetectorSpec(class_names, anchors, DEFAULT_ANCHORS_MASK, YoloBody.strides,
                        parse_input_size(config.input_size), config.scale_x_y,
                        letterbox=True, attention=config.attention, fusion=config.fusion, se_loss=config.se_loss > 0)


def checkpoint_meta(config: TrainConfig, class_names, anchors, data_record: Optional[dict] = None,
                    class_weights=None) -> dict:
    """What a checkpoint holds besides the training state, so that predict.py and get_map.py need nothing else:
    the detector's spec (utils/core/detector_spec.py, DetectorSpec.record()), the run's arguments, the
    fingerprint of its data that a resumed run checks (utils/engine/resume.py), and the class loss's weights
    per class that a resumed run takes back (utils/engine/class_weights.py; None: every class 1)."""
    return {**training_spec(config, class_names, anchors).record(), "args": config.to_dict(),
            "data_fingerprint": data_record,
            "class_weights": None if class_weights is None else [float(w) for w in class_weights]}


class EpochLoop:
    """The epochs of one run: phases (frozen backbone or not), evaluation, checkpoints, early stopping."""

    def __init__(self, config: TrainConfig, state: TrainState, run_dir, class_names, anchors, train_samples,
                 val_samples, resume, data_record: Optional[dict] = None):
        self.config, self.state, self.run_dir = config, state, run_dir
        self.class_names, self.anchors = class_names, anchors
        self.train_samples, self.val_samples = train_samples, val_samples
        self.meta = checkpoint_meta(config, class_names, anchors, data_record,
                                    getattr(state.loss_fn, "class_weights", None))
        self.best = resume.get("best_fitness") if resume else None
        self.start_epoch = resume["epoch"] + 1 if resume else 0
        self.last_completed = self.start_epoch - 1
        self.results = (ResultsLog(run_dir, resume.get("results", []) if resume else [], config.eval_period,
                                   config.epochs) if dist.is_main() else None)
        self.best_epoch = max((r["epoch"] for r in self.results.rows if r.get("best")), default=None) if self.results else None
        # --logger: opened before training (a missing package stops the run here); the main process's only
        self.board = (open_board(config.logger, run_dir, self.results.rows, self.start_epoch + 1)
                      if self.results is not None else NoBoard())
        self.phase = None
        self.loaders = None
        self.clock = RunClock(config.epochs, config.eval_period)  # the time left, at the end of each epoch's line
        self.image_cache = None  # --cache ram: filled when the first loaders are built
        self.training_hw = None  # --progressive-size: the input size of the last epoch begun

    def run(self) -> None:
        try:
            self.epochs()
        finally:
            self.board.close()

    def epochs(self) -> None:
        for epoch in range(self.start_epoch, self.config.epochs):
            self.enter_phase(epoch)  # may fill --cache ram: a one-off cost, not an epoch's
            self.clock.start_epoch()
            train_loader, val_loader = self.loaders
            train_loader.set_epoch(epoch)
            mosaic = mosaic_enabled(epoch, self.state.schedule_end, self.config.mosaic_ratio)  # extended: as at its end
            train_loader.dataset.set_mosaic(mosaic)
            self.set_training_size(train_loader.dataset, epoch)
            picture = self.batch_picture if epoch == 0 and dist.is_main() else None  # epoch 0: a fresh run
            try:
                stats = train_one_epoch(self.state, train_loader, epoch,
                                        progress=dist.is_main() and not self.config.quiet, on_first_batch=picture)
            except torch.cuda.OutOfMemoryError:
                raise UserError(f"out of GPU memory at batch size {self.phase[1]} "
                                f"({'frozen' if self.phase[0] else 'unfrozen'} phase); lower "
                                f"{'--freeze-batch-size' if self.phase[0] else '--batch-size'}") from None
            stop = self.end_of_epoch(epoch, stats, val_loader) if dist.is_main() else False
            self.last_completed = epoch  # complete only once evaluated and saved
            if dist.broadcast_flag(stop, self.state.device):
                break

    def set_training_size(self, dataset: YoloDataset, epoch: int) -> None:
        """--progressive-size: this epoch's training input, said when it changes (and at a run's first epoch)."""
        config = self.config
        hw = epoch_input_size(epoch, self.state.schedule_end, parse_input_size(config.input_size),
                              config.progressive_size, config.progressive_ratio)
        if config.progressive_size and dist.is_main() and hw != self.training_hw:
            print(f"epoch {epoch + 1}: training input {hw[0]}x{hw[1]} (--progressive-size)")
        self.training_hw = hw  # kept here: a new phase (--freeze-epochs) builds new loaders
        dataset.set_input_size(hw)

    def batch_picture(self, images, targets) -> None:
        """train_batch0.jpg: the first training batch as the model sees it, with its target boxes."""
        save_batch_picture(self.run_dir / "train_batch0.jpg", images, targets, self.class_names)

    def enter_phase(self, epoch: int) -> None:
        """Freeze or unfreeze the backbone and (re)build the loaders when the phase changes."""
        frozen = epoch < self.config.freeze_epochs
        batch = self.config.freeze_batch_size if frozen else self.config.batch_size
        if self.phase == (frozen, batch):
            return
        self.phase = (frozen, batch)
        set_backbone_frozen(self.state.model, frozen)
        if dist.world_size() > 1:
            bare = unwrap(self.state.model)
            ids = [self.state.device.index] if self.state.device.type == "cuda" else None
            self.state.model = torch.nn.parallel.DistributedDataParallel(bare, device_ids=ids)
        self.state.base_lr = scaled_lr(self.config.lr, batch * dist.world_size())
        if self.config.cache == "ram" and self.image_cache is None:
            self.image_cache = build_image_cache([*self.train_samples, *self.val_samples], self.config.workers)
        self.loaders = build_loaders(self.config, self.train_samples, self.val_samples, batch, self.image_cache)

    def end_of_epoch(self, epoch: int, stats: dict, val_loader) -> bool:
        """Validate, log, save; returns True when early stopping says stop."""
        config, state = self.config, self.state
        eval_model = state.ema.module if state.ema else unwrap(state.model)
        row = {"epoch": epoch + 1, **stats}
        if config.val_loss:
            row["val_loss"] = validation_loss(eval_model, state.loss_fn, val_loader, state)
        last = epoch + 1 == config.epochs
        metrics = None
        if config.eval_period and ((epoch + 1) % config.eval_period == 0 or last):
            started = self.clock.clock()
            metrics = evaluate(config, eval_model, self.val_samples, self.class_names, self.anchors, state)
            self.clock.evaluated(self.clock.clock() - started)
            row.update(map50=metrics["map50"], map50_95=metrics["map50_95"])
            fitness = map_fitness(row)
        else:
            fitness = -row["val_loss"] if not config.eval_period and config.val_loss else None
        improved = fitness is not None and math.isfinite(fitness) and (self.best is None or fitness > self.best)
        if improved:
            self.best, self.best_epoch = fitness, epoch + 1
        row["best"] = improved
        self.board.epoch(row, metrics)  # before the checkpoints: on a resume, purge_step drops it if they are lost
        ckpt = self.checkpoint(epoch, self.results.rows + [row])
        # best.pth before last.pth: a kill in between leaves last.pth at the previous epoch, so the
        # resumed run redoes this epoch and writes best.pth again; the other order would leave it stale
        if improved:
            save_atomic(ckpt, self.run_dir / "best.pth")
        save_atomic(ckpt, self.run_dir / "last.pth")
        if config.save_period and (epoch + 1) % config.save_period == 0:
            save_atomic(ckpt, self.run_dir / f"epoch_{epoch + 1}.pth")
        self.results.append(row)
        print(format_row(row, config.epochs, self.clock.end_epoch(epoch + 1)))
        return bool(config.patience and self.best_epoch and epoch + 1 - self.best_epoch >= config.patience
                    and config.eval_period)

    def checkpoint(self, epoch: int, rows: list) -> dict:
        """The checkpoint after `epoch`; refuses (TrainingDiverged) when any of its tensors is not finite."""
        ckpt = make_checkpoint(self.state, epoch, self.meta, self.best, rows)
        bad = nonfinite_tensors(ckpt)
        if bad:
            raise TrainingDiverged(f"epoch {epoch + 1}: {len(bad)} tensors are not finite (e.g. {', '.join(bad[:3])}); "
                                   f"not saved, {self.run_dir / 'last.pth'} keeps the last good epoch")
        return ckpt

    def interrupted(self) -> None:
        """Ctrl-C: last.pth stays at the last complete epoch (exact resume); the weights of this moment
        go to interrupted.pth, for prediction or as --weights."""
        last = self.run_dir / "last.pth"
        try:
            ckpt = self.checkpoint(self.last_completed, self.results.rows)
            ckpt["optimizer"] = None  # mid-epoch weights: not a point to resume from
            save_atomic(ckpt, self.run_dir / "interrupted.pth")
            saved = f"saved the weights of this moment to {self.run_dir / 'interrupted.pth'}; "
        except TrainingDiverged as e:
            saved = f"{e}; "
        if last.exists():
            print(f"\ninterrupted: {saved}{last} holds epoch {self.last_completed + 1}, the last complete one; "
                  f"continue with python train.py --resume {last}")
        else:
            print(f"\ninterrupted before the first epoch was complete: {saved}nothing to resume")

    def summary(self) -> None:
        rows = self.results.rows
        evaluated = [r for r in rows if r.get("map50") is not None]
        print(f"done: {len(rows)} epochs in {sum(r['seconds'] for r in rows) / 60:.1f} min; run folder {self.run_dir}")
        if evaluated:
            last = evaluated[-1]
            best = max(evaluated, key=map_fitness)
            print(f"last evaluation (epoch {last['epoch']}, last.pth): mAP@0.5 {last['map50']:.4f}, "
                  f"mAP@0.5:0.95 {last['map50_95']:.4f}")
            print(f"best: {self.run_dir / 'best.pth'} (epoch {best['epoch']}): mAP@0.5 {best['map50']:.4f}, "
                  f"mAP@0.5:0.95 {best['map50_95']:.4f}")
        elif (self.run_dir / "best.pth").exists():
            print(f"best (by validation loss): {self.run_dir / 'best.pth'} (epoch {self.best_epoch})")
        else:
            print(f"no best.pth (no mAP evaluation and no validation loss): {self.run_dir / 'last.pth'} holds "
                  "the last epoch")


def map_fitness(row: dict) -> float:
    """What best.pth maximises: 0.1 * mAP@0.5 + 0.9 * mAP@0.5:0.95 (mAP@0.5 alone without COCO numbers)."""
    if row.get("map50_95") is None:
        return row["map50"]
    return 0.1 * row["map50"] + 0.9 * row["map50_95"]


def format_row(row: dict, epochs: int, eta: str = "") -> str:
    """An epoch's line of the log; `eta` (utils.engine.eta.RunClock.end_epoch) goes before the ' *' of a best."""
    se = f", se {row['se']:.4f}" if "se" in row else ""
    text = (f"epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f} (box {row['box']:.4f}, obj {row['obj']:.4f}, "
            f"cls {row['cls']:.4f}{se}), ")
    if "val_loss" in row:
        text += f"val loss {row['val_loss']:.4f}, "
    text += f"lr {row['lr']:.2e}, {row['seconds']:.0f}s"
    if row.get("map50") is not None:
        text += f"; mAP@0.5 {row['map50']:.4f}, mAP@0.5:0.95 {row['map50_95']:.4f}"
    return text + eta + (" *" if row.get("best") else "")


