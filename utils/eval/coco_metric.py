"""COCO box mAP@[.5:.95] in vectorised numpy, giving pycocotools' COCOeval numbers exactly.

pycocotools loops in Python over image x class x IoU threshold x detection x ground truth; on 5,000
images x 20 classes x 100 detections that takes ~20 s, far more than scoring should cost next to the
model. This module follows its rules step for step (tests compare every array with pycocotools):
- per image and class: detections by descending score (ties in input order), the first 100 kept;
- ground truth is ignored when crowd, or when its area (the annotation's `area`, as given) lies outside
  the area range; a detection's area is w * h;
- in score order, a detection takes the ground truth of highest IoU >= t (ties: the later box) among
  those not yet taken, trying boxes that are not ignored before ignored ones; crowd boxes are never
  used up and their IoU is intersection / detection area;
- a detection on an ignored box is ignored; so is an unmatched one outside the area range;
- per class, area range and detection limit: precision at 101 recall points from the PR envelope;
  the 12 summary numbers are means over the entries that exist (-1 where none does).

Boxes are [x, y, w, h] in float64, as in a COCO results file; IoU uses x + w as pycocotools does.
"""
from typing import Dict, NamedTuple, Optional

import numpy as np

from utils.ops.boxes import crowd_iou_xywh_np

IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)  # as pycocotools builds them
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1)
AREA_RANGES = np.array([[0, 1e5 ** 2], [0, 32 ** 2], [32 ** 2, 96 ** 2], [96 ** 2, 1e5 ** 2]])  # all, S, M, L
MAX_DETS = (1, 10, 100)
# (AP or AR, IoU index or None for all, area index, max-dets index) for each of COCOeval.stats
SUMMARY = ((True, None, 0, 2), (True, 0, 0, 2), (True, 5, 0, 2), (True, None, 1, 2), (True, None, 2, 2),
           (True, None, 3, 2), (False, None, 0, 0), (False, None, 0, 1), (False, None, 0, 2),
           (False, None, 1, 2), (False, None, 2, 2), (False, None, 3, 2))


class CocoBoxes(NamedTuple):
    image: np.ndarray  # [N] int64 image id
    labels: np.ndarray  # [N] int64 class index 0..K-1
    xywh: np.ndarray  # [N, 4] float64
    scores: np.ndarray  # [N] float64 (unused for ground truth)
    crowd: np.ndarray  # [N] bool (ground truth only; False for detections)
    area: Optional[np.ndarray] = None  # [N] float64 for the area ranges; None: w * h

    def take(self, index) -> "CocoBoxes":
        return CocoBoxes(*(None if a is None else a[index] for a in self))

    def areas(self) -> np.ndarray:
        return self.xywh[:, 2] * self.xywh[:, 3] if self.area is None else np.asarray(self.area, dtype=np.float64)


def _group_starts(*keys: np.ndarray) -> np.ndarray:
    """Bool [N]: True where any key differs from the row before (rows sorted by the keys)."""
    n = len(keys[0])
    new = np.zeros(n, dtype=bool)
    new[:1] = True
    for k in keys:
        new[1:] |= k[1:] != k[:-1]
    return new


def _candidate_pairs(det: CocoBoxes, gt: CocoBoxes, num_images: int):
    """(det row, gt row, IoU) for same image and class pairs with IoU >= 0.5, the lowest threshold.

    Pairs below every threshold never match and never block a match, so they can be dropped.
    """
    gt_key = gt.labels * num_images + gt.image  # gt is sorted by this key
    det_key = det.labels * num_images + det.image
    start = np.searchsorted(gt_key, det_key, "left")
    count = np.searchsorted(gt_key, det_key, "right") - start
    pair_det = np.repeat(np.arange(len(det_key)), count)
    first = np.cumsum(count) - count
    pair_gt = np.arange(len(pair_det)) - np.repeat(first - start, count)
    iou = crowd_iou_xywh_np(det.xywh[pair_det], gt.xywh[pair_gt], gt.crowd[pair_gt])
    keep = iou >= IOU_THRS[0]
    return pair_det[keep], pair_gt[keep], iou[keep]


