"""Is a gain real? Paired confidence intervals for the difference between two variants, in numpy.

- paired_t_interval: per-seed scores of two variants trained with the same seeds; Student's t interval
  of the mean difference (b - a). Student (1908), "The probable error of a mean", Biometrika 6(1).
- paired_bootstrap: one trained pair, validation images resampled with replacement; the same resample
  is scored for both variants and the percentile interval of the difference is returned. Efron and
  Tibshirani (1993), "An Introduction to the Bootstrap", ch. 13 (percentile interval).
- ResampledMap: the mAP@0.5 and mAP@0.5:0.95 differences of a resample of images, scored by the
  evaluator's own functions (a resampled duplicate counts as a distinct image), for paired_bootstrap.
- distinguishable: does an interval exclude zero?

The Student-t quantile is computed here (no scipy): bisection on the CDF, which is the regularized
incomplete beta function evaluated by its continued fraction (Numerical Recipes, 3rd ed., 6.4).
"""
import math
from typing import Callable, NamedTuple, Optional, Sequence, Union

import numpy as np

from utils.eval.coco_metric import CocoBoxes, coco_map50_95
from utils.eval.evaluator import (Boxes, coco_boxes, gather_coco_truth, gather_detections, gather_ground_truth,
                                  mean_ap, voc_eval)

Score = Union[float, np.ndarray]


class Interval(NamedTuple):
    diff: Score  # the estimate of b - a (mean over seeds, or the statistic on the full image set)
    low: Score
    high: Score


def _beta_continued_fraction(a: float, b: float, x: float, eps: float = 1e-15, max_iter: int = 500) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz), converging fast for x < (a + 1) / (a + b + 2)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_iter + 1):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc needs 0 <= x <= 1, got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df > 0 degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float, tol: float = 1e-12) -> float:
    """The t with P(T <= t) = p, by bisection on t_cdf (0 < p < 1)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs 0 < p < 1, got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df, tol)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, high * 2.0
    while high - low > tol * max(1.0, high):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if t_cdf(mid, df) < p else (low, mid)
    return 0.5 * (low + high)


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1 (e.g. 0.95), got {confidence}")


def paired_t_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Interval:
    """(mean of b - a, low, high): Student's t interval over paired scores (one pair per seed).

    Needs at least two pairs; with identical differences the interval has width zero.
    """
    _check_confidence(confidence)
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores need two 1-d arrays of one length, got shapes {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError(f"a paired t interval needs scores from >= 2 seeds, got {len(a)}; train more seeds or "
                         "use paired_bootstrap over images")
    diffs = b - a
    mean = float(diffs.mean())
    half = t_quantile(0.5 + confidence / 2.0, len(diffs) - 1) * float(diffs.std(ddof=1)) / math.sqrt(len(diffs))
    return Interval(mean, mean - half, mean + half)


def paired_bootstrap(score_fn: Callable[[np.ndarray], Score], n_items: int, reps: int = 1000, seed: int = 0,
                     confidence: float = 0.95) -> Interval:
    """Percentile interval of a paired difference: `score_fn(indices)` gives b - a on the items `indices`.

    Every one of `reps` resamples draws n_items indices with replacement (numpy Generator, `seed`), and
    score_fn must score both variants on that same resample. `diff` is score_fn on all items. A
    vector-valued score_fn (several metrics) gets one interval per component, from the same resamples.
    """
    _check_confidence(confidence)
    if n_items < 1 or reps < 1:
        raise ValueError(f"a bootstrap needs n_items >= 1 and reps >= 1, got {n_items} and {reps}")
    rng = np.random.default_rng(seed)
    diffs = np.array([score_fn(rng.integers(0, n_items, size=n_items)) for _ in range(reps)], dtype=np.float64)
    alpha = 1.0 - confidence
    low, high = np.quantile(diffs, [alpha / 2.0, 1.0 - alpha / 2.0], axis=0)
    full = np.asarray(score_fn(np.arange(n_items)), dtype=np.float64)
    return Interval(*(float(x) if np.ndim(x) == 0 else x for x in (full, low, high)))


def distinguishable(low: Optional[float], high: Optional[float]) -> bool:
    """True when the interval [low, high] excludes 0 (False when there is no interval)."""
    if low is None or high is None:
        return False
    return bool(low > 0 or high < 0)


def _rows(boxes: Union[Boxes, CocoBoxes], index) -> Union[Boxes, CocoBoxes]:
    return type(boxes)(*(None if a is None else a[index] for a in boxes))


class _PerImage:
    """Boxes of a split (Boxes or CocoBoxes) stored once, sorted by image, so a resample of images is one fancy index."""

    def __init__(self, boxes: Union[Boxes, CocoBoxes], num_images: int):
        self.boxes = _rows(boxes, np.argsort(boxes.image, kind="stable"))
        self.counts = np.bincount(self.boxes.image, minlength=num_images)
        self.starts = np.cumsum(self.counts) - self.counts

    def take(self, images: np.ndarray) -> Union[Boxes, CocoBoxes]:
        """The boxes of `images` in order; image j of the resample gets id j, so duplicates stay distinct."""
        counts = self.counts[images]
        out_starts = np.cumsum(counts) - counts
        rows = np.repeat(self.starts[images] - out_starts, counts) + np.arange(int(counts.sum()))
        return _rows(self.boxes, rows)._replace(image=np.repeat(np.arange(len(images), dtype=np.int64), counts))


def map_scores(det: Boxes, gt: Boxes, coco_gt: CocoBoxes, num_images: int, class_names: Sequence[str]) -> np.ndarray:
    """[mAP@0.5 (VOC all-point), mAP@0.5:0.95 (COCO)], as utils.eval.evaluator.evaluate_detections computes them:
    VOC AP on the samples' boxes, COCO mAP on their COCO truth (gather_coco_truth)."""
    map50 = mean_ap(voc_eval(det, gt, num_images, class_names, 0.5), "ap")
    map50_95 = coco_map50_95(coco_gt, coco_boxes(det), len(class_names))
    return np.array([map50, max(map50_95, 0.0)])  # -1 (no ground truth) counts as 0, as there


class ResampledMap:
    """score_fn for paired_bootstrap: [mAP@0.5, mAP@0.5:0.95] of variant b minus variant a on resampled images.

    detections_a, detections_b: one [K, 6] array per sample (x1, y1, x2, y2, score, class), as
    evaluate_detections takes them, for the same samples in the same order.
    """

    def __init__(self, detections_a: Sequence[np.ndarray], detections_b: Sequence[np.ndarray], samples,
                 class_names: Sequence[str]):
        if not len(detections_a) == len(detections_b) == len(samples):
            raise ValueError(f"{len(detections_a)} and {len(detections_b)} detection arrays for {len(samples)} "
                             "samples; expected one per sample for both variants")
        n = len(samples)
        self.class_names = list(class_names)
        self.gt = _PerImage(gather_ground_truth(samples), n)
        self.coco_gt = _PerImage(gather_coco_truth(samples), n)
        self.a = _PerImage(gather_detections(detections_a), n)
        self.b = _PerImage(gather_detections(detections_b), n)

    def scores(self, variant: "_PerImage", images: np.ndarray) -> np.ndarray:
        return map_scores(variant.take(images), self.gt.take(images), self.coco_gt.take(images), len(images),
                          self.class_names)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, dtype=np.int64)
        return self.scores(self.b, images) - self.scores(self.a, images)
