import numpy as np
import pytest
import torch
import torch.nn as nn

import predict
from nets.attn.cbam import CBAM
from nets.yolo import YoloBody
from utils.deploy.attention_maps import attention_maps
from utils.engine.checkpoint import CHECKPOINT_FORMAT, save_atomic
from utils.ops.image import read_image
from tests.conftest import ANCHORS_MASK

SPEC = "feat1=cbam,feat2=se,upsample=ca,csp1=triplet,csp3=sk"


def write_checkpoint(path, attention=SPEC):
    model = YoloBody(ANCHORS_MASK, 2, attention=attention)
    save_atomic({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "class_names": ["a", "b"],
                 "anchors": [[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]],
                 "anchors_mask": ANCHORS_MASK, "attention": model.attention, "input_size": [128, 128],
                 "scale_x_y": 1.0}, path)


def run_predict(weights, img, out) -> int:
    args = ["--weights", str(weights), "--img", str(img), "--attention-map", "--out", str(out), "--amp", "off"]
    return predict.main(args)


class MeanGate(nn.Module):
    """A channel block whose weights are the channel means of its input."""

    def channel_weights(self, x):
        return x.mean(dim=(2, 3), keepdim=True)

    def forward(self, x):
        return x * self.channel_weights(x)


class GateModel(nn.Module):
    """The image mirrored left-right and doubled, then a CBAM at feat1 (its MLP zeroed: channel gates 0.5; a 1x1
    spatial conv weighing the channel mean and max by 1 each), MeanGate at feat2 and a plain conv at csp1."""

    def __init__(self):
        super().__init__()
        self.cbam, self.mean_gate, self.plain = CBAM(3, kernel_size=1), MeanGate(), nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.cbam.channelattention.fc2.weight.zero_()
            self.cbam.spatialattention.conv1.weight.copy_(torch.tensor([1.0, 1.0]).view(1, 2, 1, 1))

    def attention_sites(self):
        return {"feat1": self.cbam, "feat2": self.mean_gate, "upsample": nn.Identity(), "csp1": self.plain}

    def forward(self, x):
        return self.plain(self.mean_gate(self.cbam(2 * x.flip(-1))))


def test_attention_maps_are_computed_from_each_blocks_input():
    """A red pixel at row 2, column 1 of a 6x8 image reaches the CBAM as (2, 0, 0) at row 2, column 6: there its
    map is sigmoid(0.5 * 2/3 + 0.5 * 2) = sigmoid(4/3) = 0.791391, sigmoid(0) = 0.5 elsewhere. The CBAM's output
    is 0.791391 in channel 0 of that pixel and 0 elsewhere, so MeanGate's weights are (0.791391 / 48, 0, 0)."""
    batch = torch.zeros(1, 3, 6, 8)
    batch[0, 0, 2, 1] = 1.0
    maps = attention_maps(GateModel().eval(), batch)
    assert set(maps) == {"feat1", "feat2"}  # no map at an empty site nor for a block without gates
    kind, spatial = maps["feat1"]
    expected = np.full((6, 8), 0.5, np.float32)
    expected[2, 6] = 0.791391
    assert kind == "spatial" and np.allclose(spatial, expected, atol=1e-6)
    kind, channel = maps["feat2"]
    assert kind == "channel" and np.allclose(channel, [0.791391 / 48, 0, 0], atol=1e-7)


def test_yolo_attention_maps_per_site(tmp_path):
    from yolo import YOLO
    write_checkpoint(tmp_path / "m.pth")
    image = np.random.default_rng(0).integers(0, 255, (90, 160, 3), dtype=np.uint8)
    yolo = YOLO(str(tmp_path / "m.pth"), amp="off")
    seen = []

    def one_hot(x):  # feat1's map on its 8x8 grid (stride 16 in the 128x128 input): 1 at row 3, column 6
        seen.append(tuple(x.shape))
        grid = torch.zeros(x.shape[0], 1, *x.shape[2:])
        grid[:, :, 3, 6] = 1.0
        return grid

    yolo.model.attention_sites()["feat1"].spatial_map = one_hot
    maps = yolo.attention_maps(image)
    # sk builds new features rather than gates: no map for it
    assert set(maps) == {"feat1", "feat2", "upsample", "csp1"}
    assert maps["feat2"][0] == "channel" and maps["feat2"][1].shape == (512,)
    for site in ("feat1", "upsample", "csp1"):
        kind, values = maps[site]
        # spatial maps are cropped to the letterboxed image: 128 x 72 for a 160 x 90 image, 28 rows of padding above
        assert kind == "spatial" and values.shape == (72, 128)
        assert np.isfinite(values).all() and 0 <= values.min() and values.max() <= 1
    # the cell's centre, input pixel (56, 104), lies between pixels 55/56 and 103/104, each 1/32 of a cell away:
    # bilinear weights 31/32 in each direction; 56 - 28 padding rows = image row 28
    assert seen == [(1, 256, 8, 8)]
    heat = maps["feat1"][1]
    assert np.unravel_index(heat.argmax(), heat.shape) == (27, 103)
    assert heat.max() == pytest.approx((31 / 32) ** 2) and heat[27:29, 103:105] == pytest.approx((31 / 32) ** 2)
    support = np.zeros_like(heat, dtype=bool)
    support[40 - 28:72 - 28, 88:120] = True  # bilinear reach: one cell (16 pixels) either side of the centre
    assert np.array_equal(heat > 0, support)


def test_graph_backends_map_the_torch_network(tmp_path):
    """YOLO(.pth, backend='onnx' or 'openvino').attention_maps: the torch network's maps, as with the torch backend
    (the graph backends' own input is uint8 NHWC, which the torch network does not take)."""
    from yolo import YOLO
    write_checkpoint(tmp_path / "m.pth")
    image = np.random.default_rng(1).integers(0, 255, (90, 160, 3), dtype=np.uint8)
    expected = YOLO(str(tmp_path / "m.pth"), amp="off").attention_maps(image)
    for backend in ("onnx", "openvino"):
        found = YOLO(str(tmp_path / "m.pth"), backend=backend, device="cpu").attention_maps(image)
        assert set(found) == set(expected) == {"feat1", "feat2", "upsample", "csp1"}
        for site, (kind, values) in expected.items():
            assert found[site][0] == kind and np.allclose(found[site][1], values, atol=1e-5)


def test_predict_writes_attention_maps(tmp_path, capsys):
    write_checkpoint(tmp_path / "m.pth")
    img = tmp_path / "im.png"
    from utils.deploy.drawing import save_image
    save_image(img, np.random.default_rng(1).integers(0, 255, (100, 120, 3), dtype=np.uint8))
    assert run_predict(tmp_path / "m.pth", img, tmp_path / "out") == 0
    out = tmp_path / "out"
    for site in ("feat1", "upsample", "csp1"):
        height, width, _ = read_image(out / f"im_att_{site}.jpg").shape
        assert height == 100 + 21 and width > 120  # a title line above, the colour scale on the right
    assert (out / "im_att_feat2.png").stat().st_size > 0
    assert not list(out.glob("im_att_csp3*"))


def test_model_without_attention_says_so(tmp_path, capsys):
    write_checkpoint(tmp_path / "m.pth", attention="none")
    img = tmp_path / "im.png"
    from utils.deploy.drawing import save_image
    save_image(img, np.zeros((64, 64, 3), np.uint8))
    assert run_predict(tmp_path / "m.pth", img, tmp_path / "out") == 0
    assert "no attention block with a map" in capsys.readouterr().out
