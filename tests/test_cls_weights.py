"""train.py --cls-weights: per-class weights on the class loss's BCE (utils/engine/class_weights.py, YOLOLoss)."""
import math

import pytest
import torch
import yaml

import train
from tests.helpers.samples import run_args, sample
from tests.helpers.voc import TINY_CLASSES, write_tiny_voc
from utils.core.cli import UserError
from utils.core.config import DEFAULT_ANCHORS_MASK
from utils.engine.checkpoint import read_checkpoint
from utils.engine.class_weights import auto_weights, class_counts, given_weights, resolve_class_weights
from utils.engine.loss import HEAD_BALANCE, LossSettings, YOLOLoss, loss_settings
from utils.engine.recipes import RECIPES, recipe_args

ANCHORS = torch.tensor([[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]], dtype=torch.float32)
NAMES = ["cat", "dog", "bird"]


def make_loss(settings, class_weights=None):
    return YOLOLoss(ANCHORS, 3, DEFAULT_ANCHORS_MASK, (32, 16), settings, 128, HEAD_BALANCE, class_weights)


def random_outputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3 * 8, 128 // s, 128 // s, generator=g).requires_grad_() for s in (32, 16)]


TARGETS = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4], [0, 2, 0.2, 0.7, 0.1, 0.15], [1, 0, 0.6, 0.3, 0.7, 0.8]])


@pytest.mark.parametrize("overrides", [{}, {"label_smoothing": 0.1, "iou_cls": False}, {"focal_loss": True},
                                       {"bce_clip": 1e-7, "smooth_by_classes": True, "label_smoothing": 0.05}])
def test_all_ones_weights_give_exactly_the_loss_without_weights(overrides):
    settings = loss_settings(recipe_args("default", **overrides))
    results = []
    for weights in (None, (1.0, 1.0, 1.0)):
        outputs = random_outputs()
        total, parts = make_loss(settings, weights)(outputs, TARGETS)
        total.backward()
        results.append((total, parts, [o.grad for o in outputs]))
    (t0, p0, g0), (t1, p1, g1) = results
    assert torch.equal(t0, t1) and all(torch.equal(p0[k], p1[k]) for k in p0)  # bit for bit
    assert all(torch.equal(a, b) for a, b in zip(g0, g1))


def constant_class_outputs(logits):
    """Head outputs whose box and objectness logits are 0 and whose class logits are `logits` in every cell."""
    outputs = []
    for s in (32, 16):
        p = torch.zeros(1, 3, 128 // s, 128 // s, 8)
        p[..., 5:] = torch.tensor(logits)
        outputs.append(p.permute(0, 1, 4, 2, 3).reshape(1, 24, 128 // s, 128 // s))
    return outputs


def bce(x, t):
    p = 1 / (1 + math.exp(-x))
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def focal(x, t, alpha=0.25, gamma=2.0):
    p = 1 / (1 + math.exp(-x))
    p_t = p * t + (1 - p) * (1 - t)
    return (alpha * t + (1 - alpha) * (1 - t)) * (1 - p_t) ** gamma * bce(x, t)


@pytest.mark.parametrize("use_focal", [False, True])
def test_the_class_term_is_the_hand_computed_weighted_bce(use_focal):
    # one truth of class 1; every positive sees class logits x, target 1 smoothed to 1 - eps/2 and 0 to eps/2
    # (--no-iou-cls: target 1, not the IoU); a head's class term averages its positives' rows over classes (BCE)
    # or sums them over classes (focal, averaged over positives); the heads add up, times --cls-weight
    x, w, eps = [1.5, -0.5, 0.25], [2.0, 0.5, 1.0], 0.1
    settings = LossSettings(label_smoothing=eps, iou_cls=False, focal_loss=use_focal)
    loss = make_loss(settings, w)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.35]])
    heads = sum(len(p[0]) > 0 for p in loss.assign(targets, [(4, 4), (8, 8)]))
    assert heads == 2
    t = [eps / 2, 1 - eps / 2, eps / 2]
    weight = [1 + (wc - 1) * tc for wc, tc in zip(w, t)]  # w_c on the positive target, 1 on the negative one
    if use_focal:
        per_head = sum(wt * focal(xc, tc) for wt, xc, tc in zip(weight, x, t))
    else:
        per_head = sum(wt * bce(xc, tc) for wt, xc, tc in zip(weight, x, t)) / 3
    _, parts = loss(constant_class_outputs(x), targets)
    assert settings.cls_weight == 0.5 and not settings.cls_count_scale
    assert parts["cls"].item() == pytest.approx(heads * per_head * 0.5, rel=1e-6)
    _, unweighted = make_loss(settings)(constant_class_outputs(x), targets)
    assert parts["obj"].item() == unweighted["obj"].item() and parts["cls"].item() != unweighted["cls"].item()


