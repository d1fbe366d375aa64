import numpy as np
import onnx
import pytest
from PIL import Image

import predict
from tests.test_yolo import CLASSES, make_checkpoint, rgb
from utils import quantize
from utils.checkpoint import model_from_weights
from utils.evaluator import evaluate_model
from utils.export import read_onnx_metadata
from utils.voc import load_samples
from yolo import YOLO

HW = (64, 96)


def write_voc(root, n_train: int = 4, n_val: int = 2):
    """Noise images of 70x120 with one box each, in VOC layout with train and val lists."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    stems = [f"im{i}" for i in range(n_train + n_val)]
    for i, stem in enumerate(stems):
        Image.fromarray(rgb(70, 120, seed=i)).save(root / "JPEGImages" / f"{stem}.jpg")
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>120</width><height>70</height></size>"
            f"<object><name>{CLASSES[i % 2]}</name><difficult>0</difficult><bndbox><xmin>10</xmin><ymin>5</ymin>"
            f"<xmax>{60 + i}</xmax><ymax>50</ymax></bndbox></object></annotation>")
    (root / "ImageSets/Main/train.txt").write_text("\n".join(stems[:n_train]) + "\n")
    (root / "ImageSets/Main/val.txt").write_text("\n".join(stems[n_train:]) + "\n")
    return root


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("YOLO_SCAN_CACHE", str(root / "cache"))
        yield write_voc(root / "VOC")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("q") / "best.pth", HW)


@pytest.fixture(scope="module")
def int8(ckpt, voc, tmp_path_factory):
    """predict.py --export-onnx PATH --int8 on three calibration images of the training split."""
    path = tmp_path_factory.mktemp("int8") / "m_int8.onnx"
    args = predict.make_parser().parse_args(["--weights", str(ckpt), "--export-onnx", str(path), "--int8",
                                             "--data", str(voc), "--calib-images", "3"])
    assert predict.main(args) == 0
    return path


def test_calibration_images_spread_over_the_training_split(voc):
    assert [p.name for p in quantize.calibration_images(voc, None, CLASSES, 2)] == ["im0.jpg", "im3.jpg"]
    assert len(quantize.calibration_images(voc, "val", CLASSES, 50)) == 2
    with pytest.raises(ValueError, match="at least 1"):
        quantize.calibration_images(voc, None, CLASSES, 0)


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
    meta = read_onnx_metadata(int8)
    assert meta["precision"] == "int8" and meta["calibration"]["images"] == 3
    assert meta["class_names"] == CLASSES and meta["input_size"] == list(HW)


def test_int8_model_detects_like_fp32(int8, ckpt):
    image = rgb(70, 150, seed=7)
    yolo = YOLO(int8, conf=0.3)
    assert yolo.backend == "onnx" and yolo.precision == "int8 ONNX Runtime"
    found, expected = yolo.detect(image), YOLO(ckpt, conf=0.3, amp="off").detect(image)
    assert len(found) > 0 and abs(len(found) - len(expected)) <= max(2, len(expected) // 5)
    best = np.abs(expected.boxes - found.boxes[0]).max(axis=1).min()
    assert best < 2.0  # pixels, in a 70x150 image
    assert yolo.heatmap(image).shape == image.shape


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


def test_cli_prints_one_table(ckpt, voc, tmp_path, capsys):
    args = quantize.make_parser().parse_args(["--weights", str(ckpt), "--data", str(voc), "--calib-images", "2",
                                              "--out", str(tmp_path / "m_int8.onnx"), "--amp", "off"])
    assert quantize.main(args) == 0
    out = capsys.readouterr().out
    rows = [line.split()[0:2] for line in out.splitlines() if line.startswith(("torch ", "onnx "))]
    assert rows == [["torch", "fp32"], ["onnx", "fp32"], ["onnx", "int8"]]
    assert (tmp_path / "m_fp32.onnx").is_file() and (tmp_path / "m_int8.onnx").is_file()


def test_onnx_files_fail_clearly(ckpt, tmp_path):
    yolo = YOLO(ckpt)
    nms = yolo.export_onnx(tmp_path / "nms.onnx", nms=True)
    with pytest.raises(ValueError, match="expected a raw graph"):
        YOLO(nms)
    with pytest.raises(ValueError, match="runs on the onnx backend"):
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
