"""predict.py --video with stream URLs (a stand-in cv2.VideoCapture), a dropped stream reopened, a file's end
not taken for a drop, --save-txt / --save-json per frame of a video, and `--video 0` without a camera: one line."""
import json
import subprocess
import sys

import cv2
import pytest

import predict
import utils.deploy.video_source as video_source
from tests.helpers.models import make_checkpoint
from tests.helpers.video import FakeCaptures, find_squares, square_frame, squares_video
from utils.deploy.video_source import source_name
from yolo import YOLO


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("streams") / "best.pth")


def bgr(i):
    return cv2.cvtColor(square_frame(i), cv2.COLOR_RGB2BGR)


def run(ckpt, tmp_path, *flags):
    return predict.main(["--weights", str(ckpt), "--out", str(tmp_path / "out"), *flags])


@pytest.fixture
def stand_in(monkeypatch):
    """The squares found by colour instead of the model, no waiting between reconnects."""
    monkeypatch.setattr(YOLO, "detect", lambda self, image: find_squares(image))
    monkeypatch.setattr(video_source, "RECONNECT_WAIT_S", 0.0)


@pytest.mark.parametrize("url", ["rtsp://cam.local:554/live/main", "http://10.0.0.2/video.mjpg",
                                 "https://example.org/streams/cam-1?token=x"])
def test_stream_urls_go_to_opencv(ckpt, tmp_path, monkeypatch, capsys, stand_in, url):
    captures = FakeCaptures([[bgr(i) for i in range(3)]])
    monkeypatch.setattr(cv2, "VideoCapture", captures)
    assert run(ckpt, tmp_path, "--video", url, "--reconnect", "0") == 0
    assert captures.opened == [url]
    out = capsys.readouterr().out
    assert "3 frames" in out and (tmp_path / "out" / f"{source_name(url)}.mp4").is_file()
    assert source_name(url) in ("main", "video", "cam-1")


def test_a_dropped_stream_is_reopened_with_a_warning(ckpt, tmp_path, monkeypatch, capsys, stand_in):
    """3 frames, a drop, 2 frames, a drop, then the stream never answers again: 5 frames, and with
    --reconnect 2 two tries after the second drop before it stops."""
    captures = FakeCaptures([[bgr(i) for i in range(3)], [bgr(i) for i in range(3, 5)]])
    monkeypatch.setattr(cv2, "VideoCapture", captures)
    url = "rtsp://cam.local/live"
    assert run(ckpt, tmp_path, "--video", url, "--reconnect", "2", "--save-txt") == 0
    captured = capsys.readouterr()
    assert "5 frames" in captured.out and len(captures.opened) == 1 + 1 + 2
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: --video {url}: the stream dropped after 3 frames; reopening (try 1 of 2, 0 s apart)",
        f"warning: --video {url}: the stream dropped after 5 frames; reopening (try 1 of 2, 0 s apart)",
        f"warning: --video {url}: the stream dropped after 5 frames; reopening (try 2 of 2, 0 s apart)",
        f"warning: --video {url}: could not be reopened (2 tries, see --reconnect); stopping after 5 frames"]
    assert sorted(p.name for p in (tmp_path / "out" / "labels").iterdir()) == [f"live_{i}.txt" for i in range(5)]


def test_a_file_end_is_not_a_drop(ckpt, tmp_path, monkeypatch, capsys, stand_in):
    clip = squares_video(tmp_path / "clip.mp4", 4)
    opened = []
    real = cv2.VideoCapture
    monkeypatch.setattr(cv2, "VideoCapture", lambda *a: opened.append(a) or real(*a))
    assert run(ckpt, tmp_path, "--video", str(clip), "--max-frames", "12") == 0  # a replayed file would give 12
    captured = capsys.readouterr()
    assert "4 frames" in captured.out and "warning" not in captured.err and len(opened) == 1


def test_the_end_of_a_file_served_by_a_url_is_not_a_drop(ckpt, tmp_path, monkeypatch, capsys, stand_in):
    captures = FakeCaptures([[bgr(i) for i in range(4)]], counted=True)  # the URL tells its 4 frames
    monkeypatch.setattr(cv2, "VideoCapture", captures)
    assert run(ckpt, tmp_path, "--video", "http://10.0.0.2/clip.mp4", "--reconnect", "2") == 0
    captured = capsys.readouterr()
    assert "4 frames" in captured.out and "warning" not in captured.err and len(captures.opened) == 1


def test_save_txt_and_json_per_frame_of_a_video(ckpt, tmp_path, capsys, stand_in):
    """labels/<video stem>_<frame>.txt per frame (from 0) and one detections.json whose rows hold their frame,
    image_id <video stem>_<frame>."""
    clip = squares_video(tmp_path / "clip.mp4", 3)
    assert run(ckpt, tmp_path, "--video", str(clip), "--save-txt", "--save-json") == 0
    out = tmp_path / "out"
    for i in range(3):
        lines = (out / "labels" / f"clip_{i}.txt").read_text().splitlines()
        assert [line.split()[0] for line in lines] == ["cat", "dog", "cat"]
    rows = json.loads((out / "detections.json").read_text())
    assert [r["frame"] for r in rows] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [r["image_id"] for r in rows] == [f"clip_{r['frame']}" for r in rows]
    assert {r["category_name"] for r in rows} == {"cat", "dog"} and all(len(r["bbox"]) == 4 for r in rows)


def test_no_camera_is_one_line(root, ckpt):
    """OpenCV's own C++ warnings on a failed camera open (V4L2, FFMPEG) are silenced: stderr is our one line."""
    if video_source.open_capture("0").isOpened():
        pytest.skip("this machine has a camera 0")
    result = subprocess.run([sys.executable, "predict.py", "--weights", str(ckpt), "--video", "0", "--out",
                             str(ckpt.parent / "out")], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "predict.py: error: --video 0: cannot be opened or holds no readable frames (no such camera, or it is in use)"]
