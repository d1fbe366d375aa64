"""utils.eval.stats against hand-worked numbers, tabulated t quantiles, and the evaluator itself."""
from types import SimpleNamespace

import numpy as np
import pytest

from utils.eval.evaluator import evaluate_detections
from utils.eval.stats import ResampledMap, distinguishable, paired_bootstrap, paired_t_interval, t_quantile


@pytest.mark.parametrize("df, table", [(1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (30, 2.042)])
def test_t_quantile_matches_the_table(df, table):
    assert t_quantile(0.975, df) == pytest.approx(table, abs=5e-4)
    assert t_quantile(0.025, df) == pytest.approx(-table, abs=5e-4)


def test_paired_t_interval_by_hand():
    # diffs 1, 2, 3: mean 2, sd 1, half-width 4.303 / sqrt(3) = 2.484
    diff, low, high = paired_t_interval([0.5, 0.5, 0.5], [1.5, 2.5, 3.5])
    assert diff == pytest.approx(2.0) and high - diff == pytest.approx(2.484, abs=1e-3)
    assert low == pytest.approx(2 - 2.484, abs=1e-3) and not distinguishable(low, high)
    with pytest.raises(ValueError, match=">= 2 seeds"):
        paired_t_interval([0.1], [0.2])


def test_identical_variants_give_an_interval_of_zero_width():
    a = [0.61, 0.64, 0.58]
    assert paired_t_interval(a, a) == (0.0, 0.0, 0.0) and not distinguishable(0.0, 0.0)


def hit_or_miss(hits: int, n: int):
    """n images, one box each; variant a finds nothing, variant b finds exactly the box of the first `hits`."""
    samples = [SimpleNamespace(boxes=np.array([[10.0, 10, 80, 80]]), labels=np.array([0]), difficult=None)
               for _ in range(n)]
    b = [np.c_[s.boxes, [0.9], s.labels] if i < hits else np.zeros((0, 6)) for i, s in enumerate(samples)]
    return [np.zeros((0, 6))] * n, b, samples


def test_resampled_map_interval_has_the_quantiles_of_its_binomial_distribution():
    """b finds the boxes of 2 of 4 images, a none: on a resample holding k of those 2 images' copies, b's AP is
    its recall k/4 (precision 1 throughout), AP@0.5:0.95 the share of COCO's 101 recall points <= k/4,
    (25k + 1)/101 for k >= 1, and 0 for k = 0. k ~ Binomial(4, 1/2): P(k <= 0, 1, 2, 3) = 1/16, 5/16, 11/16,
    15/16, so the 10% quantile is k = 1 and the 90% quantile k = 3 (1000 resamples put each of these
    cumulative shares several standard errors from 0.1 and 0.9)."""
    a, b, samples = hit_or_miss(2, 4)
    diff, low, high = paired_bootstrap(ResampledMap(a, b, samples, ["x"]), 4, reps=1000, seed=0, confidence=0.8)
    assert diff == pytest.approx([0.5, 51 / 101])
    assert low == pytest.approx([0.25, 26 / 101]) and high == pytest.approx([0.75, 76 / 101])


def test_bootstrap_quantiles_by_hand_on_an_enumerable_case():
    """Three items 0, 0, 3: a resample's mean is the number k of 3s drawn, k ~ Binomial(3, 1/3) with
    P(k <= 0, 1, 2) = 8/27, 20/27, 26/27; the 80% interval is the 10% and 90% quantiles, k = 0 and k = 2. A
    second component (the mean times -2) gets its interval from the same resamples. A constant shift collapses."""
    values = np.array([0.0, 0.0, 3.0])
    seen = []

    def score(i):
        seen.append(np.array(i))
        return np.array([values[i].mean(), -2 * values[i].mean()])

    diff, low, high = paired_bootstrap(score, 3, reps=1000, seed=5, confidence=0.8)
    assert diff == pytest.approx([1.0, -2.0])
    assert low == pytest.approx([0.0, -4.0]) and high == pytest.approx([2.0, 0.0])
    # the contract: 1000 resamples of 3 indices from numpy's Generator(seed), then the full set; the percentile interval
    rng = np.random.default_rng(5)
    assert all(np.array_equal(i, rng.integers(0, 3, size=3)) for i in seen[:1000])
    assert len(seen) == 1001 and np.array_equal(seen[-1], [0, 1, 2])
    means = [values[i].mean() for i in seen[:1000]]
    assert (low[0], high[0]) == pytest.approx(tuple(np.percentile(means, [10, 90])))
    a = np.random.default_rng(0).random(50)
    shifted = paired_bootstrap(lambda i: (a[i] + 0.1).mean() - a[i].mean(), 50, reps=200, seed=3)
    assert shifted == pytest.approx((0.1, 0.1, 0.1)) and distinguishable(shifted.low, shifted.high)


def test_bootstrap_interval_covers_the_true_mean_at_about_its_confidence():
    """300 simulated sets of 40 paired differences ~ N(0.3, 1): the 90% percentile interval holds 0.3 in
    about 90% of them (the percentile bootstrap runs a little short on 40 items), and its mean width is
    about that of the normal interval, 2 * 1.645 / sqrt(40) = 0.52."""
    rng = np.random.default_rng(11)
    widths, covered = [], 0
    for s in range(300):
        d = rng.normal(0.3, 1.0, 40)
        _, low, high = paired_bootstrap(lambda i: d[i].mean(), 40, reps=200, seed=s, confidence=0.9)
        covered += low <= 0.3 <= high
        widths.append(high - low)
    assert 0.84 <= covered / 300 <= 0.95 and np.mean(widths) == pytest.approx(2 * 1.645 / np.sqrt(40), rel=0.1)


def test_resampled_map_equals_the_evaluator_on_the_resampled_lists():
    rng = np.random.default_rng(2)
    samples, dets_a, dets_b = [], [], []
    for _ in range(8):
        gt = rng.uniform(0, 60, (3, 2))
        samples.append(SimpleNamespace(boxes=np.c_[gt, gt + 30], labels=rng.integers(0, 2, 3), difficult=None))
        for dets in (dets_a, dets_b):
            jitter = np.c_[gt, gt + 30] + rng.normal(0, 4, (3, 4))
            dets.append(np.c_[jitter, rng.random(3), samples[-1].labels])
    idx = np.array([3, 3, 0, 7, 1, 1, 5, 2])
    got = ResampledMap(dets_a, dets_b, samples, ["x", "y"])(idx)
    ref = [evaluate_detections([d[i] for i in idx], [samples[i] for i in idx], ["x", "y"]) for d in (dets_a, dets_b)]
    assert got == pytest.approx([ref[1]["map50"] - ref[0]["map50"], ref[1]["map50_95"] - ref[0]["map50_95"]])


def test_resampled_map_scores_coco_truth_as_the_evaluator_does():
    """On a COCO dataset a sample's coco_truth (the boxes as the JSON gives them, unclipped) decides mAP@0.5:0.95,
    in the bootstrap as in evaluate_detections: here the detection matches the unclipped box only."""
    samples = []
    for shift in (0.0, 10.0):
        s = SimpleNamespace(boxes=np.array([[50.0, 50.0, 100.0, 100.0]]), labels=np.array([0]), difficult=None)
        s.coco_truth = np.array([[50.0 + shift, 50.0, 100.0, 100.0, 10000.0, 0.0, 0.0]])
        samples.append(s)
    hit = [np.array([[50.0 + x, 50.0, 150.0 + x, 150.0, 0.9, 0.0]]) for x in (0.0, 10.0)]
    none = [np.zeros((0, 6))] * 2
    idx = np.array([1, 0, 1])
    got = ResampledMap(none, hit, samples, ["x"])(idx)
    ref = evaluate_detections([hit[i] for i in idx], [samples[i] for i in idx], ["x"])
    assert ref["map50_95"] == pytest.approx(1.0) and ref["map50"] == 0.0  # the clipped box: IoU 0.25
    assert got == pytest.approx([ref["map50"], ref["map50_95"]])
