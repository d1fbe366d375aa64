"""`--compile`: a model's forward pass compiled with torch.compile (inductor), eager where compiling fails.

`compile_model(model)` compiles the module in place: its `forward` becomes a `GuardedForward`, so its
state_dict keys stay those of the bare model (no `_orig_mod.` prefix: checkpoints are the same with or without
--compile), the optimizer holds the same parameters, and a DistributedDataParallel wrapper or a forward hook still
sees the module it wraps. Autograd compiles the backward pass of the same graph (AOTAutograd), so a training
step's forward and backward are both compiled; the loss (its assignment of positives changes shape with every
batch's objects) and the optimizer step stay eager.

Compiling happens on the first call of each mode (training or evaluation, with or without autograd), for the
input shape of that call; a call of the same mode with another batch size (an epoch's or an evaluation's smaller
last batch) runs eagerly rather than compiling again (about a minute on 2 cores), while a new image size of the
same batch size (--progressive-size's growing input) is compiled once more, at that cost again. When it fails (no C++
compiler, an operator inductor does not support, any error of the compiler), the call is made again eagerly,
with the module's buffers (BatchNorm statistics) and the random state as they were before it, so the result is
the eager one; one line says so, once per process, and the module stays eager from then on.
"""
import copy
import shutil
import types
from typing import Callable, List, Optional

import torch

BACKEND = "inductor"
# Graphs one forward may hold: a training and an evaluation mode, with or without autograd, at each input size of
# --progressive-size (128 to 416 px: 10). Past dynamo's limit (8 by default) a new size would run eagerly unsaid.
RECOMPILE_LIMIT = 32
_said: List[str] = []  # the fallback line printed in this process (printed once)
_failed: List[str] = []  # a compilation failed in this process: later models (an evaluation's copy) stay eager


def say_once(line: str) -> None:
    """Print `line` the first time a fallback happens in this process."""
    if not _said:
        _said.append(line)
        print(line, flush=True)


def no_compiler_reason() -> Optional[str]:
    """Why inductor cannot compile for the CPU here (it needs a C++ compiler), or None."""
    if shutil.which("g++") or shutil.which("c++") or shutil.which("clang++"):
        return None
    return "no C++ compiler (g++, c++ or clang++) on PATH"


def _first_line(error: BaseException) -> str:
    """The innermost cause of a compiler error (dynamo wraps the backend's in BackendCompilerFailed), one line."""
    for _ in range(10):  # a chain of causes, never a loop
        inner = getattr(error, "inner_exception", None) or error.__cause__
        if inner is None:
            break
        error = inner
    text = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {text[0][:160]}" if text else type(error).__name__


class GuardedForward:
    """A module's forward through torch.compile; eager (and from then on eager) when compiling raises.
    `training`: False compiles the calls in eval mode only (a training-mode call runs eagerly)."""

    def __init__(self, module: torch.nn.Module, eager: Callable, training: bool = True):
        self.module, self.eager, self.training = module, eager, training
        self.compiled: Optional[Callable] = torch.compile(eager, backend=BACKEND, dynamic=False)
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        self.batches: dict = {}  # (training, autograd on) -> the batch size compiled for that mode

    def __call__(self, *args, **kwargs):
        if self.compiled is None or (self.module.training and not self.training):
            return self.eager(*args, **kwargs)
        batch = len(args[0]) if args and isinstance(args[0], torch.Tensor) else None
        if self.batches.setdefault((self.module.training, torch.is_grad_enabled()), batch) != batch:
            return self.eager(*args, **kwargs)  # a smaller last batch: not worth a compilation of its own
        buffers = list(self.module.buffers())
        saved = [b.clone() for b in buffers]
        rng = torch.get_rng_state()
        try:
            return self.compiled(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 -- any failure of the compiler: the eager pass decides
            with torch.no_grad():
                for buffer, value in zip(buffers, saved):
                    buffer.copy_(value)
            torch.set_rng_state(rng)
            out = self.eager(*args, **kwargs)  # an error of the model itself is raised here, as without --compile
            self.compiled = None
            _failed.append(_first_line(error))
            say_once(f"--compile: compiling the model failed ({_first_line(error)}); running it eagerly")
            return out

    def __deepcopy__(self, memo):
        # a copy of the module (the EMA, an evaluation copy) gets its own eager forward, never this module's
        copied = memo.get(id(self.module))
        if copied is None:
            copied = copy.deepcopy(self.module, memo)
        return types.MethodType(type(copied).forward, copied)


def compile_model(model: torch.nn.Module, training: bool = True) -> torch.nn.Module:
    """`model`, its forward compiled in place (see the module docstring; `training` False: in eval mode only);
    eager, said once, without a compiler."""
    reason = no_compiler_reason()
    if reason is not None:
        say_once(f"--compile: {reason}; running the model eagerly")
        return model
    if not _failed and not isinstance(model.forward, GuardedForward):
        model.forward = GuardedForward(model, model.forward, training)
    return model


def compile_run(choice, model: torch.nn.Module, ema_module: Optional[torch.nn.Module], se_loss: float) -> None:
    """--compile `choice` on a run's models: eval compiles the evaluation passes (the validation loss of the EMA
    or, without EMA, of the model in eval mode); all the training step too, except with an SE-loss, whose
    logits are collected by forward hooks registered anew for every step (YoloBody.collect_se_logits), which a
    compiled graph would trace again at every step: that run trains eagerly, said once."""
    if choice not in ("eval", "all"):  # off (an older record's False: off)
        return
    training = choice == "all"
    if training and se_loss > 0:
        say_once("--compile: with --se-loss the training step stays eager (its logits are collected by hooks that a "
                 "compiled graph would trace again at every step); evaluation is compiled")
        training = False
    compile_model(model, training)
    if ema_module is not None:
        compile_model(ema_module, training=False)


def is_compiled(model: torch.nn.Module) -> bool:
    """Whether `model`'s forward still goes through torch.compile (False after a fallback)."""
    forward = getattr(model, "forward", None)
    return isinstance(forward, GuardedForward) and forward.compiled is not None
