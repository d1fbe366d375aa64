"""Class activation maps (utils/deploy/cam.py): the maps against hand computations, the detections against
YOLO.detect, every registered block, the image mapping, the panels, and the acceptance property that a
detection's CAM follows the content under its box."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from nets.attn.registry import ATTENTION_BLOCKS
from nets.yolo import YoloBody
from tests.conftest import ANCHORS_MASK
from tests.helpers.models import ANCHORS, CLASSES, make_checkpoint, rgb
from utils.deploy import cam as cam_module
from utils.deploy.cam import (CamDetector, CamTarget, as_detector, cam_caption, cam_layers, compare_variants,
                              detection_cams, eigen_cam, map_to_image, target_cams, target_score, variant_cam,
                              write_variant_cams)
from utils.ops.boxes import Letterbox
from utils.ops.image import read_image, to_unit_float
from yolo import YOLO


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + np.exp(-v))


class HandModel(nn.Module):
    """A two-head 'detector' small enough to differentiate by hand: A = the image's red and green channels
    (a fixed 1x1 conv), each head a 1x1 conv of A with one anchor and one class (6 outputs per cell)."""

    anchors_mask = [[0], [1]]

    def __init__(self):
        super().__init__()
        self.feature = nn.Conv2d(3, 2, 1, bias=False)
        self.yolo_headP5, self.yolo_headP4 = nn.Conv2d(2, 6, 1), nn.Conv2d(2, 6, 1)
        with torch.no_grad():
            self.feature.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).view(2, 3, 1, 1))
            for head in (self.yolo_headP5, self.yolo_headP4):
                head.weight.zero_()
                head.bias.zero_()
            self.yolo_headP5.weight[4, :, 0, 0] = torch.tensor([1.5, -0.5])  # objectness
            self.yolo_headP5.weight[5, :, 0, 0] = torch.tensor([-1.0, 2.0])  # class 0
            self.yolo_headP5.bias[4:6] = torch.tensor([0.2, 0.1])

    def attention_sites(self):
        return {"feat": self.feature}

    def forward(self, x):
        a = self.feature(x)
        return self.yolo_headP5(a), self.yolo_headP4(a)


HAND_IMAGE = np.array([[[200, 40, 0], [30, 220, 0]], [[120, 90, 0], [250, 10, 0]]], np.uint8)  # 2x2 RGB


def hand_detector() -> CamDetector:
    return as_detector(HandModel(), anchors=[[1.0, 1.0], [1.0, 1.0]], input_hw=(2, 2), class_names=["thing"],
                       strides=(1, 1), conf=0.0)


def hand_gradient(y: int, x: int) -> np.ndarray:
    """dS/dA at (y, x) of S = sigmoid(o) * sigmoid(c), o = w_o . a + b_o, c = w_c . a + b_c (0 elsewhere)."""
    a = HAND_IMAGE[y, x, :2] / 255.0
    w_o, w_c = np.array([1.5, -0.5]), np.array([-1.0, 2.0])
    s_o, s_c = sigmoid(w_o @ a + 0.2), sigmoid(w_c @ a + 0.1)
    return s_o * (1 - s_o) * s_c * w_o + s_o * s_c * (1 - s_c) * w_c


def test_grad_cam_equals_a_hand_computation():
    activation = HAND_IMAGE[..., :2].transpose(2, 0, 1) / 255.0  # [C=2, 2, 2]
    weights = hand_gradient(1, 0) / 4  # the gradient is 0 at the other three positions; mean over 4
    expected = np.maximum((weights[:, None, None] * activation).sum(axis=0), 0)
    [cam] = target_cams(hand_detector(), HAND_IMAGE, [CamTarget(0, 0, 1, 0, 0)], "gradcam")
    assert expected.max() > 0 and np.allclose(cam.heat, expected / expected.max(), atol=1e-6)
    assert cam.layer == "P5 head input" and cam.score == pytest.approx(
        sigmoid(1.5 * 120 / 255 - 0.5 * 90 / 255 + 0.2) * sigmoid(-120 / 255 + 2 * 90 / 255 + 0.1))


def test_layer_cam_equals_a_hand_computation():
    gradient = hand_gradient(0, 1)
    a = HAND_IMAGE[0, 1, :2] / 255.0
    assert (np.maximum(gradient, 0) * a).sum() > 0
    [cam] = target_cams(hand_detector(), HAND_IMAGE, [CamTarget(0, 0, 0, 1, 0)], "layercam")
    assert np.allclose(cam.heat, [[0, 1], [0, 0]], atol=1e-6)  # only the target's position has a gradient


def test_grad_cam_by_formula():
    activation = torch.tensor([[[1.0, 2.0], [0.0, 4.0]], [[3.0, 0.0], [1.0, 1.0]]])
    gradient = torch.tensor([[[0.4, 0.0], [0.0, 0.0]], [[-0.8, 0.0], [0.0, 0.0]]])  # channel means 0.1, -0.2
    expected = torch.tensor([[0.0, 0.2], [0.0, 0.2]])  # ReLU(0.1 * A_0 - 0.2 * A_1)
    assert torch.allclose(cam_module.grad_cam(activation, gradient), expected)
    assert torch.allclose(cam_module.layer_cam(activation, gradient), torch.tensor([[0.4, 0.0], [0.0, 0.0]]))


@pytest.mark.parametrize("direction, expected", [((0.6, 0.8), [1, 0, 0, 0]), ((0.6, -0.8), [0, 1, 1, 0])])
def test_eigen_cam_is_the_first_component_signed_by_the_channel_mean(direction, expected):
    """Positions = mean + t * v with t = (2, -1, -1, 0): the first component is v, the projection +-t; its sign
    follows the channel mean, which moves with t * (v_0 + v_1) / 2."""
    t = torch.tensor([2.0, -1.0, -1.0, 0.0])
    positions = torch.tensor([5.0, 7.0]) + t[:, None] * torch.tensor(direction)[None]
    activation = positions.T.reshape(2, 2, 2)
    heat = eigen_cam(activation)
    assert torch.allclose(heat.flatten() / heat.max(), torch.tensor(expected, dtype=torch.float32), atol=1e-5)


def test_map_to_image_crops_the_letterbox_padding_and_normalises():
    """A 32x64 image in a 64x64 input has 16 padding rows above: their large value must not set the scale."""
    grid = torch.arange(64 * 64, dtype=torch.float32).view(64, 64) % 7
    grid[:16] = 100.0
    heat = map_to_image(grid, (64, 64), Letterbox(1.0, 1.0, 0, 16), (32, 64))
    part = grid[16:48].numpy()
    assert heat.shape == (32, 64) and heat.dtype == np.float32
    assert np.allclose(heat, part / part.max()) and heat.min() >= 0 and heat.max() == 1
    assert not map_to_image(torch.zeros(2, 2), (64, 64), Letterbox(1.0, 1.0, 0, 16), (32, 64)).any()


@pytest.fixture(scope="module")
def yolo(tmp_path_factory):
    return YOLO(make_checkpoint(tmp_path_factory.mktemp("cam") / "best.pth"), conf=0.3, amp="off")


def test_cams_are_of_the_detections_of_detect(yolo):
    """Same boxes, scores and classes, in order; each target is the place whose score is the detection's."""
    image = rgb(90, 160)
    found = yolo.detect(image)
    cams = yolo.cam(image, top_k=0)
    assert len(found) > 3 and len(cams) == len(found)
    assert np.array_equal(np.stack([c.box for c in cams]), found.boxes)
    assert np.array_equal([c.score for c in cams], found.scores)
    assert [c.class_id for c in cams] == found.class_ids.tolist()
    batch, _ = yolo.preprocess(image)
    outputs = yolo.forward(batch)
    for c in cams:
        assert float(target_score(outputs, yolo.anchors_mask, c.target)) == pytest.approx(c.score, abs=1e-6)
    assert [c.score for c in yolo.cam(image, top_k=3)] == [c.score for c in cams[:3]]