def test_the_reference_recipe_and_the_default_have_no_class_weights():
    for name in ("default", "reference"):
        assert RECIPES[name]["cls_weights"] is None and RECIPES[name]["cls_weights_power"] == 1.0
        assert make_loss(loss_settings(recipe_args(name))).class_weights is None


def test_auto_is_inverse_frequency_to_the_power_with_mean_one():
    samples = [sample([[0, 0, 5, 5]] * 8, [0] * 8), sample([[0, 0, 5, 5]] * 3, [1, 1, 0], difficult=[0, 1, 0])]
    counts = class_counts(samples, 3)
    assert counts.tolist() == [9, 1, 0]  # difficult objects left out, as the loss leaves them out
    # present classes: 10/9 and 10/1, normalised to mean 1 over them; the class without objects gets 1
    assert auto_weights(counts, 1.0) == pytest.approx((2 * (1 / 9) / (1 / 9 + 1), 2 * 1 / (1 / 9 + 1), 1.0))
    assert auto_weights(counts, 0.5) == pytest.approx((2 / 3 / (1 / 3 + 1), 2 / (1 / 3 + 1), 1.0))
    assert auto_weights(counts, 0.0) == (1.0, 1.0, 1.0)
    with pytest.warns(UserWarning, match="no training object of bird; that class gets weight 1"):
        weights, how = resolve_class_weights("auto", 1.0, NAMES, samples)
    assert weights == auto_weights(counts, 1.0) and "cat 9, dog 1, bird 0" in how
    assert auto_weights([0, 0], 1.0) == (1.0, 1.0)


@pytest.mark.parametrize("power", [math.inf, math.nan, -1.0])
def test_a_power_that_is_not_finite_and_at_least_0_is_refused_with_or_without_weights(power):
    with pytest.raises(UserError, match=f"--cls-weights-power must be a finite number >= 0, found {power}"):
        resolve_class_weights("auto", power, NAMES, [sample([[0, 0, 5, 5]], [0])])
    with pytest.raises(ValueError, match=f"--cls-weights-power must be a finite number >= 0, found {power}"):
        make_loss(LossSettings(cls_weights_power=power))  # the loss checks it without --cls-weights too


@pytest.mark.parametrize("text, error", [
    ("1,2", r"expected 3 weights, one per class of c.txt \(cat, dog, bird\), in that order; found 2"),
    ("1,x,2", "--cls-weights 1,x,2: expected a number .*found 'x'"),
    ("1,-2,1", "--cls-weights 1,-2,1: expected a finite weight >= 0, found '-2'"),
    ("0,0,0", "every weight is 0"),
    ("missing.txt", "--cls-weights missing.txt: no such file"),
])
def test_bad_weight_lists_are_refused_naming_the_flag(text, error):
    with pytest.raises(UserError, match=error):
        given_weights(text, NAMES, "c.txt")


