import numpy as np
import onnx
from onnx import numpy_helper
import onnxruntime as ort
import pytest
import torch

import predict
from nets.yolo import YoloBody
from tests.helpers.models import ANCHORS_MASK, CLASSES, make_checkpoint, rgb
from tests.helpers.voc import TINY_CLASSES, scene, voc_to_coco, write_scene_voc, write_tiny_voc
from utils.deploy import quantize
from utils.engine.checkpoint import model_from_weights, read_checkpoint, save_atomic
from utils.eval.evaluator import evaluate_model
from utils.deploy.export import read_onnx_spec
from utils.ops.boxes import box_iou
from utils.ops.image import to_tensor_batch, to_unit_float
from utils.data.voc import load_samples
from yolo import YOLO

HW = (64, 96)


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("YOLO_SCAN_CACHE", str(root / "cache"))
        yield write_scene_voc(root / "VOC")


def input_sensitive_checkpoint(path, obj_bias: float = 1.0):
    """make_checkpoint's format with a random model whose BN statistics are measured on scene images,
    so every layer sees unit-variance activations and the head outputs follow the input."""
    make_checkpoint(path, HW)
    checkpoint = read_checkpoint(path)
    torch.manual_seed(0)
    model = YoloBody(ANCHORS_MASK, len(CLASSES))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the batch below
    images = torch.from_numpy(np.stack([scene(*HW, seed=100 + i) for i in range(8)])).permute(0, 3, 1, 2)
    with torch.no_grad():
        model.train()(to_unit_float(images))
        for head in (model.yolo_headP5[1], model.yolo_headP4[1]):
            head.bias.view(3, -1)[:, 4] = obj_bias
    checkpoint["model"] = model.state_dict()
    save_atomic(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return input_sensitive_checkpoint(tmp_path_factory.mktemp("q") / "best.pth")


@pytest.fixture(scope="module")
def int8(ckpt, voc, tmp_path_factory):
    """predict.py --export-onnx PATH --int8 on three calibration images of the training split."""
    path = tmp_path_factory.mktemp("int8") / "m_int8.onnx"
    argv = ["--weights", str(ckpt), "--export-onnx", str(path), "--int8", "--data", str(voc), "--calib-images", "3"]
    assert predict.main(argv) == 0
    return path


def test_calibration_images_spread_over_the_training_split(voc):
    assert [p.name for p in quantize.calibration_images(voc, None, CLASSES, 2)] == ["im0.jpg", "im3.jpg"]
    assert len(quantize.calibration_images(voc, "val", CLASSES, 50)) == 2
    with pytest.raises(ValueError, match="at least 1"):
        quantize.calibration_images(voc, None, CLASSES, 0)


@pytest.mark.slow
def test_int8_graph_is_quantized_except_the_output_convs(int8):
    graph = onnx.load(str(int8))
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 20
    inits = {i.name: i for i in graph.graph.initializer}
    dequantized = {out for n in graph.graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    convs = {n.name: n.input[1] for n in graph.graph.node if n.op_type == "Conv"}
    heads = quantize.output_convs(graph)
    assert len(heads) == 2 and len(convs) == 21
    assert [name for name, weight in convs.items() if weight not in dequantized] == heads
    for name in heads:  # fp32 weights straight from an initializer
        assert inits[convs[name]].data_type == onnx.TensorProto.FLOAT
    spec, extras = read_onnx_spec(int8)
    assert extras["precision"] == "int8" and extras["calibration"]["images"] == 3
    assert list(spec.class_names) == CLASSES and list(spec.input_size) == list(HW)


def int8_weight_range(path):
    graph = onnx.load(str(path))
    weights = [numpy_helper.to_array(i) for i in graph.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert sum(w.size for w in weights) > 1_000_000  # the conv weights, not only zero points
    return min(w.min() for w in weights), max(w.max() for w in weights)


@pytest.mark.slow
def test_int8_weights_fit_in_7_bits(int8):
    """ONNX Runtime's U8S8 kernels on AVX2-only CPUs sum pairs of uint8 x int8 products in int16: with
    weights in [-64, 64] no pair saturates (2 * 255 * 64 <= 32767). With full-range weights the int8 graph
    was 2.7x further from fp32 there than on a VNNI CPU (test_int8_raw_outputs_follow_fp32 failed in CI)."""
    assert int8_weight_range(int8) == (-64, 64)
    assert read_onnx_spec(int8)[1]["calibration"]["weight_bits"] == 7


@pytest.mark.slow
def test_8_bit_weights_on_request(ckpt, tmp_path):
    fp32 = YOLO(ckpt, amp="off").export_onnx(tmp_path / "fp32.onnx")
    images = [scene(*HW, seed=s) for s in range(2)]
    path = quantize.quantize_onnx(fp32, tmp_path / "int8.onnx", images, weight_bits=8)
    assert int8_weight_range(path) == (-127, 127)
    assert read_onnx_spec(path)[1]["calibration"]["weight_bits"] == 8
    with pytest.raises(ValueError, match="weight_bits must be one of"):
        quantize.quantize_onnx(fp32, tmp_path / "int4.onnx", images, weight_bits=4)


@pytest.mark.slow
def test_int8_raw_outputs_follow_fp32(int8, ckpt):
    """On 4 scenes not used for calibration: the int8 graph's raw outputs are off the fp32 model's by at most
    half of how much those outputs vary from image to image (RMS; measured 0.32-0.35 on a VNNI CPU and
    emulated on an AVX2-only one; calibration on black images or on 0-255 inputs 1.4-1.7)."""
    model, _ = model_from_weights(ckpt)
    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    # 64x96 scenes need no letterbox: the input is the image itself, NCHW in [0, 1]
    batch = to_tensor_batch([scene(*HW, seed=s) for s in range(10, 14)]).contiguous().numpy()
    got = [np.concatenate(outs) for outs in zip(*(session.run(["out0", "out1"], {"images": x[None]}) for x in batch))]
    with torch.no_grad():
        expected = [o.numpy() for o in model.eval()(torch.from_numpy(batch))]
    for name, a, b in zip(("out0", "out1"), got, expected):
        across_images = np.sqrt(((b - b.mean(axis=0, keepdims=True)) ** 2).mean())
        assert across_images > 0.3 * b.std(), f"{name}: the fp32 outputs hardly depend on the image"
        error = np.sqrt(((a - b) ** 2).mean())
        assert error < 0.5 * across_images, f"{name}: int8 RMS error {error:.4f} vs image-to-image {across_images:.4f}"


def matched(det, other, min_iou: float = 0.5) -> np.ndarray:
    """For each detection of `det`: is there one of `other` with the same class and IoU >= min_iou?"""
    if len(det) == 0 or len(other) == 0:
        return np.zeros(len(det), dtype=bool)
    iou = box_iou(torch.from_numpy(det.boxes), torch.from_numpy(other.boxes)).numpy()
    same = det.class_ids[:, None] == other.class_ids[None, :]
    return (iou * same).max(axis=1) >= min_iou


@pytest.mark.slow
@pytest.mark.parametrize("seed", [7, 8])
def test_int8_model_detects_like_fp32(int8, ckpt, seed):
    """At least 2/3 of the confident detections (score >= 0.4) of either model are found by the other at
    conf 0.3 (same class, IoU >= 0.5). The int8 outputs of this random network are ~15% off (see above),
    so scores near the threshold and NMS choices differ: measured 88-100% matched, the same on a VNNI CPU
    and emulated on an AVX2-only one (with 8-bit weights CI's AVX2-only CPU gave 53-62%); calibrated on
    black images 29-55%, on 0-255 inputs 0% (8-bit weights). test_int8_raw_outputs_follow_fp32 is the
    sharper check."""
    image = scene(70, 150, seed=seed)
    yolo = YOLO(int8, conf=0.3)
    assert yolo.backend == "onnx" and yolo.precision == "int8 ONNX Runtime"
    found, expected = yolo.detect(image), YOLO(ckpt, conf=0.3, amp="off").detect(image)
    pairs = ((expected, found, "fp32 detections found by int8"), (found, expected, "int8 detections found by fp32"))
    for a, b, what in pairs:
        confident = a.scores >= 0.4
        hits = matched(a, b)[confident]
        assert confident.sum() >= 5 and hits.mean() >= 2 / 3, f"{what}: {hits.sum()} of {confident.sum()}"
    assert yolo.heatmap(image).shape == image.shape


@pytest.mark.slow
def test_evaluate_onnx_scores_like_evaluate_model(ckpt, voc, tmp_path):
    yolo = YOLO(ckpt, amp="off")
    path = yolo.export_onnx(tmp_path / "fp32.onnx")
    samples = load_samples(voc, "val", CLASSES)
    found = quantize.evaluate_onnx(path, samples, CLASSES, progress=False)
    model, meta = model_from_weights(ckpt)
    expected = evaluate_model(model.eval(), samples, CLASSES, meta["input_size"], meta["anchors"], meta["anchors_mask"],
                              progress=False)
    assert found["map50"] == pytest.approx(expected["map50"], abs=1e-6)
    for a, b in zip(found["detections"], expected["detections"]):
        assert a.shape == b.shape and len(a) > 0 and np.allclose(a, b, atol=1e-2)
    with pytest.raises(ValueError, match="predicts 2 classes"):
        quantize.evaluate_onnx(path, samples, ["a", "b", "c"])


@pytest.mark.slow
def test_cli_prints_one_table(ckpt, voc, tmp_path, capsys):
    argv = ["--weights", str(ckpt), "--data", str(voc), "--calib-images", "2",
            "--out", str(tmp_path / "m_int8.onnx"), "--amp", "off", "--weight-bits", "8"]
    assert quantize.main(argv) == 0
    out = capsys.readouterr().out
    rows = [line.split()[0:2] for line in out.splitlines() if line.startswith(("torch ", "onnx "))]
    assert rows == [["torch", "fp32"], ["onnx", "fp32"], ["onnx", "int8"]]
    assert (tmp_path / "m_fp32.onnx").is_file() and (tmp_path / "m_int8.onnx").is_file()
    assert "8-bit weights" in out and int8_weight_range(tmp_path / "m_int8.onnx") == (-127, 127)


def test_onnx_files_fail_clearly(ckpt, tmp_path):
    yolo = YOLO(ckpt)
    nms = yolo.export_onnx(tmp_path / "nms.onnx", nms=True)
    with pytest.raises(ValueError, match="expected a raw graph"):
        YOLO(nms)
    with pytest.raises(ValueError, match="runs on the onnx or openvino backend, not torch"):
        YOLO(nms, backend="torch")
    bare = onnx.load(str(nms))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ValueError, match="expected a graph exported by this project"):
        YOLO(tmp_path / "bare.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07 not a model")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        YOLO(tmp_path / "junk.onnx")
    with pytest.raises(ValueError, match="int8 quantizes the raw graph"):
        yolo.export_onnx(tmp_path / "x.onnx", nms=True, calibration_images=[rgb(64, 96)])


def test_calibration_images_from_a_coco_json_and_its_image_folder(tmp_path, scan_cache):
    json_path = voc_to_coco(write_tiny_voc(tmp_path / "voc", 3), tmp_path / "coco")
    (tmp_path / "coco" / "images").rename(tmp_path / "pictures")
    found = quantize.calibration_images(json_path, None, TINY_CLASSES, 2, data_format="coco",
                                        images_dir=tmp_path / "pictures")
    assert [p.parent for p in found] == [tmp_path / "pictures"] * 2


def test_cli_data_flags_reach_the_dataset(ckpt, voc, tmp_path, capsys):
    argv = ["--weights", str(ckpt), "--data", str(voc), "--out", str(tmp_path / "m_int8.onnx")]
    assert quantize.main(argv + ["--data-format", "coco"]) == 1
    assert "--data-format coco does not fit: it is a VOC year folder" in capsys.readouterr().err
    assert quantize.main(argv + ["--images", str(tmp_path)]) == 1
    assert "only for a COCO JSON or root" in capsys.readouterr().err
    assert not (tmp_path / "m_int8.onnx").exists()
