"""The openvino backend (utils/deploy/openvino_backend.py) against the onnx backend on the same graphs.

Tolerances (what holds, tested here):
  fp32 (--amp off): raw head outputs within 1e-4 absolute of ONNX Runtime's (measured: under 1e-5); the same detections
    (boxes within 1e-3 px, scores within 1e-4); get_map.py scores predict.py --save-json of both to the same
    mAP within 0.001 (measured: equal).
  int8 (QDQ graph of utils/deploy/quantize.py): the two runtimes round some activations differently, so
    outputs are not equal: on most images they agree to ~1e-6, on some by ~1e-2 RMS. What holds: OpenVINO runs
    the quantized convolutions in int8 (u8 activations), and its int8 outputs are closer to ONNX Runtime's
    int8 outputs than either is to fp32 (RMS over 4 images below 0.75x int8's own error against fp32).
  bf16 (--amp bf16, and auto on CPUs with native bf16, for fp32 graphs): the plugin reports bf16, the outputs
    move off fp32 (RMS above 1e-4) by no more than twice what the torch backend's bf16 autocast moves them.
"""
import importlib.util
import json
import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import get_map
import predict
import yolo as yolo_module
from tests.conftest import ROOT
from tests.helpers.models import make_checkpoint, rgb, save_random_checkpoint
from tests.helpers.voc import MAP_CLASSES, write_map_voc
from utils.core.amp import cpu_supports_bf16
from utils.deploy.openvino_backend import (OPENVINO_MISSING, OpenVinoSession, backend_amp, openvino_bf16,
                                           openvino_session)
from utils.core.cli import UserError
from utils.deploy.graph_scoring import evaluate
from utils.deploy.quantize import output_convs
from yolo import YOLO

if importlib.util.find_spec("openvino") is None:  # a failure, never a skip: the suite tests what the README promises
    raise ImportError("tests/test_openvino.py needs openvino: pip install -r requirements-extra.txt")
