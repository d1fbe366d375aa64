"""Decoding and NMS on hand-built head outputs, against boxes worked out by hand."""
import math
import warnings

import pytest
import torch

from tests.helpers.models import ANCHORS, ANCHORS_MASK, make_checkpoint
from utils.ops.boxes import (MAX_NMS, Letterbox, box_iou, decode_candidates, letterbox_params, select_detections,
                             split_by_image)
from yolo import YOLO

INPUT_HW = (64, 96)  # out0 grid 2x3 (stride 32), out1 grid 4x6 (stride 16)
NC = 2


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def hand_outputs(tx: float = 0.0, ty: float = 0.0, tw: float = 0.0, th: float = 0.0):
    """Every anchor silent except anchor 0 of out1 (anchor index 1, 24x16) at cell gx=2, gy=2, class 0."""
    out0 = torch.full((1, 3 * (5 + NC), 2, 3), -20.0)
    out1 = torch.full((1, 3 * (5 + NC), 4, 6), -20.0)
    out1[0, 0:7, 2, 2] = torch.tensor([tx, ty, tw, th, 3.0, 5.0, -5.0])
    return [out0, out1]


def decode_all(outputs, anchors, input_hw, scale_x_y=1.0):
    """Every box of every image, decoded (decode_candidates at threshold 0): Tensor[N, 5+C], Tensor[N] image."""
    return decode_candidates(outputs, anchors, ANCHORS_MASK, input_hw, scale_x_y, conf_thres=0.0)


def per_image(pred, image, num_images, *args, **kwargs):
    """select_detections split by image: one Tensor[K, 6] per image."""
    return split_by_image(select_detections(pred, image, num_images, *args, **kwargs), num_images)


@pytest.fixture(scope="module")
def yolo(tmp_path_factory):
    return YOLO(make_checkpoint(tmp_path_factory.mktemp("dec") / "c.pth", INPUT_HW), conf=0.5)


def test_decode_centre_size_and_score():
    anchors = torch.tensor(ANCHORS, dtype=torch.float32)
    pred, image = decode_all(hand_outputs(tw=math.log(2)), anchors, INPUT_HW)
    best = pred[pred[:, 4].argmax()]
    # centre (0.5 + 2) * 16 = 40 in x and y; width 2 * 24, height 16
    assert best[:4].tolist() == pytest.approx([16, 32, 64, 48], abs=1e-4)
    assert best[4].item() == pytest.approx(1 / (1 + math.exp(-3)))
    assert pred.shape == (3 * (6 + 24), 5 + NC) and image.tolist() == [0] * len(pred)


def test_decode_scale_x_y():
    anchors = torch.tensor(ANCHORS, dtype=torch.float32)
    pred, _ = decode_all(hand_outputs(tx=logit(0.8), ty=logit(0.1)), anchors, INPUT_HW, 1.05)
    best = pred[pred[:, 4].argmax()]
    cx = (0.8 * 1.05 - 0.025 + 2) * 16  # darknet: sigmoid * s - (s - 1) / 2 + cell
    cy = (0.1 * 1.05 - 0.025 + 2) * 16
    assert best[:4].tolist() == pytest.approx([cx - 12, cy - 8, cx + 12, cy + 8], abs=1e-4)


@pytest.mark.parametrize("letterbox, expected", [
    # image 100 high x 200 wide into 64x96: scale 0.48, resized 96x48, 8 px grey above and below
    (True, [28 / 0.48, (32 - 8) / 0.48, 52 / 0.48, (48 - 8) / 0.48]),
    # stretched: x scale 96/200 = 0.48, y scale 64/100 = 0.64
    (False, [28 / 0.48, 32 / 0.64, 52 / 0.48, 48 / 0.64]),
])
def test_letterbox_correction_non_square(yolo, letterbox, expected):
    lb = letterbox_params((100, 200), INPUT_HW, letterbox)
    assert lb == (Letterbox(0.48, 0.48, 0, 8) if letterbox else Letterbox(0.48, 0.64, 0, 0))
    det = yolo.postprocess(hand_outputs(), lb, (100, 200))
    assert len(det) == 1 and det.class_ids.tolist() == [0]
    assert det.boxes[0].tolist() == pytest.approx(expected, abs=1e-3)
    assert det.scores[0] == pytest.approx(1 / (1 + math.exp(-3)) / (1 + math.exp(-5)), rel=1e-5)


def test_boxes_clipped_to_image(yolo):
    lb = letterbox_params((64, 96), INPUT_HW, True)
    det = yolo.postprocess(hand_outputs(tw=3.0, th=3.0), lb, (64, 96))
    assert det.boxes[0].tolist() == pytest.approx([0, 0, 96, 64])


def pred_from(rows):
    """Rows of (x1, y1, x2, y2, obj, class) of one image -> (Tensor[N, 5 + 2] with one-hot class
    probabilities, Tensor[N] image index 0, 1 image)."""
    pred = torch.zeros(len(rows), 7)
    for i, (x1, y1, x2, y2, obj, cls) in enumerate(rows):
        pred[i, :5] = torch.tensor([x1, y1, x2, y2, obj])
        pred[i, 5 + cls] = 1.0
    return pred, torch.zeros(len(rows), dtype=torch.long), 1


