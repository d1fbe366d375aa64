"""The FPN merge before the P4 head (YoloBody fusion=concat|gated|msf): the two-input blocks against their
seed forms, the model's widths and parameters, checkpoints, the summary, variants and ONNX export."""
import pytest
import torch
import torch.nn.functional as F

from nets.attn.gated import GatedFusion
from nets.attn.mfe import SelectiveFusion
from nets.attn.registry import FUSION_NAMES, build_fusion
from nets.fuse import fuse_model
from nets.summary import main as summary_main
from nets.yolo import YoloBody, split_fusion
from tests.conftest import ANCHORS_MASK
from tests.helpers.attention import TOL, bn, gate, linear, n_params, perturb
from tests.helpers.models import random_bn
from utils.deploy.export import export_onnx, max_abs_error
from utils.engine.checkpoint import CHECKPOINT_FORMAT, load_matching, model_from_weights, save_atomic

BRANCH, LATERAL = YoloBody.site_channels["upsample"], YoloBody.site_channels["feat1"]  # 128, 256


def basic_conv_count(c_in, c_out, k):
    return c_in * c_out * k * k + 2 * c_out  # bias-free conv + BN


# what each merge adds besides the P4 head: the 1x1 BasicConv widening the branch 128 -> 256, then the block
MERGE_COUNTS = {
    "concat": 0,
    "gated": basic_conv_count(BRANCH, LATERAL, 1) + 2 * (LATERAL * LATERAL + LATERAL),  # two 1x1 convs with bias
    "msf": basic_conv_count(BRANCH, LATERAL, 1) + 2 * LATERAL * LATERAL + basic_conv_count(LATERAL, LATERAL, 1),
}
HEAD_INPUT = {"concat": BRANCH + LATERAL, "gated": LATERAL, "msf": LATERAL}


@pytest.mark.parametrize("make, expected", [
    (lambda: GatedFusion(64), 8_320),  # the seed's gatedFusion(dim=64): two Linear(64, 64) with bias
    (lambda: SelectiveFusion(64, num_inputs=4), 20_608),  # MSFblock(in_channels=64): 4 SE 1x1 + 1x1 + BN
    (lambda: SelectiveFusion(3, num_inputs=4), 51),  # MSFblock(in_channels=3), the seed's run
], ids=["gated_64", "msf_64", "msf_3"])
def test_seed_parameter_counts(make, expected):
    assert n_params(make()) == expected


def gated_ref(block, x1, x2):
    # z = sigmoid(W1 x1 + b1 + W2 x2 + b2) at every position; z * x1 + (1 - z) * x2
    z = torch.sigmoid(F.conv2d(x1, block.fc1.weight, block.fc1.bias) + F.conv2d(x2, block.fc2.weight, block.fc2.bias))
    return z * x1 + (1 - z) * x2


def msf_ref(block, *inputs):
    # per input: GAP, its own bias-free 1x1 conv, sigmoid; softmax across the inputs per channel; weighted
    # sum; 1x1 conv + BN + ReLU
    scores = torch.stack([torch.sigmoid(linear(x.mean(dim=(2, 3)), conv.weight)) for x, conv in zip(inputs, block.se)])
    weights = torch.exp(scores) / torch.exp(scores).sum(dim=0)  # M,b,c
    fused = sum(gate(x, w) for x, w in zip(inputs, weights))
    conv, norm = block.project[0], block.project[1]
    return torch.relu(bn(F.conv2d(fused, conv.weight), norm))


@pytest.mark.parametrize("name, make, reference, n_inputs", [
    ("gated", lambda c: GatedFusion(c), gated_ref, 2),
    ("msf2", lambda c: SelectiveFusion(c), msf_ref, 2),
    ("msf4", lambda c: SelectiveFusion(c, num_inputs=4), msf_ref, 4),
])
@pytest.mark.parametrize("shape", [(2, 32, 13, 9), (3, 16, 1, 1)], ids=lambda s: "x".join(map(str, s)))
def test_fusion_block_equals_its_re_statement(name, make, reference, n_inputs, shape):
    block = perturb(make(shape[1]), seed=len(name)).double().eval()
    gen = torch.Generator().manual_seed(n_inputs)
    inputs = [torch.randn(*shape, generator=gen, dtype=torch.float64) for _ in range(n_inputs)]
    with torch.no_grad():
        got, expected = block(*inputs), reference(block, *inputs)
    assert got.shape == inputs[0].shape
    torch.testing.assert_close(got, expected, **TOL)


def test_msf_weights_are_a_softmax_across_the_inputs():
    block = perturb(SelectiveFusion(8, num_inputs=3))
    weights = block.input_weights(*[torch.randn(2, 8, 5, 5) for _ in range(3)])
    assert weights.shape == (2, 8, 3) and (weights > 0).all()
    torch.testing.assert_close(weights.sum(dim=2), torch.ones(2, 8))
    with pytest.raises(ValueError, match="built for 3 inputs, got 2"):
        block(torch.randn(1, 8, 2, 2), torch.randn(1, 8, 2, 2))


