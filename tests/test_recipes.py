import argparse

import pytest
import torch

from tests.reference_model import reference_assignment, reference_yolo_loss
from utils.core.config import DEFAULT_ANCHORS_MASK
from utils.engine.loss import HEAD_BALANCE, YOLOLoss, loss_settings
from utils.engine.recipes import RECIPES, recipe_args

ANCHORS = torch.tensor([[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]], dtype=torch.float32)


def test_recipes_are_frozen_and_share_their_keys():
    assert set(RECIPES) == {"default", "reference"}
    assert set(RECIPES["default"]) == set(RECIPES["reference"])
    with pytest.raises(TypeError):
        RECIPES["default"]["lr"] = 1.0
    with pytest.raises(TypeError):
        RECIPES["new"] = {}


def test_recipe_args_rejects_unknown_names_and_keys():
    with pytest.raises(ValueError, match="default, reference"):
        recipe_args("darknet")
    with pytest.raises(ValueError, match="unknown recipe keys lrr"):
        recipe_args("default", lrr=0.1)
    assert recipe_args("reference", lr=0.02).lr == 0.02


def test_default_recipe_gives_the_loss_train_py_has_always_built():
    # the keywords train.py's build_loss passed with its default flags before recipes existed, but the box
    # weight (0.05 until the measurements of docs/recipe_measurements.md made it 0.4)
    before = dict(box_weight=0.4, obj_weight=1.0, cls_weight=0.5, balance=[0.4, 1.0], ignore_thres=0.5,
                  assign_thres=0.213, iou_aware=True, label_smoothing=0.0, focal=False, scale_x_y=2.0,
                  neighbor_cells=True)
    loss = loss_of(recipe_args("default"), 20, 416)
    assert {k: getattr(loss, k) for k in before} == before
    assert loss.smooth_by_classes is False and loss.bce_clip == 0 and loss.ciou_alpha_grad is False


def loss_of(args, num_classes, input_size):
    """The YOLOLoss train.py builds (utils/engine/build.py build_loss) from `args`."""
    return YOLOLoss(ANCHORS, num_classes, DEFAULT_ANCHORS_MASK, (32, 16), loss_settings(args), input_size,
                    HEAD_BALANCE)


def test_args_from_before_recipes_get_the_default_values():
    old = argparse.Namespace(**{k: v for k, v in RECIPES["default"].items()
                                if k not in ("obj_size_scale", "cls_count_scale", "bce_clip", "ciou_alpha_grad",
                                             "smooth_by_classes")})
    assert loss_settings(old) == loss_settings(recipe_args("default"))


def test_reference_recipe_weights_scale_with_input_and_classes():
    loss = loss_of(recipe_args("reference"), 20, 320)
    assert loss.obj_weight == pytest.approx(5 * 320 ** 2 / 416 ** 2)
    assert loss.cls_weight == pytest.approx(20 / 80)
    assert loss.box_weight == 0.05 and loss.balance == [0.4, 1.0]
    assert loss_of(recipe_args("reference"), 80, (416, 416)).obj_weight == pytest.approx(5.0)
    # an explicit flag overrides the recipe
    assert loss_of(recipe_args("reference", obj_size_scale=False), 20, 320).obj_weight == 5.0


def random_reference_batch(seed, batch, size, num_classes):
    """Random truths (no two on one image/anchor slot/cell, where the reference's behaviour depends on the
    order) and random outputs, some objectness logits saturated so the reference's BCE clip matters."""
    g = torch.Generator().manual_seed(seed)
    grids = [(size // 32, size // 32), (size // 16, size // 16)]
    targets = []
    for b in range(batch):
        n = 0 if b == 1 else 8
        wh = torch.rand(n, 2, generator=g) * 0.5 + 0.03
        boxes = torch.cat([torch.rand(n, 2, generator=g) * 0.9 + 0.05, wh, torch.randint(0, num_classes, (n, 1),
                                                                                         generator=g)], 1)
        places = reference_assignment([boxes], ANCHORS, DEFAULT_ANCHORS_MASK, (size, size), grids)[0]
        taken, keep = set(), []
        for i, p in enumerate(places):
            keep.append(not taken & set(p))
            taken |= set(p) if keep[-1] else set()
        targets.append(boxes[torch.tensor(keep, dtype=torch.bool)])
    outputs = [torch.randn(batch, 3 * (5 + num_classes), h, w, generator=g) for h, w in grids]
    for out in outputs:
        obj = out.view(batch, 3, 5 + num_classes, *out.shape[2:])[:, :, 4]
        obj[torch.rand(obj.shape, generator=g) < 0.05] = 20.0
        obj[torch.rand(obj.shape, generator=g) < 0.05] = -20.0
    return [o.requires_grad_() for o in outputs], targets


def as_rows(targets):
    return torch.cat([torch.cat([torch.full((len(t), 1), float(b)), t[:, 4:5], t[:, :4]], 1)
                      for b, t in enumerate(targets)])


@pytest.mark.parametrize("seed, size, num_classes", [(0, 416, 20), (1, 320, 3), (2, 256, 80)])
def test_reference_recipe_reproduces_the_reference_loss_and_gradients(seed, size, num_classes):
    outputs, targets = random_reference_batch(seed, 3, size, num_classes)
    loss = loss_of(recipe_args("reference"), num_classes, size)
    ours, _ = loss(outputs, as_rows(targets))
    theirs = reference_yolo_loss(outputs, targets, ANCHORS, num_classes, DEFAULT_ANCHORS_MASK, (size, size))
    # float32 rounding, and eps placements of the IoU divisions (1e-7 added vs clamped at 1e-6): seen up
    # to 1e-7 relative on the value and 7e-7 of the largest gradient
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    g_ours = torch.autograd.grad(ours, outputs)
    g_theirs = torch.autograd.grad(theirs, outputs)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-6 * b.abs().max().item())


def test_reference_restatement_sees_what_the_recipe_changes():
    # the parity above is not trivially true: each reference switch moves the loss on the same batch
    outputs, targets = random_reference_batch(0, 3, 320, 3)
    rows = as_rows(targets)
    theirs = reference_yolo_loss(outputs, targets, ANCHORS, 3, DEFAULT_ANCHORS_MASK, (320, 320)).item()
    for key, value in [("bce_clip", 0.0), ("ciou_alpha_grad", False), ("obj_size_scale", False),
                       ("cls_count_scale", False), ("hard_obj", False), ("assign_thres", 0.213)]:
        loss = loss_of(recipe_args("reference", **{key: value}), 3, 320)
        total, _ = loss(outputs, rows)
        if key == "ciou_alpha_grad":  # same value, other gradient
            g = torch.autograd.grad(total, outputs)[0]
            g_ref = torch.autograd.grad(reference_yolo_loss(outputs, targets, ANCHORS, 3, DEFAULT_ANCHORS_MASK,
                                                            (320, 320)), outputs)[0]
            assert not torch.allclose(g, g_ref, rtol=1e-4, atol=1e-7 * g_ref.abs().max().item()), key
        else:
            assert total.item() != pytest.approx(theirs, rel=1e-4), key
