"""The README's "Evaluation" section runs as written: each `python get_map.py` line and the Python block, at tiny
size, in a folder holding the files the commands name (a run under logs/ with its int8 graph, a VOCdevkit, a
reference .pth, a results file)."""
import json
import shutil

import pytest
import torch

import get_map
from tests.conftest import ANCHORS_MASK, ROOT
from tests.reference_model import ReferenceYoloBody, randomize
from tests.helpers.readme import section_blocks
from tests.helpers.models import save_random_checkpoint
from tests.helpers.voc import MAP_CLASSES as CLASSES, MAP_IMAGES as IMAGES, write_map_voc
from utils.core.config import read_classes
from utils.eval import scoring
from yolo import YOLO


def evaluation_blocks():
    """(bash lines, python text) of the README's Evaluation section."""
    bash, python = section_blocks("Evaluation")
    return [line.split("#")[0].split() for line in bash.splitlines() if line.strip()], python


def voc_results(path):
    """A COCO results file of the test split's ground truth, in model_data/voc_classes.txt's ids."""
    voc_names = read_classes(ROOT / "model_data" / "voc_classes.txt")
    rows = [{"image_id": stem, "category_id": voc_names.index(n) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
             "score": 0.9} for stem, (_, objects) in list(IMAGES.items())[:3] for n, x1, y1, x2, y2, _ in objects]
    path.write_text(json.dumps(rows))


@pytest.fixture
def workdir(tmp_path, monkeypatch, scan_cache):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(scoring, "RESULTS_BASE", tmp_path / "map_out")  # not the repository's map_out/
    shutil.copytree(ROOT / "model_data", tmp_path / "model_data")
    write_map_voc(tmp_path)  # VOCdevkit/VOC2007 with cat and dog, test split of 3 images
    weights = save_random_checkpoint(tmp_path / "logs" / "exp" / "best.pth", CLASSES)
    YOLO(weights, device="cpu", amp="off").export(int8=True, data="VOCdevkit", calib_images=2)  # best_int8.onnx
    torch.save(randomize(ReferenceYoloBody(ANCHORS_MASK, 20, phi=0)).state_dict(),
               tmp_path / "yolov4_tiny_weights_voc.pth")
    voc_results(tmp_path / "results.json")
    return tmp_path


def test_readme_evaluation_commands_run(workdir, capsys):
    lines, python = evaluation_blocks()
    assert len(lines) == 5 and all(line[:2] == ["python", "get_map.py"] for line in lines)
    for line in lines:
        assert get_map.main(line[2:] + ["--no-plots"]) == 0, (line, capsys.readouterr().err)
        out = capsys.readouterr().out
        assert "mAP@0.5 VOC" in out and "results in" in out, line
    assert "mAP@0.5 VOC all-point: 1.0000" in out  # the results file is the ground truth
    scope = {}
    exec(compile(python, "README.md (Evaluation, Python)", "exec"), scope)
    assert scope["result"]["settings"]["metric"] == "voc07" and scope["result"]["settings"]["conf_thres"] == 0.001
