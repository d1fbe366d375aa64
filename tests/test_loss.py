import math

import pytest
import torch

from torchvision.ops import complete_box_iou_loss

from nets.yolo import YoloBody
from tests.reference_model import reference_ciou
from utils.ops.boxes import cxcywh_to_xyxy, decode_grid
from utils.core.config import DEFAULT_ANCHORS_MASK
from utils.engine.loss import HEAD_BALANCE, MAX_WH_LOGIT, LossSettings, YOLOLoss, complete_iou_loss, loss_settings
from utils.engine.recipes import recipe_args

ANCHORS = torch.tensor([[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]], dtype=torch.float32)


# the loss settings these tests were written against (YOLOLoss's own defaults before it took LossSettings)
BASE = dict(box_weight=0.05, obj_weight=1.0, cls_weight=0.5, ignore_thres=0.5, assign_thres=0.213, hard_obj=False,
            label_smoothing=0.0, smooth_by_classes=False, focal_loss=False, scale_x_y=1.0, neighbor_cells=False,
            bce_clip=0.0, box_loss="ciou", ciou_alpha_grad=False, se_loss=0.0, assigner="shape", topk=10,
            iou_cls=False, obj_size_scale=False, cls_count_scale=False)


def make_loss(balance=(1.0, 1.0), input_size=416, settings=None, **kw):
    settings = settings or LossSettings(**{**BASE, **kw})
    return YOLOLoss(ANCHORS, 3, DEFAULT_ANCHORS_MASK, (32, 16), settings, input_size, balance)


def zero_outputs(batch=1, size=128, num_classes=3):
    return [torch.zeros(batch, 3 * (5 + num_classes), size // s, size // s, requires_grad=True) for s in (32, 16)]


def test_loss_finite_and_positive_on_random_targets_with_empty_images():
    torch.manual_seed(0)
    model = YoloBody(DEFAULT_ANCHORS_MASK, 3)
    outputs = model(torch.randn(3, 3, 128, 128))
    # objects only in image 0 and 2; image 1 has none
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4], [0, 2, 0.2, 0.8, 0.05, 0.1], [2, 0, 0.6, 0.3, 0.9, 0.9]])
    total, parts = make_loss()(outputs, targets)
    assert torch.isfinite(total) and total > 0
    assert set(parts) == {"box", "obj", "cls"} and all(v > 0 for v in parts.values())
    total.backward()
    assert model.backbone.conv1.conv.weight.grad.abs().sum() > 0


def test_loss_with_no_objects_at_all_is_objectness_only():
    outputs = zero_outputs(batch=2)
    # the loss train.py builds with its default flags
    loss = make_loss(HEAD_BALANCE, 128, loss_settings(recipe_args("default")))
    total, parts = loss(outputs, torch.zeros(0, 6))
    assert parts["box"] == 0 and parts["cls"] == 0
    # every cell a negative with logit 0: BCE = log 2 per head, heads weighted 0.4 (P5) and 1.0 (P4)
    assert HEAD_BALANCE == (0.4, 1.0)
    assert parts["obj"].item() == pytest.approx(math.log(2) * (0.4 + 1.0) * loss.obj_weight, rel=1e-5)
    total.backward()


def test_assignment_to_every_anchor_above_threshold():
    # a 30x40 box at a 128 input: shape IoUs with anchors 1 (23x27) and 2 (37x58) are worked out below
    loss = make_loss(assign_thres=0.213)
    targets = torch.tensor([[0, 0, 0.5, 0.5, 30 / 128, 40 / 128]])
    iou1 = (23 * 27) / (30 * 40)  # anchor 1 lies inside the box: 621 / 1200 = 0.5175
    iou2 = (30 * 40) / (37 * 58)  # the box lies inside anchor 2: 1200 / 2146 = 0.559 (not used by any head)
    iou3 = (30 * 40) / (81 * 82)  # 0.1807 < 0.213: not assigned
    assert iou1 > 0.213 and iou3 < 0.213 and iou2 > iou1
    positives = loss.assign(targets, [(4, 4), (8, 8)])
    # P5 head (anchors 3, 4, 5): none above threshold and the best used anchor (1) is not there
    assert len(positives[0][0]) == 0
    # P4 head (anchors 1, 2, 3): anchor 1 (slot 0) and anchor 2 (slot 1), at cell (4, 4) of the 8x8 grid
    t_idx, slot, gy, gx = positives[1]
    assert sorted(slot.tolist()) == [0, 1] and gy.tolist() == [4, 4] and gx.tolist() == [4, 4]


