"""Class-agnostic NMS (--agnostic-nms): two overlapping boxes of different classes are both kept without it and
one with it, the same on the torch backend, the onnx backend (NMS traced into the graph) and the exported graph
with NMS inside."""
import numpy as np
import pytest
import torch

import predict
from tests.helpers.models import make_checkpoint
from utils.deploy.export import ort_session
from utils.engine.checkpoint import save_atomic
from utils.ops.image import to_unit_float
from yolo import YOLO

HW = (64, 96)  # P5 grid 2 x 3: six cells, 32 pixels apart
ANCHORS = [[8, 8], [24, 16], [16, 16], [20, 20], [24, 20], [28, 28]]  # P5 slots: 20x20, 24x20 (IoU 0.83), 28x28


@pytest.fixture(scope="module")
def two_class_pairs(tmp_path_factory):
    """A checkpoint whose network ignores its input (head weights 0): in every P5 cell a 20x20 box of class 0
    (score ~0.995) and a 24x20 box of class 1 (~0.991) on the same centre, IoU 0.83; nothing else. Boxes of
    neighbouring cells do not touch, so class-aware NMS keeps 12 boxes, class-agnostic NMS 6 (the class-0 ones)."""
    path = make_checkpoint(tmp_path_factory.mktemp("agnostic") / "pairs.pth", HW, obj_bias=None, head_std=0.0,
                           cls_bias=None, anchors=ANCHORS)
    ckpt = torch.load(path, weights_only=True)
    for name in ("yolo_headP5.1.bias", "yolo_headP4.1.bias"):
        ckpt["model"][name].view(3, -1)[:] = -20.0
    p5 = ckpt["model"]["yolo_headP5.1.bias"].view(3, -1)  # per anchor slot: tx, ty, tw, th, obj, class 0, class 1
    p5[0, :4], p5[0, 4:] = 0.0, torch.tensor([6.0, 6.0, -6.0])
    p5[1, :4], p5[1, 4:] = 0.0, torch.tensor([5.0, -6.0, 6.0])
    save_atomic(ckpt, path)
    return path


def image():
    return np.full((*HW, 3), 114, np.uint8)  # the input size: boxes in image pixels are input pixels


def detected(checkpoint, backend: str, agnostic: bool):
    found = YOLO(checkpoint, backend=backend, amp="off", agnostic_nms=agnostic).detect(image())
    order = np.lexsort((found.boxes[:, 1], found.boxes[:, 0], found.class_ids))
    return found.boxes[order], found.class_ids[order], found.scores[order]


@pytest.mark.parametrize("agnostic, count, classes", [(False, 12, [0] * 6 + [1] * 6), (True, 6, [0] * 6)])
def test_agnostic_nms_the_same_on_torch_and_onnx(two_class_pairs, agnostic, count, classes):
    boxes, class_ids, scores = detected(two_class_pairs, "torch", agnostic)
    assert len(boxes) == count and class_ids.tolist() == classes
    onnx_boxes, onnx_ids, onnx_scores = detected(two_class_pairs, "onnx", agnostic)
    assert onnx_ids.tolist() == class_ids.tolist()
    assert np.allclose(onnx_boxes, boxes, atol=1e-3) and np.allclose(onnx_scores, scores, atol=1e-5)


@pytest.mark.parametrize("agnostic, count", [(False, 12), (True, 6)])
def test_agnostic_nms_inside_the_exported_graph(two_class_pairs, tmp_path, agnostic, count):
    yolo = YOLO(two_class_pairs, amp="off", agnostic_nms=agnostic)
    path = yolo.export_onnx(tmp_path / "nms.onnx", nms=True)
    batch = to_unit_float(torch.from_numpy(np.stack([image(), image()])).permute(0, 3, 1, 2)).numpy()
    found = ort_session(path).run(["detections"], {"images": batch})[0]
    for i in range(2):  # per image of the batch
        mine = found[found[:, 0] == i]
        assert len(mine) == count and sorted(mine[:, 6].tolist()) == sorted(yolo.detect(image()).class_ids.tolist())


def test_predict_agnostic_nms_flag(two_class_pairs, tmp_path, capsys):
    from PIL import Image
    Image.fromarray(image()).save(tmp_path / "grey.png")
    for flags, count in (([], 12), (["--agnostic-nms"], 6)):
        out = tmp_path / f"out{count}"
        assert predict.main(["--weights", str(two_class_pairs), "--img", str(tmp_path / "grey.png"), "--save-txt",
                             "--out", str(out), "--amp", "off", *flags]) == 0
        assert len((out / "labels" / "grey.txt").read_text().splitlines()) == count