@pytest.mark.parametrize("lines, error", [
    ("1\n2\n", "expected 3 weights, one per class"),
    ("1\ntwo\n3\n", "line 2: expected a number .*found 'two'"),
    ("1\n-0.5\n3\n", "line 2: expected a finite weight >= 0, found '-0.5'"),
    ("1\nnan\n3\n", "line 2: expected a finite weight >= 0"),
])
def test_bad_weight_files_are_refused_naming_the_file(lines, error, tmp_path):
    path = tmp_path / "w.txt"
    path.write_text(lines)
    with pytest.raises(UserError, match=f"--cls-weights {path}.*{error}"):
        given_weights(str(path), NAMES)
    path.write_text("# cat, dog, bird\n2\n\n0.5\n1\n")
    assert given_weights(str(path), NAMES) == (2.0, 0.5, 1.0)


@pytest.fixture
def tiny(tmp_path, scan_cache):
    return write_tiny_voc(tmp_path / "VOCtiny", 4), tmp_path / "logs"


def one_epoch(data, logs, name, *extra) -> dict:
    assert train.main(run_args(data, logs, "--epochs", 1, "--eval-period", 0, "--name", name, *extra)) == 0
    return read_checkpoint(logs / name / "last.pth")


@pytest.mark.slow
def test_a_run_with_all_ones_trains_exactly_as_without_and_auto_is_printed_and_recorded(tiny, capsys):
    data, logs = tiny
    plain, ones = one_epoch(data, logs, "plain"), one_epoch(data, logs, "ones", "--cls-weights", "1,1")
    assert plain["results"][0]["train_loss"] == ones["results"][0]["train_loss"]
    assert all(torch.equal(plain["model"][k], ones["model"][k]) for k in plain["model"])
    assert plain["class_weights"] is None and ones["class_weights"] == [1.0, 1.0]
    capsys.readouterr()
    auto = one_epoch(data, logs, "auto", "--cls-weights", "auto", "--cls-weights-power", "0.5")
    out = capsys.readouterr().out
    # the tiny VOC: red in every image, blue in every other one (4 and 2 objects)
    expected = auto_weights([4, 2], 0.5)
    assert f"training objects red 4, blue 2):\n  red {expected[0]:.4g}, blue {expected[1]:.4g}" in out
    assert auto["class_weights"] == pytest.approx(expected, rel=1e-6) and TINY_CLASSES == ["red", "blue"]
    recorded = yaml.safe_load((logs / "auto" / "run_args.yaml").read_text())
    assert (recorded["cls_weights"], recorded["cls_weights_power"]) == ("auto", 0.5)
    assert (auto["args"]["cls_weights"], auto["args"]["cls_weights_power"]) == ("auto", 0.5)


@pytest.mark.slow
def test_resume_restores_the_recorded_weights_and_refuses_other_ones(tiny, tmp_path, capsys):
    data, logs = tiny
    weights = tmp_path / "w.txt"
    weights.write_text("2\n0.5\n")
    one_epoch(data, logs, "exp", "--cls-weights", weights)
    last = logs / "exp" / "last.pth"
    capsys.readouterr()
    assert train.main(["--resume", str(last), "--quiet", "--workers", "0", "--cls-weights", "1,1"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--cls-weights 1,1 (recorded {weights})" in err
    assert train.main(["--resume", str(last), "--quiet", "--workers", "0", "--cls-weights-power", "2"]) == 1
    assert "--cls-weights-power 2.0 (recorded 1.0)" in capsys.readouterr().err
    weights.write_text("9\n9\n")  # the file changed since: the run keeps the weights it started with
    assert train.main(["--resume", str(last), "--quiet", "--workers", "0", "--epochs", "2"]) == 0
    assert "class loss weights (restored from the resumed checkpoint):\n  red 2, blue 0.5" in capsys.readouterr().out
    resumed = read_checkpoint(last)
    assert resumed["epoch"] == 1 and resumed["class_weights"] == [2.0, 0.5]


def test_a_bad_weights_file_stops_train_py_with_one_line_naming_it(tiny, tmp_path, capsys):
    data, logs = tiny
    weights = tmp_path / "w.txt"
    weights.write_text("1\n2\n3\n")
    assert train.main(run_args(data, logs, "--epochs", 1, "--cls-weights", weights)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--cls-weights {weights}: expected 2 weights, one per class" in err
