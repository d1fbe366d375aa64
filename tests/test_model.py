import pytest
import torch

from nets.summary import count_gflops, count_parameters
from nets.yolo import YoloBody
from tests.conftest import ANCHORS_MASK


@pytest.mark.parametrize("phi", range(5))
@pytest.mark.parametrize("size", [320, 416, 608])
@pytest.mark.parametrize("batch", [1, 2])
def test_output_shapes(phi, size, batch):
    model = YoloBody(ANCHORS_MASK, 20, phi=phi).eval()
    with torch.no_grad():
        out0, out1 = model(torch.randn(batch, 3, size, size))
    assert out0.shape == (batch, 75, size // 32, size // 32)
    assert out1.shape == (batch, 75, size // 16, size // 16)


def test_non_square_input():
    out0, out1 = YoloBody(ANCHORS_MASK, 3).eval()(torch.randn(1, 3, 256, 384))
    assert out0.shape == (1, 24, 8, 12) and out1.shape == (1, 24, 16, 24)


@pytest.mark.parametrize("phi", range(5))
def test_gradients_reach_first_conv(phi):
    model = YoloBody(ANCHORS_MASK, 2, phi=phi)
    out0, out1 = model(torch.randn(2, 3, 128, 128))
    (out0.square().mean() + out1.square().mean()).backward()
    grad = model.backbone.conv1.conv.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_parameter_count_matches_darknet():
    model = YoloBody(ANCHORS_MASK, 80, phi=0)
    assert count_parameters(model) == 6_056_606
    running = sum(b.numel() for name, b in model.named_buffers() if "running_" in name)
    # darknet's yolov4-tiny.weights holds 6,062,814 floats: parameters plus BN running statistics
    assert count_parameters(model) + running == 6_062_814


def test_feature_shapes_at_416():
    feat1, feat2 = YoloBody(ANCHORS_MASK, 20).backbone(torch.randn(1, 3, 416, 416))
    assert feat1.shape == (1, 256, 26, 26) and feat2.shape == (1, 512, 13, 13)


def test_attention_argument_overrides_phi():
    model = YoloBody(ANCHORS_MASK, 20, phi=1, attention="eca")
    assert model.attention == "eca"
    assert type(model.feat1_att).__name__ == "ECA"


def test_per_site_attention_spec():
    model = YoloBody(ANCHORS_MASK, 20, attention="feat1=cbam,csp2=se")
    assert type(model.feat1_att).__name__ == "CBAM"
    assert isinstance(model.feat2_att, torch.nn.Identity)
    assert type(model.backbone.csp2_att).__name__ == "SEBlock"
    assert model.attention == "feat1=cbam,csp2=se"
    out0, out1 = model.eval()(torch.randn(1, 3, 128, 128))
    assert out0.shape == (1, 75, 4, 4) and out1.shape == (1, 75, 8, 8)


@pytest.mark.parametrize("bad, message", [(7, "valid phi values"), ("senet", "valid names"),
                                          ("feat9=se", "valid sites"), ("feat1=se=cbam", "site=name")])
def test_unknown_attention_fails_clearly(bad, message):
    with pytest.raises(ValueError, match=message):
        YoloBody(ANCHORS_MASK, 20, attention=bad)


def test_unknown_phi_fails_clearly():
    with pytest.raises(ValueError, match=r"0 \(none\).*4 \(ca\)"):
        YoloBody(ANCHORS_MASK, 20, phi=5)


def test_gflops_counted():
    model = YoloBody(ANCHORS_MASK, 80, phi=0)
    # darknet reports 6.910 BFLOPs for yolov4-tiny at 416; the conv/matmul FLOPs are within 1% of it
    assert count_gflops(model, 416) == pytest.approx(6.91, rel=0.01)


def test_summary_command_prints_every_phi(capsys):
    from nets.summary import main
    assert main(["--input-size", "128"]) == 0
    out = capsys.readouterr().out
    for name in ("none", "se", "cbam", "eca", "ca"):
        assert f"({name})" in out


def test_head_biases_start_at_the_priors():
    import math
    model = YoloBody(ANCHORS_MASK, 5)
    p5 = model.yolo_headP5[1].bias.view(3, 10)
    p4 = model.yolo_headP4[1].bias.view(3, 10)
    # 8 objects expected per 416x416 image: 13*13 cells at stride 32, 26*26 at stride 16
    assert torch.allclose(p5[:, 4], torch.full((3,), math.log(8 / 169)))
    assert torch.allclose(p4[:, 4], torch.full((3,), math.log(8 / 676)))
    # class prior 0.6 / (C - 0.99) = 0.6 / 4.01
    assert torch.allclose(p5[:, 5:], torch.full((3, 5), math.log(0.6 / 4.01)))
    assert (p5[:, :4] != 0).any()  # box biases keep PyTorch's default init


def test_conv_init_statistics():
    # PyTorch's default conv init (kaiming uniform, a=sqrt(5)) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)):
    # std 1/sqrt(3 fan_in), not the reference's normal(0, 0.02) that starves deep layers of signal
    torch.manual_seed(0)
    model = YoloBody(ANCHORS_MASK, 5)
    w = model.backbone.conv3.conv.weight  # 512 x 512 x 3 x 3
    fan_in = 512 * 9
    assert w.std().item() == pytest.approx(1 / (3 * fan_in) ** 0.5, rel=0.02)
    assert w.abs().max().item() <= 1 / fan_in ** 0.5
    bn = model.backbone.conv3.bn
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_model_facts_match_what_it_computes():
    # every site's channel count is what flows there, and strides are the heads' input pixels per cell
    model = YoloBody(ANCHORS_MASK, 2, attention=",".join(f"{s}=se" for s in YoloBody.site_channels)).eval()
    sites = model.attention_sites()
    assert list(sites) == list(YoloBody.site_channels) == ["feat1", "feat2", "upsample", "csp1", "csp2", "csp3"]
    seen, sizes = {}, {}
    for site, block in sites.items():
        assert type(block).__name__ == "SEBlock"
        block.register_forward_hook(lambda mod, args, out, site=site: seen.__setitem__(site, args[0].shape[1]))
        block.register_forward_hook(lambda mod, args, out, site=site: sizes.__setitem__(site, args[0].shape[2:]))
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 128, 192))
    assert seen == dict(YoloBody.site_channels)
    assert sizes == {site: (128 // s, 192 // s) for site, s in YoloBody.site_strides.items()}
    assert [(128 // out.shape[2], 192 // out.shape[3]) for out in outputs] == [(s, s) for s in YoloBody.strides]


def test_attention_sites_are_identities_without_attention():
    model = YoloBody(ANCHORS_MASK, 2)
    sites = model.attention_sites()
    assert all(isinstance(m, torch.nn.Identity) for m in sites.values())
    assert sites["csp2"] is model.backbone.csp2_att and sites["upsample"] is model.upsample_att


def test_stage_facts_match_the_layers_they_follow():
    # each stage site's width is conv2's and conv3's output width in that CSP block
    model = YoloBody(ANCHORS_MASK, 2, attention="dia")
    for i, (site, width) in enumerate(YoloBody.stage_channels.items(), 1):
        block = getattr(model.backbone, f"resblock_body{i}")
        assert block.conv2.conv.out_channels == block.conv3.conv.out_channels == width
        assert model.stage_sites()[site] is block.stage_att
    assert all(type(m).__name__ == "NoStageAttention" for m in YoloBody(ANCHORS_MASK, 2).stage_sites().values())