def test_best_anchor_only_when_threshold_is_one():
    loss = make_loss(assign_thres=1.0)
    targets = torch.tensor([[0, 0, 0.5, 0.5, 30 / 128, 40 / 128]])
    positives = loss.assign(targets, [(4, 4), (8, 8)])
    assert len(positives[0][0]) == 0
    assert positives[1][1].tolist() == [1]  # anchor 2 (37x58) is the best of the used anchors


def test_anchor_in_both_heads_is_assigned_in_both():
    loss = make_loss(assign_thres=1.0)
    targets = torch.tensor([[0, 0, 0.5, 0.5, 81 / 416, 82 / 416]])  # exactly anchor 3
    positives = loss.assign(targets, [(13, 13), (26, 26)])
    assert positives[0][1].tolist() == [0] and positives[1][1].tolist() == [2]


def test_objectness_target_is_iou_when_iou_aware():
    # zero logits: predicted box centred in its cell with the anchor's size
    outputs = zero_outputs(size=128)
    cell_centre = (4 + 0.5) / 8
    targets = torch.tensor([[0, 0, cell_centre, cell_centre, 37 / 128, 58 / 128]])  # exactly anchor 2 at P4
    common = dict(assign_thres=1.0, ignore_thres=1.0, box_weight=0, cls_weight=0, balance=(0.0, 1.0))
    loss_aware = make_loss(**common)
    loss_hard = make_loss(hard_obj=True, **common)
    _, aware = loss_aware(outputs, targets)
    _, hard = loss_hard(outputs, targets)
    # a perfect box: IoU 1 -> both targets are 1 and the losses agree
    assert aware["obj"].item() == pytest.approx(hard["obj"].item(), rel=1e-6)
    # truth at 0.8 of the anchor's size (anchor 2 stays the best): the prediction's IoU with it is 0.64
    targets[0, 4:6] *= 0.8
    _, aware = loss_aware(outputs, targets)
    _, hard = loss_hard(outputs, targets)
    n = 3 * 8 * 8
    # BCE at logit 0 is log 2 whatever the target, so compare gradients at the positive cell
    g_aware = torch.autograd.grad(aware["obj"], outputs[1])[0].view(3, 8, 8, 8)[1, 4, 4, 4]
    g_hard = torch.autograd.grad(hard["obj"], outputs[1])[0].view(3, 8, 8, 8)[1, 4, 4, 4]
    # d BCE / d logit = sigmoid(0) - target, over the n counted cells (ignore threshold 1: all counted)
    assert g_aware.item() == pytest.approx((0.5 - 0.64) / n, rel=1e-4)
    assert g_hard.item() == pytest.approx((0.5 - 1.0) / n, rel=1e-4)


def test_ignore_threshold_drops_overlapping_negatives():
    outputs = zero_outputs(size=128)
    # truth exactly the anchor-2 box of P4 cell (4, 4); its neighbour cell overlaps it by IoU 0.xx
    targets = torch.tensor([[0, 0, 4.5 / 8, 4.5 / 8, 37 / 128, 58 / 128]])
    strict = make_loss(assign_thres=1.0, ignore_thres=1.0, box_weight=0, cls_weight=0, balance=(0.0, 1.0))
    lenient = make_loss(assign_thres=1.0, ignore_thres=0.3, box_weight=0, cls_weight=0, balance=(0.0, 1.0))
    g_strict = torch.autograd.grad(strict(outputs, targets)[1]["obj"], outputs[1])[0]
    g_lenient = torch.autograd.grad(lenient(outputs, targets)[1]["obj"], outputs[1])[0]
    # fewer cells counted when lenient: some negatives got no gradient at all
    assert (g_lenient == 0).sum() > (g_strict == 0).sum()


