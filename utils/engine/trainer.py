"""One epoch of training, the validation loss, and the checkpoint a run writes."""
import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch
from tqdm import tqdm

from utils.core.amp import autocast
from utils.engine.checkpoint import CHECKPOINT_FORMAT
from utils.engine.distributed import unwrap
from utils.engine.ema import ModelEMA
from utils.engine.optim import lr_factor
from utils.ops.image import to_unit_float


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
    schedule_epochs: Optional[int] = None  # the lr schedule's length when a resumed run was extended beyond it
    bad_steps: int = field(default=0, init=False)

    @property
    def schedule_end(self) -> int:
        """The epochs of the lr (and mosaic) schedule; epochs after it train at its final lr."""
        return self.schedule_epochs or self.epochs

    def set_lr(self, epoch_progress: float) -> float:
        end = self.schedule_end
        lr = self.base_lr * lr_factor(min(epoch_progress, end), end, self.warmup_epochs, self.min_lr_ratio,
                                      self.lr_schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr


def to_device(images: torch.Tensor, targets: torch.Tensor, state: TrainState):
    """uint8 Tensor[B, 3, H, W] -> float in [0, 1] on the device (channels-last when set)."""
    images = to_unit_float(images.to(state.device, non_blocking=True))
    if state.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets.to(state.device, non_blocking=True)


def forward_loss(model: torch.nn.Module, loss_fn, images, targets, state: TrainState):
    """(loss, parts) of the forward pass under the state's autocast. With an SE-loss (loss_fn.se_weight > 0)
    the logits of the model's SE-loss heads go to the loss too (YoloBody.collect_se_logits)."""
    se_weight = getattr(loss_fn, "se_weight", 0.0)  # a plain loss function has no SE-loss
    collect = unwrap(model).collect_se_logits() if se_weight else contextlib.nullcontext()
    with autocast(state.device, state.amp_dtype), collect as se_logits:
        outputs = model(images)
    extra = {"se_logits": se_logits} if se_weight else {}
    return loss_fn([o.float() for o in outputs], targets, **extra)


def train_step(state: TrainState, images, targets) -> Optional[Dict[str, float]]:
    """One optimisation step; returns the loss parts, or None when the step was skipped.

    A step is skipped, leaving weights, BatchNorm statistics, EMA and optimizer state untouched, when
    the loss or any gradient is not finite: one bad batch must not turn the weights into NaN for good.
    """
    buffers = list(state.model.buffers())
    saved = [b.clone() for b in buffers]  # the forward pass updates BatchNorm's running statistics
    loss, parts = forward_loss(state.model, state.loss_fn, images, targets, state)
    if not torch.isfinite(loss):
        skip_step(state, f"non-finite loss ({float(loss)})", buffers, saved)
        return None
    scaler = state.scaler
    (scaler.scale(loss) if scaler else loss).backward()
    if scaler:
        scaler.unscale_(state.optimizer)
    grad_norm = gradient_norm(state.model, state.grad_clip)
    if not math.isfinite(grad_norm):
        if scaler:
            scaler.update()  # lowers the fp16 loss scale; the optimizer does not step
        skip_step(state, f"non-finite gradients (loss {loss.item():.4g})", buffers, saved)
        return None
    state.bad_steps = 0
    if scaler:
        scaler.step(state.optimizer)
        scaler.update()
    else:
        state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    if state.ema:
        state.ema.update(state.model)
    return {"loss": loss.item(), **{k: v.item() for k, v in parts.items()}}


def gradient_norm(model: torch.nn.Module, clip: float) -> float:
    """The total L2 norm of the gradients, clipping them to `clip` first when it is > 0 and the norm finite."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])))
    if clip > 0 and math.isfinite(norm) and norm > clip:
        for g in grads:
            g.mul_(clip / (norm + 1e-6))
    return norm


def skip_step(state: TrainState, reason: str, buffers: List[torch.Tensor], saved: List[torch.Tensor]) -> None:
    """Drop this step's gradients and buffer updates; stop the run after `max_bad_steps` skipped steps in a row."""
    state.bad_steps += 1
    state.optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        for buffer, value in zip(buffers, saved):
            buffer.copy_(value)
    warnings.warn(f"{reason}: step skipped ({state.bad_steps} in a row)")
    if state.bad_steps >= state.max_bad_steps:
        raise TrainingDiverged(f"{state.bad_steps} steps in a row with a non-finite loss or gradients: training "
                               "diverged; try a lower --lr, --grad-clip or --amp off; last.pth holds the last good epoch")


def train_one_epoch(state: TrainState, loader, epoch: int, progress: bool = True,
                    on_first_batch: Optional[Callable[[torch.Tensor, torch.Tensor], None]] = None) -> Dict[str, float]:
    """Train for one epoch; returns mean loss parts, the last lr and the epoch's seconds.

    on_first_batch(images, targets), when given, sees the first batch as the loader made it, before its step.
    """
    state.model.train()
    totals: Dict[str, float] = {}
    steps, lr, start = 0, 0.0, time.time()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{state.epochs}", disable=not progress, leave=False, dynamic_ncols=True)
    for i, (images, targets) in enumerate(bar):
        if i == 0 and on_first_batch is not None:
            on_first_batch(images, targets)
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
    """Mean loss of `model` (in eval mode) over a letterbox-only validation loader; NaN when no batch is finite."""
    was_training = model.training
    model.eval()
    total, batches = 0.0, 0
    for images, targets in loader:
        images, targets = to_device(images, targets, state)
        loss, _ = forward_loss(model, loss_fn, images, targets, state)
        if math.isfinite(float(loss)):
            total, batches = total + float(loss), batches + 1
    model.train(was_training)
    return total / batches if batches else math.nan


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
                      "min_lr_ratio": state.min_lr_ratio, "epochs": state.epochs,
                      "schedule_epochs": state.schedule_end},
        "scaler": state.scaler.state_dict() if state.scaler else None,
        "epoch": epoch,
        "best_fitness": best_fitness,
        "results": results,
    }
    ckpt.update(meta)
    return ckpt


