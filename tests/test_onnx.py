import numpy as np
import onnx
import pytest
import torch

from nets.fuse import fuse_model
from nets.yolo import YoloBody
from utils.core.detector_spec import DetectorSpec
from tests.helpers.models import ANCHORS, ANCHORS_MASK, make_checkpoint, random_bn, rgb
from utils.deploy.export import (OPSET, RawToDetections, detector_graph, export_onnx, export_onnx_nms, max_abs_error,
                                 ort_session)
from utils.ops.boxes import decode_candidates, select_detections, split_by_image
from utils.ops.image import to_unit_float
from utils.ops.pipeline import Thresholds
from yolo import YOLO

HW = (64, 96)


def spec_of(model, scale_x_y: float = 1.0) -> DetectorSpec:
    """The spec of a 2-class test model at HW."""
    return DetectorSpec(("a", "b"), ANCHORS, model.anchors_mask, model.strides, HW, scale_x_y)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = random_bn(YoloBody(ANCHORS_MASK, 2, phi=3))
    with torch.no_grad():
        for head in (model.yolo_headP5[1], model.yolo_headP4[1]):
            head.weight.normal_(0, 0.05)
            head.bias.view(3, -1)[:, 4] = 1.0
    return model


@pytest.mark.slow
def test_raw_graph_matches_torch(model, tmp_path):
    path = export_onnx(fuse_model(model), tmp_path / "raw.onnx", HW)
    graph = onnx.load(path)
    assert graph.opset_import[0].version == OPSET
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # the fused graph against the original, unfused eager model, at two batch sizes
    for batch in (1, 3):
        assert max_abs_error(model, path, torch.rand(batch, 3, *HW)) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("graph", ["nms", "detector"])
def test_nms_graph_matches_torch_postprocess(model, tmp_path, graph):
    """export_onnx_nms (float NCHW in) and detector_graph (the raw graph behind uint8 NHWC, as YOLO runs it)."""
    anchors = torch.tensor(ANCHORS, dtype=torch.float32)
    pixels = torch.randint(0, 256, (3, *HW, 3), dtype=torch.uint8)
    images = to_unit_float(pixels.permute(0, 3, 1, 2))
    if graph == "nms":
        path = export_onnx_nms(model, tmp_path / "nms.onnx", spec_of(model, 1.05), Thresholds(0.3, 0.4, 7))
        found = ort_session(path).run(["detections"], {"images": images.numpy()})[0]
    else:
        raw = onnx.load(export_onnx(model, tmp_path / "raw.onnx", HW))
        both = detector_graph(raw, spec_of(model, 1.05), Thresholds(0.3, 0.4, 7))
        found, out0 = ort_session(both.SerializeToString()).run(["detections", "out0"], {"images": pixels.numpy()})
        with torch.no_grad():
            assert np.abs(out0 - model(images)[0].numpy()).max() < 1e-4
    with torch.no_grad():
        pred, image = decode_candidates(model(images), anchors, ANCHORS_MASK, HW, 1.05, 0.3)
        expected = split_by_image(select_detections(pred, image, 3, 0.3, 0.4, 7), 3)
    assert found.shape[1] == 7 and sum(len(e) for e in expected) > 3
    for i, exp in enumerate(expected):
        mine = found[found[:, 0] == i][:, 1:]
        assert len(mine) == len(exp) <= 7
        order_m, order_e = np.lexsort(mine.T[::-1]), np.lexsort(exp.numpy().T[::-1])
        assert np.allclose(mine[order_m], exp.numpy()[order_e], atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("graph", ["nms", "detector"])
def test_candidate_cap_is_the_same_in_torch_and_onnx(model, tmp_path, graph):
    """More candidates than max_nms: torch (RawToDetections run eagerly, as YOLO's torch backend selects) and
    both ONNX graphs keep the same best-scoring max_nms per image, so they keep the same detections."""
    anchors = torch.tensor(ANCHORS, dtype=torch.float32)
    pixels = torch.randint(0, 256, (2, *HW, 3), dtype=torch.uint8)
    images = to_unit_float(pixels.permute(0, 3, 1, 2))
    settings = dict(scale_x_y=1.05, conf=0.01, nms=0.5, max_det=300)
    thresholds = Thresholds(0.01, 0.5, 300)
    if graph == "nms":
        path = export_onnx_nms(model, tmp_path / "cap.onnx", spec_of(model, 1.05), thresholds, max_nms=12)
        found = ort_session(path).run(["detections"], {"images": images.numpy()})[0]
    else:
        raw = onnx.load(export_onnx(model, tmp_path / "raw.onnx", HW))
        both = detector_graph(raw, spec_of(model, 1.05), thresholds, max_nms=12)
        found = ort_session(both.SerializeToString()).run(["detections"], {"images": pixels.numpy()})[0]
    with torch.no_grad():
        outputs = model(images)
        capped = RawToDetections(anchors, ANCHORS_MASK, HW, max_nms=12, **settings)(*outputs)
        uncapped = RawToDetections(anchors, ANCHORS_MASK, HW, **settings)(*outputs)
        pred, image = decode_candidates(outputs, anchors, ANCHORS_MASK, HW, 1.05, 0.01)
    scores = pred[:, 4] * pred[:, 5:].max(dim=1).values
    assert all(int((scores[image == i] >= 0.01).sum()) > 12 for i in range(2))  # the cap bites in every image
    assert len(uncapped) > len(capped)
    for i in range(2):
        mine, exp = found[found[:, 0] == i], capped[capped[:, 0] == i].numpy()
        assert len(mine) == len(exp) > 0
        order_m, order_e = np.lexsort(mine.T[::-1]), np.lexsort(exp.T[::-1])
        assert np.allclose(mine[order_m], exp[order_e], atol=1e-3)


def test_nms_graph_with_no_detections(model, tmp_path):
    path = export_onnx_nms(model, tmp_path / "none.onnx", spec_of(model), Thresholds(conf=0.9999))
    found = ort_session(path).run(None, {"images": np.random.rand(2, 3, *HW).astype(np.float32)})[0]
    assert found.shape == (0, 7)


@pytest.mark.slow
def test_onnx_backend_detects_like_torch(tmp_path):
    checkpoint = make_checkpoint(tmp_path / "c.pth", HW)
    image = rgb(70, 150)
    a = YOLO(checkpoint, conf=0.3, amp="off").detect(image)  # fp32, as the graph
    b = YOLO(checkpoint, conf=0.3, backend="onnx").detect(image)
    assert len(a) > 0 and len(a) == len(b)
    assert np.allclose(a.boxes, b.boxes, atol=1e-2) and np.allclose(a.scores, b.scores, atol=1e-4)
    onnx_yolo = YOLO(checkpoint, conf=0.3, max_det=2, backend="onnx")
    assert len(onnx_yolo.detect(image)) == 2
    onnx_yolo.conf = 0.9999  # the session graph holds the thresholds: it is rebuilt
    assert len(onnx_yolo.detect(image)) == 0
    assert onnx_yolo.heatmap(image).shape == image.shape