def one_positive_with_class_logits(logits):
    """P4 outputs of a 128 input whose anchor-2 slot has the given class logits in every cell, and one truth
    of class 1 that is exactly anchor 2 at cell (4, 4) (its only positive with assign_thres 1)."""
    outputs = zero_outputs()
    with torch.no_grad():
        outputs[1].view(3, 8, 8, 8)[1, 5:] = torch.tensor(logits).view(3, 1, 1)
    return outputs, torch.tensor([[0, 1, 4.5 / 8, 4.5 / 8, 37 / 128, 58 / 128]])


def hand_bce(logits, targets):
    return sum(-t * math.log(1 / (1 + math.exp(-x))) - (1 - t) * math.log(1 - 1 / (1 + math.exp(-x)))
               for x, t in zip(logits, targets)) / len(logits)


@pytest.mark.parametrize("by_classes, off", [(False, 0.1 / 2), (True, 0.1 / 3)])
def test_label_smoothing_matches_a_hand_computation(by_classes, off):
    logits = [2.0, -1.0, 0.5]
    outputs, targets = one_positive_with_class_logits(logits)
    common = dict(assign_thres=1.0, cls_weight=1.0)
    plain = make_loss(**common)(outputs, targets)[1]["cls"].item()
    smooth = make_loss(label_smoothing=0.1, smooth_by_classes=by_classes, **common)(outputs, targets)[1]["cls"].item()
    # class 1 is the truth: targets eps/2 (or eps/C) and 1 - eps + that
    assert plain == pytest.approx(hand_bce(logits, [0, 1, 0]), rel=1e-6)
    assert smooth == pytest.approx(hand_bce(logits, [off, 0.9 + off, off]), rel=1e-6)
    assert abs(smooth - plain) > 1e-2


def test_focal_class_loss_matches_a_hand_computation():
    logits = [2.0, -1.0, 0.5]
    outputs, targets = one_positive_with_class_logits(logits)
    focal = make_loss(assign_thres=1.0, cls_weight=1.0, focal_loss=True)(outputs, targets)[1]["cls"].item()
    # alpha_t (1 - p_t)^2 BCE, alpha 0.25 on the true class and 0.75 on the others, summed per positive
    expected = 0.0
    for x, t in zip(logits, [0, 1, 0]):
        p_t = 1 / (1 + math.exp(-x)) if t else 1 - 1 / (1 + math.exp(-x))
        expected += (0.25 if t else 0.75) * (1 - p_t) ** 2 * -math.log(p_t)
    assert focal == pytest.approx(expected, rel=1e-6)


def test_loss_runs_under_bf16_outputs():
    outputs = [o.detach().bfloat16().requires_grad_() for o in zero_outputs()]
    total, _ = make_loss()(outputs, torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.3]]))
    assert total.dtype == torch.float32 and torch.isfinite(total)


def test_neighbour_cells_add_the_two_nearer_cells():
    loss = make_loss(assign_thres=1.0, scale_x_y=2.0, neighbor_cells=True)
    # centre at (4.3, 4.7) cells of the 8x8 P4 grid: nearer neighbours are x-1 (frac .3) and y+1 (frac .7)
    targets = torch.tensor([[0, 0, 4.3 / 8, 4.7 / 8, 37 / 128, 58 / 128]])
    _, slot, gy, gx = loss.assign(targets, [(4, 4), (8, 8)])[1]
    assert sorted(zip(gy.tolist(), gx.tolist())) == [(4, 3), (4, 4), (5, 4)]
    assert slot.tolist() == [1, 1, 1]
    # in the corner, neighbours outside the grid are dropped
    corner = torch.tensor([[0, 0, 0.1 / 8, 7.9 / 8, 37 / 128, 58 / 128]])
    _, _, gy, gx = loss.assign(corner, [(4, 4), (8, 8)])[1]
    assert list(zip(gy.tolist(), gx.tolist())) == [(7, 0)]


def test_neighbour_cells_need_grid_sensitivity_two():
    with pytest.raises(ValueError, match="scale-x-y >= 2"):
        make_loss(scale_x_y=1.05, neighbor_cells=True)


