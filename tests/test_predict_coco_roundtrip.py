"""predict.py --save-json and get_map.py --detections speak the same COCO results format (utils.eval.detect)."""
import json

import pytest

import get_map
import predict
from tests.helpers.models import save_random_checkpoint
from tests.helpers.voc import MAP_CLASSES as CLASSES, write_map_voc


@pytest.fixture
def voc(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_SCAN_CACHE", str(tmp_path / "cache"))
    return write_map_voc(tmp_path)


def test_predict_json_scores_the_models_map(voc, tmp_path, capsys):
    weights = tmp_path / "run" / "best.pth"
    save_random_checkpoint(weights, CLASSES)
    # get_map.py's detection settings, fp32 on both sides
    args = ["--weights", str(weights), "--dir", str(voc / "VOC2007" / "JPEGImages"), "--conf", "0.001", "--nms", "0.5",
            "--amp", "off", "--device", "cpu", "--save-json", "--out", str(tmp_path / "pred")]
    assert predict.main(args) == 0, capsys.readouterr().err
    rows = json.loads((tmp_path / "pred" / "detections.json").read_text())
    assert {r["category_id"] for r in rows} == {1, 2}  # class index + 1, as get_map.py reads them
    assert all(r["category_name"] == CLASSES[r["category_id"] - 1] for r in rows)

    common = ["--data", str(voc), "--no-plots", "--device", "cpu"]
    assert get_map.main(["--detections", str(tmp_path / "pred" / "detections.json"), "--classes",
                        str(tmp_path / "classes.txt"), "--out", str(tmp_path / "from_json"), *common]) == 0
    assert get_map.main(["--weights", str(weights), "--amp", "off", "--out", str(tmp_path / "from_model"), *common]) == 0
    from_json = json.loads((tmp_path / "from_json" / "summary.json").read_text())
    from_model = json.loads((tmp_path / "from_model" / "summary.json").read_text())
    assert from_model["map50"] > 0.05
    assert from_json["map50"] == pytest.approx(from_model["map50"], abs=1e-6)
    assert [r["ap"] for r in from_json["per_class"]] == pytest.approx([r["ap"] for r in from_model["per_class"]], abs=1e-6)
    assert from_json["coco"] == pytest.approx(from_model["coco"], abs=1e-6)
