"""predict.py is a parser plus calls: at most 150 lines, and its parsed arguments (the argparse Namespace) never
reach a function outside it, in any mode (issue 28)."""
import argparse
import sys

import cv2
from PIL import Image

import predict
from tests.conftest import ROOT
from tests.helpers.voc import write_scene_voc
from tests.helpers.models import make_checkpoint, rgb


def holds_namespace(value) -> bool:
    if isinstance(value, argparse.Namespace):
        return True
    if isinstance(value, (tuple, list)):
        return any(isinstance(v, argparse.Namespace) for v in value)
    return isinstance(value, dict) and any(isinstance(v, argparse.Namespace) for v in value.values())


def namespace_leaks(argv) -> set:
    """The project functions outside predict.py that receive a Namespace among their arguments while
    predict.main(argv) runs (argparse's own calls while parsing aside)."""
    leaks, script, tests = set(), str(ROOT / "predict.py"), str(ROOT / "tests")

    def profile(frame, event, _):
        code = frame.f_code
        if event != "call" or not code.co_filename.startswith(str(ROOT)) or code.co_filename == script \
                or code.co_filename.startswith(tests):
            return
        if frame.f_back is not None and frame.f_back.f_code.co_filename == argparse.__file__:
            return
        count = code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & 4) + bool(code.co_flags & 8)
        if any(holds_namespace(frame.f_locals.get(name)) for name in code.co_varnames[:count]):
            leaks.add(f"{code.co_filename[len(str(ROOT)) + 1:]}:{code.co_name}")

    sys.setprofile(profile)
    try:
        assert predict.main(argv) == 0
    finally:
        sys.setprofile(None)
    return leaks


def test_predict_py_is_at_most_150_lines():
    assert len((ROOT / "predict.py").read_text().splitlines()) <= 150


def test_the_namespace_stays_in_predict_py(tmp_path, scan_cache):
    ckpt, voc = make_checkpoint(tmp_path / "best.pth"), write_scene_voc(tmp_path / "VOC")
    Image.fromarray(rgb(60, 80)).save(tmp_path / "a.jpg")
    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 64))
    writer.write(rgb(64, 96))
    writer.release()
    common = ["--weights", str(ckpt), "--out", str(tmp_path / "out")]
    runs = [["--img", str(tmp_path / "a.jpg"), "--conf", "0.3", "--heatmap", "--cam", "--cam-top", "1",
             "--save-txt", "--save-json", "--crop", "--count"],
            ["--dir", str(voc / "JPEGImages"), "--save-json"], ["--video", str(tmp_path / "clip.mp4"), "--count"],
            ["--fps", "--fps-runs", "1", "--warmup", "0"], ["--export-onnx", str(tmp_path / "m.onnx")],
            ["--export-onnx", str(tmp_path / "q.onnx"), "--int8", "--data", str(voc), "--calib-images", "2"]]
    for flags in runs:
        assert namespace_leaks(common + flags) == set(), flags
