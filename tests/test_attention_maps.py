import numpy as np

import predict
from nets.yolo import YoloBody
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


def test_yolo_attention_maps_per_site(tmp_path):
    from yolo import YOLO
    write_checkpoint(tmp_path / "m.pth")
    image = np.random.default_rng(0).integers(0, 255, (90, 160, 3), dtype=np.uint8)
    maps = YOLO(str(tmp_path / "m.pth"), amp="off").attention_maps(image)
    # sk builds new features rather than gates: no map for it
    assert set(maps) == {"feat1", "feat2", "upsample", "csp1"}
    assert maps["feat2"][0] == "channel" and maps["feat2"][1].shape == (512,)
    for site in ("feat1", "upsample", "csp1"):
        kind, values = maps[site]
        # spatial maps are cropped to the letterboxed image: 128 x 72 for a 160 x 90 image
        assert kind == "spatial" and values.shape == (72, 128)
        assert np.isfinite(values).all() and 0 <= values.min() and values.max() <= 1


def test_predict_writes_attention_maps(tmp_path, capsys):
    write_checkpoint(tmp_path / "m.pth")
    img = tmp_path / "im.png"
    from utils.deploy.drawing import save_image
    save_image(img, np.random.default_rng(1).integers(0, 255, (100, 120, 3), dtype=np.uint8))
    assert run_predict(tmp_path / "m.pth", img, tmp_path / "out") == 0
    out = tmp_path / "out"
    for site in ("feat1", "upsample", "csp1"):
        assert read_image(out / f"im_att_{site}.jpg").shape == (100, 120, 3)
    assert (out / "im_att_feat2.png").stat().st_size > 0
    assert not list(out.glob("im_att_csp3*"))


def test_model_without_attention_says_so(tmp_path, capsys):
    write_checkpoint(tmp_path / "m.pth", attention="none")
    img = tmp_path / "im.png"
    from utils.deploy.drawing import save_image
    save_image(img, np.zeros((64, 64, 3), np.uint8))
    assert run_predict(tmp_path / "m.pth", img, tmp_path / "out") == 0
    assert "no attention block with a map" in capsys.readouterr().out
