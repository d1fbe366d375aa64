import numpy as np
import pytest
import torch

from nets.fuse import fuse_model
from nets.yolo import YoloBody
from utils.ops.boxes import decode_candidates
from utils.deploy.drawing import class_colors, draw_detections, font_size
from yolo import YOLO, Detections
from tests.helpers.models import ANCHORS, ANCHORS_MASK, CLASSES, make_checkpoint, random_bn, rgb


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pth")


@pytest.fixture(scope="session")
def yolo(checkpoint):
    return YOLO(checkpoint, conf=0.3)


def test_checkpoint_metadata_is_used(yolo):
    assert yolo.class_names == CLASSES and yolo.input_hw == (64, 96) and yolo.scale_x_y == 1.0
    assert yolo.anchors.tolist() == ANCHORS


def test_fused_model_matches_eager():
    model = random_bn(YoloBody(ANCHORS_MASK, 3, phi=2))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref, fused = model(x), fuse_model(model)(x)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(ref, fused))
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched


@pytest.mark.parametrize("hw", [(20, 13), (90, 160), (1500, 2600)])
def test_detect_any_image_size(yolo, hw):
    det = yolo.detect(rgb(*hw))
    assert isinstance(det, Detections) and len(det) > 0
    assert det.boxes.dtype == np.float32 and det.class_ids.dtype == np.int64
    assert (det.boxes[:, [0, 2]] <= hw[1]).all() and (det.boxes[:, [1, 3]] <= hw[0]).all() and (det.boxes >= 0).all()
    assert (np.diff(det.scores) <= 0).all() and (det.scores >= 0.3).all()


def test_detect_path_gray_and_array_agree(yolo, tmp_path):
    from PIL import Image
    gray = np.random.default_rng(1).integers(0, 256, (50, 70), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    a, b = yolo.detect(tmp_path / "g.png"), yolo.detect(gray)
    assert len(a) == len(b) and np.allclose(a.boxes, b.boxes)


def test_detect_rejects_bad_arrays(yolo):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        yolo.detect(np.zeros((10, 10, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        yolo.detect(np.zeros((10, 10, 4), dtype=np.uint8))


def test_bad_input_size(checkpoint):
    with pytest.raises(ValueError, match="multiple of 32"):
        YOLO(checkpoint, input_size=100)


def test_max_det_and_conf(checkpoint):
    image = rgb(64, 96)
    assert len(YOLO(checkpoint, conf=0.3, max_det=3).detect(image)) == 3
    assert len(YOLO(checkpoint, conf=0.999).detect(image)) == 0


def test_draw_colours_and_font(yolo):
    image = np.zeros((120, 200, 3), np.uint8)
    det = Detections(np.array([[10, 30, 80, 100], [100, 40, 190, 110]], np.float32),
                     np.array([0.9, 0.8], np.float32), np.array([0, 1]))
    drawn = yolo.draw(image, det)
    colors = class_colors(2)
    assert drawn.shape == image.shape and colors[0] != colors[1]
    assert tuple(drawn[70, 10]) == colors[0] and tuple(drawn[80, 100]) == colors[1]  # left box edges
    assert font_size((4000, 6000)) > 4 * font_size((300, 300)) and font_size((10, 10)) >= 11
    tiny = draw_detections(np.zeros((8, 8, 3), np.uint8), det.boxes / 20, det.scores, det.class_ids, CLASSES)
    assert tiny.shape == (8, 8, 3) and tiny.any()


def test_heatmap_covers_image(yolo):
    image = rgb(45, 130)
    heat = yolo.objectness(image)
    assert heat.min() >= 0 and heat.max() <= 1 and abs(heat.shape[1] / heat.shape[0] - 130 / 45) < 0.2
    overlay = yolo.heatmap(image)
    assert overlay.shape == image.shape and not np.array_equal(overlay, image)


def test_measure_speed(yolo):
    ms = yolo.measure_speed(rgb(64, 64), runs=2, warmup=1)
    assert all(ms[k] > 0 for k in ("pre_ms", "forward_ms", "post_ms", "fps"))
    assert ms["total_ms"] == pytest.approx(ms["pre_ms"] + ms["forward_ms"] + ms["post_ms"])


def test_bf16_matches_fp32_within_tolerance(checkpoint):
    """bf16 autocast keeps 8 mantissa bits: on a fixed model and image the raw logits may move by up to 0.05,
    decoded boxes by up to 0.5 px (input 64x96), objectness and class probabilities by up to 0.005."""
    fp32, bf16 = YOLO(checkpoint, amp="off", conf=0.3), YOLO(checkpoint, amp="bf16", conf=0.3)
    assert (fp32.amp, bf16.amp) == (None, torch.bfloat16) and bf16.precision == "bf16 autocast"
    image = rgb(64, 96, seed=3)
    batch, _ = fp32.preprocess(image)
    raw32, raw16 = fp32.forward(batch), bf16.forward(batch)
    assert all(o.dtype == torch.float32 for o in raw16)  # handed to decoding in fp32
    assert not torch.equal(raw32[0], raw16[0])  # bf16 really ran
    assert max(float((a - b).abs().max()) for a, b in zip(raw32, raw16)) < 0.05
    d32, d16 = (decode_candidates(raw, fp32.anchors, ANCHORS_MASK, fp32.input_hw, conf_thres=0.0)[0] for raw in (raw32, raw16))
    assert float((d32[..., :4] - d16[..., :4]).abs().max()) < 0.5
    assert float((d32[..., 4:] - d16[..., 4:]).abs().max()) < 0.005
    det32, det16 = fp32.detect(image), bf16.detect(image)
    assert len(det16) > 5 and abs(len(det16) - len(det32)) <= 2  # a box or two may cross the threshold
    for box, score, cls in zip(det16.boxes, det16.scores, det16.class_ids):
        if score > 0.31:  # clear of the threshold: the fp32 run has the same detection
            match = np.abs(det32.boxes - box).max(axis=1).argmin()
            assert np.abs(det32.boxes[match] - box).max() < 0.5 and det32.class_ids[match] == cls
            assert abs(det32.scores[match] - score) < 0.005


@pytest.mark.parametrize("native, expected", [(False, None), (True, torch.bfloat16)])
def test_amp_auto_follows_cpu_bf16_support(checkpoint, monkeypatch, native, expected):
    monkeypatch.setattr("utils.core.amp.cpu_supports_bf16", lambda *args: native)
    yolo = YOLO(checkpoint, device="cpu")  # amp="auto" is the default
    assert yolo.amp is expected
    assert yolo.precision == ("bf16 autocast" if native else "off (fp32)")
    assert YOLO(checkpoint, device="cpu", backend="onnx").amp is None  # the graph has its own precision


def test_bad_amp_choice(checkpoint):
    with pytest.raises(ValueError, match="auto, off, bf16, fp16"):
        YOLO(checkpoint, amp="int8")
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        YOLO(checkpoint, amp="fp16", device="cpu")


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_one_pixel_images_give_only_boxes_with_area(checkpoint, backend):
    yolo = YOLO(checkpoint, conf=0.3, backend=backend)
    for hw in ((1, 1), (1, 9), (7, 1)):
        det = yolo.detect(rgb(*hw))
        assert len(det) > 0
        assert (det.boxes[:, 2] > det.boxes[:, 0]).all() and (det.boxes[:, 3] > det.boxes[:, 1]).all(), hw
        assert (det.boxes[:, [0, 2]] <= hw[1]).all() and (det.boxes[:, [1, 3]] <= hw[0]).all() and (det.boxes >= 0).all()
