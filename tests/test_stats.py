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


def test_identical_variants_give_an_interval_containing_zero():
    a = [0.61, 0.64, 0.58]
    _, low, high = paired_t_interval(a, a)
    assert low <= 0 <= high and not distinguishable(low, high)
    rng = np.random.default_rng(1)
    dets = [np.c_[rng.uniform(0, 50, (5, 2)), rng.uniform(60, 100, (5, 2)), rng.random(5), np.zeros(5)] for _ in range(6)]
    samples = [SimpleNamespace(boxes=np.array([[10.0, 10, 80, 80]]), labels=np.array([0]), difficult=None)
               for _ in range(6)]
    _, low, high = paired_bootstrap(ResampledMap(dets, dets, samples, ["a"]), 6, reps=20, seed=0)
    assert np.all(low <= 0) and np.all(high >= 0)


def test_bootstrap_of_a_constant_shift_collapses():
    a = np.random.default_rng(0).random(50)
    b = a + 0.1
    diff, low, high = paired_bootstrap(lambda i: b[i].mean() - a[i].mean(), 50, reps=200, seed=3)
    assert (diff, low, high) == pytest.approx((0.1, 0.1, 0.1)) and distinguishable(low, high)


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
