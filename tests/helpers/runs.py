"""train.py's arguments for a tiny run, and the tensors of its checkpoints."""
from pathlib import Path

import torch


def base_args(data: Path, save_dir: Path, *extra) -> list:
    """train.py's argv for a short run on `data` at input 128 (batch 2, no workers, quiet)."""
    return ["--data", str(data), "--classes", str(data / "classes.txt"), "--input-size", "128",
            "--batch-size", "2", "--workers", "0", "--save-dir", str(save_dir), "--quiet", *map(str, extra)]


def checkpoint_tensors(ckpt: dict) -> dict:
    """Model, training weights, EMA and optimizer state of a checkpoint, flattened to name -> tensor."""
    flat = {f"model.{k}": v for k, v in ckpt["model"].items()}
    flat.update({f"train_model.{k}": v for k, v in (ckpt["train_model"] or {}).items()})
    for i, state in ckpt["optimizer"]["state"].items():
        flat.update({f"optimizer.{i}.{k}": torch.as_tensor(v) for k, v in state.items()})
    return flat
