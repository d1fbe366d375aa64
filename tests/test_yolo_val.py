"""YOLO(...).val(...) and utils.eval.scoring.evaluate give the numbers get_map.py prints for the same checkpoint
and split: every number of the table, the headline and the settings line."""
import json
import re

import pytest

import get_map
from tests.helpers.models import save_random_checkpoint
from tests.helpers.voc import MAP_CLASSES as CLASSES
from utils.core.cli import UserError
from utils.eval.report import report_text
from utils.eval.scoring import evaluate
from yolo import YOLO

NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def printed(argv, capsys):
    """get_map.py's printed report, from the table's header to the settings line, for `argv`."""
    assert get_map.main(argv) == 0, capsys.readouterr().err
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("class "))
    assert lines[-1].startswith("results in ")
    return "\n".join(lines[start:-1])


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "run" / "best.pth"
    save_random_checkpoint(path, CLASSES)
    return path


def test_val_prints_what_get_map_prints(map_voc, weights, tmp_path, capsys):
    text = printed(["--weights", str(weights), "--data", str(map_voc), "--device", "cpu", "--out", str(tmp_path / "o"),
                    "--no-plots"], capsys)
    result = YOLO(weights, device="cpu").val(data=str(map_voc))
    assert NUMBER.findall(report_text(result)) == NUMBER.findall(text)  # every number, in order
    assert report_text(result) == text
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert result["map"] == summary["map"] and result["map50_95"] == summary["map50_95"] > 0
    assert [r["ap"] for r in result["per_class"]] == [r["ap"] for r in summary["per_class"]]
    assert min(r["ap"] for r in result["per_class"]) > 0.05  # numbers that say something
    assert result["settings"]["conf_thres"] == 0.001 and result["settings"]["split"] == "VOC2007/test"


def test_val_settings_are_get_map_flags(map_voc, weights, tmp_path, capsys):
    flags = ["--split", "VOC2007/test", "--conf", "0.05", "--nms", "0.4", "--iou", "0.6", "--metric", "voc07",
             "--score-thr", "0.3", "--amp", "off", "--batch-size", "2", "--input-size", "64,96"]
    text = printed(["--weights", str(weights), "--data", str(map_voc), "--device", "cpu", "--out", str(tmp_path / "o"),
                    "--no-plots", *flags], capsys)
    result = evaluate(weights=str(weights), data=str(map_voc), device="cpu", split="VOC2007/test", conf=0.05, nms=0.4,
                      iou=0.6, metric="voc07", score_thr=0.3, amp="off", batch_size=2, input_size="64,96")
    assert report_text(result) == text and "mAP@0.6" in text and "input_size [64, 96]" in text
    assert report_text(YOLO(weights, device="cpu", amp="off", input_size=(64, 96)).val(
        data=str(map_voc), split="VOC2007/test", conf=0.05, nms=0.4, iou=0.6, metric="voc07", score_thr=0.3,
        batch_size=2)) == text
    square = evaluate(weights=str(weights), data=str(map_voc), device="cpu", amp="off", input_size=96)
    assert square["settings"]["input_size"] == [96, 96]


def test_unknown_setting_names_the_nearest(map_voc, weights):
    with pytest.raises(ValueError, match="unknown setting 'score_threshold' \\(did you mean score_thr\\?\\)"):
        YOLO(weights, device="cpu").val(data=str(map_voc), score_threshold=0.3)
    with pytest.raises(ValueError, match="conf must be a number, found '0.3'"):
        evaluate(weights=str(weights), data=str(map_voc), conf="0.3")


def test_evaluation_defaults_are_the_schemas():
    """evaluate's defaults are get_map.py's flags' defaults, written once in the schema."""
    from dataclasses import fields
    from utils.core.settings import default
    from utils.eval.scoring import EvalSettings
    parsed = vars(get_map.make_parser().parse_args([]))
    for f in fields(EvalSettings):
        if f.name in parsed:
            assert f.default == parsed[f.name] == default(f.name, "get_map"), f.name


def test_val_of_an_onnx_graph_is_get_maps(map_voc, weights, tmp_path, capsys):
    """YOLO(graph).val and get_map.py --weights graph print one report; the fp32 graph on ONNX Runtime scores as its
    checkpoint does on torch in fp32 (the same network); a graph refuses torch, and scoring.py (the layer below the
    graph runtimes) says where graphs are scored."""
    graph = YOLO(weights, device="cpu").export_onnx(tmp_path / "m.onnx", check=False)
    text = printed(["--weights", str(graph), "--data", str(map_voc), "--out", str(tmp_path / "o"), "--no-plots"],
                   capsys)
    result = YOLO(graph).val(data=str(map_voc))
    assert report_text(result) == text
    assert (result["settings"]["backend"], result["settings"]["amp"]) == ("onnx", "fp32 ONNX Runtime")
    on_torch = evaluate(weights=str(weights), data=str(map_voc), device="cpu", amp="off")
    assert on_torch["map"] > 0.05 and on_torch["settings"]["backend"] == "torch"
    assert (result["map"], result["map50_95"]) == pytest.approx((on_torch["map"], on_torch["map50_95"]), abs=1e-3)
    assert get_map.main(["--weights", str(graph), "--data", str(map_voc), "--backend", "torch", "--out",
                         str(tmp_path / "t")]) == 1
    assert "runs on the onnx or openvino backend, not torch" in capsys.readouterr().err
    with pytest.raises(UserError, match="utils.deploy.graph_scoring.evaluate"):
        evaluate(weights=str(graph), data=str(map_voc))


def test_get_map_is_a_parser_plus_library_calls(root, monkeypatch):
    """get_map.py is at most 150 lines, imports no other script, and hands the library keywords, not a Namespace."""
    import ast
    from tests.helpers.samples import SCRIPTS
    source = (root / "get_map.py").read_text()
    assert len(source.splitlines()) <= 150
    tree = ast.walk(ast.parse(source))
    imported = {name.split(".")[0] for n in tree if isinstance(n, (ast.Import, ast.ImportFrom))
                for name in ([a.name for a in n.names] if isinstance(n, ast.Import) else [n.module or ""])}
    assert not imported & (set(SCRIPTS) - {"get_map"})
    seen = {}

    def score(**settings):
        seen.update(settings)
        raise KeyboardInterrupt  # stop before anything is read

    monkeypatch.setattr(get_map.graph_scoring, "score", score)
    with pytest.raises(KeyboardInterrupt):
        get_map.run(get_map.make_parser().parse_args(["--weights", "w.pth", "--input-size", "384,640"]))
    assert seen["weights"] == "w.pth" and seen["input_size"] == (384, 640) and "out" not in seen
