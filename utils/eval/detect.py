"""Running a model over samples, and saving/loading detections as a COCO results file."""
import json
import warnings
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from utils.core.amp import autocast
from utils.core.config import parse_input_size
from utils.core.fileio import write_json_atomic
from utils.ops.boxes import decode_candidates, detections_to_image, select_detections, split_by_image
from utils.ops.image import ImageReadError, letterbox_image, read_image, to_tensor_batch
from utils.data.voc import LeftOut, UnreadableImagesError


class LetterboxedSamples(Dataset):
    """Each item: (input image HxWx3 uint8 or None when unreadable, Letterbox, (h, w) of the image, path)."""

    def __init__(self, samples, input_hw, letterbox: bool = True):
        self.samples = samples
        self.input_hw = tuple(input_hw)
        self.letterbox = letterbox

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        s = self.samples[i]
        try:
            image = read_image(s.image_path, apply_exif=getattr(s, "exif_transpose", True))
        except ImageReadError as e:
            return None, None, None, str(e)
        inp, lb = letterbox_image(image, self.input_hw, self.letterbox)
        return inp, lb, image.shape[:2], str(s.image_path)


def collate_letterboxed(items):
    return list(items)


def detect_samples(model, samples, input_size, anchors, anchors_mask, conf_thres: float = 0.001,
                   nms_thres: float = 0.5, scale_x_y: float = 1.0, letterbox: bool = True, batch_size: int = 8,
                   workers: int = 0, device="cpu", amp: Optional[torch.dtype] = None, progress: bool = True,
                   skip_unreadable: bool = False) -> List[Optional[np.ndarray]]:
    """Detect objects in every sample's image.

    Images are read and letterboxed in a DataLoader (`workers` processes); the network runs under
    autocast with dtype `amp` when given; decoding and NMS run in fp32. Images that cannot be read
    raise UnreadableImagesError naming every one after the pass, or, with `skip_unreadable`, get None
    in place of their detections (drop_unreadable takes them out of scoring and counts them).

    Returns one float32 array [K, 6] per sample: x1, y1, x2, y2 in original image pixels (clipped, boxes
    without area dropped), score, class id.
    """
    from tqdm import tqdm

    input_hw = parse_input_size(input_size)
    device = torch.device(device)
    anchors = torch.as_tensor(anchors, dtype=torch.float32)
    loader = DataLoader(LetterboxedSamples(samples, input_hw, letterbox), batch_size=batch_size,
                        shuffle=False, num_workers=workers, collate_fn=collate_letterboxed)
    was_training = model.training
    model.eval()
    results, failures = [], []
    try:
        for batch in tqdm(loader, desc="detect", unit="batch", disable=not progress, leave=False):
            failures += [(len(results) + k, item[3]) for k, item in enumerate(batch) if item[0] is None]
            results.extend(_detect_batch(model, batch, input_hw, anchors, anchors_mask, conf_thres,
                                         nms_thres, scale_x_y, device, amp))
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


def _detect_batch(model, batch, input_hw, anchors, anchors_mask, conf_thres, nms_thres, scale_x_y,
                  device, amp) -> List[Optional[np.ndarray]]:
    """Detections per item of a LetterboxedSamples batch; None for an image that could not be read."""
    ok = [item for item in batch if item[0] is not None]
    if not ok:
        return [None] * len(batch)
    images = to_tensor_batch([item[0] for item in ok]).to(device)
    with torch.no_grad():
        with autocast(device, amp):
            outputs = model(images)
        pred, image = decode_candidates([o.float() for o in outputs], anchors.to(device), anchors_mask, input_hw,
                                        scale_x_y, conf_thres)
        kept = split_by_image(select_detections(pred, image, len(ok), conf_thres, nms_thres), len(ok))
    found = iter(kept)
    out = []
    for inp, lb, image_hw, _ in batch:
        if inp is None:
            out.append(None)
            continue
        out.append(detections_to_image(next(found).cpu(), lb, image_hw).numpy().astype(np.float32))
    return out


