"""YOLO.predict (an image, a folder, a video) and YOLO.export (raw, with NMS, int8) do what predict.py does."""
import re

import cv2
import numpy as np
import onnx
import pytest
from PIL import Image

import predict
from tests.helpers.voc import write_scene_voc
from tests.helpers.models import make_checkpoint, rgb
from yolo import YOLO


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("api") / "best.pth")


@pytest.fixture(scope="module")
def yolo(ckpt):
    return YOLO(ckpt, conf=0.3)  # predict.py's defaults besides --conf 0.3


def same(a, b) -> bool:
    return np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores) and \
        np.array_equal(a.class_ids, b.class_ids)


def files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_image_gives_detect_and_the_files_of_predict_py(ckpt, yolo, tmp_path):
    Image.fromarray(rgb(90, 160)).save(tmp_path / "17.jpg")
    [(path, det)] = yolo.predict(tmp_path / "17.jpg", out=tmp_path / "api", save_txt=True, save_json=True, crop=True)
    assert path == tmp_path / "17.jpg" and len(det) > 0 and same(det, yolo.detect(tmp_path / "17.jpg"))
    assert predict.main(["--weights", str(ckpt), "--img", str(tmp_path / "17.jpg"), "--conf", "0.3", "--save-txt",
                         "--save-json", "--crop", "--out", str(tmp_path / "cli")]) == 0
    assert files(tmp_path / "api") == files(tmp_path / "cli") and "labels/17.txt" in files(tmp_path / "api")
    for name in ("17.jpg", "labels/17.txt", "detections.json"):
        assert (tmp_path / "api" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()


def test_folder_in_order_skipping_unreadable_and_writing_nothing_without_out(yolo, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, name in enumerate(("b.png", "a.jpg", "c.bmp")):
        Image.fromarray(rgb(40 + 10 * i, 60, seed=i)).save(folder / name)
    (folder / "broken.jpg").write_bytes(b"not an image")
    monkeypatch.chdir(tmp_path)
    before = files(tmp_path)
    found = yolo.predict(folder, verbose=False)
    assert [p.name for p, _ in found] == ["a.jpg", "b.png", "c.bmp"]
    assert all(same(det, yolo.detect(path)) for path, det in found)
    assert files(tmp_path) == before and "broken.jpg" in capsys.readouterr().err


def test_video_frames_in_order(yolo, tmp_path):
    source = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 64))
    for i in range(4):
        writer.write(cv2.cvtColor(rgb(64, 96, seed=i), cv2.COLOR_RGB2BGR))
    writer.release()
    found = yolo.predict(source, out=tmp_path / "out", max_frames=3)
    assert [i for i, _ in found] == [0, 1, 2]
    cap = cv2.VideoCapture(str(source))
    for _, det in found:  # the same frames as decoded here
        assert same(det, yolo.detect(cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2RGB)))
    written = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == 3


@pytest.mark.parametrize("source, options, message", [
    ("nowhere.jpg", {}, "nowhere.jpg: no such file or folder"),
    ("a.jpg", {"save_text": True}, "unknown predict option 'save_text' (did you mean save_txt?)"),
    ("a.jpg", {"cam_method": "gradcan"}, "cam_method must be one of gradcam, layercam, eigencam, found 'gradcan'"),
    ("a.jpg", {"heatmap": True}, "heatmap write files: give an output folder"),
    ("a.jpg", {"cam_top": -1}, "--cam-top -1"),
])
def test_bad_predict_calls_say_what_to_do(yolo, tmp_path, source, options, message):
    Image.fromarray(rgb(32, 32)).save(tmp_path / "a.jpg")
    with pytest.raises(ValueError, match=re.escape(message)):
        yolo.predict(tmp_path / source, **options)


@pytest.mark.slow
@pytest.mark.parametrize("nms, outputs", [(False, ["out0", "out1"]), (True, ["detections"])])
def test_export_is_predict_py_export(ckpt, tmp_path, nms, outputs):
    path = YOLO(ckpt).export("onnx", export_onnx_nms=nms)
    assert path == ckpt.with_name("best_nms.onnx" if nms else "best.onnx")
    cli = tmp_path / "cli.onnx"
    assert predict.main(["--weights", str(ckpt), "--export-onnx", str(cli), *(["--export-onnx-nms"] if nms else [])]) == 0
    api, script = onnx.load(str(path)), onnx.load(str(cli))
    assert [o.name for o in api.graph.output] == outputs
    assert api.graph.SerializeToString() == script.graph.SerializeToString()
    assert api.metadata_props == script.metadata_props


@pytest.mark.slow
def test_int8_export_is_predict_py_int8(ckpt, tmp_path, scan_cache):
    voc = write_scene_voc(tmp_path / "VOC")
    path = YOLO(ckpt).export("onnx", int8=True, data=voc, calib_images=3, path=tmp_path / "api_int8.onnx")
    cli = tmp_path / "cli_int8.onnx"
    assert predict.main(["--weights", str(ckpt), "--export-onnx", str(cli), "--int8", "--data", str(voc),
                         "--calib-images", "3"]) == 0
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("QuantizeLinear") > 10
    image = rgb(64, 96, seed=5)
    assert same(YOLO(path, conf=0.3).detect(image), YOLO(cli, conf=0.3).detect(image))
    assert path.read_bytes() == cli.read_bytes()


@pytest.mark.parametrize("call, message", [
    (dict(format="tflite"), "unknown export format 'tflite'; valid: onnx"),
    (dict(int8=True), "int8 needs calibration images: give the dataset"),
    (dict(int8=True, export_onnx_nms=True, data="VOC"), "--int8 quantizes the raw graph"),
])
def test_bad_export_calls_say_what_to_do(yolo, call, message):
    with pytest.raises(ValueError, match=message):
        yolo.export(**call)
