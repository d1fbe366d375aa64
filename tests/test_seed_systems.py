"""The seed systems that are more than a gate at one site: EncNet's SE-loss head (enc), the joint
channel-spatial CBAM fixed to one map size (cbam_joint), and DIA across the repeated layers of a CSP stage."""
import pytest
import torch
import torch.nn.functional as F

from nets.attention import build_attention
from nets.attn.dia import DIA
from nets.attn.enc import EncModule
from nets.darknet import expected_floats
from nets.fuse import fuse_model
from nets.yolo import YoloBody, attention_to_str, parse_attention
from tests.conftest import ANCHORS_MASK
from tests.helpers.attention import HAND_COUNTS, TOL, bn, linear, n_params, perturb
from tests.helpers.models import random_bn
from utils.deploy.export import export_onnx, max_abs_error
from utils.engine.checkpoint import CHECKPOINT_FORMAT, model_from_weights, save_atomic


def dia_count(c, r=4):
    # DIANet's LSTMCell(c, c, 1): input and hidden maps, each Linear c -> c/r and c/r -> 4c, with biases
    return 2 * ((c * (c // r) + c // r) + ((c // r) * 4 * c + 4 * c))


@pytest.mark.parametrize("make, expected", [
    (lambda: DIA(64), 10_784), (lambda: DIA(128), 42_048), (lambda: DIA(256), 166_016),  # the seed's LSTMCell(C, C, 1)
    # EncNet's head: EncModule(512, nclass=21, ncodes=32, se_loss=True): conv + BN 263,168, codewords + scales
    # 16,416, BN1d 64, fc 262,656, SE-loss head 10,773
    (lambda: EncModule(512, codes=32, num_classes=21), 553_077),
], ids=["dia_64", "dia_128", "dia_256", "enc_512_21_classes"])
def test_seed_parameter_counts(make, expected):
    assert n_params(make()) == expected


def test_dia_hand_count():
    assert all(n_params(DIA(c)) == dia_count(c) for c in (32, 64, 128))


# ---- DIA: one LSTM cell per CSP stage, shared by conv2 and conv3 -------------------------------------

def basic_conv_ref(x, m):
    """BasicConv: bias-free conv (padding k // 2), BN, LeakyReLU(0.1)."""
    y = F.conv2d(x, m.conv.weight, stride=m.conv.stride, padding=m.conv.kernel_size[0] // 2)
    return F.leaky_relu(bn(y, m.bn), 0.1)


def small_cell_ref(v, seq):
    # DIANet's small_cell: Linear C -> C/4 with bias, ReLU, Linear -> 4C with bias
    return linear(torch.relu(linear(v, seq[0].weight, seq[0].bias)), seq[2].weight, seq[2].bias)


def dia_step_ref(cell, y, h, c):
    # gates from GAP(y) and h, order (input, forget, cell, output); c' = s(f) c + s(i) tanh(g);
    # h' = s(o) s(c') (DIANet's sigmoid in place of tanh); the layer's output becomes y + y * h'
    gates = small_cell_ref(y.mean(dim=(2, 3)), cell.input_map) + small_cell_ref(h, cell.hidden_map)
    n = h.shape[1]
    i, f, g, o = (gates[:, k * n:(k + 1) * n] for k in range(4))
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.sigmoid(c)
    return y + y * h[:, :, None, None], h, c


def resblock_with_dia_ref(block, x):
    # conv1; its second half -> conv2 -> DIA step from a zero state -> conv3 -> DIA step with the state
    # conv2 left; cat([conv3, conv2]) -> conv4 (feat); cat([conv1, feat]) -> 2x2 max-pool
    cell = block.stage_att.cell
    x1 = basic_conv_ref(x, block.conv1)
    half = x1.shape[1] // 2
    zeros = torch.zeros(x.shape[0], half, dtype=x.dtype)
    y2, h, c = dia_step_ref(cell, basic_conv_ref(x1[:, half:], block.conv2), zeros, zeros)
    y3, _, _ = dia_step_ref(cell, basic_conv_ref(y2, block.conv3), h, c)
    feat = basic_conv_ref(torch.cat([y3, y2], dim=1), block.conv4)
    return F.max_pool2d(torch.cat([x1, feat], dim=1), 2), feat


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_csp_block_with_dia_equals_its_re_statement(stage):
    model = YoloBody(ANCHORS_MASK, 2, attention=f"stage{stage}=dia")
    block = perturb(getattr(model.backbone, f"resblock_body{stage}"), seed=stage).double().eval()
    x = torch.randn(2, block.conv1.conv.in_channels, 8, 6, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    with torch.no_grad():
        (got, got_feat), (expected, expected_feat) = block(x), resblock_with_dia_ref(block, x)
    torch.testing.assert_close(got, expected, **TOL)
    torch.testing.assert_close(got_feat, expected_feat, **TOL)


def test_dia_sits_at_each_stage_and_carries_its_state_from_conv2_to_conv3():
    model = YoloBody(ANCHORS_MASK, 2, attention="dia").eval()
    assert model.attention == "dia"
    added = sum(map(dia_count, YoloBody.stage_channels.values()))
    assert n_params(model) - n_params(YoloBody(ANCHORS_MASK, 2)) == added
    calls = {}
    for site, unit in model.stage_sites().items():
        assert isinstance(unit, DIA)
        unit.register_forward_hook(lambda mod, args, out, site=site: calls.setdefault(site, []).append((args, out)))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert list(calls) == list(YoloBody.stage_channels)
    for site, ((args1, out1), (args2, _)) in calls.items():
        assert args1[0].shape[1] == args2[0].shape[1] == YoloBody.stage_channels[site]
        assert args1[1] is None and args2[1] is out1[1]  # the second layer gets the state the first left
    # the darknet layout (the convs and their order) is unchanged
    assert expected_floats(model) == expected_floats(YoloBody(ANCHORS_MASK, 2))


@pytest.mark.parametrize("spec, placed", [
    ("dia", {"stage1": "dia", "stage2": "dia", "stage3": "dia"}),
    ("feat1=se,stage2=dia", {"feat1": "se", "stage2": "dia"}),
    ("cbam", {"feat1": "cbam", "feat2": "cbam", "upsample": "cbam"}),
])
def test_stage_specs_parse_and_round_trip(spec, placed):
    placement = parse_attention(spec)
    assert {site: name for site, name in placement.items() if name != "none"} == placed
    assert set(placement) == set(YoloBody.site_channels) | set(YoloBody.stage_channels)
    assert attention_to_str(placement) == spec and parse_attention(attention_to_str(placement)) == placement


@pytest.mark.parametrize("bad, message", [("feat1=dia", "goes at a stage site"), ("stage1=se", "takes a stage block"),
                                          ("stage4=dia", "valid sites: .*stage3")])
def test_stage_blocks_only_at_stage_sites(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_attention(bad)


# ---- enc: the encoding gate and its SE-loss head ------------------------------------------------------

def test_enc_with_se_loss_has_a_class_head_per_block_sized_by_the_model():
    plain = YoloBody(ANCHORS_MASK, 5, attention="enc")
    model = YoloBody(ANCHORS_MASK, 5, attention="enc", se_loss=True)
    assert all(block.se_head is None for block in plain.attention_sites().values() if isinstance(block, EncModule))
    heads = {site: model.attention_sites()[site].se_head for site in YoloBody.default_sites}
    assert all(head.out_features == 5 and head.in_features == YoloBody.site_channels[s] for s, head in heads.items())
    added = sum(c * 5 + 5 for s, c in YoloBody.site_channels.items() if s in YoloBody.default_sites)
    assert n_params(model) - n_params(plain) == added
    assert n_params(plain) - n_params(YoloBody(ANCHORS_MASK, 5)) == sum(
        HAND_COUNTS["enc"](YoloBody.site_channels[s]) for s in YoloBody.default_sites)


def test_collect_se_logits_gives_each_heads_logits_of_the_encoded_vector():
    torch.manual_seed(0)
    model = YoloBody(ANCHORS_MASK, 3, attention="feat2=enc,csp1=enc", se_loss=True).eval()
    blocks = [model.backbone.csp1_att, model.feat2_att]  # the order they run in
    seen = []
    for block in blocks:
        block.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    with torch.no_grad(), model.collect_se_logits() as logits:
        model(torch.randn(2, 3, 64, 64))
    assert [t.shape for t in logits] == [(2, 3), (2, 3)]
    with torch.no_grad():
        for got, block, x in zip(logits, blocks, seen):
            torch.testing.assert_close(got, block.se_head(block.encode(x)))
        model(torch.randn(1, 3, 64, 64))
    assert len(logits) == 2  # outside the `with` block nothing is collected any more


def test_se_loss_trains_the_encoding_and_the_head():
    model = YoloBody(ANCHORS_MASK, 3, attention="feat1=enc", se_loss=True)
    with model.collect_se_logits() as logits:
        model(torch.randn(2, 3, 64, 64))
    present = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # classes present in each image
    F.binary_cross_entropy_with_logits(logits[0], present).backward()
    block = model.feat1_att
    for name in ("se_head.weight", "encoding.3.codewords", "encoding.3.scale", "encoding.0.weight"):
        grad = block.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert block.fc[0].weight.grad is None  # the gate is not on the SE-loss path


def test_se_loss_needs_an_enc_block_and_nothing_is_collected_without_it():
    with pytest.raises(ValueError, match="se_loss needs an enc block"):
        YoloBody(ANCHORS_MASK, 3, attention="se", se_loss=True)
    model = YoloBody(ANCHORS_MASK, 3, attention="enc")
    with model.collect_se_logits() as logits:
        model(torch.randn(1, 3, 64, 64))
    assert logits == []


def write_checkpoint(path, model, input_size, **meta):
    save_atomic({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "class_names": ["a", "b"],
                 "anchors_mask": ANCHORS_MASK, "attention": model.attention, "input_size": list(input_size),
                 **meta}, path)
    return path


def test_checkpoint_rebuilds_se_heads_and_fixed_size_blocks(tmp_path):
    torch.manual_seed(0)
    model = random_bn(YoloBody(ANCHORS_MASK, 2, attention="feat1=enc,csp2=cbam_joint", input_size=(64, 96),
                               se_loss=True))
    loaded, meta = model_from_weights(write_checkpoint(tmp_path / "m.pth", model, (64, 96), se_loss=True))
    assert meta["se_loss"] and loaded.feat1_att.se_head is not None
    assert loaded.backbone.csp2_att.map_size == (4, 6) and loaded.fixed_input_size == (64, 96)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model(x))


# ---- cbam_joint: one map size, taken from the model's input size ---------------------------------------

def test_cbam_joint_blocks_get_their_sites_map_sizes():
    spec = ",".join(f"{site}=cbam_joint" for site in YoloBody.site_channels)
    model = YoloBody(ANCHORS_MASK, 2, attention=spec, input_size=(64, 96)).eval()
    seen = {}
    for site, block in model.attention_sites().items():
        block.register_forward_hook(lambda mod, args, out, site=site: seen.__setitem__(site, tuple(args[0].shape[-2:])))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 96))
    assert seen == {site: block.map_size for site, block in model.attention_sites().items()}
    assert seen == {site: (64 // s, 96 // s) for site, s in YoloBody.site_strides.items()}


def test_cbam_joint_refuses_another_size():
    with pytest.raises(ValueError, match="needs the map size"):
        build_attention("cbam_joint", 64)
    with pytest.raises(ValueError, match="give the model its input size"):
        YoloBody(ANCHORS_MASK, 2, attention="feat1=cbam_joint")
    model = YoloBody(ANCHORS_MASK, 2, attention="feat1=cbam_joint", input_size=64).eval()
    assert model(torch.randn(1, 3, 64, 64))[0].shape == (1, 21, 2, 2)
    with pytest.raises(ValueError, match="takes 64x64 inputs only, got 96x96"):
        model(torch.randn(1, 3, 96, 96))
    with pytest.raises(ValueError, match="built for 4x4 maps .* got 6x6"):
        model.feat1_att(torch.randn(1, 256, 6, 6))
    assert YoloBody(ANCHORS_MASK, 2, attention="se", input_size=64).fixed_input_size is None  # other blocks: any size


@pytest.mark.slow
def test_onnx_export_of_a_model_with_every_seed_system_matches_torch(tmp_path):
    torch.manual_seed(0)
    spec = "feat1=enc,csp2=cbam_joint,upsample=cbam_joint,stage2=dia"
    model = random_bn(YoloBody(ANCHORS_MASK, 2, attention=spec, fusion="msf", input_size=(64, 96)))
    backbone = model.backbone
    for block in (model.feat1_att, backbone.csp2_att, model.upsample_att, backbone.resblock_body2.stage_att):
        perturb(block)
    model.eval()
    path = export_onnx(fuse_model(model), tmp_path / "m.onnx", (64, 96), check=False)
    for batch in (1, 3):
        assert max_abs_error(model, path, torch.rand(batch, 3, 64, 96)) < 1e-4
