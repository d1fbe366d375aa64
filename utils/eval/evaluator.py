"""Detection metrics in memory: VOC AP (devkit rules), COCO mAP (pycocotools rules), P/R/F1, confusion matrix.

Shared by get_map.py and training, so both report the same numbers with the same defaults.

Inputs everywhere:
  detections: one array [K, 6] per sample: x1, y1, x2, y2 (image pixels), score, class id.
  samples: objects with `boxes` [N, 4] xyxy image pixels, `labels` [N], `difficult` [N] (utils.data.voc.Sample).
Boxes are continuous coordinates (IoU without the devkit's +1 inclusive-pixel term), as in COCO.
VOC AP and the confusion matrix score the samples' boxes (clipped to the image, boxes without area left
out, difficult ignored). COCO mAP scores a sample's `coco_truth` where it has one (a COCO JSON's
annotations as the file gives them: unclipped, zero sizes kept, `area`, iscrowd), as pycocotools does
on that file, and its boxes otherwise (difficult as crowd, area w*h).
"""
import contextlib
import io
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np

from utils.core.config import parse_input_size
from utils.core.schema_tools import COCO_BACKENDS, METRICS  # noqa: F401 (re-exported)
from utils.core.settings import default
from utils.ops.boxes import box_iou_np
from utils.eval.coco_metric import CocoBoxes, coco_evaluate
from utils.eval.detect import detect_samples, drop_unreadable

# get_map.py's defaults, from the schema (utils/core/schema_tools.py): conf low, so the PR curve reaches high
# recall; score_thr the operating point for precision, recall, F1 and the confusion matrix
CONF_THRES, NMS_THRES = default("conf", "get_map"), default("nms", "get_map")
IOU_THRES, SCORE_THRES = default("iou"), default("score_thr")
COCO_STAT_NAMES = ("map50_95", "map50", "map75", "map_small", "map_medium", "map_large",
                   "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")


class Boxes(NamedTuple):
    """Flat boxes of a whole split; `image` is the sample index of each row."""

    image: np.ndarray  # [M] int64
    boxes: np.ndarray  # [M, 4] float64 xyxy
    labels: np.ndarray  # [M] int64
    scores: np.ndarray  # [M] float64 (ones for ground truth)
    difficult: np.ndarray  # [M] bool (all False for detections)

    def select(self, mask: np.ndarray) -> "Boxes":
        return Boxes(*(a[mask] for a in self))


def _flatten(per_image: Sequence[np.ndarray], fields) -> Boxes:
    counts = [len(fields(x)[0]) for x in per_image]
    image = np.repeat(np.arange(len(per_image), dtype=np.int64), counts)
    if not image.size:
        return Boxes(image, np.zeros((0, 4)), image.copy(), np.zeros(0), np.zeros(0, dtype=bool))
    parts = [fields(x) for x in per_image]
    return Boxes(image, np.concatenate([p[0] for p in parts]).astype(np.float64).reshape(-1, 4),
                 np.concatenate([p[1] for p in parts]).astype(np.int64),
                 np.concatenate([p[2] for p in parts]).astype(np.float64),
                 np.concatenate([p[3] for p in parts]).astype(bool))


def gather_ground_truth(samples) -> Boxes:
    def fields(s):
        n = len(s.labels)
        difficult = np.zeros(n, dtype=bool) if s.difficult is None else np.asarray(s.difficult, dtype=bool)
        return np.asarray(s.boxes, dtype=np.float64).reshape(-1, 4), np.asarray(s.labels), np.ones(n), difficult
    return _flatten(samples, fields)


def gather_coco_truth(samples) -> CocoBoxes:
    """Ground truth for COCO mAP: per sample its `coco_truth` (x, y, w, h, area, iscrowd, class) where it has
    one, else its boxes as xywh with area w*h and difficult boxes as crowd; `image` is the sample index."""
    parts = []
    for i, s in enumerate(samples):
        t = getattr(s, "coco_truth", None)
        if t is None:
            xyxy = np.asarray(s.boxes, dtype=np.float64).reshape(-1, 4)
            crowd = np.zeros(len(xyxy)) if s.difficult is None else np.asarray(s.difficult, dtype=np.float64)
            xywh = _xywh(xyxy)
            t = np.column_stack([xywh, xywh[:, 2] * xywh[:, 3], crowd, np.asarray(s.labels, dtype=np.float64)])
        parts.append(np.column_stack([np.full(len(t), i), np.asarray(t, dtype=np.float64).reshape(-1, 7)]))
    rows = np.concatenate(parts) if parts else np.zeros((0, 8))
    return CocoBoxes(rows[:, 0].astype(np.int64), rows[:, 7].astype(np.int64), rows[:, 1:5], np.ones(len(rows)),
                     rows[:, 6] != 0, rows[:, 5])


