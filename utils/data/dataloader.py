"""YoloDataset, its collate function and the DataLoader set-up.

A batch is (images, targets): images uint8 Tensor[B, 3, H, W] RGB; targets float32 Tensor[M, 6] with rows
(batch index, class, cx, cy, w, h), the box normalised to [0, 1] of the input.

Reproducibility: every random choice of sample i in epoch e comes from
`numpy.random.default_rng([seed, e, i])`, and the sample order of epoch e from a torch Generator
seeded with (seed, e); nothing depends on worker count, worker seeds or on earlier epochs, so a run
resumed at epoch k sees exactly the batches of an uninterrupted run.

Per epoch, call `loader.set_epoch(epoch)` on the loader from `build_dataloader` (it sets the sampler's
and the dataset's epoch), and `loader.dataset.set_mosaic(False)` for the last part of training (see
`mosaic_enabled`), and `loader.dataset.set_input_size(hw)` for --progressive-size (see `epoch_input_size`).
Worker processes live as long as the loader (persistent_workers), so they never see these calls: the sampler
reads the dataset's epoch, mosaic switch and input size in the main process when an epoch's iteration begins and
sends them to the workers with every index (`YoloDataset.key`).
"""
from typing import Callable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
import torch.distributed as tdist
from torch.utils.data import DataLoader, Dataset, Sampler

from utils.core.settings import default
from utils.core.config import parse_input_size
from utils.data.augment import AugmentConfig, hsv_jitter, mixup, mosaic, random_place
from utils.ops.boxes import image_to_input_boxes, xyxy_to_cxcywh
from utils.ops.image import letterbox_image, read_image
from utils.data.voc import Sample


def mosaic_enabled(epoch: int, epochs: int, ratio: float = 0.7) -> bool:
    """Mosaic (and mixup with it) for the first `ratio` of the epochs, as the reference's special_aug_ratio."""
    return epoch < int(epochs * ratio)


