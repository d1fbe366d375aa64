"""`--cache ram`: the decoded images of a run kept in memory, read once before the loader's workers start.

What is kept is what `read_image` returns (HxWx3 uint8 RGB, EXIF-upright), not a resized image: the training
augmentation resizes each image from its decoded pixels to a random size (aspect jitter and scale,
utils/data/augment.py random_size), so a resized copy would change the batches. With the decoded image the
batches are those of a run without the cache, tensor for tensor. The arrays are read-only, so no augmentation
can change the cached pixels.

The cache is filled in the main process (a thread per loader worker: decoding releases the GIL) before the
DataLoader forks its workers; the forked workers then read the parent's arrays without copying them (their pages
are shared copy-on-write and never written). Before it is filled, the bytes it will hold (width x height x 3 of
every image, from the scan) are checked against the memory available (MemAvailable of /proc/meminfo).
"""
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Optional, Sequence

import numpy as np

from utils.ops.image import read_image

USABLE_SHARE = 0.7  # of the available memory; the rest is left to the model, the workers and the system
GIB = 1024 ** 3


def available_memory() -> Optional[int]:
    """Bytes of memory available to a new process (MemAvailable), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def unique_samples(samples: Sequence) -> list:
    """The samples with distinct (image_path, exif_transpose), in order."""
    seen = {}
    for s in samples:
        seen.setdefault((str(s.image_path), bool(s.exif_transpose)), s)
    return list(seen.values())


def cache_bytes(samples: Sequence) -> int:
    """Bytes of the decoded images of `samples` (each width x height x 3 uint8, from the scan)."""
    return sum(int(s.width) * int(s.height) * 3 for s in unique_samples(samples))


def check_fits(samples: Sequence, available: Optional[int], processes: int = 1) -> int:
    """The bytes the cache needs; ValueError saying what is needed and what is there when it does not fit in
    USABLE_SHARE of `available` (None: unknown, not checked). `processes`: caches on this machine (torchrun)."""
    needed = cache_bytes(samples) * processes
    if available is not None and needed > USABLE_SHARE * available:
        per = f" ({processes} processes, one cache each)" if processes > 1 else ""
        raise ValueError(f"--cache ram: the {len(unique_samples(samples))} decoded images need {needed / GIB:.2f} "
                         f"GiB{per}, and {available / GIB:.2f} GiB of memory are available (at most "
                         f"{USABLE_SHARE:.0%} of it is used for the cache); train with --cache none, or on fewer "
                         "or smaller images")
    return needed


class ImageCache:
    """Decoded images by (path, exif_transpose): `get(sample)` returns the cached read-only array."""

    def __init__(self, images: Dict[tuple, np.ndarray]):
        self.images = images

    @staticmethod
    def key(sample) -> tuple:
        return str(sample.image_path), bool(sample.exif_transpose)

    @classmethod
    def fill(cls, samples: Sequence, threads: int = 1) -> "ImageCache":
        """Read every image of `samples` once (`threads` at a time)."""
        todo = unique_samples(samples)

        def read(s) -> np.ndarray:
            image = read_image(s.image_path, apply_exif=s.exif_transpose)
            image.setflags(write=False)
            return image

        with ThreadPoolExecutor(max(1, threads)) as pool:
            images = list(pool.map(read, todo))
        return cls({cls.key(s): image for s, image in zip(todo, images)})

    def get(self, sample) -> Optional[np.ndarray]:
        return self.images.get(self.key(sample))

    @property
    def nbytes(self) -> int:
        return sum(image.nbytes for image in self.images.values())


def local_processes() -> int:
    """The processes torchrun starts on this machine, each with a cache of its own (1 without torchrun)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def check_cache_fits(samples: Sequence) -> int:
    """check_fits for this machine: its available memory, one cache per local process."""
    return check_fits(samples, available_memory(), local_processes())


def build_image_cache(samples: Sequence, threads: int) -> ImageCache:
    """The filled cache of `samples` (train and validation), checked first against the available memory."""
    needed = check_cache_fits(samples)
    cache = ImageCache.fill(samples, threads)
    size = needed / local_processes()
    shown = f"{size / GIB:.2f} GiB" if size >= GIB else f"{size / 2 ** 20:.1f} MiB"
    print(f"--cache ram: {len(cache.images)} images decoded in memory, {shown}")
    return cache
