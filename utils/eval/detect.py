"""Running a model over samples. COCO results files: utils/eval/coco_results.py (its functions re-exported here)."""
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from utils.core.settings import default
from utils.core.config import parse_input_size
from utils.core.detector_spec import DetectorSpec
from utils.ops.image import ImageReadError, letterbox_image, read_image
from utils.ops.pipeline import Letterboxed, Thresholds, detect_letterboxed
from utils.ops.slicing import Slicing, as_slicing, detect_sliced
from utils.data.voc import LeftOut, UnreadableImagesError
from utils.eval.coco_results import (coco_result_rows, dataset_categories, image_keys,  # noqa: F401 (re-exported)
                                     read_coco_results, result_image_ids, write_coco_results)


class LetterboxedSamples(Dataset):
    """Each item: (input image HxWx3 uint8 or None when unreadable, Letterbox, (h, w) of the image, path);
    with `whole`, the image itself in place of the input and None for the Letterbox (sliced inference)."""

    def __init__(self, samples, input_hw, letterbox: bool = True, whole: bool = False):
        self.samples = samples
        self.input_hw = tuple(input_hw)
        self.letterbox = letterbox
        self.whole = whole

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        s = self.samples[i]
        try:
            image = read_image(s.image_path, apply_exif=getattr(s, "exif_transpose", True))
        except ImageReadError as e:
            return None, None, None, str(e)
        if self.whole:
            return image, None, image.shape[:2], str(s.image_path)
        inp, lb = letterbox_image(image, self.input_hw, self.letterbox)
        return inp, lb, image.shape[:2], str(s.image_path)


def collate_letterboxed(items):
    return list(items)


def decoding_spec(input_size, anchors, anchors_mask, scale_x_y: float = 1.0, letterbox: bool = True) -> DetectorSpec:
    """The DetectorSpec of the loose decoding facts older callers give (no class names or strides: decoding
    needs neither)."""
    return DetectorSpec((), anchors, anchors_mask, (), parse_input_size(input_size), scale_x_y, letterbox)


def detect_samples(model, samples, input_size=None, anchors=None, anchors_mask=None,
                   conf_thres: float = default("conf", "get_map"), nms_thres: float = default("nms", "get_map"),
                   scale_x_y: float = 1.0, letterbox: bool = True, batch_size: int = 8,
                   workers: int = 0, device="cpu", amp: Optional[torch.dtype] = None, progress: bool = True,
                   skip_unreadable: bool = False, spec: Optional[DetectorSpec] = None,
                   max_det: int = default("max_det"), agnostic_nms: bool = default("agnostic_nms"),
                   slicing: Optional[Slicing] = None) -> List[Optional[np.ndarray]]:
    """Detect objects in every sample's image with the pipeline of utils/ops/pipeline.py (detect_letterboxed).

    The detector's facts come from `spec`, or, for callers that hold them apart, from input_size, anchors,
    anchors_mask, scale_x_y and letterbox (decoding_spec). Images are read and letterboxed in a DataLoader
    (`workers` processes), or with `slicing` (utils.ops.slicing.as_slicing's values) read whole and detected
    tile by tile, merged across tiles (utils.ops.slicing.detect_sliced); the network runs under
    autocast with dtype `amp` when given; decoding and NMS run in fp32. Images that cannot be read
    raise UnreadableImagesError naming every one after the pass, or, with `skip_unreadable`, get None
    in place of their detections (drop_unreadable takes them out of scoring and counts them).

    Returns one float32 array [K, 6] per sample: x1, y1, x2, y2 in original image pixels (clipped, boxes
    without area dropped), score, class id.
    """
    from tqdm import tqdm

    spec = spec if spec is not None else decoding_spec(input_size, anchors, anchors_mask, scale_x_y, letterbox)
    thresholds, device = Thresholds(conf_thres, nms_thres, max_det, agnostic_nms), torch.device(device)
    slicing = as_slicing(slicing, spec.input_size)
    loader = DataLoader(LetterboxedSamples(samples, spec.input_size, spec.letterbox, slicing is not None),
                        batch_size=batch_size,
                        shuffle=False, num_workers=workers, collate_fn=collate_letterboxed)
    was_training = model.training
    model.eval()
    results, failures = [], []
    try:
        for batch in tqdm(loader, desc="detect", unit="batch", disable=not progress, leave=False):
            failures += [(len(results) + k, item[3]) for k, item in enumerate(batch) if item[0] is None]
            results.extend(_detect_batch(model, batch, spec, thresholds, device, amp, slicing))
    finally:
        model.train(was_training)
    if failures and not skip_unreadable:
        paths = [str(samples[i].image_path) for i, _ in failures]
        left_out = [LeftOut(path, message.replace(f"{path}: ", "", 1), ground_truth_count(samples[i]))
                    for path, (i, message) in zip(paths, failures)]
        raise UnreadableImagesError(left_out, f"the {len(samples)} evaluated",
                                    "skip them explicitly (get_map.py --skip-unreadable, skip_unreadable=True)")
    for _, message in failures:
        warnings.warn(f"{message}; left out of scoring (skip_unreadable)")
    return results


def ground_truth_count(sample) -> int:
    """Objects of a sample that count as ground truth (difficult ones do not)."""
    if sample.difficult is None:
        return len(sample.labels)
    return int(np.sum(~np.asarray(sample.difficult, dtype=bool)))


def drop_unreadable(detections: Sequence[Optional[np.ndarray]], samples) -> Tuple[list, list, List[LeftOut]]:
    """(detections, samples) without the samples detect_samples(skip_unreadable=True) could not read, and
    a LeftOut for each of those."""
    kept = [i for i, d in enumerate(detections) if d is not None]
    left_out = [LeftOut(str(s.image_path), "unreadable image", ground_truth_count(s))
                for d, s in zip(detections, samples) if d is None]
    return [detections[i] for i in kept], [samples[i] for i in kept], left_out


def _detect_batch(model, batch, spec: DetectorSpec, thresholds: Thresholds, device, amp,
                  slicing: Optional[Slicing] = None) -> List[Optional[np.ndarray]]:
    """Detections per item of a LetterboxedSamples batch (whole images with `slicing`); None for an image that
    could not be read."""
    def run(items):
        return detect_letterboxed(model, items, spec, thresholds, device, amp, float_on_device=False)
    if slicing is not None:
        found = iter([detect_sliced(item[0], spec, thresholds, slicing, run) for item in batch if item[0] is not None])
    else:
        ok = [Letterboxed(*item[:3]) for item in batch if item[0] is not None]
        found = iter(run(ok) if ok else [])
    return [None if item[0] is None else next(found).numpy().astype(np.float32) for item in batch]