def test_neighbour_prediction_can_reach_the_truth_centre():
    # with scale_x_y 2 a centre can sit 0.5 cells outside its own cell: sigmoid(t) -> 1 gives offset 1.5
    loss = make_loss(scale_x_y=2.0, neighbor_cells=True)
    p = torch.zeros(1, 1, 1, 1, 8)
    p[..., 0] = 20.0
    boxes = decode_grid(p, torch.tensor([[1.0, 1.0]]), 1, loss.scale_x_y, MAX_WH_LOGIT)  # as the loss decodes
    assert boxes[0, 0, 0, 0, 0].item() == pytest.approx(1.5, abs=1e-6)


def colliding_targets(seed):
    """Truth pairs on the same cells (a twin: nearly the same box, another class), an exact duplicate box
    of another class, and a repeated row: many (image, anchor, cell) slots with two or more truths."""
    g = torch.Generator().manual_seed(seed)
    n = 12
    base = torch.cat([torch.randint(0, 2, (n, 1), generator=g), torch.randint(0, 3, (n, 1), generator=g),
                      torch.rand(n, 2, generator=g) * 0.8 + 0.1, torch.rand(n, 2, generator=g) * 0.4 + 0.05], 1)
    twin = base.clone()
    twin[:, 2:4] += (torch.rand(n, 2, generator=g) - 0.5) * 0.01
    twin[:, 4:6] *= 1 + (torch.rand(n, 2, generator=g) - 0.5) * 0.1
    twin[:, 1] = (twin[:, 1] + 1) % 3
    duplicate = base[:2].clone()
    duplicate[:, 1] = (duplicate[:, 1] + 2) % 3
    return torch.cat([base, twin, duplicate, base[:1]]).float()


def random_outputs(seed, batch=2, size=128):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 3 * 8, size // s, size // s, generator=g) * 0.5).requires_grad_() for s in (32, 16)]


PERMUTATION_CASES = {
    "train.py defaults": dict(balance=(0.4, 1.0), scale_x_y=2.0, neighbor_cells=True),
    "best anchor, hard objectness, smoothing": dict(assign_thres=1.0, hard_obj=True, label_smoothing=0.1),
    "focal": dict(balance=(0.4, 1.0), focal_loss=True),
}


@pytest.mark.parametrize("case", list(PERMUTATION_CASES) + ["reference recipe"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_does_not_depend_on_the_order_of_target_rows(case, seed):
    if case == "reference recipe":
        kwargs = dict(balance=HEAD_BALANCE, input_size=128, settings=loss_settings(recipe_args("reference")))
    else:
        kwargs = PERMUTATION_CASES[case]
    loss = make_loss(**kwargs)
    targets = colliding_targets(seed)
    n = len(targets) // 2 - 1
    same_cell = ((targets[:n, 2:4] * 8).long() == (targets[n:2 * n, 2:4] * 8).long()).all(1)
    assert same_cell.sum() >= n // 2  # the twins do share slots with their originals
    outputs = random_outputs(seed)
    shuffled = targets[torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed))]
    total, parts = loss(outputs, targets)
    total_s, parts_s = loss(outputs, shuffled)
    for key in parts:
        torch.testing.assert_close(parts_s[key], parts[key], rtol=1e-6, atol=0, msg=key)
    grads = torch.autograd.grad(total, outputs)
    grads_s = torch.autograd.grad(total_s, outputs)
    for g, g_s in zip(grads, grads_s):
        torch.testing.assert_close(g_s, g, rtol=1e-6, atol=1e-9)


def p4_positives_both_orders(assign_thres, kept, other):
    """(index of `kept` among the rows, P4 positives) for rows [kept, other] and for [other, kept]."""
    loss = make_loss(assign_thres=assign_thres)
    return [(winner, loss.assign(torch.tensor(rows), [(4, 4), (8, 8)])[1])
            for rows, winner in (([kept, other], 0), ([other, kept], 1))]


def test_one_truth_per_slot_keeps_the_best_shape_fit():
    # two truths of P4 cell (4, 4) whose best anchor is anchor 2 (37x58): the exact fit wins, in either order
    exact = [0, 0, 4.5 / 8, 4.5 / 8, 37 / 128, 58 / 128]
    smaller = [0, 1, 4.4 / 8, 4.6 / 8, 30 / 128, 50 / 128]
    for winner, (t_idx, slot, gy, gx) in p4_positives_both_orders(1.0, exact, smaller):
        assert t_idx.tolist() == [winner] and slot.tolist() == [1] and (gy.item(), gx.item()) == (4, 4)


