"""Every registered attention block: shape, parameter counts, gradients, ONNX export, use in the model."""
import io

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from nets.attention import ATTENTION_BLOCKS, build_attention
from nets.attn.registry import site_facts
from nets.attn.cbam import CBAM, ChannelAttention, ConvChannelAttention, SpatialAttention
from nets.attn.covpool import covariance_pool, sqrtm_newton_schulz
from nets.attn.fca import FcaAttention
from nets.attn.safm import adaptive_max_pool2d
from nets.attn.sk import SelectiveKernel
from nets.yolo import YoloBody
from tests.conftest import ANCHORS_MASK
from tests.helpers.attention import HAND_COUNTS, hand_count, make_block, n_params, perturb

ISSUE_BLOCKS = {"se", "se_max", "eca", "cbam", "cbam_eca", "ca", "sk", "gct", "srm", "fca", "rcan", "soca",
                "gsop", "triplet", "safm", "mfe", "osra", "enc", "cbam_joint"}


@pytest.mark.parametrize("make, expected", [
    (lambda: build_attention("se_max", 64, rd_ratio=9), 896),
    (lambda: build_attention("eca", 64), 3),
    (lambda: SelectiveKernel(64), 8_768),
    (lambda: ChannelAttention(64, rd_ratio=4), 2_048),
    (lambda: ConvChannelAttention(64), 3),
    (lambda: SpatialAttention(5), 50),
    (lambda: build_attention("cbam", 64, rd_ratio=9, kernel_size=5), 946),
    (lambda: build_attention("cbam_eca", 64, kernel_size=5), 53),
    # the seed's joint CBAMBlock(channel=64, reduction=8, kernel_size=7, HW=7*7): 1,024 + 99 + 1,808
    (lambda: build_attention("cbam_joint", 64, map_size=(7, 7)), 2_931),
], ids=["se_max_r9", "eca", "sk", "mlp_channel_r4", "conv_channel", "spatial_k5", "cbam_r9_k5", "cbam_eca_k5",
        "cbam_joint_7x7"])
def test_seed_parameter_counts_at_64_channels(make, expected):
    assert n_params(make()) == expected


def test_registry_holds_every_block_of_the_issue():
    assert ISSUE_BLOCKS <= set(ATTENTION_BLOCKS)
    assert set(HAND_COUNTS) == set(ATTENTION_BLOCKS), "add a hand-worked parameter count for each new block"


@pytest.mark.parametrize("name", sorted(ATTENTION_BLOCKS))
@pytest.mark.parametrize("channels", [128, 256, 512])
def test_block_keeps_shape_on_all_map_sizes_and_has_hand_counted_params(name, channels):
    sized = "map_size" in site_facts(name)  # such a block is built for each map size
    block = make_block(name, channels).eval()
    with torch.no_grad():
        for h, w in [(13, 13), (26, 26), (13, 9), (4, 4), (2, 2), (1, 1)]:
            block = make_block(name, channels, h, w).eval() if sized else block
            assert n_params(block) == hand_count(name, channels, h * w)
            x = torch.randn(1, channels, h, w)
            y = block(x)
            assert y.shape == x.shape, f"{name} at {h}x{w}"
            assert torch.isfinite(y).all(), f"{name} at {h}x{w}"


@pytest.mark.parametrize("name", sorted(ATTENTION_BLOCKS))
def test_gradients_reach_every_parameter_and_the_input(name):
    block = perturb(make_block(name, 32, 6, 5)).train()
    x = torch.randn(4, 32, 6, 5, requires_grad=True)
    (block(x) * torch.randn(4, 32, 6, 5)).sum().backward()
    for pname, p in block.named_parameters():
        assert p.grad is not None, f"{name}.{pname} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{name}.{pname} gradient is zero"
    assert x.grad.abs().sum() > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ATTENTION_BLOCKS))
def test_onnx_export_matches_onnxruntime(name):
    block = perturb(make_block(name, 32, 13, 9)).eval()
    x = torch.randn(2, 32, 13, 9)  # 13x9: SAFM's 6x4 and 3x2 pools do not divide it
    buffer = io.BytesIO()
    torch.onnx.export(block, (x,), buffer, opset_version=17, input_names=["x"], dynamo=False)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        expected = block(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def plain_model_params():
    return n_params(YoloBody(ANCHORS_MASK, 2))


@pytest.mark.parametrize("name", sorted(ATTENTION_BLOCKS))
def test_model_runs_with_the_block_at_every_site(name, plain_model_params):
    spec = ",".join(f"{site}={name}" for site in YoloBody.site_channels)
    model = YoloBody(ANCHORS_MASK, 2, attention=spec, input_size=64).train()
    map_areas = {site: (64 // stride) ** 2 for site, stride in YoloBody.site_strides.items()}
    added = sum(hand_count(name, c, map_areas[site]) for site, c in YoloBody.site_channels.items())
    assert n_params(model) - plain_model_params == added
    with torch.no_grad():
        out0, out1 = model(torch.randn(2, 3, 64, 64))  # sites see 8x8 down to 2x2 maps
    assert out0.shape == (2, 21, 2, 2) and out1.shape == (2, 21, 4, 4)
    assert torch.isfinite(out0).all() and torch.isfinite(out1).all()


@pytest.mark.parametrize("h, w", [(1, 1), (2, 2), (7, 7), (13, 13), (26, 26), (13, 9)])
def test_fca_folded_filters_equal_pooling_to_7x7_then_dct(h, w):
    block = FcaAttention(32)
    x = torch.randn(2, 32, h, w)
    fast = (x * block.filters_for(h, w)).sum(dim=(2, 3))
    slow = (F.adaptive_avg_pool2d(x, 7) * block.dct_weight).sum(dim=(2, 3))
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    # the first group uses frequency (0, 0): a constant 1/7 filter, i.e. 7 x global average pooling
    torch.testing.assert_close(slow[:, :2], 7 * F.adaptive_avg_pool2d(x, 7).mean(dim=(2, 3))[:, :2])


@pytest.mark.parametrize("size, out", [((13, 9), (6, 4)), ((26, 26), (3, 3)), ((5, 7), (2, 3)), ((4, 4), (2, 2))])
def test_safm_export_pooling_equals_adaptive_max_pool(size, out, monkeypatch):
    x = torch.randn(2, 3, *size)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    torch.testing.assert_close(adaptive_max_pool2d(x, out), F.adaptive_max_pool2d(x, out))


def test_newton_schulz_square_root_squares_back_to_the_covariance():
    cov = covariance_pool(torch.randn(2, 16, 9, 9))
    root = sqrtm_newton_schulz(cov, iterations=15)
    torch.testing.assert_close(root @ root, cov, rtol=1e-3, atol=1e-4)
    zero = sqrtm_newton_schulz(torch.zeros(1, 8, 8))
    assert torch.isfinite(zero).all() and zero.abs().max() == 0


def test_fresh_gct_is_the_identity():
    x = torch.randn(2, 64, 5, 5)
    torch.testing.assert_close(build_attention("gct", 64)(x), x)


def test_cbam_eca_names_and_bad_options():
    names = list(build_attention("cbam_eca", 64).state_dict())
    assert names == ["channelattention.conv.weight", "spatialattention.conv1.weight"]
    with pytest.raises(ValueError, match="mlp"):
        CBAM(64, channel_attn="fc")
    with pytest.raises(ValueError, match="multiple of groups"):
        SelectiveKernel(48)