def _segment_last_argmax(values: np.ndarray, seg_start: np.ndarray, seg_id: np.ndarray):
    """Per segment of the last axis: (max value, last position holding it); values < 0 mean absent."""
    best = np.maximum.reduceat(values, seg_start, axis=-1)
    positions = np.broadcast_to(np.arange(values.shape[-1]), values.shape)
    at_best = (values == best[..., seg_id]) & (values >= 0)
    last = np.maximum.reduceat(np.where(at_best, positions, -1), seg_start, axis=-1)
    return best, last


def match(det: CocoBoxes, rank: np.ndarray, gt: CocoBoxes, gt_ignore: np.ndarray, det_outside: np.ndarray,
          num_images: int):
    """Greedy matching for every area range and IoU threshold at once.

    det sorted by (class, image, rank), gt by (class, image); rank is each detection's place in its
    image and class by score; gt_ignore [A, G]; det_outside [A, D] (detection area outside range).
    Returns matched [A, T, D] and ignored [A, T, D] bool.
    """
    num_a, num_t = len(gt_ignore), len(IOU_THRS)
    matched = np.zeros((num_a, num_t, len(rank)), dtype=bool)
    ignored = np.broadcast_to(det_outside[:, None, :], matched.shape).copy()
    taken = np.zeros((num_a, num_t, len(gt.labels)), dtype=bool)
    pair_det, pair_gt, iou = _candidate_pairs(det, gt, num_images)
    pair_rank = rank[pair_det]
    by_rank = np.argsort(pair_rank, kind="stable")  # keeps pairs of one detection together, gts in order
    bounds = np.searchsorted(pair_rank[by_rank], np.arange(pair_rank.max(initial=-1) + 2))
    thr = np.minimum(IOU_THRS, 1 - 1e-10)[None, :, None]
    for r in range(len(bounds) - 1):  # detections of equal rank lie in distinct images/classes: no conflicts
        sel = by_rank[bounds[r]:bounds[r + 1]]
        if not len(sel):
            continue
        d, g, v = pair_det[sel], pair_gt[sel], iou[sel]
        seg = _group_starts(d)
        seg_start, seg_id = np.flatnonzero(seg), np.cumsum(seg) - 1
        free = ~taken[:, :, g] | gt.crowd[g]
        eligible = free & (v >= thr)  # [A, T, P]
        ign = np.broadcast_to(gt_ignore[:, None, g], eligible.shape)
        best_reg, last_reg = _segment_last_argmax(np.where(eligible & ~ign, v, -1.0), seg_start, seg_id)
        best_ign, last_ign = _segment_last_argmax(np.where(eligible & ign, v, -1.0), seg_start, seg_id)
        use_reg = best_reg >= 0
        pos = np.where(use_reg, last_reg, last_ign)  # [A, T, S]
        hit = pos >= 0
        a_idx, t_idx, s_idx = np.nonzero(hit)
        p = pos[a_idx, t_idx, s_idx]
        taken[a_idx, t_idx, g[p]] = True
        rows = d[seg_start]
        matched[a_idx, t_idx, rows[s_idx]] = True
        ignored[a_idx, t_idx, rows[s_idx]] = gt_ignore[a_idx, g[p]]
    return matched, ignored


def _precision_recall(tp: np.ndarray, fp: np.ndarray, npig: int):
    """tp, fp [T, n] bool in score order -> precision [T, R] at REC_THRS and recall [T]."""
    tp_sum = np.cumsum(tp, axis=1).astype(float)
    fp_sum = np.cumsum(fp, axis=1).astype(float)
    num_t, n = tp.shape
    rc = tp_sum / npig
    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # envelope
    precision = np.zeros((num_t, len(REC_THRS)))
    for t in range(num_t):
        inds = np.searchsorted(rc[t], REC_THRS, side="left")
        ok = inds < n
        precision[t, ok] = pr[t, inds[ok]]
    recall = rc[:, -1] if n else np.zeros(num_t)
    return precision, recall


