"""Task-aligned assignment (utils/engine/assign.py) on cases worked out by hand."""
import math

import pytest
import torch

from utils.engine.assign import centre_in_box, top_k_per_truth
from utils.engine.loss import LossSettings, YOLOLoss

# one head of stride 32 on a 128 input (a 4 x 4 grid), one anchor of 2 x 2 cells, one class
ANCHOR = torch.tensor([[64.0, 64.0]])


def one_head_loss(**kw):
    return YOLOLoss(ANCHOR, 1, [[0]], (32,), settings(**kw), 128, (1.0,))


def settings(**kw):
    """YOLOLoss's settings before it took LossSettings, with scale 2 and the aligned assigner."""
    base = dict(box_weight=0.05, scale_x_y=2.0, neighbor_cells=False, iou_cls=False, assigner="aligned")
    return LossSettings(**{**base, **kw})


def logits(cells, cls=0.0):
    """Tensor[1, 6, 4, 4] head output, all logits 0 (the class logit `cls`) except {(gy, gx): (tx, ty, obj)}."""
    out = torch.zeros(1, 1, 4, 4, 6)
    out[..., 5] = cls
    for (gy, gx), (tx, ty, obj) in cells.items():
        out[0, 0, gy, gx, 0], out[0, 0, gy, gx, 1], out[0, 0, gy, gx, 4] = tx, ty, obj
    return out.permute(0, 1, 4, 2, 3).reshape(1, 6, 4, 4)


def aligned(loss, outputs, targets):
    return loss.align(outputs, targets, loss.assign(targets, [o.shape[2:] for o in outputs]))


def test_centre_in_box_marks_the_cells_whose_centre_is_inside():
    inside = centre_in_box(torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 1.2, 0.4]]), 4, 4)
    assert inside[0].nonzero().tolist() == [[1, 1], [1, 2], [2, 1], [2, 2]]
    assert not inside[1].any()  # no centre (0.5, 0.5) inside a box 0.4 cells high


def test_top_k_per_truth_keeps_the_best_k_of_each_truth():
    t_idx = torch.tensor([0, 1, 0, 0, 1, 1, 1])
    metric = torch.tensor([0.1, 0.9, 0.3, 0.2, 0.5, 0.7, 0.5])
    # truth 0: 0.3, 0.2 kept; truth 1: 0.9, 0.7 kept, the two 0.5s are not
    assert top_k_per_truth(t_idx, metric, 2).tolist() == [False, True, True, True, False, True, False]
    assert top_k_per_truth(t_idx, metric, 10).all()


def test_the_prediction_that_fits_its_truth_wins_then_the_most_confident():
    # truth: centre (2, 2), 2 x 2 cells: xyxy [1, 1, 3, 3]; the centres of cells (1,1) (1,2) (2,1) (2,2) lie inside
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.5, 0.5]])
    # logits 0 put a 2 x 2 box at each cell centre: IoU 1.5^2 / (8 - 1.5^2) = 0.3913 with the truth.
    # cell (2, 1) is moved onto the truth (sigmoid * 2 - 0.5 + cell = 2): IoU 1, though its objectness is the lowest
    exact = (math.log(3), -math.log(3), -1.0)
    outputs = [logits({(1, 1): (0, 0, 2.0), (1, 2): (0, 0, 0.0), (2, 1): exact, (2, 2): (0, 0, 1.0),
                       (0, 0): (0, 0, 5.0)})]  # (0, 0) is outside the truth: never a candidate
    iou_shifted = 1.5 ** 2 / (8 - 1.5 ** 2)
    score = lambda obj: torch.sigmoid(torch.tensor(obj)).item() * 0.5  # noqa: E731 class logit 0
    metrics = {(2, 1): score(-1.0) ** 0.5, (1, 1): score(2.0) ** 0.5 * iou_shifted ** 6,
               (2, 2): score(1.0) ** 0.5 * iou_shifted ** 6, (1, 2): score(0.0) ** 0.5 * iou_shifted ** 6}
    for k in (1, 2, 3, 4):
        expected = sorted(sorted(metrics, key=metrics.get, reverse=True)[:k])
        (t_idx, slot, gy, gx), = aligned(one_head_loss(topk=k), outputs, targets)
        assert sorted(zip(gy.tolist(), gx.tolist())) == expected
    assert sorted(metrics, key=metrics.get, reverse=True) == [(2, 1), (1, 1), (2, 2), (1, 2)]


def test_only_the_anchor_slots_the_shape_rule_gave_a_truth_are_candidates():
    # anchors of 2 x 2 and 0.5 x 0.5 cells; the 2 x 2 truth's shape IoU with the small one is 1/16 < 0.213
    loss = YOLOLoss(torch.tensor([[64.0, 64.0], [16.0, 16.0]]), 1, [[0, 1]], (32,), settings(topk=4), 128, (1.0,))
    out = torch.zeros(1, 2, 4, 4, 6)
    out[0, 1, :, :, 2:4] = math.log(4)  # the small anchor's boxes are scaled to 2 x 2 cells: the same IoU as slot 0's
    out[0, 1, :, :, 4] = 5.0  # and far more confident
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.5, 0.5]])
    (t_idx, slot, gy, gx), = aligned(loss, [out.permute(0, 1, 4, 2, 3).reshape(1, 12, 4, 4)], targets)
    assert slot.tolist() == [0, 0, 0, 0]
    assert sorted(zip(gy.tolist(), gx.tolist())) == [(1, 1), (1, 2), (2, 1), (2, 2)]


