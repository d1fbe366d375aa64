"""What one training run is made of: its model (seeded so that attention variants pair up), loss and TrainState.

`seeded_model` is the ablation pairing: variants trained with one seed start alike outside their blocks.
"""
from typing import Optional, Sequence, Tuple

import torch

from nets.yolo import YoloBody
from utils.core.config import DEFAULT_ANCHORS_MASK
from utils.engine import distributed as dist
from utils.engine.checkpoint import load_weights
from utils.engine.compile import compile_run
from utils.engine.class_weights import describe_class_weights, run_class_weights
from utils.engine.ema import ModelEMA
from utils.engine.loss import HEAD_BALANCE, YOLOLoss, loss_settings
from utils.engine.optim import build_optimizer
from utils.engine.train_config import TrainConfig
from utils.engine.trainer import TrainState


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


def build_loss(config: TrainConfig, anchors: torch.Tensor, num_classes: int,
               class_weights: Optional[Sequence[float]] = None) -> YOLOLoss:
    """The run's loss; `class_weights`: the per-class weights `loss_class_weights` gives (None: every class 1)."""
    return YOLOLoss(anchors, num_classes, DEFAULT_ANCHORS_MASK, YoloBody.strides, loss_settings(config),
                    config.input_size, HEAD_BALANCE, class_weights=class_weights)


def loss_class_weights(config: TrainConfig, class_names: Sequence[str], train_samples: Sequence,
                       resume: Optional[dict] = None) -> Optional[Tuple[float, ...]]:
    """The weights of --cls-weights (a resumed run's recorded ones), printed by the main process per class name."""
    weights, how = run_class_weights(config.cls_weights, config.cls_weights_power, class_names, train_samples,
                                     resume, config.classes)
    if weights is not None and dist.is_main():
        print(describe_class_weights(weights, class_names, how))
    return weights


def build_state(config: TrainConfig, model, loss_fn, device: torch.device, amp_dtype,
                schedule_end: Optional[int] = None) -> TrainState:
    """What one training step touches; base_lr is set by the loop for each phase's batch size.
    `schedule_end`: the epochs of the lr schedule, when a resumed run was extended beyond it. With --compile the
    model's and the EMA's forward are compiled in place (utils/engine/compile.py) after the EMA copied the model."""
    state = TrainState(model=model, loss_fn=loss_fn.to(device),
                       optimizer=build_optimizer(model, config.optimizer, config.lr, config.momentum,
                                                 config.weight_decay),
                       device=device, amp_dtype=amp_dtype, base_lr=0.0, epochs=config.epochs,
                       warmup_epochs=config.warmup_epochs, min_lr_ratio=config.min_lr / config.lr,
                       lr_schedule=config.lr_schedule, channels_last=config.channels_last_on,
                       grad_clip=config.grad_clip, schedule_epochs=schedule_end,
                       ema=ModelEMA(model, tau=config.ema_tau) if config.ema and dist.is_main() else None,
                       scaler=torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None)
    compile_run(config.compile, model, state.ema.module if state.ema else None, config.se_loss)
    return state