@pytest.mark.parametrize("fusion", FUSION_NAMES)
def test_model_merge_widths_and_parameters(fusion):
    plain = YoloBody(ANCHORS_MASK, 2)
    model = YoloBody(ANCHORS_MASK, 2, fusion=fusion)
    assert model.fusion == fusion and model.yolo_headP4[0].conv.in_channels == HEAD_INPUT[fusion]
    head_change = basic_conv_count(HEAD_INPUT[fusion], 256, 3) - basic_conv_count(BRANCH + LATERAL, 256, 3)
    assert n_params(model) - n_params(plain) == MERGE_COUNTS[fusion] + head_change
    out0, out1 = model.eval()(torch.randn(2, 3, 64, 96))
    assert out0.shape == (2, 21, 2, 3) and out1.shape == (2, 21, 4, 6)


@pytest.mark.parametrize("fusion", ["gated", "msf"])
def test_merge_gets_gradients_and_changes_the_p4_output_only(fusion):
    torch.manual_seed(0)
    model = YoloBody(ANCHORS_MASK, 2, fusion=fusion)
    out0, out1 = model(torch.randn(2, 3, 64, 64))
    out1.square().mean().backward()
    for name, p in model.p4_merge.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.yolo_headP5[1].weight.grad is None  # out0 does not pass through the merge


def test_concat_default_keeps_the_state_dict_names():
    keys = list(YoloBody(ANCHORS_MASK, 20).state_dict())
    assert keys == list(YoloBody(ANCHORS_MASK, 20, fusion="concat").state_dict())
    assert not any(k.startswith("p4_merge") for k in keys)
    assert YoloBody(ANCHORS_MASK, 20).state_dict()["yolo_headP4.0.conv.weight"].shape == (256, 384, 3, 3)


def test_unknown_fusion_fails_clearly():
    with pytest.raises(ValueError, match="unknown fusion 'sum'; valid names: concat, gated, msf"):
        YoloBody(ANCHORS_MASK, 2, fusion="sum")
    with pytest.raises(ValueError, match="has no block"):
        build_fusion("concat", 8)


def test_concat_weights_load_into_a_gated_model_except_the_p4_head_input():
    donor = YoloBody(ANCHORS_MASK, 2).state_dict()  # what a darknet file or a reference .pth gives
    model = YoloBody(ANCHORS_MASK, 2, fusion="gated")
    loaded, skipped = load_matching(model, donor)
    assert "yolo_headP4.0.conv.weight (shape (256, 384, 3, 3) in file, (256, 256, 3, 3) in model)" in skipped
    merge_tensors = [k for k in model.state_dict() if k.startswith("p4_merge") and "num_batches" not in k]
    assert sorted(s.split(" ")[0] for s in skipped) == sorted(["yolo_headP4.0.conv.weight"] + merge_tensors)
    assert loaded == len(donor) - 1


def write_checkpoint(path, model, **meta):
    save_atomic({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "class_names": ["a", "b"],
                 "anchors_mask": ANCHORS_MASK, "attention": model.attention, "input_size": [64, 64], **meta}, path)
    return path


def test_checkpoint_carries_its_fusion_and_old_ones_mean_concat(tmp_path):
    gated = random_bn(YoloBody(ANCHORS_MASK, 2, fusion="gated"))
    model, meta = model_from_weights(write_checkpoint(tmp_path / "g.pth", gated, fusion="gated"))
    assert meta["fusion"] == "gated" and model.fusion == "gated"
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), gated(x))
    old, meta = model_from_weights(write_checkpoint(tmp_path / "old.pth", YoloBody(ANCHORS_MASK, 2)))
    assert meta["fusion"] == "concat" and old.fusion == "concat"
    with pytest.raises(ValueError, match="fusion 'concat'.*--fusion"):
        model_from_weights(write_checkpoint(tmp_path / "unnamed.pth", gated))  # a gated model without the key


def test_summary_lists_every_merge(capsys):
    assert summary_main(["--input-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "phi 0 (none), fusion gated" in out and "phi 0 (none), fusion msf" in out
    assert summary_main(["--input-size", "64", "--attention", "se", "--fusion", "all"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    params = {row[2]: int(row[3].replace(",", "")) for row in rows}  # "se, fusion NAME PARAMS GFLOPS"
    base = params["concat"]
    for fusion in ("gated", "msf"):
        head_change = basic_conv_count(LATERAL, 256, 3) - basic_conv_count(BRANCH + LATERAL, 256, 3)
        assert params[fusion] - base == MERGE_COUNTS[fusion] + head_change


@pytest.mark.parametrize("variant, expected", [
    ("fusion=gated", ("none", "gated")), ("feat1=se,fusion=msf", ("feat1=se", "msf")), ("cbam", ("cbam", "concat")),
    ("3", ("3", "concat")), ("csp1=eca, Fusion = msf", ("csp1=eca", "msf")),
])
def test_split_fusion(variant, expected):
    assert split_fusion(variant) == expected


@pytest.mark.parametrize("bad, message", [("fusion=gated,fusion=msf", "2 times"), ("fusion=add", "unknown fusion")])
def test_split_fusion_refuses(bad, message):
    with pytest.raises(ValueError, match=message):
        split_fusion(bad)


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["gated", "msf"])
def test_onnx_export_matches_torch(fusion, tmp_path):
    torch.manual_seed(0)
    model = random_bn(YoloBody(ANCHORS_MASK, 2, fusion=fusion))
    path = export_onnx(fuse_model(model), tmp_path / "m.onnx", (64, 96), check=False)
    for batch in (1, 3):
        assert max_abs_error(model, path, torch.rand(batch, 3, 64, 96)) < 1e-4