def test_one_truth_per_slot_breaks_shape_ties_by_the_smaller_box():
    # half and twice anchor 2's size have the same shape IoU with it (0.25); the smaller is kept
    half = [0, 0, 4.5 / 8, 4.5 / 8, 18.5 / 128, 29 / 128]
    double = [0, 1, 4.5 / 8, 4.5 / 8, 74 / 128, 116 / 128]
    for winner, (t_idx, slot, _, _) in p4_positives_both_orders(0.2, half, double):
        assert t_idx[slot == 1].tolist() == [winner]


def test_ciou_loss_equals_torchvision_and_keeps_alpha_on_request():
    g = torch.Generator().manual_seed(0)
    cxcy = torch.rand(40, 2, generator=g) * 10
    pred = torch.cat([cxcy, torch.rand(40, 2, generator=g) * 4 + 0.2], 1).requires_grad_()  # cx, cy, w, h
    target = torch.cat([cxcy + torch.randn(40, 2, generator=g), torch.rand(40, 2, generator=g) * 4 + 0.2], 1)

    def value_and_grad(loss_of_xyxy):
        value = loss_of_xyxy(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(target))
        return value.detach(), torch.autograd.grad(value.sum(), pred)[0]

    ours, g_ours = value_and_grad(complete_iou_loss)
    tv, g_tv = value_and_grad(complete_box_iou_loss)
    torch.testing.assert_close(ours, tv, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g_ours, g_tv, rtol=1e-5, atol=1e-6)
    # alpha in the graph: the reference's box_ciou, the same value and another gradient
    with_alpha, g_alpha = value_and_grad(lambda p, t: complete_iou_loss(p, t, alpha_grad=True))
    reference = 1 - reference_ciou(pred, target)  # takes (cx, cy, w, h)
    reference, g_reference = reference.detach(), torch.autograd.grad(reference.sum(), pred)[0]
    torch.testing.assert_close(with_alpha, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_alpha, g_reference, rtol=1e-4, atol=1e-6)
    assert (g_alpha - g_ours).abs().max() > 1e-3


def test_bce_clip_bounds_saturated_objectness_as_the_reference():
    outputs = zero_outputs()
    with torch.no_grad():
        outputs[1].view(3, 8, 8, 8)[:, 4] = 30.0  # every P4 prediction sure of an object, none there
    common = dict(box_weight=0, cls_weight=0, balance=(0.0, 1.0))
    plain = make_loss(**common)(outputs, torch.zeros(0, 6))[1]["obj"]
    clipped = make_loss(bce_clip=1e-7, **common)(outputs, torch.zeros(0, 6))[1]["obj"]
    assert plain.item() == pytest.approx(30.0, rel=1e-4)
    # -log(1 - p) with p clipped to float32's 1 - 1e-7
    assert clipped.item() == pytest.approx(-math.log(1 - float(torch.tensor(1 - 1e-7))), rel=1e-4)
    assert torch.autograd.grad(clipped, outputs[1])[0].abs().max() == 0


def test_bce_clip_must_be_below_one_half():
    with pytest.raises(ValueError, match="bce-clip"):
        make_loss(bce_clip=0.5)


@pytest.mark.parametrize("alpha_grad", [False, True])
def test_a_predicted_size_that_underflows_to_zero_keeps_gradients_finite(alpha_grad):
    """The bf16 NaN (issue 13): a size logit of -150 flushes exp() to 0; the aspect term then divided by
    a zero height, finite in value but NaN in gradient, and one such step turned every weight into NaN."""
    outputs = zero_outputs()
    with torch.no_grad():
        outputs[1].view(3, 8, 8, 8)[:, 3] = -150.0  # every P4 height logit
    targets = torch.tensor([[0, 1, 0.45, 0.55, 0.2, 0.3]])
    total, parts = make_loss(ciou_alpha_grad=alpha_grad)(outputs, targets)
    grads = torch.autograd.grad(total, outputs)
    assert torch.isfinite(total) and parts["box"] > 0
    assert all(torch.isfinite(g).all() for g in grads)
    pred = torch.tensor([[1.0, 1.0, 1.5, 1.0]], requires_grad=True)  # xyxy of zero height
    loss = complete_iou_loss(pred, torch.tensor([[1.0, 1.0, 2.0, 2.0]]), alpha_grad=alpha_grad)
    assert torch.isfinite(torch.autograd.grad(loss.sum(), pred)[0]).all()