FP32_ATOL = 1e-4
INT8_RMS_RATIO = 0.75


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A 2-class 64x96 model with raw outputs spread out (head weights drawn with std 0.3)."""
    return make_checkpoint(tmp_path_factory.mktemp("ov") / "best.pth", head_std=0.3)


@pytest.fixture(scope="module")
def int8(ckpt, tmp_path_factory):
    fp32 = YOLO(ckpt, device="cpu", amp="off")
    return fp32.export_onnx(tmp_path_factory.mktemp("ov8") / "m_int8.onnx",
                            calibration_images=[rgb(64, 96, seed) for seed in range(4)])


def raw_outputs(yolo, seed):
    """forward() of a letterboxed random image: [out0, out1] as numpy."""
    batch, _ = yolo.preprocess(rgb(50, 80, seed))
    return [o.numpy() for o in yolo.forward(batch)]


def test_fp32_outputs_equal_onnx_runtime(ckpt):
    ort, ov = (YOLO(ckpt, backend=b, device="cpu", conf=0.3, amp="off") for b in ("onnx", "openvino"))
    assert ov.precision == "fp32 OpenVINO" and ort.precision == "fp32 ONNX Runtime"
    # not trivially equal: two runtimes (not ONNX Runtime twice), outputs spread far beyond the tolerance
    assert isinstance(ov.session, OpenVinoSession) and not isinstance(ort.session, OpenVinoSession)
    for seed in range(3):
        expected, found = raw_outputs(ort, seed), raw_outputs(ov, seed)
        assert min(e.std() for e in expected) > 0.5
        for e, f in zip(expected, found):
            assert e.shape == f.shape and np.abs(e - f).max() < FP32_ATOL
        image = rgb(50, 80, seed)
        a, b = ort.detect(image), ov.detect(image)
        assert len(a) == len(b) >= 3
        assert np.abs(a.boxes - b.boxes).max() < 1e-3 and np.abs(a.scores - b.scores).max() < FP32_ATOL
        assert (a.class_ids == b.class_ids).all()


def rms(a, b) -> float:
    return float(np.sqrt(np.mean([np.mean((x - y) ** 2) for x, y in zip(a, b)])))


@pytest.mark.slow
def test_int8_runs_int8_and_follows_onnx_runtime(ckpt, int8):
    ov = YOLO(int8, backend="openvino")
    assert ov.precision == "int8 OpenVINO"
    runtime = ov.session.compiled.get_runtime_model()
    convs = [op.get_rt_info()["runtimePrecision"].astype(str) for op in runtime.get_ordered_ops()
             if op.get_rt_info()["layerType"].astype(str) == "Convolution"]
    graph = onnx.load(str(int8))
    heads = len(output_convs(graph))
    assert convs.count("u8") == sum(n.op_type == "Conv" for n in graph.graph.node) - heads and heads == 2
    ort, fp32 = YOLO(int8), YOLO(ckpt, backend="onnx", device="cpu")
    seeds = range(10, 14)
    found, expected, exact = ([raw_outputs(y, s) for s in seeds] for y in (ov, ort, fp32))
    between = rms(sum(found, []), sum(expected, []))
    int8_error = min(rms(sum(found, []), sum(exact, [])), rms(sum(expected, []), sum(exact, [])))
    assert int8_error > 1e-3  # int8 is really quantized
    assert between < INT8_RMS_RATIO * int8_error, f"OpenVINO vs ONNX Runtime int8 {between:.4f}, int8 vs fp32 {int8_error:.4f}"


def test_no_candidates_gives_no_detections(tmp_path):
    """An image where nothing reaches --conf: empty tensors through decoding (OpenVINO 2026.4 stopped here with
    a shape error until utils.deploy.openvino_backend.broadcast_free rewrote the graph)."""
    weights = make_checkpoint(tmp_path / "none.pth", obj_bias=-20.0)
    for backend in ("onnx", "openvino"):
        det = YOLO(weights, backend=backend, device="cpu", conf=0.5).detect(rgb(50, 80))
        assert len(det) == 0 and det.boxes.shape == (0, 4)


@pytest.mark.slow
def test_get_map_scores_openvino_like_onnx(tmp_path, monkeypatch, capsys):
    """predict.py --save-json --backend openvino and --backend onnx, each scored by get_map.py --detections."""
    monkeypatch.setenv("YOLO_SCAN_CACHE", str(tmp_path / "cache"))
    voc = write_map_voc(tmp_path)
    weights = save_random_checkpoint(tmp_path / "run" / "best.pth", MAP_CLASSES)
    summaries = {}
    for backend in ("onnx", "openvino"):
        pred, scored = tmp_path / f"pred_{backend}", tmp_path / f"map_{backend}"
        argv = ["--weights", str(weights), "--dir", str(voc / "VOC2007" / "JPEGImages"), "--conf", "0.001",
                "--nms", "0.5", "--backend", backend, "--device", "cpu", "--amp", "off", "--save-json",
                "--out", str(pred)]
        assert predict.main(argv) == 0, capsys.readouterr().err
        assert get_map.main(["--detections", str(pred / "detections.json"), "--classes", str(tmp_path / "classes.txt"),
                             "--data", str(voc), "--no-plots", "--out", str(scored)]) == 0
        summaries[backend] = json.loads((scored / "summary.json").read_text())
    assert "backend openvino on cpu, precision fp32 OpenVINO (--amp off)" in capsys.readouterr().out
    assert summaries["onnx"]["map50"] > 0.05
    assert summaries["openvino"]["map50"] == pytest.approx(summaries["onnx"]["map50"], abs=1e-3)
    assert summaries["openvino"]["coco"] == pytest.approx(summaries["onnx"]["coco"], abs=1e-3)


@pytest.mark.slow
def test_get_map_scores_graphs_as_predict_and_detections_do(tmp_path, monkeypatch, capsys):
    """get_map.py --weights (a checkpoint on --backend onnx / openvino, or an int8 graph file) scores what
    predict.py --save-json of the same backend, scored by get_map.py --detections, scores: one number on both paths."""
    monkeypatch.setenv("YOLO_SCAN_CACHE", str(tmp_path / "cache"))
    voc = write_map_voc(tmp_path)
    weights = save_random_checkpoint(tmp_path / "run" / "best.pth", MAP_CLASSES)
    int8 = YOLO(weights, device="cpu", amp="off").export_onnx(
        tmp_path / "m_int8.onnx", calibration_images=sorted((voc / "VOC2007" / "JPEGImages").glob("*.jpg")))
    data, direct_scores = ["--data", str(voc), "--no-plots"], {}
    for name, graph, backend in (("onnx", weights, "onnx"), ("openvino", weights, "openvino"),
                                 ("int8 onnx", int8, "onnx"), ("int8 openvino", int8, "openvino")):
        pred, scored, direct = (tmp_path / f"{kind} {name}" for kind in ("pred", "map", "direct"))
        assert predict.main(["--weights", str(graph), "--dir", str(voc / "VOC2007" / "JPEGImages"), "--conf", "0.001",
                             "--nms", "0.5", "--backend", backend, "--amp", "off", "--save-json", "--out",
                             str(pred)]) == 0
        assert get_map.main(["--detections", str(pred / "detections.json"), "--classes", str(tmp_path / "classes.txt"),
                             *data, "--out", str(scored)]) == 0
        assert get_map.main(["--weights", str(graph), "--backend", backend, "--amp", "off", *data,
                             "--out", str(direct)]) == 0
        via_detections, scored_directly = (json.loads((d / "summary.json").read_text()) for d in (scored, direct))
        assert via_detections["map50"] > 0.05, name
        for key in ("map50", "map50_95"):
            assert scored_directly[key] == pytest.approx(via_detections[key], abs=1e-3), (name, key)
        precision = "int8" if graph == int8 else "fp32"
        runtime = "OpenVINO" if backend == "openvino" else "ONNX Runtime"
        assert scored_directly["settings"]["amp"] == f"{precision} {runtime}"
        assert (scored_directly["settings"]["backend"], scored_directly["settings"]["device"]) == (backend, "cpu")
        direct_scores[name] = scored_directly
    val = YOLO(weights, backend="openvino", amp="off").val(data=str(voc))  # YOLO.val on its detector's backend
    assert (val["settings"]["backend"], val["settings"]["amp"]) == ("openvino", "fp32 OpenVINO")
    assert val["map50_95"] == pytest.approx(direct_scores["openvino"]["map50_95"], abs=1e-3)
    with pytest.raises(UserError, match="differs from the 2 classes"):
        evaluate(weights=str(int8), data=str(voc), classes=MAP_CLASSES[::-1])


def test_missing_openvino_is_one_line(ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    with pytest.raises(ValueError, match="pip install openvino"):
        YOLO(ckpt, backend="openvino")
    Image.fromarray(rgb(40, 50)).save(tmp_path / "a.jpg")
    argv = ["--weights", str(ckpt), "--img", str(tmp_path / "a.jpg"), "--backend", "openvino", "--out", str(tmp_path)]
    assert predict.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and OPENVINO_MISSING in err


def test_session_settings(ckpt):
    """The CPU only (device auto picks it), fp32 with --amp off, the threads asked for."""
    with pytest.raises(ValueError, match="runs on the CPU"):
        openvino_session(b"", device="cuda")
    yolo = YOLO(ckpt, backend="openvino", amp="off")
    assert str(yolo.device) == "cpu" and yolo.session.inference_precision == "f32"
    assert openvino_session(yolo._raw_graph().SerializeToString(), threads=1).threads == 1


@pytest.mark.parametrize("native", [False, True])
def test_amp_auto_follows_the_cpu(ckpt, native, monkeypatch):
    """--amp auto asks the plugin for bf16 exactly where the CPU has native bf16 (as torch's auto does), and the
    torch-side autocast (the class activation maps) stays off for a graph backend."""
    monkeypatch.setattr("utils.core.amp.cpu_supports_bf16", lambda *a: native)
    asked = []
    real = yolo_module.graph_session
    monkeypatch.setattr(yolo_module, "graph_session", lambda *a, **k: asked.append(a[3]) or real(*a, **k))
    yolo = YOLO(ckpt, backend="openvino")
    assert asked == [native] and yolo.amp is None and yolo.cam_detector().amp is None


def test_predict_prints_what_openvino_runs(ckpt, tmp_path, capsys):
    Image.fromarray(rgb(40, 50)).save(tmp_path / "a.jpg")
    argv = ["--weights", str(ckpt), "--img", str(tmp_path / "a.jpg"), "--backend", "openvino", "--out", str(tmp_path)]
    assert predict.main(argv) == 0
    expected = "bf16 OpenVINO" if cpu_supports_bf16() else "fp32 OpenVINO"
    assert f"backend openvino on cpu, precision {expected} (--amp auto)" in capsys.readouterr().out


def test_freed_sessions_leave_signals_working(ckpt):
    """Two sessions freed in the order they were made, then a Python signal handler: with a Core (and CPU plugin)
    per session, OpenVINO 2026.4 left the signal stack in freed memory and the signal crashed the process."""
    code = (f"import os, signal\nfrom yolo import YOLO\na = YOLO({str(ckpt)!r}, backend='openvino')\n"
            f"b = YOLO({str(ckpt)!r}, backend='openvino', amp='off')\ndel a\ndel b\n"
            "signal.signal(signal.SIGUSR1, lambda *_: print('handled'))\nos.kill(os.getpid(), signal.SIGUSR1)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "handled", (done.returncode, done.stderr[-2000:])


def test_amp_rule():
    """auto leaves an int8 graph's unquantized ops in fp32; bf16 asked for is bf16; off is fp32."""
    assert openvino_bf16("auto", torch.bfloat16, "fp32") and openvino_bf16("bf16", torch.bfloat16, "int8")
    assert not openvino_bf16("auto", torch.bfloat16, "int8") and not openvino_bf16("off", None, "fp32")


def test_bf16_is_bf16_and_as_close_as_torch_bf16(ckpt):
    """--amp bf16: what OpenVINO reports is what ran, and its outputs stay as close to fp32 as torch's bf16."""
    ov = YOLO(ckpt, backend="openvino", amp="bf16")
    exact, torch_bf16 = YOLO(ckpt, backend="onnx", device="cpu"), YOLO(ckpt, device="cpu", amp="bf16")
    found, expected, reference = ([raw_outputs(y, s) for s in range(3)] for y in (ov, exact, torch_bf16))
    found, expected, reference = sum(found, []), sum(expected, []), sum(reference, [])
    if cpu_supports_bf16():
        assert ov.session.inference_precision == "bf16"
    if ov.session.inference_precision == "bf16":
        assert ov.precision == "bf16 OpenVINO"
        assert 1e-4 < rms(found, expected) < 2 * rms(reference, expected)
    else:  # a CPU where the plugin keeps fp32: said so, and fp32's tolerance holds
        assert ov.precision == "fp32 OpenVINO"
        assert max(np.abs(e - f).max() for e, f in zip(expected, found)) < FP32_ATOL


@pytest.mark.slow
def test_int8_precision_under_amp(int8, monkeypatch):
    """An int8 graph on a CPU with native bf16: auto asks the plugin for fp32 between the quantized ops, --amp bf16
    for bf16 (on this machine's CPU, whatever it has, the precision printed is the plugin's)."""
    monkeypatch.setattr("utils.core.amp.cpu_supports_bf16", lambda *a: True)
    asked = []
    real = yolo_module.graph_session
    monkeypatch.setattr(yolo_module, "graph_session", lambda *a, **k: asked.append(a[3]) or real(*a, **k))
    auto, bf16 = YOLO(int8, backend="openvino"), YOLO(int8, backend="openvino", amp="bf16")
    assert asked == [False, True] and auto.precision == "int8 OpenVINO"
    if cpu_supports_bf16():  # this module's name for the real function, not the patched one
        assert bf16.precision == "int8 + bf16 OpenVINO"


def test_amp_warnings_name_what_runs(ckpt, monkeypatch):
    """The warning about emulated bf16 is torch's: --amp bf16 on onnx (which ignores --amp) gives none; on openvino
    a plugin that keeps fp32 says so."""
    monkeypatch.setattr("utils.core.amp.cpu_supports_bf16", lambda *a: False)
    with pytest.warns(UserWarning, match="emulated"):
        assert backend_amp("torch", "bf16", torch.device("cpu")) == (torch.bfloat16, False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backend_amp("onnx", "bf16", torch.device("cpu")) == (None, False)
        assert backend_amp("openvino", "bf16", torch.device("cpu")) == (None, True)
    monkeypatch.setattr(OpenVinoSession, "inference_precision", property(lambda self: "f32"))
    with pytest.warns(UserWarning, match="computes in f32 on this CPU, not bf16"):
        openvino_session(YOLO(ckpt, backend="onnx", device="cpu")._raw_graph().SerializeToString(), bf16=True)


@pytest.mark.slow
def test_onnx_graphs_refuse_the_torch_backend(int8):
    with pytest.raises(ValueError, match="onnx or openvino backend, not torch"):
        YOLO(int8, backend="torch")
    assert torch.is_tensor(YOLO(int8, backend="openvino").infer(torch.from_numpy(rgb(64, 96)[None])))


def test_sliced_detect_is_the_same_on_openvino(ckpt):
    """detect(image, slice=...) sends batches of tiles through the session: the same boxes as ONNX Runtime's."""
    image = rgb(150, 200, 3)
    a, b = (YOLO(ckpt, backend=k, device="cpu", conf=0.3, amp="off").detect(image, slice=64)
            for k in ("onnx", "openvino"))
    assert len(a) == len(b) >= 10
    assert np.abs(a.boxes - b.boxes).max() < 1e-3 and (a.class_ids == b.class_ids).all()