def epoch_input_size(epoch: int, epochs: int, input_hw: Tuple[int, int], start: int = 0,
                     ratio: float = 0.5) -> Tuple[int, int]:
    """The training input (h, w) of `epoch` under progressive resizing (--progressive-size `start`, 0: off): the
    longer side grows linearly from `start` at epoch 0 to the full `input_hw` at `ratio` of the `epochs`, the
    shorter by the same factor, each rounded down to a multiple of 32."""
    h, w = input_hw
    grow = int(epochs * ratio)
    if not start or epoch >= grow:
        return h, w
    longer = max(h, w)
    side = start + (longer - start) * epoch // grow  # integers: exact, the same on every machine
    return max(32, h * side // longer // 32 * 32), max(32, w * side // longer // 32 * 32)


class YoloDataset(Dataset):
    """Samples -> (HxWx3 uint8 input image, float32 [N, 5] targets: class, cx, cy, w, h normalised).

    Args:
        samples: from utils.data.voc.load_samples.
        input_size: network input, an int or (h, w), multiples of 32.
        train: augment (and leave difficult objects out); otherwise letterbox only, all non-difficult boxes.
        mosaic: probability of a mosaic of four images (train only; while set_mosaic(True)).
        mixup: probability of blending a mosaic with another augmented image, as the reference does.
        augment: the other knobs (see utils.data.augment.AugmentConfig); None for the defaults.
        seed: base of every random choice.
        cache: decoded images kept in memory (utils/data/image_cache.py, --cache ram); None reads each time.
    """

    def __init__(self, samples: Sequence[Sample], input_size: Union[int, Sequence[int]], train: bool,
                 mosaic: float = default("mosaic"), mixup: float = 0.5, augment: Optional[AugmentConfig] = None,
                 seed: int = 0, cache=None):
        if not samples:
            raise ValueError("YoloDataset needs at least one sample")
        self.samples = list(samples)
        self.input_hw = parse_input_size(input_size)
        self.train = train
        self.mosaic_prob = mosaic
        self.mixup_prob = mixup
        self.cfg = augment if augment is not None else AugmentConfig()
        self.seed = seed
        self.cache = cache
        self.epoch = 0
        self.use_mosaic = True
        self.epoch_hw = self.input_hw  # this epoch's training input (progressive resizing: set_input_size)

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_mosaic(self, enabled: bool) -> None:
        """Switch mosaic (and mixup) on or off, e.g. off for the final part of training."""
        self.use_mosaic = bool(enabled)

    def set_input_size(self, hw: Tuple[int, int]) -> None:
        """This epoch's training input (h, w) (utils.data.dataloader.epoch_input_size); validation stays at input_hw."""
        self.epoch_hw = tuple(hw)

    def key(self, index: int) -> Tuple[int, int, bool, Tuple[int, int]]:
        """(index, epoch, mosaic on, input (h, w)): all that sample `index` depends on, for a worker process."""
        return index, self.epoch, self.use_mosaic, self.epoch_hw

    def load(self, index: int, keep_difficult: bool = False):
        """(image, boxes [N, 4] xyxy image pixels, labels [N]) of sample `index`, without difficult objects."""
        s = self.samples[index]
        image = self.cache.get(s) if self.cache is not None else None
        if image is None:
            image = read_image(s.image_path, apply_exif=s.exif_transpose)
        keep = np.ones(len(s.labels), bool) if keep_difficult else ~s.difficult
        return image, s.boxes[keep].astype(np.float32), s.labels[keep]

    def _augmented(self, index: int, rng: np.random.Generator, use_mosaic: bool, hw: Tuple[int, int]):
        draw = rng.random()  # drawn either way, so switching mosaic off equals probability 0
        if use_mosaic and draw < self.mosaic_prob:
            picks = [index] + rng.integers(0, len(self), size=3).tolist()
            out = mosaic([self.load(i) for i in picks], hw, self.cfg, rng)
            if rng.random() < self.mixup_prob:
                other = int(rng.integers(0, len(self)))
                out = mixup(out, random_place(self.load(other), hw, self.cfg, rng))
        else:
            out = random_place(self.load(index), hw, self.cfg, rng)
        return hsv_jitter(out[0], self.cfg.hsv, rng), out[1], out[2]

    def _letterboxed(self, index: int):
        image, boxes, labels = self.load(index)
        resized, lb = letterbox_image(image, self.input_hw)
        return resized, image_to_input_boxes(boxes, lb), labels

    def __getitem__(self, key: Union[int, tuple]) -> Tuple[np.ndarray, np.ndarray]:
        """Sample `key`: an index (under this dataset's epoch, mosaic switch and input size), or the tuple
        `self.key` made."""
        index, epoch, use_mosaic, hw = self.key(key) if isinstance(key, (int, np.integer)) else key
        if self.train:
            rng = np.random.default_rng([self.seed, epoch, index])
            image, boxes, labels = self._augmented(index, rng, use_mosaic, hw)
        else:
            hw = self.input_hw
            image, boxes, labels = self._letterboxed(index)
        h, w = hw
        targets = np.zeros((len(labels), 5), dtype=np.float32)
        if len(labels):
            targets[:, 0] = labels
            targets[:, 1:] = xyxy_to_cxcywh(torch.from_numpy(boxes)).numpy() / np.array([w, h, w, h], dtype=np.float32)
        return image, targets


def yolo_collate(batch: List[Tuple[np.ndarray, np.ndarray]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """[(HxWx3 uint8, [N, 5])] -> (uint8 Tensor[B, 3, H, W], float32 Tensor[M, 6] with the batch index first)."""
    images = torch.from_numpy(np.stack([image for image, _ in batch])).permute(0, 3, 1, 2).contiguous()
    rows = [np.concatenate([np.full((len(t), 1), i, np.float32), t], axis=1) for i, (_, t) in enumerate(batch)]
    return images, torch.from_numpy(np.concatenate(rows).astype(np.float32)).reshape(-1, 6)


class EpochSampler(Sampler):
    """Indices in an order that depends only on (seed, epoch); in index order when not shuffling.

    Under torchrun, rank r of W takes every W-th index of that one order starting at r, so the
    ranks' shards are disjoint and their batch k together is batch k of a single process with a
    W times larger batch. Without drop_last the order is padded from its start to a multiple of W.
    """

    def __init__(self, length: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False, key: Optional[Callable[[int], object]] = None):
        self.length, self.shuffle, self.seed, self.epoch = length, shuffle, seed, 0
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.key = key  # index -> what the dataset is indexed with; called when an epoch's iteration begins

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        per_rank, rest = divmod(self.length, self.world_size)
        return per_rank + (1 if rest and not self.drop_last else 0)

    def order(self) -> list:
        """The whole epoch's order, before it is split between ranks."""
        if not self.shuffle:
            return list(range(self.length))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.length, generator=generator).tolist()

    def __iter__(self):
        order = self.order()
        total = len(self) * self.world_size
        order = order[:total] if self.drop_last else (order * (total // max(len(order), 1) + 1))[:total]
        mine = order[self.rank::self.world_size]
        return iter([self.key(i) for i in mine] if self.key else mine)


class YoloDataLoader(DataLoader):
    """A DataLoader whose set_epoch(epoch) reaches both its sampler and its dataset."""

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


def _worker_init(_: int) -> None:
    cv2.setNumThreads(0)  # each worker is one process; OpenCV threads would only contend for the cores


def build_dataloader(dataset: Dataset, batch_size: int, workers: int = 0, shuffle: bool = True, seed: int = 0,
                     distributed: bool = False, drop_last: bool = False) -> YoloDataLoader:
    """DataLoader with yolo_collate and a seeded EpochSampler (this rank's shard when `distributed`)."""
    rank, world = (tdist.get_rank(), tdist.get_world_size()) if distributed else (0, 1)
    sampler = EpochSampler(len(dataset), shuffle, seed, rank, world, drop_last=drop_last,
                           key=getattr(dataset, "key", None))
    # persistent workers: forking them anew each epoch took 0.45 s of the 1.55 s validation loss (2 cores)
    return YoloDataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                          collate_fn=yolo_collate, drop_last=drop_last, pin_memory=False,
                          worker_init_fn=_worker_init if workers > 0 else None, persistent_workers=workers > 0)
