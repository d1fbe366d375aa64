"""predict.py --video ... --track and YOLO.predict(video, track=True): ByteTrack (the trackers package) after
detection; one id per object on a video of squares moving on straight lines, tracks.csv, the ids drawn, the
one-line message without the package, and the plumbing with a real model on both backends."""
import importlib.util
import sys

import numpy as np
import pytest
from PIL import Image

import predict
import utils.deploy.tracking as tracking
from tests.helpers.models import CLASSES, make_checkpoint, rgb
from tests.helpers.video import find_squares, iou, square_boxes, squares_video
from utils.deploy.tracking import CSV_COLUMNS, read_tracks
from yolo import YOLO

if importlib.util.find_spec("trackers") is None:  # a failure, never a skip: the suite tests what the README promises
    raise ImportError("tests/test_tracking.py needs trackers: pip install -r requirements-extra.txt")
FRAMES = 20


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("track") / "best.pth")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return squares_video(tmp_path_factory.mktemp("clip") / "clip.mp4", FRAMES)


def test_one_id_per_object_and_no_switch(ckpt, clip, tmp_path, monkeypatch, capsys):
    """The detector is a stand-in finding the squares by colour; every row of tracks.csv lies on the square it
    names, each square keeps one id from its second frame on (ByteTrack confirms a track on its second frame),
    and the video's labels carry the ids."""
    monkeypatch.setattr(YOLO, "detect", lambda self, image: find_squares(image))
    drawn = []
    real_draw = tracking.draw_detections

    def spy(image, boxes, scores, colour_ids, labels):
        drawn.append([labels[int(c)] for c in colour_ids])
        return real_draw(image, boxes, scores, colour_ids, labels)

    monkeypatch.setattr(tracking, "draw_detections", spy)
    out = tmp_path / "out"
    assert predict.main(["--weights", str(ckpt), "--video", str(clip), "--track", "--out", str(out)]) == 0
    assert "3 tracks" in capsys.readouterr().out
    assert (out / "tracks.csv").read_text().splitlines()[0] == ",".join(CSV_COLUMNS)
    rows = read_tracks(out / "tracks.csv")
    ids_of = {}  # square -> the ids its rows carry
    for row in rows:
        box = (row["x1"], row["y1"], row["x2"], row["y2"])
        overlaps = [iou(box, truth) for truth in square_boxes(row["frame"])]
        square = int(np.argmax(overlaps))
        assert overlaps[square] > 0.7, row
        ids_of.setdefault(square, set()).add(row["id"])
        assert row["class"] == CLASSES[(0, 1, 0)[square]] and row["score"] == pytest.approx(0.9)
    assert sorted(ids_of) == [0, 1, 2] and all(len(ids) == 1 for ids in ids_of.values())  # no switch
    assert len(set.union(*ids_of.values())) == 3  # and no two squares share an id
    assert sorted(r["frame"] for r in rows) == sorted(list(range(1, FRAMES)) * 3)
    assert len(drawn) == FRAMES and all(len(labels) == 3 for labels in drawn)
    assert all("#" not in label for label in drawn[0])
    for frame, labels in enumerate(drawn[1:], 1):
        assert sorted(label.split("#")[1] for label in labels) == \
            sorted(str(r["id"]) for r in rows if r["frame"] == frame)
    assert not list(out.glob(".*partial*")) and (out / "clip.mp4").is_file()


def test_missing_package_is_one_line_before_the_video_opens(ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "trackers", None)  # import trackers -> ImportError
    code = predict.main(["--weights", str(ckpt), "--video", str(tmp_path / "missing.mp4"), "--track",
                         "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "pip install trackers" in err[0] and "missing.mp4" not in err[0]


@pytest.mark.parametrize("flags, message", [
    (["--dir", "frames", "--track"], "--track follows objects across the frames of a video"),
    (["--video", "clip.mp4", "--track", "--track-thresh", "1.5"],
     "--track-thresh 1.5: expected a score between 0 and 1"),
])
def test_track_flag_errors(ckpt, clip, tmp_path, capsys, flags, message):
    flags = [str(clip) if f == "clip.mp4" else f for f in flags]
    assert predict.main(["--weights", str(ckpt), "--out", str(tmp_path / "out"), *flags]) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_real_model_tracks_on_both_backends(ckpt, clip, tmp_path, backend):
    """A random tiny model on the real path: every frame's detections carry track ids, and tracks.csv holds
    exactly the detections with an id."""
    yolo = YOLO(ckpt, conf=0.3)
    if backend == "onnx":
        yolo = YOLO(yolo.export_onnx(tmp_path / "m.onnx"))
        assert yolo.backend == "onnx"
    found = yolo.predict(clip, out=tmp_path / "out", track=True, max_frames=4, verbose=False)
    assert [i for i, _ in found] == list(range(4))
    assert sum(len(d) for _, d in found) > 0
    expected = [(i, int(t), *np.round(b, 1).tolist()) for i, d in found for t, b in zip(d.track_ids, d.boxes) if t > 0]
    rows = [(r["frame"], r["id"], r["x1"], r["y1"], r["x2"], r["y2"])
            for r in read_tracks(tmp_path / "out" / "tracks.csv")]
    rows, expected = np.array(sorted(rows)), np.array(sorted(expected))
    assert rows.shape == expected.shape and np.array_equal(rows[:, :2], expected[:, :2])
    assert np.allclose(rows[:, 2:], expected[:, 2:], atol=0.051)
    assert any(t > 0 for _, d in found for t in d.track_ids)
    Image.fromarray(rgb(32, 32)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="track follows objects across the frames of a video"):
        yolo.predict(tmp_path / "a.png", track=True)
