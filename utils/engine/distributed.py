"""torchrun support: process group set-up, rank queries, teardown."""
import os

import torch
import torch.distributed as tdist


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join the torchrun process group (NCCL on GPUs, gloo on CPU); returns this process's device."""
    if world_size() == 1:
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def barrier() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()


def teardown() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's value of `flag` on every rank (e.g. an early-stopping decision)."""
    if not (tdist.is_available() and tdist.is_initialized()):
        return flag
    t = torch.tensor([int(flag)], device=device)
    tdist.broadcast(t, 0)
    return bool(t.item())


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside DistributedDataParallel (or the model itself)."""
    return model.module if hasattr(model, "module") else model