def gather_detections(detections: Sequence[np.ndarray]) -> Boxes:
    def fields(d):
        d = np.asarray(d, dtype=np.float64).reshape(-1, 6)
        return d[:, :4], d[:, 5], d[:, 4], np.zeros(len(d), dtype=bool)
    return _flatten(detections, fields)


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool = False) -> float:
    """Area under the PR curve: VOC2010+ all-point interpolation, or VOC2007's 11 recall points."""
    if use_07_metric:
        return float(np.mean([np.max(prec[rec >= t], initial=0.0) for t in np.linspace(0, 1, 11)]))
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _best_gt(det: Boxes, gt: Boxes, num_images: int, chunk_elems: int = 1 << 22):
    """For each detection, the same-image ground truth of highest IoU: (index into gt or -1, IoU)."""
    counts = np.bincount(gt.image, minlength=num_images)
    offsets = np.cumsum(counts) - counts
    gmax = int(counts.max(initial=0))
    best = np.full(len(det.image), -1, dtype=np.int64)
    best_iou = np.zeros(len(det.image))
    if gmax == 0:
        return best, best_iou
    padded = np.full((num_images, gmax, 4), np.nan)
    padded[gt.image, np.arange(len(gt.image)) - offsets[gt.image]] = gt.boxes  # gt sorted by image
    step = max(1, chunk_elems // gmax)
    for s in range(0, len(det.image), step):
        img = det.image[s:s + step]
        iou = np.nan_to_num(box_iou_np(det.boxes[s:s + step, None, :], padded[img]), nan=-1.0)
        slot = iou.argmax(axis=1)
        best_iou[s:s + step] = iou[np.arange(len(img)), slot]
        best[s:s + step] = np.where(best_iou[s:s + step] >= 0, offsets[img] + slot, -1)
    return best, best_iou


def match_class(det: Boxes, gt: Boxes, num_images: int, iou_thres: float = IOU_THRES):
    """VOC devkit matching for one class.

    Detections are taken by descending score; each takes its highest-IoU ground truth of the same
    image. IoU > iou_thres on a difficult box: ignored (dropped). On a box not yet taken: TP.
    Otherwise (taken already, or IoU too low): FP.
    Returns (scores, tp) of the kept detections, sorted by descending score.
    """
    order = np.argsort(-det.scores, kind="stable")
    det = det.select(order)
    gt = gt.select(np.argsort(gt.image, kind="stable"))
    best, best_iou = _best_gt(det, gt, num_images)
    hit = (best >= 0) & (best_iou > iou_thres)
    ignored = np.zeros(len(order), dtype=bool)
    ignored[hit] = gt.difficult[best[hit]]
    candidates = np.flatnonzero(hit & ~ignored)
    tp = np.zeros(len(order), dtype=bool)
    _, first = np.unique(best[candidates], return_index=True)  # first in score order wins the box
    tp[candidates[first]] = True
    return det.scores[~ignored], tp[~ignored]


def class_metrics(scores: np.ndarray, tp: np.ndarray, npos: int, score_thr: float) -> Dict:
    """AP (all-point and 11-point), the PR curve, and P/R/F1 at score_thr from matched detections."""
    tp_cum = np.cumsum(tp)
    fp_cum = np.cumsum(~tp)
    prec = tp_cum / np.maximum(tp_cum + fp_cum, 1)
    rec = tp_cum / max(npos, 1)
    k = int(np.sum(scores >= score_thr))
    tp_k, fp_k = (int(tp_cum[k - 1]), int(fp_cum[k - 1])) if k else (0, 0)
    p = tp_k / k if k else 0.0
    r = tp_k / npos if npos else 0.0
    return {
        "ap": voc_ap(rec, prec) if npos else None,
        "ap07": voc_ap(rec, prec, use_07_metric=True) if npos else None,
        "tp": tp_k, "fp": fp_k, "precision": p, "recall": r,
        "f1": 2 * p * r / (p + r) if p + r > 0 else 0.0,
        "curve": {"recall": rec, "precision": prec, "scores": scores},
    }


def voc_eval(det: Boxes, gt: Boxes, num_images: int, class_names: Sequence[str],
             iou_thres: float = IOU_THRES, score_thr: float = SCORE_THRES) -> List[Dict]:
    """Per-class VOC results; AP is None for a class without non-difficult ground truth."""
    results = []
    for c, name in enumerate(class_names):
        d, g = det.select(det.labels == c), gt.select(gt.labels == c)
        npos = int(np.sum(~g.difficult))
        scores, tp = match_class(d, g, num_images, iou_thres)
        row = {"class": name, "gts": npos, "difficult": int(g.difficult.sum()), "dets": len(d.image)}
        row.update(class_metrics(scores, tp, npos, score_thr))
        results.append(row)
    return results


def mean_ap(per_class: Sequence[Dict], key: str) -> float:
    """Mean over classes that have ground truth (0.0 when none has)."""
    values = [r[key] for r in per_class if r[key] is not None]
    return float(np.mean(values)) if values else 0.0


def _check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(choices)}")


