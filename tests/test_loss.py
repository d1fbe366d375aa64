import math

import pytest
import torch

from nets.yolo import YoloBody
from utils.config import DEFAULT_ANCHORS_MASK
from utils.loss import YOLOLoss

ANCHORS = torch.tensor([[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]], dtype=torch.float32)


def make_loss(**kw):
    return YOLOLoss(ANCHORS, 3, DEFAULT_ANCHORS_MASK, (32, 16), **kw)


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
    total, parts = make_loss()(outputs, torch.zeros(0, 6))
    assert parts["box"] == 0 and parts["cls"] == 0
    # every cell a negative with logit 0: BCE = log 2, weighted by the head balance (0.4 + 1.0 by default)
    assert parts["obj"].item() == pytest.approx(math.log(2) * 2.0, rel=1e-5)
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
    loss_hard = make_loss(iou_aware=False, **common)
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


def test_label_smoothing_and_focal_change_class_loss():
    outputs = zero_outputs()
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.3]])
    plain = make_loss()(outputs, targets)[1]["cls"]
    smooth = make_loss(label_smoothing=0.1)(outputs, targets)[1]["cls"]
    focal = make_loss(focal=True)(outputs, targets)[1]["cls"]
    # with logits 0 BCE is log 2 whatever the target, so smoothing leaves it; focal scales it down
    assert smooth.item() == pytest.approx(plain.item(), rel=1e-6)
    assert focal < plain


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
    with pytest.raises(ValueError, match="scale_x_y >= 2"):
        make_loss(scale_x_y=1.05, neighbor_cells=True)


def test_neighbour_prediction_can_reach_the_truth_centre():
    # with scale_x_y 2 a centre can sit 0.5 cells outside its own cell: sigmoid(t) -> 1 gives offset 1.5
    loss = make_loss(scale_x_y=2.0, neighbor_cells=True)
    p = torch.zeros(1, 1, 1, 1, 8)
    p[..., 0] = 20.0
    boxes = loss.decode(p, torch.tensor([[1.0, 1.0]]))
    assert boxes[0, 0, 0, 0, 0].item() == pytest.approx(1.5, abs=1e-6)
