"""k-means anchors: recovers clustered box sizes; the command writes a file only when asked."""
import numpy as np
import pytest
from PIL import Image

from tests.test_formats import voc_to_coco
from tests.test_voc import make_year
from tests.tiny_voc import write_tiny_voc
from utils.data import anchors
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
    root = make_year(tmp_path / "VOC", items)
    (tmp_path / "anchors.txt").write_text("10,14, 23,27, 37,58\n")
    args = ["--data", str(root), "--classes", str(tmp_path / "c.txt"), "--anchors", str(tmp_path / "anchors.txt"),
            "--input-size", "200"]
    (tmp_path / "c.txt").write_text("cat\ndog\n")
    found = anchors.run(anchors.make_parser().parse_args(args))
    out = capsys.readouterr().out
    assert found.shape == (3, 2) and "avg best IoU" in out and "8 boxes at input size 200" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["VOC", "anchors.txt", "c.txt"]
    assert anchors.main(args + ["--write", str(tmp_path / "new" / "a.txt")]) == 0
    written = (tmp_path / "new" / "a.txt").read_text().strip()
    assert written == anchors.format_anchors(found) and len(written.split(", ")) == 3
    with pytest.raises(ValueError, match="distinct box sizes"):
        anchors.kmeans_anchors(np.ones((5, 2)), 3)


def test_command_reads_a_coco_json_with_its_image_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("YOLO_SCAN_CACHE", str(tmp_path / "cache"))
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
