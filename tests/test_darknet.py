import numpy as np
import pytest
import torch

from nets.darknet import darknet_layers, expected_floats, load_darknet_weights, save_darknet_weights
from nets.yolo import YoloBody
from tests.helpers.models import ANCHORS_MASK, random_model
from utils.engine.checkpoint import model_from_weights

OFFICIAL_BYTES = 24_251_276  # darknet's yolov4-tiny.weights (COCO, 80 classes)


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


def cfg_layers(text: str):
    """The sections of a darknet cfg after [net], each a dict with its 'type'."""
    sections = []
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("["):
            sections.append({"type": line[1:-1]})
        elif "=" in line:
            key, value = line.split("=", 1)
            sections[-1][key.strip()] = value.strip()
    return sections[1:]


def conv_shapes(layers, channels: int = 3):
    """(filters, in_channels, size, batch_normalize) per [convolutional], following routes as darknet does."""
    outs, shapes = [], []
    for i, layer in enumerate(layers):
        c_in = outs[-1] if outs else channels
        if layer["type"] == "convolutional":
            c = int(layer["filters"])
            shapes.append((c, c_in, int(layer["size"]), layer.get("batch_normalize") == "1"))
        elif layer["type"] == "route":
            refs = [int(r) for r in layer["layers"].split(",")]
            c = sum(outs[r if r >= 0 else i + r] for r in refs) // int(layer.get("groups", "1"))
        else:  # maxpool, upsample, yolo keep the channel count
            c = c_in
        outs.append(c)
    return shapes


def write_random_weights(path, shapes, seed: int = 0) -> None:
    """A darknet .weights file written from the format alone: header int32 major, minor, revision and
    int64 seen; per conv with BN: beta, gamma, mean, variance, kernel; without BN: bias, kernel."""
    rng = np.random.default_rng(seed)
    parts = [np.array([0, 2, 5], "<i4").tobytes(), np.array([32013312], "<i8").tobytes()]
    for filters, c_in, size, batch_norm in shapes:
        fan_in = c_in * size * size
        if batch_norm:
            values = [rng.uniform(-0.3, 0.3, filters), rng.uniform(0.5, 1.5, filters),
                      rng.uniform(-0.3, 0.3, filters), rng.uniform(0.5, 1.5, filters)]
        else:
            values = [rng.uniform(-0.5, 0.5, filters)]
        values.append(rng.normal(0, 1.5 / np.sqrt(fan_in), filters * fan_in))  # keeps activations O(1)
        parts += [v.astype("<f4").tobytes() for v in values]
    path.write_bytes(b"".join(parts))


def test_loaded_weights_give_opencv_darknet_outputs(root, tmp_path):
    """Random weights written to the format by hand, read by load_darknet_weights and by OpenCV's darknet
    importer, give the same raw head outputs (the convs feeding the [yolo] layers), 3 classes, 192x256."""
    import cv2
    assert hasattr(cv2.dnn, "readNetFromDarknet"), (
        f"OpenCV {cv2.__version__} has no darknet importer (removed in 5.0): pip install -r requirements.txt pins <5")
    text = (root / "model_data" / "yolov4-tiny.cfg").read_text()
    lines = {"filters=255": "filters=24", "classes=80": "classes=3", "width=416": "width=256",
             "height=416": "height=192"}
    text = "\n".join(lines.get(line.strip(), line) for line in text.splitlines())
    cfg, weights = tmp_path / "t.cfg", tmp_path / "t.weights"
    cfg.write_text(text)
    layers = cfg_layers(text)
    write_random_weights(weights, conv_shapes(layers))

    model = YoloBody(ANCHORS_MASK, 3)
    assert load_darknet_weights(model, weights) == (weights.stat().st_size - 20) // 4
    for m in model.modules():
        # OpenCV's importer normalises with eps 1e-6; AlexeyAB's darknet, which made yolov4-tiny.weights,
        # uses sqrt(var + 1e-5) (src/blas.c normalize_cpu) as PyTorch's default does. With 1e-5 here the
        # heads differ by ~6e-5 of their range, the float32 noise is ~4e-6.
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps = 1e-6
    image = np.random.default_rng(1).uniform(0, 1, (1, 3, 192, 256)).astype(np.float32)
    with torch.no_grad():
        ours = [o.numpy() for o in model.eval()(torch.from_numpy(image))]

    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    heads = [f"conv_{i - 1}" for i, layer in enumerate(layers) if layer["type"] == "yolo"]
    assert heads == ["conv_29", "conv_36"] and set(heads) <= set(net.getLayerNames())
    net.setInput(image)
    theirs = net.forward(heads)
    for head, a, b in zip(heads, ours, theirs):
        assert a.shape == b.shape, head  # P5 [1, 24, 6, 8], P4 [1, 24, 12, 16]
        scale = np.abs(b).max()
        assert scale > 0.1, f"{head}: outputs too small ({scale}) to compare"
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * scale, err_msg=head)
