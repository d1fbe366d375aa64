"""k-means anchors: recovers clustered box sizes; the command writes a file only when asked; train.py's
--auto-anchors refits them at the start of a run."""
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.helpers.voc import voc_to_coco, write_tiny_voc, write_voc
from utils.data import anchors
from utils.data.voc import load_samples
from utils.ops.boxes import wh_iou


def test_kmeans_recovers_clusters_and_beats_poor_anchors():
    rng = np.random.default_rng(0)
    centres = np.array([[20, 30], [60, 50], [150, 200]], float)
    wh = np.concatenate([c * rng.uniform(0.95, 1.05, (200, 2)) for c in centres])
    found = anchors.kmeans_anchors(wh, 3, seed=1)
    np.testing.assert_allclose(found, centres, rtol=0.05)
    assert anchors.avg_best_iou(wh, found) > 0.9 > anchors.avg_best_iou(wh, np.array([[5, 5], [10, 10], [400, 400.0]]))
    assert wh_iou(np.array([[10, 10.0]]), np.array([[10, 10], [5, 10.0]])).tolist() == [[1.0, 0.5]]


def test_command_prints_comparison_and_writes_only_with_flag(tmp_path, capsys):
    items = {}
    for k in range(8):
        w = 20 + 10 * k
        items[f"i{k}"] = (Image.new("RGB", (100, 100)), f"i{k}.jpg", (100, 100), [("cat", 0, 0, w, w // 2 + 5, 0)])
    root = write_voc(tmp_path / "VOC", items)
    (tmp_path / "anchors.txt").write_text("10,14, 23,27, 37,58\n")
    args = ["--data", str(root), "--classes", str(tmp_path / "c.txt"), "--anchors", str(tmp_path / "anchors.txt"),
            "--input-size", "224"]  # the shared --input-size: a multiple of 32
    (tmp_path / "c.txt").write_text("cat\ndog\n")
    found = anchors.run(anchors.make_parser().parse_args(args))
    out = capsys.readouterr().out
    assert found.shape == (3, 2) and "avg best IoU" in out and "8 boxes at input size 224" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["VOC", "anchors.txt", "c.txt"]
    assert anchors.main(args + ["--write", str(tmp_path / "new" / "a.txt")]) == 0
    written = (tmp_path / "new" / "a.txt").read_text().strip()
    assert written == anchors.format_anchors(found) and len(written.split(", ")) == 3
    with pytest.raises(ValueError, match="distinct box sizes"):
        anchors.kmeans_anchors(np.ones((5, 2)), 3)


def test_command_reads_a_coco_json_with_its_image_folder(tmp_path, capsys, scan_cache):
    json_path = voc_to_coco(write_tiny_voc(tmp_path / "voc", 4), tmp_path / "coco")
    (tmp_path / "coco" / "images").rename(tmp_path / "pictures")
    (tmp_path / "anchors.txt").write_text("10,14, 23,27\n")
    args = ["--data", str(json_path), "--anchors", str(tmp_path / "anchors.txt"), "--input-size", "128"]
    assert anchors.main(args + ["--data-format", "coco", "--images", str(tmp_path / "pictures")]) == 0
    assert "6 boxes at input size 128" in capsys.readouterr().out
    assert anchors.main(args + ["--data-format", "yolo"]) == 1
    assert "--data-format yolo does not fit: it is a JSON file, read as COCO" in capsys.readouterr().err
    assert anchors.main(args) == 1  # without --images no image is found
    assert "COCO image missing" in capsys.readouterr().out


def test_refit_recovers_the_sizes_of_the_used_anchors_and_leaves_the_others():
    rng = np.random.default_rng(0)
    centres = np.array([[20, 30], [50, 40], [80, 120], [150, 100], [250, 260]], float)
    wh = np.concatenate([c * rng.uniform(0.97, 1.03, (100, 2)) for c in centres])
    current = np.array([[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]], float)
    fitted, new_iou, old_iou = anchors.refit_anchors(wh, current, [1, 2, 3, 4, 5])
    np.testing.assert_allclose(fitted[1:], centres, rtol=0.03)
    assert fitted[0].tolist() == [10, 14]  # no head uses anchor 0: it is left as it was
    assert new_iou == pytest.approx(anchors.avg_best_iou(wh, fitted[1:])) and new_iou > 0.9 > old_iou
    assert old_iou == pytest.approx(anchors.avg_best_iou(wh, current[1:]))


def test_refit_keeps_anchors_that_already_fit():
    sizes = np.array([[20, 30], [50, 40], [80, 120], [150, 100], [250, 260]], float)
    wh = np.repeat(sizes, 10, axis=0)
    current = np.vstack([[5, 5], sizes])
    fitted, new_iou, old_iou = anchors.refit_anchors(wh, current, [1, 2, 3, 4, 5])
    assert fitted is current and new_iou == old_iou == 1.0


@pytest.mark.slow
def test_auto_anchors_refit_at_the_start_reach_the_checkpoint_and_survive_a_resume(tmp_path, capsys, monkeypatch,
                                                                                  scan_cache):
    import train
    from utils.core.config import read_anchors
    from utils.engine.checkpoint import read_checkpoint

    data = write_tiny_voc(tmp_path / "voc", 4)
    args = ["--data", str(data), "--classes", str(data / "classes.txt"), "--input-size", "128", "--batch-size", "2",
            "--workers", "0", "--save-dir", str(tmp_path / "runs"), "--quiet", "--eval-period", "0", "--epochs", "2",
            "--save-period", "1", "--auto-anchors"]
    assert train.main(args) == 0
    out = capsys.readouterr().out
    printed = re.search(r"auto-anchors: 6 training boxes at 128: avg best IoU ([0-9.]+) .* ([0-9.]+) refit "
                        r"\(([0-9, ]+)\); refit kept", out)
    assert printed, out
    run = tmp_path / "runs" / "exp"
    saved = np.array(read_checkpoint(run / "last.pth")["anchors"])
    default = read_anchors(train.ROOT / "model_data/yolo_anchors.txt").numpy()
    assert saved[0].tolist() == default[0].tolist() and not np.allclose(saved[1:], default[1:])
    assert printed.group(3) == anchors.format_anchors(saved[1:])
    assert (run / "anchors.txt").read_text().strip() == anchors.format_anchors(saved)
    samples = load_samples(data, "train", ["red", "blue"])
    assert anchors.avg_best_iou(anchors.box_sizes(samples, 128), saved[1:]) == pytest.approx(float(printed.group(2)), abs=6e-4)
    # a resumed run takes its checkpoint's anchors and refits nothing
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(run / "epoch_1.pth", resumed / "last.pth")
    monkeypatch.setattr("utils.engine.run.refit_anchors", lambda *a, **k: pytest.fail("a resumed run refit its anchors"))
    assert train.main(["--resume", str(resumed / "last.pth"), "--quiet", "--workers", "0"]) == 0
    np.testing.assert_array_equal(np.array(read_checkpoint(resumed / "last.pth")["anchors"]), saved)
