import numpy as np
import pytest
import torch

from nets.darknet import darknet_layers, expected_floats, load_darknet_weights, save_darknet_weights
from nets.yolo import YoloBody
from tests.test_yolo import ANCHORS_MASK, random_bn
from utils.checkpoint import model_from_weights

OFFICIAL_BYTES = 24_251_276  # darknet's yolov4-tiny.weights (COCO, 80 classes)


def random_model(num_classes: int, seed: int = 0) -> YoloBody:
    torch.manual_seed(seed)
    return random_bn(YoloBody(ANCHORS_MASK, num_classes), seed)


def same_state(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa if not k.endswith("num_batches_tracked"))


def test_layer_order_follows_cfg(root):
    """The reader's layer order is darknet's: the cfg's filters= lines, in order, are our conv widths."""
    text = (root / "model_data" / "yolov4-tiny.cfg").read_text()
    layers = darknet_layers(YoloBody(ANCHORS_MASK, 80))
    outs = [conv.out_channels for _, conv, _ in layers]
    assert len(layers) == 21
    assert outs == [32, 64, 64, 32, 32, 64, 128, 64, 64, 128, 256, 128, 128, 256, 512, 256, 512, 255, 128, 256, 255]
    assert [bn is None for _, _, bn in layers].count(True) == 2
    filters = [int(line.split("=")[1]) for line in text.splitlines() if line.replace(" ", "").startswith("filters=")]
    assert filters == outs


def test_roundtrip_random_model(tmp_path):
    model, path = random_model(3), tmp_path / "m.weights"
    save_darknet_weights(model, path, seen=123456)
    fresh = YoloBody(ANCHORS_MASK, 3)
    assert not same_state(model, fresh)
    assert load_darknet_weights(fresh, path) == expected_floats(model)
    assert same_state(model, fresh)
    header = np.fromfile(path, dtype="<i4", count=3).tolist()
    assert header == [0, 2, 5] and np.fromfile(path, dtype="<i8", count=1, offset=12)[0] == 123456


def test_old_header_with_int32_seen(tmp_path):
    model, path = random_model(1), tmp_path / "old.weights"
    save_darknet_weights(model, path, major=0, minor=1)
    assert path.stat().st_size == 16 + 4 * expected_floats(model)
    fresh = YoloBody(ANCHORS_MASK, 1)
    load_darknet_weights(fresh, path)
    assert same_state(model, fresh)


def test_official_file_size(tmp_path):
    model = YoloBody(ANCHORS_MASK, 80)
    assert 20 + 4 * expected_floats(model) == OFFICIAL_BYTES
    save_darknet_weights(model, tmp_path / "coco.weights")
    assert (tmp_path / "coco.weights").stat().st_size == OFFICIAL_BYTES


def test_truncated_file_fails_clearly(tmp_path):
    path = tmp_path / "cut.weights"
    save_darknet_weights(random_model(3), path)
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(ValueError, match=r"cut.weights: expected [\d,]+ floats .* found [\d,]+; the file is truncated"):
        load_darknet_weights(YoloBody(ANCHORS_MASK, 3), path)


def test_leftover_bytes_fail(tmp_path):
    path = tmp_path / "long.weights"
    save_darknet_weights(random_model(3), path)
    path.write_bytes(path.read_bytes() + b"\0" * 16)
    with pytest.raises(ValueError, match="expected .* floats"):
        load_darknet_weights(YoloBody(ANCHORS_MASK, 3), path)


def test_wrong_class_count_names_both(tmp_path):
    path = tmp_path / "c5.weights"
    save_darknet_weights(random_model(5), path)
    with pytest.raises(ValueError, match="fits 5 classes but the model has 20"):
        load_darknet_weights(YoloBody(ANCHORS_MASK, 20), path)


def test_not_darknet_and_missing(tmp_path):
    path = tmp_path / "junk.weights"
    path.write_bytes(np.array([123456, 7, 0, 0, 0], dtype="<i4").tobytes())
    with pytest.raises(ValueError, match="not a darknet"):
        load_darknet_weights(YoloBody(ANCHORS_MASK, 3), path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_darknet_weights(YoloBody(ANCHORS_MASK, 3), tmp_path / "none.weights")


def test_model_from_weights_reads_darknet(tmp_path):
    source, path = random_model(2), tmp_path / "two.weights"
    save_darknet_weights(source, path)
    model, meta = model_from_weights(path, class_names=["a", "b"])
    assert meta["scale_x_y"] == 1.05 and same_state(source, model)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(source(x)[1], model.eval()(x)[1])
