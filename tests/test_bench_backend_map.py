"""bench/bench_backend_map.py on a tiny VOC: every row scored through predict.py and get_map.py, the precision
column what predict.py printed, the fp32 rows of the three runtimes at one mAP, a second run into the same --out."""
import importlib.util

import pytest

from tests.conftest import ROOT
from tests.helpers.models import save_random_checkpoint
from tests.helpers.voc import MAP_CLASSES, write_map_voc
from utils.core.amp import cpu_supports_bf16

_spec = importlib.util.spec_from_file_location("bench_backend_map", ROOT / "bench" / "bench_backend_map.py")
bbm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bbm)


def table_rows(out: str) -> dict:
    """{row: (precision, mAP@0.5, mAP@.5:.95, difference at 0.5, at .5:.95, reference row)} of the last table."""
    rows = {}
    for line in out.splitlines():
        if line[:15].strip() in {row[0] for row in bbm.ROWS}:
            numbers = line[39:].split()
            rows[line[:15].strip()] = (line[15:39].strip(), *map(float, numbers[:4]), " ".join(numbers[4:]))
    return rows


@pytest.mark.slow
def test_every_backend_and_precision_is_scored(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("YOLO_SCAN_CACHE", str(tmp_path / "cache"))
    voc = write_map_voc(tmp_path)
    weights = save_random_checkpoint(tmp_path / "run" / "best.pth", MAP_CLASSES)
    args = bbm.make_parser().parse_args(["--weights", str(weights), "--data", str(voc), "--calib-images", "2",
                                         "--out", str(tmp_path / "out")])
    bbm.main(args)
    bbm.main(args)  # the same --out again: the first run's files are replaced
    rows = table_rows(capsys.readouterr().out)
    assert set(rows) == {row[0] for row in bbm.ROWS}
    assert {row: rows[row][0] for row in ("onnx fp32", "torch fp32", "openvino fp32", "onnx int8", "openvino int8")} \
        == {"onnx fp32": "fp32 ONNX Runtime", "torch fp32": "off (fp32)", "openvino fp32": "fp32 OpenVINO",
            "onnx int8": "int8 ONNX Runtime", "openvino int8": "int8 OpenVINO"}
    # --amp bf16: bf16 on a CPU with native bf16; elsewhere what the plugin reports (it may keep fp32)
    assert rows["openvino bf16"][0] in (("bf16 OpenVINO",) if cpu_supports_bf16() else ("bf16 OpenVINO", "fp32 OpenVINO"))
    assert rows["onnx fp32"][1] > 0.05  # a model that finds something, so equal scores mean something
    for row in ("torch fp32", "openvino fp32"):
        assert rows[row][5] == "onnx fp32" and abs(rows[row][3]) < 1e-3 and abs(rows[row][4]) < 1e-3
    assert rows["openvino int8"][5] == "onnx int8"
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == ["000001.jpg", "000002.jpg", "000003.jpg"]