def test_each_detection_on_its_own_head(yolo):
    image = rgb(90, 160)
    p5, p4 = CamTarget(0, 0, 1, 1, 0), CamTarget(1, 0, 2, 3, 0)
    head_cams = target_cams(yolo.cam_detector(), image, [p5, p4], "gradcam")
    assert [c.layer for c in head_cams] == ["P5 head input", "P4 head input"]
    # the P5 head does not use the upsample site (it feeds only the P4 head): no gradient, an all-zero map
    at_site = target_cams(yolo.cam_detector(), image, [p5, p4], "gradcam", layer="upsample")
    assert not at_site[0].heat.any() and at_site[1].heat.max() == 1


@pytest.mark.parametrize("layer, message", [("nowhere", "unknown CAM layer 'nowhere'; valid: head"),
                                            ("backbone.resblock_body3", "gives tuple, not a feature map")])
def test_bad_layers_say_what_is_valid(yolo, layer, message):
    with pytest.raises(ValueError, match=message):
        yolo.cam(rgb(40, 40), layer=layer)


def test_bad_method_lists_the_methods(yolo):
    with pytest.raises(ValueError, match="valid: gradcam, layercam, eigencam"):
        yolo.cam(rgb(40, 40), method="scorecam")


def reference_cams(model: YoloBody, image: np.ndarray, target: CamTarget) -> dict:
    """The three CAMs written out from the papers' formulas with torch's autograd, for a 48x64 image in a 64x64
    input (scale 1, 8 grey rows above and below): {(layer, method): [48, 64] map divided by its maximum}."""
    batch = torch.full((1, 3, 64, 64), 128 / 255)
    batch[0, :, 8:56] = torch.from_numpy(image).permute(2, 0, 1) / 255
    batch.requires_grad_(True)
    seen = {}
    hooks = [model.attention_sites()["feat2"].register_forward_hook(lambda m, i, out: seen.update(feat2=out)),
             model.yolo_headP5.register_forward_pre_hook(lambda m, args: seen.update(head=args[0]))]
    with torch.enable_grad():
        p5 = model(batch)[0]
    for hook in hooks:
        hook.remove()
    cell = p5.view(1, len(ANCHORS_MASK[0]), 5 + len(CLASSES), *p5.shape[2:])[0, target.anchor, :, target.y, target.x]
    score = cell[4].sigmoid() * cell[5 + target.class_id].sigmoid()
    grads = dict(zip(seen, torch.autograd.grad(score, list(seen.values()), allow_unused=True)))
    a2, g2 = seen["feat2"][0].detach().double(), grads["feat2"][0].double()
    ah, gh = seen["head"][0].detach().double(), grads["head"][0].double()
    positions = a2.flatten(1).T.numpy()  # [h*w, C]: positions as samples
    centred = positions - positions.mean(axis=0)
    projection = centred @ np.linalg.svd(centred, full_matrices=False)[2][0]
    mean = positions.mean(axis=1)
    projection = projection if projection @ (mean - mean.mean()) >= 0 else -projection
    grid = {("feat2", "gradcam"): (g2.mean(dim=(1, 2))[:, None, None] * a2).sum(0),
            ("head", "layercam"): (gh.clamp(min=0) * ah).sum(0),
            ("feat2", "eigencam"): torch.from_numpy(projection).view(a2.shape[1:])}
    out = {}
    for key, value in grid.items():
        up = torch.nn.functional.interpolate(value.clamp(min=0)[None, None].float(), size=(64, 64), mode="bilinear",
                                             align_corners=False)[0, 0, 8:56].numpy()
        out[key] = up / up.max() if up.max() > 0 else up
    return out