def _xywh(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def coco_ground_truth(gt: CocoBoxes, num_images: int, class_names: Sequence[str]) -> Dict:
    """A COCO dataset dict of gather_coco_truth's boxes; image ids are sample indices, category id = class id + 1.

    Difficult boxes of other formats are crowd regions there, the COCO way of marking boxes that neither
    count as misses nor make a detection on them a false positive.
    """
    annotations = [{"id": i + 1, "image_id": img, "category_id": c + 1, "bbox": b, "area": a, "iscrowd": int(d)}
                   for i, (img, c, b, a, d) in enumerate(zip(gt.image.tolist(), gt.labels.tolist(), gt.xywh.tolist(),
                                                             gt.areas().tolist(), gt.crowd.tolist()))]
    return {"images": [{"id": i} for i in range(num_images)], "annotations": annotations,
            "categories": [{"id": c + 1, "name": n} for c, n in enumerate(class_names)]}


def coco_results(det: Boxes) -> List[Dict]:
    """COCO results list (bbox xywh) with sample indices as image ids and class id + 1 as category."""
    return [{"image_id": i, "category_id": c + 1, "bbox": b, "score": s}
            for i, c, b, s in zip(det.image.tolist(), det.labels.tolist(), _xywh(det.boxes).tolist(), det.scores.tolist())]


def pycocotools_eval(gt: CocoBoxes, det: Boxes, num_images: int, class_names: Sequence[str]):
    """pycocotools' COCOeval run quietly: (precision [T, R, K, A, M], stats [12])."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = coco_ground_truth(gt, num_images, class_names)
        coco_gt.createIndex()
        if len(det.image):
            coco_dt = coco_gt.loadRes(coco_results(det))
        else:  # loadRes fails on an empty list; no detections is a result like any other
            coco_dt = COCO()
            coco_dt.dataset = {**coco_gt.dataset, "annotations": []}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.eval["precision"], np.asarray(ev.stats)


def coco_boxes(b: Boxes) -> CocoBoxes:
    """Detections (or boxes) as CocoBoxes: xywh, area w * h."""
    return CocoBoxes(b.image, b.labels, _xywh(b.boxes), b.scores, b.difficult)


def fast_coco_eval(gt: CocoBoxes, det: Boxes, num_classes: int):
    """utils.eval.coco_metric, the same numbers as pycocotools_eval: (precision [T, R, K, A, M], stats [12])."""
    r = coco_evaluate(gt, coco_boxes(det), num_classes)
    return r["precision"], r["stats"]


def coco_eval(gt: CocoBoxes, det: Boxes, num_images: int, class_names: Sequence[str], backend: str = "fast"):
    """COCO box metrics of gather_coco_truth's ground truth: (stats dict, per-class AP@[.5:.95] list).

    backend 'fast' (utils.eval.coco_metric) and 'pycocotools' give the same numbers; fast is ~30x quicker.
    A stat is None where no ground truth exists for it (pycocotools' -1), with or without detections.
    """
    _check_choice("COCO backend", backend, COCO_BACKENDS)
    num_classes = len(class_names)
    if backend == "pycocotools":
        precision, stats = pycocotools_eval(gt, det, num_images, class_names)
    else:
        precision, stats = fast_coco_eval(gt, det, num_classes)
    stats = {k: float(v) if v >= 0 else None for k, v in zip(COCO_STAT_NAMES, stats)}  # -1: no such boxes
    prec = precision[:, :, :, 0, -1]  # T, R, K at area "all", maxDets 100
    per_class = []
    for k in range(num_classes):
        p = prec[:, :, k]
        per_class.append(float(p[p > -1].mean()) if np.any(p > -1) else None)
    return stats, per_class


def confusion_matrix(det: Boxes, gt: Boxes, num_images: int, num_classes: int,
                     score_thr: float = SCORE_THRES, iou_thres: float = IOU_THRES) -> np.ndarray:
    """[C+1, C+1] counts, rows true class, columns predicted class, last row/column background.

    Class-agnostic greedy matching per image, highest IoU pair first; a detection matched to a
    difficult box is not counted, nor is an unmatched difficult box.
    """
    cm = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    det = det.select(det.scores >= score_thr)
    det_starts = np.searchsorted(det.image, np.arange(num_images + 1))
    gt_starts = np.searchsorted(gt.image, np.arange(num_images + 1))
    for i in range(num_images):
        d = det.select(slice(det_starts[i], det_starts[i + 1]))
        g = gt.select(slice(gt_starts[i], gt_starts[i + 1]))
        iou = box_iou_np(g.boxes[:, None, :], d.boxes[None, :, :]) if len(d.image) and len(g.image) else np.zeros((0, 0))
        gi, di = np.nonzero(iou > iou_thres)
        g_used = np.zeros(len(g.image), dtype=bool)
        d_used = np.zeros(len(d.image), dtype=bool)
        for k in np.argsort(-iou[gi, di], kind="stable"):
            if not g_used[gi[k]] and not d_used[di[k]]:
                g_used[gi[k]] = d_used[di[k]] = True
                if not g.difficult[gi[k]]:
                    cm[g.labels[gi[k]], d.labels[di[k]]] += 1
        np.add.at(cm, (g.labels[~g_used & ~g.difficult], num_classes), 1)
        np.add.at(cm, (num_classes, d.labels[~d_used]), 1)
    return cm


def check_detections(detections: Sequence[np.ndarray], samples, num_classes: int) -> None:
    """One [K, 6] array per sample, finite, with class ids 0..num_classes-1; ValueError naming what is not."""
    if len(detections) != len(samples):
        raise ValueError(f"{len(detections)} detection arrays for {len(samples)} samples; expected one per sample")
    for d, s in zip(detections, samples):
        d = np.asarray(d).reshape(-1, 6)
        if not np.isfinite(d).all():
            row = d[~np.isfinite(d).all(axis=1)][0].tolist()
            raise ValueError(f"a detection of {getattr(s, 'image_path', 'a sample')} is not finite "
                             f"(x1, y1, x2, y2, score, class {row}); a NaN or inf score or box has no rank to score")
        if len(d) and (d[:, 5].min() < 0 or d[:, 5].max() >= num_classes):
            raise ValueError(f"detection class id {int(d[:, 5].max())} outside 0..{num_classes - 1}")


def left_out_summary(left_out: Sequence) -> Dict:
    """{images, objects, files: [{image, reason, objects}]} for utils.data.voc.LeftOut entries not scored."""
    return {"images": len(left_out), "objects": int(sum(e.objects for e in left_out)),
            "files": [{"image": e.image, "reason": e.reason, "objects": e.objects} for e in left_out]}


def evaluate_detections(detections: Sequence[np.ndarray], samples, class_names: Sequence[str],
                        metric: str = default("metric"), iou_thres: float = IOU_THRES,
                        score_thr: float = SCORE_THRES, coco_backend: str = default("coco_backend"), left_out: Sequence = ()) -> Dict:
    """Score detections against the samples' ground truth.

    Returns a dict with: map (VOC at iou_thres: 11-point for metric voc07, else all-point), map_voc,
    map_voc07, map50 (VOC all-point at IoU 0.5), map50_95 and coco (COCOeval stats; None unless
    metric is coco or all), per_class (one dict per class: class, gts, difficult, dets, ap, ap07,
    ap50_95, and tp, fp, precision, recall, f1 at score_thr), curves (per-class PR arrays),
    confusion_matrix, the settings used, and left_out (left_out_summary of the utils.data.voc.LeftOut
    entries given: images of the split that were not scored, and their ground truths).
    """
    _check_choice("metric", metric, METRICS)
    _check_choice("COCO backend", coco_backend, COCO_BACKENDS)
    check_detections(detections, samples, len(class_names))
    gt, det = gather_ground_truth(samples), gather_detections(detections)
    per_class = voc_eval(det, gt, len(samples), class_names, iou_thres, score_thr)
    map50 = mean_ap(per_class, "ap") if iou_thres == 0.5 else mean_ap(voc_eval(det, gt, len(samples), class_names, 0.5, score_thr), "ap")
    coco_stats, coco_per_class = None, [None] * len(class_names)
    if metric in ("coco", "all"):
        coco_stats, coco_per_class = coco_eval(gather_coco_truth(samples), det, len(samples), class_names,
                                               coco_backend)
    curves = [row.pop("curve") for row in per_class]
    for row, ap in zip(per_class, coco_per_class):
        row["ap50_95"] = ap
    return {
        "map": mean_ap(per_class, "ap07" if metric == "voc07" else "ap"),
        "map_voc": mean_ap(per_class, "ap"), "map_voc07": mean_ap(per_class, "ap07"), "map50": map50,
        "map50_95": (coco_stats["map50_95"] or 0.0) if coco_stats else None, "coco": coco_stats,
        "per_class": per_class, "curves": curves,
        "confusion_matrix": confusion_matrix(det, gt, len(samples), len(class_names), score_thr, iou_thres),
        "settings": {"metric": metric, "iou_thres": iou_thres, "score_thr": score_thr, "coco_backend": coco_backend,
                     "images": len(samples), "classes": list(class_names)},
        "left_out": left_out_summary(left_out),
    }


def evaluate_model(model, samples, class_names, input_size=None, anchors=None, anchors_mask=None,
                   conf_thres: float = CONF_THRES, nms_thres: float = NMS_THRES, scale_x_y: float = 1.0,
                   letterbox: bool = True, batch_size: int = 8, workers: int = 0, device="cpu",
                   amp: Optional[object] = None, progress: bool = True, skip_unreadable: bool = False,
                   left_out: Sequence = (), spec=None) -> Dict:
    """Run `model` over `samples` (utils.eval.detect.detect_samples) and score with evaluate_detections(metric='all').

    The detector's facts: its DetectorSpec `spec`, or input_size, anchors, anchors_mask, scale_x_y and letterbox.

    An image that cannot be read raises utils.data.voc.UnreadableImagesError naming every such image; with
    `skip_unreadable` they are left out and counted under left_out, after the `left_out` given (images
    the scan already skipped). The dict also holds the detections (of the scored samples) and, under
    settings, the detection knobs used.
    """

    detections = detect_samples(model, samples, input_size, anchors, anchors_mask, conf_thres=conf_thres,
                                nms_thres=nms_thres, scale_x_y=scale_x_y, letterbox=letterbox,
                                batch_size=batch_size, workers=workers, device=device, amp=amp, progress=progress,
                                skip_unreadable=skip_unreadable, spec=spec)
    detections, samples, unread = drop_unreadable(detections, samples)
    result = evaluate_detections(detections, samples, class_names, metric="all", left_out=[*left_out, *unread])
    result["detections"] = detections
    facts = (spec.input_size, spec.letterbox) if spec is not None else (parse_input_size(input_size), letterbox)
    result["settings"].update({"conf_thres": conf_thres, "nms_thres": nms_thres, "letterbox": facts[1],
                               "input_size": list(facts[0])})
    return result