def image_keys(samples) -> List[str]:
    """A stable id per sample for results files: the file stem, or the path when stems repeat."""
    stems = [Path(s.image_path).stem for s in samples]
    if len(set(stems)) == len(stems):
        return stems
    return [Path(s.image_path).as_posix() for s in samples]


def coco_result_rows(image_id, det: np.ndarray, class_names: Sequence[str]) -> List[dict]:
    """COCO results rows of one image's detections [K, 6] (image pixels, score, class id): image_id,
    category_id = class id + 1, category_name, bbox [x, y, w, h], score."""
    rows = []
    # full float precision, so scoring the file gives exactly the numbers of the run that wrote it
    for x1, y1, x2, y2, score, c in np.asarray(det, dtype=np.float64).reshape(-1, 6).tolist():
        rows.append({"image_id": image_id, "category_id": int(c) + 1, "category_name": class_names[int(c)],
                     "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    return rows


def write_coco_results(path, detections: Sequence[np.ndarray], image_ids: Sequence, class_names: Sequence[str]) -> int:
    """Write detections (one [K, 6] array per image) as a COCO results list (coco_result_rows), the format
    read_coco_results and `get_map.py --detections` read. Returns the number of rows written."""
    if len(image_ids) != len(detections):
        raise ValueError(f"{len(image_ids)} image ids for {len(detections)} detection arrays; expected one per image")
    rows = [row for key, det in zip(image_ids, detections) for row in coco_result_rows(key, det, class_names)]
    write_json_atomic(path, rows)
    return len(rows)


def _image_lookup(samples) -> dict:
    """Ids a results file may use for a sample: our key, stem, file name, path, or the stem as an int."""
    lookup = {}
    for i, (key, s) in enumerate(zip(image_keys(samples), samples)):
        p = Path(s.image_path)
        for alias in (key, p.stem, p.name, str(p), p.as_posix()):
            lookup.setdefault(alias, i)
        if p.stem.isdigit():
            lookup.setdefault(int(p.stem), i)
    return lookup


def _category(row, class_names, path, n):
    if "category_name" in row:
        if row["category_name"] not in class_names:
            raise ValueError(f"{path}: result {n} has category_name {row['category_name']!r}, "
                             f"not among the classes ({', '.join(class_names)}); check --classes")
        return class_names.index(row["category_name"])
    c = row["category_id"]
    if not isinstance(c, int) or not 1 <= c <= len(class_names):
        raise ValueError(f"{path}: result {n} has category_id {c!r}; expected 1..{len(class_names)} "
                         "(class index + 1 in the --classes file, as get_map.py writes them)")
    return c - 1


def read_coco_results(path, samples, class_names: Sequence[str]) -> List[np.ndarray]:
    """Read a COCO results file into one [K, 6] array per sample (image pixels, score, class id).

    Results for images not in the samples are skipped with one warning that counts them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detections file {path} does not exist")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a COCO results list [{{image_id, category_id, bbox, score}}, ...], "
                         f"found a {type(rows).__name__}")
    lookup = _image_lookup(samples)
    per_image = [[] for _ in samples]
    unknown = []
    for n, row in enumerate(rows):
        try:
            x, y, w, h = (float(v) for v in row["bbox"])
            score, image_id = float(row["score"]), row["image_id"]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: result {n} is not {{image_id, category_id, bbox: [x, y, w, h], score}} ({e!r})") from None
        if w < 0 or h < 0:
            raise ValueError(f"{path}: result {n} has bbox {row['bbox']}: width and height must not be negative "
                             "(COCO bbox is [x, y, width, height])")
        if image_id not in lookup:
            unknown.append(image_id)
            continue
        per_image[lookup[image_id]].append([x, y, x + w, y + h, score, _category(row, class_names, path, n)])
    if unknown:
        warnings.warn(f"{path}: {len(unknown)} results name images not in this split (e.g. {unknown[:3]}); skipped")
    return [np.asarray(d, dtype=np.float32).reshape(-1, 6) for d in per_image]
