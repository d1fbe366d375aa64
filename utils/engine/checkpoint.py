"""Writing checkpoints atomically. Reading them (any supported weights file, a model built from one) lives
below the training engine, in nets/checkpoint.py, so that inference does not import utils.engine; its names
are re-exported here for the training code and older callers."""
import torch

from utils.core.fileio import atomic_open
from nets.checkpoint import (CHECKPOINT_FORMAT, load_matching, load_weights, model_from_weights,  # noqa: F401 (re-exported)
                             read_checkpoint)


def save_atomic(obj, path) -> None:
    """torch.save to a temporary file beside `path`, fsync, then rename over it.

    A kill or a full disk mid-write leaves the previous file at `path` untouched.
    """
    with atomic_open(path, "wb", fsync=True) as f:
        torch.save(obj, f)
