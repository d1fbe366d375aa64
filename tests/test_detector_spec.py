"""The detector's facts travel as one frozen DetectorSpec: written to checkpoints and ONNX metadata, read back
from today's files and from every older format (tests/fixtures/checkpoints, graphs without the newer keys)."""
import dataclasses
import types

import numpy as np
import pytest
import torch

from nets.checkpoint import checkpoint_spec, load_detector, read_checkpoint
from nets.yolo import YoloBody
from tests.fixtures import make_checkpoints
from tests.helpers.models import ANCHORS, ANCHORS_MASK, CLASSES, make_checkpoint, rgb
from utils.core.detector_spec import DetectorSpec
from utils.deploy.export import read_onnx_spec, set_metadata
from utils.engine.loop import checkpoint_meta
from yolo import YOLO

FIXTURES = make_checkpoints.OUT


def spec(**changes) -> DetectorSpec:
    return DetectorSpec(CLASSES, ANCHORS, ANCHORS_MASK, YoloBody.strides, (64, 96), 1.05).replace(**changes)


def test_the_spec_is_frozen_and_checks_itself():
    s = spec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.scale_x_y = 2.0
    assert s.anchors[0] == (8.0, 8.0) and s.anchors_mask == ((3, 4, 5), (1, 2, 3)) and s.input_hw == (64, 96)
    assert torch.equal(s.anchor_tensor(), torch.tensor(ANCHORS, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"names anchors \[6\], beyond the 6 given"):
        spec(anchors_mask=[[3, 4, 6], [1, 2, 3]])
    with pytest.raises(ValueError, match="one stride per head"):
        spec(strides=(32,))


def test_a_record_reads_back_as_the_same_spec():
    s = spec(letterbox=False, attention="cbam", fusion="gated", se_loss=True)
    assert DetectorSpec.from_record(s.record(), strides=(99, 99)) == s
    with pytest.raises(ValueError, match="x.pth: its detector facts lack anchors"):
        DetectorSpec.from_record({k: v for k, v in s.record().items() if k != "anchors"}, (32, 16), "x.pth")


def test_training_writes_the_spec_into_its_checkpoints():
    config = types.SimpleNamespace(input_size=64, scale_x_y=1.05, attention="se", fusion="msf", se_loss=0.2,
                                   to_dict=lambda: {"phi": 1})
    meta = checkpoint_meta(config, CLASSES, torch.tensor(ANCHORS, dtype=torch.float32), {"n": 1})
    found = checkpoint_spec(meta)
    assert found == spec(input_size=(64, 64), attention="se", fusion="msf", se_loss=True)
    assert (meta["strides"], meta["letterbox"], meta["args"], meta["data_fingerprint"]) == ([32, 16], True, {"phi": 1},
                                                                                               {"n": 1})


@pytest.mark.parametrize("name, fusion_key", [("ours_v1.pth", True), ("ours_v1_before_fusion.pth", False)])
def test_every_older_checkpoint_format_gives_its_spec(name, fusion_key):
    ckpt = read_checkpoint(FIXTURES / name)
    assert ("fusion" in ckpt) == fusion_key and "strides" not in ckpt and "letterbox" not in ckpt
    found = checkpoint_spec(ckpt, where=name)
    assert found.class_names == ("thing",) and found.input_size == (320, 320) and found.scale_x_y == 1.05
    assert (found.strides, found.letterbox, found.fusion, found.se_loss) == (YoloBody.strides, True, "concat", False)
    assert found.anchors_mask == ((3, 4, 5), (1, 2, 3)) and len(found.anchors) == 6


@pytest.mark.parametrize("name", ["reference_state_dict.pth", "model_dict.pth"])
def test_files_without_facts_take_the_classes_given(name):
    ckpt = read_checkpoint(FIXTURES / name)
    with pytest.raises(ValueError, match=f"{name} does not name its classes"):
        checkpoint_spec(ckpt, where=name)
    found = checkpoint_spec(ckpt, where=name, class_names=["a", "b"])
    assert (found.class_names, found.input_size, found.scale_x_y) == (("a", "b"), (416, 416), 1.0)


def test_a_checkpoint_without_strides_loads_with_the_models(tmp_path):
    model, found = load_detector(make_checkpoint(tmp_path / "c.pth"))
    assert found == spec(scale_x_y=1.0) and model.strides == found.strides
    assert load_detector(tmp_path / "c.pth", scale_x_y=1.2)[1].scale_x_y == 1.2  # an argument overrides the file


def _drop_newer_keys(path, out):
    """The graph at `path` with the metadata an export wrote before strides, letterbox, fusion and se_loss."""
    import onnx
    graph = onnx.load(str(path))
    newer = ("strides", "letterbox", "fusion", "se_loss")
    kept = [(p.key, p.value) for p in graph.metadata_props if p.key not in newer]
    del graph.metadata_props[:]
    set_metadata(graph, dict(kept))
    onnx.save(graph, str(out))
    return out


def test_onnx_metadata_holds_the_spec_and_older_graphs_still_run(tmp_path):
    yolo = YOLO(make_checkpoint(tmp_path / "c.pth", obj_bias=1.0), conf=0.3, amp="off")
    path = yolo.export_onnx(tmp_path / "m.onnx", check=False)
    found, extras = read_onnx_spec(path)
    assert found == yolo.spec and extras == {"format": "yolov4-tiny-attention/onnx/1", "precision": "fp32"}
    old = _drop_newer_keys(path, tmp_path / "old.onnx")
    assert read_onnx_spec(old)[0] == found  # the defaults of an older graph are what it was made with
    image = rgb(70, 120, 3)
    new_det, old_det = YOLO(path, conf=0.3).detect(image), YOLO(old, conf=0.3).detect(image)
    assert len(new_det) > 0 and np.array_equal(new_det.boxes, old_det.boxes)
    assert np.array_equal(new_det.class_ids, old_det.class_ids)


def test_yolo_reads_its_facts_from_the_spec(tmp_path):
    yolo = YOLO(make_checkpoint(tmp_path / "c.pth"), classes=["x", "y"], letterbox=False, scale_x_y=1.1)
    assert yolo.spec == spec(class_names=("x", "y"), scale_x_y=1.1, letterbox=False)
    assert (yolo.class_names, yolo.input_hw, yolo.letterbox, yolo.scale_x_y) == (["x", "y"], (64, 96), False, 1.1)