def test_giou_loss_matches_a_hand_computation():
    """The GIoU form the loss uses. [0, 0, 2, 2] against [1, 1, 3, 3]: intersection 1, union 4 + 4 - 1 = 7,
    enclosing box 3 x 3 = 9, so GIoU = 1/7 - (9 - 7)/9 and the loss is 1 - GIoU; identical boxes lose 0, and
    boxes far apart more than 1."""
    from utils.engine.loss import generalized_box_iou_loss
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    target = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 1.0, 1.0], [3.0, 0.0, 4.0, 1.0]])
    expected = torch.tensor([1 - (1 / 7 - 2 / 9), 0.0, 1 - (0 - (4 - 2) / 4)])
    torch.testing.assert_close(generalized_box_iou_loss(pred, target, reduction="none"), expected, atol=1e-6, rtol=0)


def test_box_loss_form_is_a_choice_and_giou_changes_only_the_box_part():
    # a thin box, off the cell centre: CIoU's centre and aspect terms and GIoU's enclosing term all differ
    outputs, targets = zero_outputs(), torch.tensor([[0, 1, 0.40, 0.60, 0.6, 0.05]])
    _, ciou = make_loss(box_loss="ciou")(outputs, targets)
    _, giou = make_loss(box_loss="giou")(outputs, targets)
    assert float(giou["box"]) != pytest.approx(float(ciou["box"]), rel=1e-3)
    assert torch.equal(giou["obj"], ciou["obj"]) and torch.equal(giou["cls"], ciou["cls"])
    with pytest.raises(ValueError, match="box loss"):
        make_loss(box_loss="diou")


# ---- the SE-loss: which classes each image holds, from the enc blocks' logits ----------------------------

SE_TARGETS = torch.tensor([[0, 0, 0.5, 0.5, 0.2, 0.2], [0, 2, 0.3, 0.3, 0.1, 0.1], [0, 2, 0.7, 0.7, 0.1, 0.1],
                           [1, 1, 0.5, 0.5, 0.4, 0.4]])  # image 0 holds classes 0 and 2 (twice), image 1 class 1


def test_se_loss_matches_a_hand_computation():
    ln3 = math.log(3)
    # sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4, sigmoid(0) = 1/2
    first = torch.tensor([[ln3, -ln3, ln3], [0.0, ln3, ln3]])
    second = torch.zeros(2, 3)
    # presence [[1, 0, 1], [0, 1, 0]]; BCE of the first block: ln 4/3, ln 4/3, ln 4/3 / ln 2, ln 4/3, ln 4
    first_bce = (4 * math.log(4 / 3) + math.log(2) + math.log(4)) / 6
    expected = 0.2 * (first_bce + math.log(2)) / 2  # the mean over the blocks, times the weight
    outputs = zero_outputs(batch=2)
    total, parts = make_loss(se_loss=0.2)(outputs, SE_TARGETS, se_logits=[first, second])
    assert parts["se"].item() == pytest.approx(expected, rel=1e-6)
    assert make_loss(se_loss=0.2)(outputs, SE_TARGETS, se_logits=[first.bfloat16()])[1]["se"].dtype == torch.float32
    plain_total, plain = make_loss()(outputs, SE_TARGETS, se_logits=[first, second])
    assert set(plain) == {"box", "obj", "cls"}  # weight 0: no se part, the logits are not read
    assert total.item() == pytest.approx(plain_total.item() + expected, rel=1e-6)


def test_se_loss_without_logits_or_with_a_negative_weight_is_refused():
    with pytest.raises(ValueError, match="no SE-loss logits were given"):
        make_loss(se_loss=0.2)(zero_outputs(batch=2), SE_TARGETS)
    with pytest.raises(ValueError, match="--se-loss must be >= 0"):
        make_loss(se_loss=-0.1)
