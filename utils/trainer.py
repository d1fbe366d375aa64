"""One epoch of training, the validation loss, and the checkpoint a run writes."""
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
from tqdm import tqdm

from utils.amp import autocast
from utils.checkpoint import CHECKPOINT_FORMAT
from utils.ema import ModelEMA, unwrap
from utils.optim import lr_factor


class TrainingDiverged(RuntimeError):
    """Too many non-finite losses in a row."""


@dataclass
class TrainState:
    """Everything one training step touches."""

    model: torch.nn.Module
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    amp_dtype: Optional[torch.dtype]
    base_lr: float
    epochs: int
    warmup_epochs: float
    min_lr_ratio: float
    lr_schedule: str
    ema: Optional[ModelEMA] = None
    scaler: Optional[torch.amp.GradScaler] = None
    channels_last: bool = False
    max_bad_steps: int = 20
    grad_clip: float = 10.0
    bad_steps: int = field(default=0, init=False)

    def set_lr(self, epoch_progress: float) -> float:
        lr = self.base_lr * lr_factor(epoch_progress, self.epochs, self.warmup_epochs, self.min_lr_ratio, self.lr_schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr


def to_device(images: torch.Tensor, targets: torch.Tensor, state: TrainState):
    """uint8 Tensor[B, 3, H, W] -> float in [0, 1] on the device (channels-last when set)."""
    images = images.to(state.device, non_blocking=True).float().div_(255.0)
    if state.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets.to(state.device, non_blocking=True)


def train_step(state: TrainState, images, targets) -> Optional[Dict[str, float]]:
    """One optimisation step; returns the loss parts, or None when the loss was not finite (step skipped)."""
    with autocast(state.device, state.amp_dtype):
        outputs = state.model(images)
    loss, parts = state.loss_fn([o.float() for o in outputs], targets)
    if not torch.isfinite(loss):
        state.bad_steps += 1
        state.optimizer.zero_grad(set_to_none=True)
        warnings.warn(f"non-finite loss ({float(loss)}), step skipped ({state.bad_steps} in a row)")
        if state.bad_steps >= state.max_bad_steps:
            raise TrainingDiverged(f"{state.bad_steps} non-finite losses in a row: training diverged; "
                                   "try a lower --lr or --amp off; last.pth holds the last good epoch")
        return None
    state.bad_steps = 0
    scaler = state.scaler
    (scaler.scale(loss) if scaler else loss).backward()
    if scaler:
        scaler.unscale_(state.optimizer)
    torch.nn.utils.clip_grad_norm_(state.model.parameters(), state.grad_clip)
    if scaler:
        scaler.step(state.optimizer)
        scaler.update()
    else:
        state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    if state.ema:
        state.ema.update(state.model)
    return {"loss": loss.item(), **{k: v.item() for k, v in parts.items()}}


def train_one_epoch(state: TrainState, loader, epoch: int, progress: bool = True) -> Dict[str, float]:
    """Train for one epoch; returns mean loss parts, the last lr and the epoch's seconds."""
    state.model.train()
    totals: Dict[str, float] = {}
    steps, lr, start = 0, 0.0, time.time()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{state.epochs}", disable=not progress, leave=False, dynamic_ncols=True)
    for i, (images, targets) in enumerate(bar):
        lr = state.set_lr(epoch + i / max(1, len(loader)))
        images, targets = to_device(images, targets, state)
        parts = train_step(state, images, targets)
        if parts is None:
            continue
        steps += 1
        for k, v in parts.items():
            totals[k] = totals.get(k, 0.0) + v
        bar.set_postfix(loss=f"{totals['loss'] / steps:.4f}", lr=f"{lr:.2e}")
    if steps == 0:
        raise TrainingDiverged(f"epoch {epoch + 1}: no step had a finite loss")
    means = {f"train_{k}" if k == "loss" else k: v / steps for k, v in totals.items()}
    return {**means, "lr": lr, "seconds": time.time() - start}


@torch.no_grad()
def validation_loss(model: torch.nn.Module, loss_fn, loader, state: TrainState) -> float:
    """Mean loss of `model` (in eval mode) over a letterbox-only validation loader."""
    was_training = model.training
    model.eval()
    total, batches = 0.0, 0
    for images, targets in loader:
        images, targets = to_device(images, targets, state)
        with autocast(state.device, state.amp_dtype):
            outputs = model(images)
        loss, _ = loss_fn([o.float() for o in outputs], targets)
        if math.isfinite(float(loss)):
            total, batches = total + float(loss), batches + 1
    model.train(was_training)
    return total / max(batches, 1)


def make_checkpoint(state: TrainState, epoch: int, meta: Dict, best_fitness: Optional[float],
                    results: list) -> Dict:
    """Checkpoint after `epoch` (0-based, completed); `model` holds the EMA weights when EMA is on."""
    raw = unwrap(state.model).state_dict()
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "model": state.ema.module.state_dict() if state.ema else raw,
        "train_model": raw if state.ema else None,
        "ema": {k: v for k, v in state.ema.state_dict().items() if k != "module"} if state.ema else None,
        "optimizer": state.optimizer.state_dict(),
        "scheduler": {"base_lr": state.base_lr, "schedule": state.lr_schedule, "warmup_epochs": state.warmup_epochs,
                      "min_lr_ratio": state.min_lr_ratio, "epochs": state.epochs},
        "scaler": state.scaler.state_dict() if state.scaler else None,
        "epoch": epoch,
        "best_fitness": best_fitness,
        "results": results,
    }
    ckpt.update(meta)
    return ckpt


def restore_checkpoint(state: TrainState, ckpt: Dict) -> None:
    """Put a run's model, EMA, optimizer and scaler back as they were at the end of ckpt['epoch']."""
    model = unwrap(state.model)
    model.load_state_dict(ckpt["train_model"] if ckpt.get("train_model") is not None else ckpt["model"])
    if state.ema and ckpt.get("ema"):
        state.ema.load_state_dict({"module": ckpt["model"], **ckpt["ema"]})
    state.optimizer.load_state_dict(ckpt["optimizer"])
    if state.scaler and ckpt.get("scaler"):
        state.scaler.load_state_dict(ckpt["scaler"])