def test_nms_keeps_the_right_boxes():
    pred = pred_from([
        (0, 0, 10, 10, 0.9, 0),      # kept: best of its cluster
        (1, 1, 11, 11, 0.8, 0),      # IoU 0.68 with the first, same class: suppressed
        (1, 1, 11, 11, 0.7, 1),      # same place, other class: kept
        (20, 20, 30, 30, 0.6, 0),    # no overlap: kept
        (5, 0, 15, 10, 0.85, 0),     # IoU 1/3 with the first: suppressed at 0.3
        (40, 40, 50, 50, 0.2, 0),    # below the threshold: dropped
    ])
    kept = per_image(*pred, conf_thres=0.5, nms_thres=0.3)[0]
    assert kept[:, 4].tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert kept[:, 5].tolist() == [0, 1, 0]
    assert per_image(*pred, conf_thres=0.5, nms_thres=0.5)[0].shape[0] == 4  # the 1/3 overlap survives
    assert per_image(*pred, conf_thres=0.5, nms_thres=0.3, max_det=2)[0][:, 4].tolist() == pytest.approx([0.9, 0.7])


@pytest.mark.parametrize("conf,scale_x_y", [(0.5, 1.0), (0.3, 1.05), (0.001, 2.0)])
def test_candidate_decoding_keeps_what_full_decoding_keeps(conf, scale_x_y):
    torch.manual_seed(0)
    num_classes = 3
    # objectness logits spread around the threshold, so some cells pass and some do not
    outputs = [torch.randn(2, 3 * (5 + num_classes), 4, 6) * 3, torch.randn(2, 3 * (5 + num_classes), 8, 12) * 3]
    anchors = torch.tensor(ANCHORS, dtype=torch.float32)
    full = per_image(*decode_all(outputs, anchors, (128, 192), scale_x_y), 2, conf, 0.45)
    pred, image = decode_candidates(outputs, anchors, ANCHORS_MASK, (128, 192), scale_x_y, conf)
    some = per_image(pred, image, 2, conf, 0.45)
    assert len(pred) < 2 * 3 * (4 * 6 + 8 * 12)  # cells below the threshold were skipped
    assert all(len(f) > 0 for f in full)
    for f, s in zip(full, some):
        torch.testing.assert_close(s, f, rtol=1e-6, atol=1e-5)  # vectorised and scalar exp differ by an ulp


def test_boxes_without_area_after_clipping_are_dropped():
    from utils.ops.boxes import detections_to_image
    lb = Letterbox(1.0, 1.0, 0, 0)
    det = torch.tensor([[-5.0, -5.0, 10.0, 10.0, 0.9, 0],   # overhangs: clipped to [0, 0, 8, 6]
                        [9.0, 1.0, 20.0, 5.0, 0.8, 1],      # right of the image: width 0 after clipping
                        [1.0, 7.0, 5.0, 9.0, 0.7, 0],       # below the image: height 0
                        [2.0, 2.0, 2.0, 4.0, 0.6, 1],       # no width to start with
                        [1.0, 1.0, 3.0, 3.0, 0.5, 1]])
    kept = detections_to_image(det, lb, (6, 8))
    assert torch.allclose(kept, torch.tensor([[0, 0, 8, 6, 0.9, 0], [1, 1, 3, 3, 0.5, 1]]))


def test_hand_box_in_the_padding_is_dropped(yolo):
    """hand_outputs' box (input y 32..48) on a 1x96 image, whose one row sits at input y 31..32: clipped to the
    image it has no height and is dropped; a tall box (y -128..192) spanning the row is kept."""
    lb = letterbox_params((1, 96), INPUT_HW, True)
    assert lb.pad_y == 31
    assert len(yolo.postprocess(hand_outputs(), lb, (1, 96))) == 0
    tall = yolo.postprocess(hand_outputs(ty=-20.0, th=3.0), lb, (1, 96))
    assert len(tall) == 1 and tall.boxes[0, [1, 3]].tolist() == [0, 1]


def reference_selection(pred, image, num_images, conf, nms, max_det, max_nms):
    """select_detections the slow, obvious way: per image, the max_nms best scores, greedy NMS per class."""
    rows = []
    for i in range(num_images):
        p = pred[image == i]
        score, cls = (p[:, 4:5] * p[:, 5:]).max(dim=1)
        order = [int(k) for k in score.argsort(descending=True) if score[k] >= conf][:max_nms]
        kept = []
        for k in order:
            if all(cls[j] != cls[k] or box_iou(p[j, None, :4], p[k, None, :4]).item() <= nms for j in kept):
                kept.append(k)
        rows += [[i, *p[k, :4].tolist(), score[k].item(), cls[k].item()] for k in kept[:max_det]]
    return torch.tensor(rows).reshape(-1, 7)


@pytest.mark.parametrize("max_nms", [6, MAX_NMS])
def test_eager_and_traced_selection_match_a_reference(max_nms):
    g = torch.Generator().manual_seed(0)
    xy, wh = torch.rand(90, 2, generator=g) * 40, torch.rand(90, 2, generator=g) * 30 + 1
    pred = torch.cat([xy, xy + wh, torch.rand(90, 1 + NC, generator=g)], dim=1)
    image = torch.randint(0, 3, (90,), generator=g)
    expected = reference_selection(pred, image, 3, 0.1, 0.4, 5, max_nms)
    eager = select_detections(pred, image, 3, 0.1, 0.4, 5, max_nms)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on data-dependent shapes
        traced = torch.jit.trace(lambda p, i: select_detections(p, i, 3, 0.1, 0.4, 5, max_nms), (pred, image))
    assert len(expected) > 3 * 3
    for found in (eager, traced(pred, image)):
        torch.testing.assert_close(found[by_image_and_score(found)], expected[by_image_and_score(expected)])


def by_image_and_score(det):
    """The order of Tensor[K, 7] detections (scores in [0, 1]) by image, then descending score."""
    return (det[:, 0] * 10 - det[:, 5]).argsort()