def nonfinite_tensors(obj, prefix: str = "") -> List[str]:
    """Names of the floating-point tensors in a (nested) checkpoint that hold NaN or inf."""
    if isinstance(obj, torch.Tensor):
        return [prefix] if obj.is_floating_point() and not torch.isfinite(obj).all() else []
    if isinstance(obj, dict):
        return [n for k, v in obj.items() for n in nonfinite_tensors(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(obj, (list, tuple)):
        return [n for i, v in enumerate(obj) for n in nonfinite_tensors(v, f"{prefix}[{i}]")]
    return []


def check_fits(model: torch.nn.Module, weights: Dict, where: str) -> None:
    """ValueError naming `where` and the first tensor of `weights` that `model` lacks or holds in another shape,
    or the first of its own that `weights` lacks."""
    own = model.state_dict()
    for name, tensor in weights.items():
        found = tuple(getattr(tensor, "shape", ()))
        if name not in own or found != tuple(own[name].shape):
            wanted = f"shape {tuple(own[name].shape)}" if name in own else "no such tensor"
            raise ValueError(f"{where}: tensor {name} has shape {found}; the model its run arguments build has "
                             f"{wanted}: the file does not fit its own record, cannot resume (start a new run from "
                             "a good checkpoint with --weights)")
    missing = [name for name in own if name not in weights]
    if missing:
        raise ValueError(f"{where}: lacks tensor {missing[0]} ({len(missing)} missing) of the model its run arguments "
                         "build; cannot resume")


def restore_checkpoint(state: TrainState, ckpt: Dict, where: str = "the checkpoint") -> None:
    """Put a run's model, EMA, optimizer and scaler back as they were at the end of ckpt['epoch'] (read from
    `where`); ValueError naming `where` and the first tensor that does not fit the model (check_fits)."""
    model = unwrap(state.model)
    for key in ("train_model", "model"):
        if ckpt.get(key) is not None:
            check_fits(model, ckpt[key], where)
    model.load_state_dict(ckpt["train_model"] if ckpt.get("train_model") is not None else ckpt["model"])
    if state.ema and ckpt.get("ema"):
        state.ema.load_state_dict({"module": ckpt["model"], **ckpt["ema"]})
    state.optimizer.load_state_dict(ckpt["optimizer"])
    if state.scaler and ckpt.get("scaler"):
        state.scaler.load_state_dict(ckpt["scaler"])
