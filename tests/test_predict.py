import json
import os
import subprocess
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from PIL import Image

import predict
from tests.helpers.models import CLASSES, make_checkpoint, rgb
from utils.core.paths import default_weights
from utils.ops.image import read_image
from yolo import YOLO


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("pred") / "best.pth")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder with RGB, grayscale, RGBA, 16-bit and tiny images, a broken .jpg and a stray text file."""
    folder = tmp_path_factory.mktemp("imgs")
    Image.fromarray(rgb(90, 160)).save(folder / "17.jpg")
    Image.fromarray(rgb(40, 30)[..., 0]).save(folder / "gray.png")
    Image.fromarray(np.dstack([rgb(50, 60), np.full((50, 60), 128, np.uint8)])).save(folder / "rgba.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 65535, (40, 50), dtype=np.uint16)).save(folder / "deep.png")
    Image.fromarray(rgb(12, 20)).save(folder / "tiny.bmp")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def run(ckpt, tmp_path, *flags):
    return predict.main(["--weights", str(ckpt), "--out", str(tmp_path / "out"), *flags])


def test_image_with_every_extra(ckpt, images, tmp_path, capsys):
    rc = run(ckpt, tmp_path, "--img", str(images / "17.jpg"), "--conf", "0.3", "--heatmap", "--save-txt",
             "--save-json", "--crop", "--count", "--show")
    out, out_dir = capsys.readouterr().out, tmp_path / "out"
    assert rc == 0 and "no window support" in out  # headless OpenCV: --show says so and goes on
    expected = YOLO(ckpt, conf=0.3).detect(images / "17.jpg")  # predict.py's defaults besides --conf
    names = [CLASSES[c] for c in expected.class_ids]
    assert len(expected) > 0 and f"17.jpg: {len(expected)} detections" in out
    counts = ", ".join(f"{n} {names.count(n)}" for n in sorted(set(names)))
    assert f"  counts: {counts}" in out and f"total: {counts}" in out
    assert Image.open(out_dir / "17.jpg").size == (160, 90)
    assert Image.open(out_dir / "17_heatmap.jpg").size == (160 + 27, 90 + 21)  # the colour scale 0..1, a title
    lines = [line.split() for line in (out_dir / "labels" / "17.txt").read_text().splitlines()]
    assert [line[0] for line in lines] == names
    assert np.allclose([[float(v) for v in line[2:]] for line in lines], expected.boxes, atol=0.06)
    records = json.loads((out_dir / "detections.json").read_text())
    assert [r["image_id"] for r in records] == [17] * len(expected)
    assert [(r["category_id"], r["category_name"]) for r in records] == [(c + 1, CLASSES[c]) for c in expected.class_ids]
    xyxy = [[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in records)]
    assert np.allclose(xyxy, expected.boxes, atol=1e-4)
    assert [r["score"] for r in records] == pytest.approx(expected.scores.tolist(), abs=1e-6)
    assert sum(len(list((out_dir / "crops" / n).glob("17_*.jpg"))) for n in set(names)) == len(expected)


def test_folder_skips_unreadable(ckpt, images, tmp_path, capsys):
    rc = run(ckpt, tmp_path, "--dir", str(images), "--conf", "0.3", "--save-json")
    captured = capsys.readouterr()
    assert rc == 0 and "broken.jpg" in captured.err and "warning: skipped" in captured.err
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["17.jpg", "deep.png", "detections.json", "gray.png", "rgba.png", "tiny.bmp"]
    assert "1 files" in captured.out and "without an image extension" in captured.out


def test_folder_without_a_readable_image_fails(ckpt, tmp_path, capsys):
    folder = tmp_path / "broken"
    folder.mkdir()
    for name in ("a.jpg", "b.png"):
        (folder / name).write_bytes(b"not an image")
    assert run(ckpt, tmp_path, "--dir", str(folder), "--save-json") == 1
    err = capsys.readouterr().err
    assert "a.jpg" in err and "b.png" in err and "none of the 2 images" in err
    assert not (tmp_path / "out" / "detections.json").exists()


def test_images_sharing_a_stem_keep_apart(ckpt, tmp_path, capsys):
    """a.png and a.jpg: every output is named by the whole file name, so nothing is overwritten."""
    folder = tmp_path / "same"
    folder.mkdir()
    Image.fromarray(rgb(40, 60, seed=1)).save(folder / "a.png")
    Image.fromarray(rgb(50, 30, seed=2)).save(folder / "a.jpg")
    Image.fromarray(rgb(30, 30, seed=3)).save(folder / "b.jpg")
    assert run(ckpt, tmp_path, "--dir", str(folder), "--conf", "0.3", "--save-txt", "--save-json", "--heatmap") == 0
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["a.jpg.txt", "a.png.txt", "b.txt"]
    assert Image.open(out / "a.png").size == (60, 40) and Image.open(out / "a.jpg").size == (30, 50)
    assert (out / "a.png_heatmap.jpg").is_file() and (out / "a.jpg_heatmap.jpg").is_file()
    records = json.loads((out / "detections.json").read_text())
    for image_id, name in (("a.png", "a.png"), ("a.jpg", "a.jpg"), ("b", "b")):
        lines = (out / "labels" / f"{name}.txt").read_text().splitlines()
        assert len(lines) == sum(r["image_id"] == image_id for r in records) > 0


def test_cam_writes_one_panel_per_detection(ckpt, images, tmp_path, capsys):
    """17.jpg (160x90) with --cam-top 3: one row of three 320x180 panels, each with a colour scale 42 px wide on its
    right, under two caption lines (38 px), 4 px apart."""
    assert len(YOLO(ckpt, conf=0.3).detect(images / "17.jpg")) > 3
    assert run(ckpt, tmp_path, "--img", str(images / "17.jpg"), "--conf", "0.3", "--cam", "--cam-top", "3",
               "--cam-method", "layercam", "--amp", "off") == 0
    assert read_image(tmp_path / "out" / "17_cam.jpg").shape == (180 + 38, 3 * (320 + 42) + 2 * 4, 3)
    assert run(ckpt, tmp_path, "--img", str(images / "gray.png"), "--conf", "0.9999", "--cam") == 0
    assert "gray: no detections, so no CAM" in capsys.readouterr().out
    assert not (tmp_path / "out" / "gray_cam.jpg").exists()


def test_cam_needs_the_torch_network(ckpt, images, tmp_path, capsys):
    assert run(ckpt, tmp_path, "--export-onnx", str(tmp_path / "m.onnx")) == 0
    assert predict.main(["--weights", str(tmp_path / "m.onnx"), "--img", str(images / "17.jpg"), "--cam",
                         "--out", str(tmp_path / "out")]) == 1
    assert "class activation maps need the torch network" in capsys.readouterr().err


def test_no_detections_still_writes(ckpt, images, tmp_path, capsys):
    assert run(ckpt, tmp_path, "--img", str(images / "gray.png"), "--conf", "0.9999", "--save-txt") == 0
    assert "gray.png: no detections" in capsys.readouterr().out
    assert (tmp_path / "out" / "gray.png").is_file() and (tmp_path / "out" / "labels" / "gray.txt").read_text() == ""


def test_video(ckpt, tmp_path, capsys):
    source = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 64))
    for i in range(4):
        writer.write(cv2.cvtColor(rgb(64, 96, seed=i), cv2.COLOR_RGB2BGR))
    writer.release()
    assert run(ckpt, tmp_path, "--video", str(source), "--conf", "0.3", "--max-frames", "3") == 0
    assert "3 frames" in capsys.readouterr().out
    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 3 and not list((tmp_path / "out").glob(".*partial*"))


def test_fps(ckpt, tmp_path, capsys, monkeypatch):
    """A fake clock: 1 warm-up run of 5 s per stage (left out), then runs of 10/20/5 ms and 30/40/15 ms for pre,
    forward and post: means 20, 30 and 10 ms, 60 ms in all, 1000 / 60 = 16.67 FPS."""
    ticks = iter([0.0, 5.0, 10.0, 15.0, 100.0, 100.010, 100.030, 100.035, 200.0, 200.030, 200.070, 200.085])
    monkeypatch.setattr("yolo.time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    assert run(ckpt, tmp_path, "--fps", "--fps-runs", "2", "--warmup", "1") == 0
    assert next(ticks, None) is None  # four readings per run, three runs
    out = capsys.readouterr().out
    ms = json.loads((tmp_path / "out" / "fps.json").read_text())
    expected = {"pre_ms": 20.0, "forward_ms": 30.0, "post_ms": 10.0, "total_ms": 60.0, "fps": 1000 / 60}
    assert {key: ms[key] for key in expected} == pytest.approx(expected)
    for line in ("  pre         20.00 ms", "  forward     30.00 ms", "  post        10.00 ms", "  total       60.00 ms",
                 "  FPS         16.67", "input 64x96, 2 runs"):
        assert line in out


@pytest.mark.slow
@pytest.mark.parametrize("nms", [False, True])
def test_export_onnx(ckpt, tmp_path, nms):
    import onnx
    path = tmp_path / "m.onnx"
    assert run(ckpt, tmp_path, "--export-onnx", str(path), *(["--export-onnx-nms"] if nms else [])) == 0
    outputs = [o.name for o in onnx.load(path).graph.output]
    assert outputs == (["detections"] if nms else ["out0", "out1"])


@pytest.mark.parametrize("flags, message", [
    (["--img", "nowhere.jpg"], "nowhere.jpg: file does not exist"),
    (["--img", "notes.txt"], "notes.txt: not a readable image"),
    (["--video", "notes.txt"], "cannot be opened"),
    (["--video", "missing.mp4"], "missing.mp4: file does not exist"),
    (["--dir", "nowhere"], "folder does not exist"),
    (["--img", "x.jpg", "--input-size", "100"], "multiple of 32"),
    (["--img", "x.jpg", "--cam", "--cam-layer", "nowhere"], "unknown CAM layer 'nowhere'; valid: head"),
    (["--img", "x.jpg", "--cam", "--cam-top", "-1"], "--cam-top -1"),
    ([], "nothing to do"),
])
def test_bad_input(ckpt, tmp_path, flags, message, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image or a video")
    if flags[:2] == ["--img", "x.jpg"]:
        Image.fromarray(rgb(10, 10)).save(tmp_path / "x.jpg")
        flags = ["--img", str(tmp_path / "x.jpg"), *flags[2:]]
    assert run(ckpt, tmp_path, *flags) == 1
    assert message in capsys.readouterr().err


def test_script_errors_are_one_line(root, tmp_path):
    """The real script: no weights anywhere -> how to train, exit 1, no traceback."""
    Image.fromarray(rgb(10, 10)).save(tmp_path / "x.jpg")
    result = subprocess.run([sys.executable, "predict.py", "--img", str(tmp_path / "x.jpg"), "--logs", str(tmp_path / "none")],
                            cwd=root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "python train.py" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_default_weights_is_newest_best(tmp_path):
    older, newer, last = tmp_path / "a" / "best.pth", tmp_path / "b" / "best.pth", tmp_path / "c" / "last.pth"
    for path in (older, newer, last):
        path.parent.mkdir()
        path.write_bytes(b"x")
    os.utime(older, (1, 1))
    assert default_weights(tmp_path)[0] == newer  # a best.pth beats a newer last.pth


def test_a_short_run_s_last_pth_is_found_and_named(images, tmp_path, capsys):
    """A run stopped before its first evaluation leaves last.pth (and on Ctrl-C interrupted.pth), no best.pth:
    predict loads the newest of them and says which and why."""
    logs = tmp_path / "logs"
    last = make_checkpoint(logs / "exp1" / "last.pth")
    rc = predict.main(["--img", str(images / "tiny.bmp"), "--logs", str(logs), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert rc == 0 and f"weights {last} (no best.pth under {logs}/" in out
    interrupted = make_checkpoint(logs / "exp1" / "interrupted.pth")
    os.utime(last, (1, 1))
    assert default_weights(logs) == (interrupted, default_weights(logs)[1])
    assert "interrupted" in default_weights(logs)[1]


def test_no_usable_weights_names_the_other_checkpoints(images, tmp_path, capsys):
    (tmp_path / "logs" / "exp1").mkdir(parents=True)
    (tmp_path / "logs" / "exp1" / "epoch_3.pth").write_bytes(b"x")
    rc = predict.main(["--img", str(images / "tiny.bmp"), "--logs", str(tmp_path / "logs")])
    err = capsys.readouterr().err
    assert rc == 1 and "no best.pth, last.pth or interrupted.pth" in err and "epoch_3.pth" in err


def test_given_weights_are_named(ckpt, images, tmp_path, capsys):
    assert run(ckpt, tmp_path, "--img", str(images / "tiny.bmp")) == 0
    assert f"weights {ckpt} (--weights)" in capsys.readouterr().out


@pytest.mark.parametrize("native, line", [(False, "precision off (fp32) (--amp auto)"),
                                          (True, "precision bf16 autocast (--amp auto)")])
def test_amp_auto_is_reported(ckpt, images, tmp_path, capsys, monkeypatch, native, line):
    monkeypatch.setattr("utils.core.amp.cpu_supports_bf16", lambda *args: native)
    assert run(ckpt, tmp_path, "--img", str(images / "tiny.bmp"), "--device", "cpu") == 0
    assert line in capsys.readouterr().out


def test_int8_needs_the_raw_export(ckpt, tmp_path, capsys):
    assert run(ckpt, tmp_path, "--export-onnx", str(tmp_path / "m.onnx"), "--export-onnx-nms", "--int8") == 1
    assert "--int8 quantizes the raw graph" in capsys.readouterr().err


@pytest.mark.slow
def test_int8_calibration_reads_data_in_the_format_asked(ckpt, tmp_path, monkeypatch):
    seen = {}

    def calibration(data, split, names, count, **options):
        seen.update(options, data=data)
        raise SystemExit(0)  # stop before quantizing: only where the images come from is tested here

    monkeypatch.setattr("utils.deploy.predict_modes.calibration_images", calibration)
    assert predict.main(["--weights", str(ckpt), "--export-onnx", str(tmp_path / "m.onnx"), "--int8", "--data",
                         "x.json", "--data-format", "coco", "--images", "imgs"]) == 0  # run_main: SystemExit(0)
    assert seen == {"data": "x.json", "data_format": "coco", "images_dir": "imgs"}


@pytest.mark.parametrize("size, shown", [("96", "input 96x96"), ("64,128", "input 64x128")])
def test_input_size_one_number_or_h_w(ckpt, tmp_path, capsys, size, shown):
    """--input-size 416 and --input-size 384,640 alike reach the detector (here at tiny size)."""
    assert run(ckpt, tmp_path, "--fps", "--fps-runs", "1", "--warmup", "0", "--input-size", size) == 0
    assert shown in capsys.readouterr().out