def summarize(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """The 12 numbers of COCOeval.stats from precision [T, R, K, A, M] and recall [T, K, A, M]."""
    stats = np.full(len(SUMMARY), -1.0)
    for i, (is_ap, t, a, m) in enumerate(SUMMARY):
        s = precision[..., a, m] if is_ap else recall[..., a, m]
        if t is not None:
            s = s[t]
        if np.any(s > -1):
            stats[i] = np.mean(s[s > -1])
    return stats


def _precision_by_class(gt: CocoBoxes, det: CocoBoxes, num_classes: int, area_ranges: np.ndarray,
                        max_dets: tuple):
    """precision [T, R, K, A, M] and recall [T, K, A, M] over the given area ranges and detection limits."""
    num_images = int(max(gt.image.max(initial=-1), det.image.max(initial=-1))) + 1
    gt = gt.take(np.lexsort((gt.image, gt.labels)))
    det = det.take(np.lexsort((-det.scores, det.image, det.labels)))
    new_group = _group_starts(det.labels, det.image)
    starts = np.flatnonzero(new_group)
    rank = np.arange(len(det.labels)) - starts[np.cumsum(new_group) - 1]
    det, rank = det.take(rank < max_dets[-1]), rank[rank < max_dets[-1]]

    lo, hi = area_ranges[:, :1], area_ranges[:, 1:]
    gt_area, det_area = gt.areas(), det.areas()
    gt_ignore = gt.crowd[None, :] | (gt_area < lo) | (gt_area > hi)  # [A, G]
    matched, ignored = match(det, rank, gt, gt_ignore, (det_area < lo) | (det_area > hi), num_images)

    num_t, num_r, num_a, num_m = len(IOU_THRS), len(REC_THRS), len(area_ranges), len(max_dets)
    precision = -np.ones((num_t, num_r, num_classes, num_a, num_m))
    recall = -np.ones((num_t, num_classes, num_a, num_m))
    by_score = np.lexsort((-det.scores, det.labels))  # per class, stable over (image, rank)
    class_start = np.searchsorted(det.labels[by_score], np.arange(num_classes + 1))
    for k in range(num_classes):
        rows = by_score[class_start[k]:class_start[k + 1]]
        npig = np.count_nonzero(~gt_ignore[:, gt.labels == k], axis=1)
        for m, max_det in enumerate(max_dets):
            rows_m = rows[rank[rows] < max_det]
            for a in range(num_a):
                if npig[a] == 0:
                    continue
                hit, ign = matched[a][:, rows_m], ignored[a][:, rows_m]
                precision[:, :, k, a, m], recall[:, k, a, m] = _precision_recall(hit & ~ign, ~hit & ~ign, npig[a])
    return precision, recall


def coco_evaluate(gt: CocoBoxes, det: CocoBoxes, num_classes: int) -> Dict[str, np.ndarray]:
    """COCOeval('bbox') over every image id in gt and det, one category per class index.

    Returns precision [T, R, K, A, M], recall [T, K, A, M] (-1 where a class has no ground truth in
    an area range) and stats [12] in COCOeval.stats order.
    """
    precision, recall = _precision_by_class(gt, det, num_classes, AREA_RANGES, MAX_DETS)
    return {"precision": precision, "recall": recall, "stats": summarize(precision, recall)}


def coco_map50_95(gt: CocoBoxes, det: CocoBoxes, num_classes: int) -> float:
    """COCOeval.stats[0] alone (AP@[.5:.95], all areas, 100 detections), -1 without ground truth.

    The same number as coco_evaluate, computed for one area range and one detection limit instead of
    four and three (about 2.5x faster on 100 images), for a bootstrap that scores many resamples.
    """
    precision, _ = _precision_by_class(gt, det, num_classes, AREA_RANGES[:1], MAX_DETS[-1:])
    p = precision[..., 0, 0]
    return float(np.mean(p[p > -1])) if np.any(p > -1) else -1.0
