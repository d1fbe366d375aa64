"""Exponential moving average of the model weights, used for evaluation and saving."""
import copy
import math

import torch

from utils.engine.distributed import unwrap


class ModelEMA:
    """Keeps ema = d * ema + (1 - d) * model after each step, with d ramping up from 0 to `decay`
    over roughly `tau` updates so that the early, fast-changing weights are not over-weighted.
    Buffers (BN statistics) are copied as averages too.
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0):
        self.module = copy.deepcopy(unwrap(model)).eval()
        self.decay, self.tau, self.updates = decay, tau, updates
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        state = unwrap(model).state_dict()
        averaged, latest = [], []
        for name, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                averaged.append(value)
                latest.append(state[name].detach())
            else:
                value.copy_(state[name])
        # ema + (1 - d) * (model - ema) = d * ema + (1 - d) * model, in one call over all tensors
        torch._foreach_lerp_(averaged, latest, 1 - d)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay, "tau": self.tau}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates, self.decay, self.tau = state["updates"], state["decay"], state["tau"]