def test_a_truth_smaller_than_a_cell_keeps_its_own_cell():
    # 10 x 10 pixels at (40, 40): no cell centre inside, the shape rule's own cell (1, 1) is the candidate
    targets = torch.tensor([[0, 0, 40 / 128, 40 / 128, 10 / 128, 10 / 128]])
    (t_idx, slot, gy, gx), = aligned(one_head_loss(), [logits({})], targets)
    assert (t_idx.tolist(), gy.tolist(), gx.tolist()) == ([0], [1], [1])


def test_a_place_two_truths_claim_goes_to_the_one_its_box_overlaps_most():
    # both truths hold cell (1, 1)'s centre (1.5, 1.5); its predicted box (logits 0) is [0.5, 0.5, 2.5, 2.5]
    near = [0, 0, 1.5 / 4, 1.5 / 4, 2 / 4, 2 / 4]  # the same box: IoU 1
    far = [0, 0, 2.0 / 4, 2.0 / 4, 2 / 4, 2 / 4]  # IoU 0.39
    for rows, winner in (([near, far], 0), ([far, near], 1)):
        (t_idx, slot, gy, gx), = aligned(one_head_loss(topk=4), [logits({})], torch.tensor(rows))
        claimed = (gy == 1) & (gx == 1)
        assert t_idx[claimed].tolist() == [winner]


def test_aligned_loss_is_finite_trains_and_ignores_row_order():
    torch.manual_seed(0)
    outputs = [torch.randn(2, 6, 4, 4, requires_grad=True)]
    rows = torch.tensor([[0, 0, 0.5, 0.5, 0.5, 0.5], [1, 0, 0.3, 0.6, 0.2, 0.4], [0, 0, 0.4, 0.45, 0.3, 0.3]])
    loss = one_head_loss(iou_cls=True)
    total, parts = loss(outputs, rows)
    shuffled, _ = loss(outputs, rows[[2, 0, 1]])
    assert torch.isfinite(total) and parts["box"] > 0 and parts["cls"] > 0
    assert shuffled.item() == pytest.approx(total.item(), rel=1e-6)
    total.backward()
    assert outputs[0].grad.abs().sum() > 0


def test_iou_class_target_is_the_iou_of_the_predicted_box():
    # one positive whose predicted box overlaps its truth by IoU 0.39, class logit 2: BCE against 0.39, not 1
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.5, 0.5]])
    outputs = [logits({}, cls=2.0)]
    hard = one_head_loss(topk=1)(outputs, targets)[1]["cls"]
    soft = one_head_loss(topk=1, iou_cls=True)(outputs, targets)[1]["cls"]
    iou, prob = 1.5 ** 2 / (8 - 1.5 ** 2), 1 / (1 + math.exp(-2.0))
    bce = lambda t: -(t * math.log(prob) + (1 - t) * math.log(1 - prob))  # noqa: E731
    # the class weight is 0.5
    assert hard.item() == pytest.approx(bce(1.0) * 0.5, rel=1e-5)
    assert soft.item() == pytest.approx(bce(iou) * 0.5, rel=1e-5)  # a confident class on a loose box costs more


def test_unknown_assigner_is_refused():
    with pytest.raises(ValueError, match="unknown assigner"):
        YOLOLoss(ANCHOR, 1, [[0]], (32,), settings(assigner="simota"), 128, (1.0,))


@pytest.mark.slow
def test_train_py_trains_with_the_aligned_assigner_and_records_its_settings(tmp_path, monkeypatch):
    import train
    from tests.helpers.voc import write_tiny_voc
    from utils.engine.checkpoint import read_checkpoint
    from utils.engine.loss import loss_settings

    monkeypatch.setenv("YOLO_SCAN_CACHE", str(tmp_path / "cache"))
    data = write_tiny_voc(tmp_path / "voc", 4)
    flags = ["--assigner", "aligned", "--topk", "5", "--iou-cls", "--ema-tau", "10"]
    given = loss_settings(train.parse_args(flags))
    assert (given.assigner, given.topk, given.iou_cls) == ("aligned", 5, True)
    defaults = loss_settings(train.parse_args([]))
    assert (defaults.assigner, defaults.topk, defaults.iou_cls) == ("shape", 10, True)
    assert train.main(["--data", str(data), "--classes", str(data / "classes.txt"), "--input-size", "128",
                       "--batch-size", "2", "--workers", "0", "--save-dir", str(tmp_path / "runs"), "--quiet",
                       "--eval-period", "0", "--epochs", "1", *flags]) == 0
    ckpt = read_checkpoint(tmp_path / "runs" / "exp" / "last.pth")
    assert ckpt["ema"]["tau"] == 10 and ckpt["ema"]["updates"] == 2
    assert {k: ckpt["args"][k] for k in ("assigner", "topk", "iou_cls", "ema_tau")} == {
        "assigner": "aligned", "topk": 5, "iou_cls": True, "ema_tau": 10.0}
    assert math.isfinite(ckpt["results"][-1]["train_loss"])
