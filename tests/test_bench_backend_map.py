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
    """{row: (precision, mAP@0.5, mAP@.5:.95, difference at 0.5, at .5:.95)} of the last table."""
    rows = {}
    width = bbm.ROW_WIDTH + bbm.PRECISION_WIDTH
    for line in out.splitlines():
        if line[:bbm.ROW_WIDTH].strip() in {row[0] for row in bbm.ROWS}:
            numbers = line[width:].split()
            rows[line[:bbm.ROW_WIDTH].strip()] = (line[bbm.ROW_WIDTH:width].strip(), *map(float, numbers[:4]))
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
    native = cpu_supports_bf16()
    precisions = {row: rows[row][0] for row in rows}
    assert precisions == {"onnx fp32": "fp32 ONNX Runtime", "torch fp32": "off (fp32)",
                          "torch bf16": "bf16 autocast", "openvino fp32": "fp32 OpenVINO",
                          "openvino bf16": precisions["openvino bf16"], "onnx int8": "int8 ONNX Runtime",
                          "openvino int8": "int8 OpenVINO", "openvino int8 bf16": precisions["openvino int8 bf16"]}
    # --amp bf16 on openvino: bf16 on a CPU with native bf16; elsewhere what the plugin reports (it may keep fp32)
    assert precisions["openvino bf16"] in ("bf16 OpenVINO",) + (() if native else ("fp32 OpenVINO",))
    assert precisions["openvino int8 bf16"] in ("int8 + bf16 OpenVINO",) + (() if native else ("int8 OpenVINO",))
    assert rows["onnx fp32"][1] > 0.05  # a model that finds something, so equal scores mean something
    for row in ("torch fp32", "openvino fp32"):  # the differences printed against onnx fp32
        assert rows[row][1:3] == pytest.approx(rows["onnx fp32"][1:3], abs=1e-3)
        assert rows[row][3:5] == pytest.approx((0.0, 0.0), abs=1e-3)
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == ["000001.jpg", "000002.jpg", "000003.jpg"]


def test_out_with_files_of_its_own_is_refused(tmp_path, monkeypatch):
    """--out/images holding a real file (not a link this bench made): refused, and the file stays."""
    monkeypatch.setenv("YOLO_SCAN_CACHE", str(tmp_path / "cache"))
    voc = write_map_voc(tmp_path)
    (tmp_path / "out" / "images").mkdir(parents=True)
    (tmp_path / "out" / "images" / "mine.jpg").write_bytes(b"keep")
    with pytest.raises(ValueError, match="mine.jpg, which this bench did not make"):
        bbm.split_images(str(voc), None, MAP_CLASSES, tmp_path / "out" / "images")
    assert (tmp_path / "out" / "images" / "mine.jpg").read_bytes() == b"keep"