@pytest.mark.parametrize("name", sorted(ATTENTION_BLOCKS))
def test_every_block_gives_the_hand_written_maps(name):
    """For a P5 target, Grad-CAM and Eigen-CAM at the block's own output (feat2) and LayerCAM at the head input
    equal reference_cams. A map may be all 0 (OSRA on a 2x2 map attends to one key, so its output is the same
    everywhere and has no principal component, and its Grad-CAM is flat whatever the channel weights; a fresh
    GCT gates by 1 + tanh(0) = 1, so its input and output are the same)."""
    torch.manual_seed(0)
    model = YoloBody(ANCHORS_MASK, 2, attention=name, input_size=64).eval()  # cbam_joint is fixed to one size
    detector = as_detector(model, anchors=ANCHORS, input_hw=(64, 64), class_names=CLASSES)
    image, target = rgb(48, 64, seed=3), CamTarget(0, 1, 1, 0, 1)
    expected = reference_cams(model, image, target)
    for (layer, method), heat in expected.items():
        [cam] = target_cams(detector, image, [target], method, layer)
        assert cam.heat.shape == (48, 64) and np.allclose(cam.heat, heat, atol=1e-4), (layer, method)
    assert max(heat.max() for heat in expected.values()) == pytest.approx(1.0)


def strip_scene(seed: int, h: int = 64, w: int = 512) -> np.ndarray:
    """A blocky grey texture with flat coloured rectangles, so that the activations follow the content."""
    rng = np.random.default_rng(seed)
    image = np.kron(rng.integers(60, 200, (h // 8, w // 8, 1)), np.ones((8, 8, 3))).astype(np.uint8)
    for _ in range(w // 32):
        y0, x0 = rng.integers(0, h - 16), rng.integers(0, w - 16)
        image[y0:y0 + rng.integers(12, 40), x0:x0 + rng.integers(12, 40)] = rng.integers(0, 256, 3)
    return image


def content_model(attention: str) -> YoloBody:
    """A fixed-seed random YoloBody whose BN statistics are measured on strip scenes, so that every layer
    sees unit-variance activations and its outputs respond to the image content."""
    torch.manual_seed(0)
    model = YoloBody(ANCHORS_MASK, 2, attention=attention)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # the plain average over the batch below
    batch = torch.from_numpy(np.stack([strip_scene(100 + i) for i in range(4)])).permute(0, 3, 1, 2)
    with torch.no_grad():
        model.train()(to_unit_float(batch))
    return model.eval()


def change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


@pytest.mark.parametrize("attention", ["cbam", "safm"])  # a gate block and a feature-building block
def test_cam_follows_the_content_under_its_box(attention):
    """THE acceptance test. Two 32x32 regions of a 64x512 scene: `near` around the P5 cell (1, 1), `far`
    around the P5 cell (1, 14). The CAM of the score at the near cell must change more than twice as much
    (mean absolute change of the normalised map) when the same noise patch covers `near` as when it covers
    `far`; and the CAM of the score at the far cell the other way round.

    Why it can fail: a constant map never changes (0 > 0 is false), a random map changes alike for both
    regions, a map that ignores its target (EigenCAM, the objectness map) cannot favour near for the one
    target and far for the other, and a target at the wrong cell (x and y swapped, the wrong head)
    follows the wrong region. LayerCAM is tested: its gradient at the P5 head input is zero outside the
    3x3 cells around the target, so on a random network the map stays local; Grad-CAM averages the
    gradient over the whole map and has this property only through what a trained network learned.
    Blocks that mix in global context reach the near cell from far away: on this random network SK's
    (branch weights from global pooling) near/far ratio was 1.0 to 1.7, CBAM's 2.2 to 15, SAFM's 2.3 to 3.4.
    """
    detector = as_detector(content_model(attention), anchors=ANCHORS, input_hw=(64, 512), class_names=CLASSES)
    image = strip_scene(0)
    regions = {"near": (32, 16, 64, 48), "far": (448, 16, 480, 48)}  # x1, y1, x2, y2
    targets = [CamTarget(0, 0, 1, 1, 0), CamTarget(0, 0, 1, 14, 0)]  # the P5 cells at their centres
    patch = np.random.default_rng(7).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    base = target_cams(detector, image, targets, "layercam")
    changed = {}
    for name, (x1, y1, x2, y2) in regions.items():
        covered = image.copy()
        covered[y1:y2, x1:x2] = patch
        changed[name] = target_cams(detector, covered, targets, "layercam")
    near_target = [change(base[0].heat, changed[name][0].heat) for name in ("near", "far")]
    far_target = [change(base[1].heat, changed[name][1].heat) for name in ("near", "far")]
    assert near_target[0] > 2 * near_target[1], near_target
    assert far_target[1] > 2 * far_target[0], far_target


@pytest.fixture(scope="module")
def variants(yolo, tmp_path_factory):
    """Three variants in one checkpoint format: the fixture's, another seed, and one that detects nothing."""
    folder = tmp_path_factory.mktemp("variants")
    other = YOLO(make_checkpoint(folder / "other.pth", seed=1), conf=0.3, amp="off")
    blind = YOLO(make_checkpoint(folder / "blind.pth", obj_bias=-30.0, seed=2), conf=0.3, amp="off")
    return [("first", yolo), ("other", other), ("blind", blind)]


def test_variants_explain_the_first_variants_top_detection(yolo, variants):
    image = rgb(90, 160)
    reference = detection_cams(yolo.cam_detector(), image, top_k=1)[0]
    same, matched = variant_cam(yolo.cam_detector(), image, reference)
    assert matched and same.target == reference.target and np.array_equal(same.heat, reference.heat)
    blind, matched = variant_cam(variants[2][1].cam_detector(), image, reference)
    assert not matched and len(variants[2][1].detect(image)) == 0
    # the cell of the reference box's centre, at the reference's head, anchor slot and class
    x1, y1, x2, y2 = reference.box * (96 / 160)  # 90x160 -> 54x96 in the 64x96 input, 5 rows of padding
    stride = 32 if reference.target.head == 0 else 16
    cell_y, cell_x = int(((y1 + y2) / 2 + 5) // stride), int((x1 + x2) / 2 // stride)
    assert blind.target == reference.target._replace(y=cell_y, x=cell_x)
    assert np.array_equal(blind.box, reference.box)


def test_variant_panel_has_one_column_per_variant(variants, tmp_path):
    """One row of panels, 320-pixel images with a 42-pixel colour scale, 4 white pixels apart, each showing its own
    variant (PNG: no JPEG ringing)."""
    panel = read_image(write_variant_cams(tmp_path / "cam_x.png", rgb(90, 160), variants)).astype(int)
    width, gap = 320 + 42, 4
    assert panel.shape[1] == 3 * width + 2 * gap and panel.shape[0] < 2 * 180  # one row of 180-pixel images
    for i in (1, 2):
        assert (panel[:, i * (width + gap) - gap:i * (width + gap)] == 255).all()
    cols = [panel[:, i * (width + gap):i * (width + gap) + width] for i in range(3)]
    assert all(np.abs(a - b).mean() > 1 for a, b in [(cols[0], cols[1]), (cols[1], cols[2]), (cols[0], cols[2])])


def test_variants_must_share_classes(yolo):
    model = YoloBody(ANCHORS_MASK, 3)
    with pytest.raises(ValueError, match="name other classes"):
        compare_variants(rgb(40, 40), [("a", yolo), ("b", model)], anchors=yolo.anchors, input_hw=(64, 96),
                         class_names=["x", "y", "z"])


def test_caption_names_class_score_method_and_layer(yolo):
    cam = yolo.cam(rgb(90, 160), method="layercam", layer="feat1", top_k=1)[0]
    assert cam_caption(cam, CLASSES, "phi2") == ["phi2", f"{CLASSES[cam.class_id]} {cam.score:.2f}",
                                                 "layercam @ feat1"]
    assert cam_layers(yolo.model, "feat1")[0].module is yolo.model.attention_sites()["feat1"]
