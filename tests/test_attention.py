import pytest
import torch

from nets.attention import ATTENTION_BLOCKS, PHI_NAMES, build_attention
from nets.yolo import attention_to_str, parse_attention
from nets.attn.eca import eca_kernel_size


def n_params(module):
    return sum(p.numel() for p in module.parameters())


# worked by hand for C channels with the default hyper-parameters
HAND_COUNTS = {
    "se": lambda c: 2 * c * (c // 16),  # Linear C->C/16 and C/16->C, no bias
    "cbam": lambda c: 2 * c * (c // 8) + 2 * 7 * 7,  # shared MLP, 7x7 conv over 2 maps, no bias
    "eca": lambda c: eca_kernel_size(c),  # one 1-D kernel
    "ca": lambda c: c * (c // 16) + 2 * (c // 16) + 2 * (c // 16) * c,  # 1x1 down, BN, two 1x1 up
}


@pytest.mark.parametrize("name", sorted(HAND_COUNTS))
@pytest.mark.parametrize("channels", [128, 256, 512])
def test_block_keeps_shape_and_has_hand_counted_params(name, channels):
    block = build_attention(name, channels)
    x = torch.randn(2, channels, 13, 9)
    y = block(x)
    assert y.shape == x.shape
    assert n_params(block) == HAND_COUNTS[name](channels)


def test_hand_counts_cover_the_core_blocks():
    assert {"se", "cbam", "eca", "ca"} <= set(ATTENTION_BLOCKS)


@pytest.mark.parametrize("channels, k", [(128, 5), (256, 5), (512, 5), (64, 3), (1024, 5), (32, 3)])
def test_eca_kernel_size(channels, k):
    assert eca_kernel_size(channels) == k


def test_none_is_identity():
    assert isinstance(build_attention("none", 64), torch.nn.Identity)
    assert isinstance(build_attention(None, 64), torch.nn.Identity)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        build_attention("nonsense", 64)
    for name in ("cbam", "eca", "se", "ca", "none"):
        assert name in str(err.value)


@pytest.mark.parametrize("phi, name", sorted(PHI_NAMES.items()))
def test_phi_aliases(phi, name):
    placement = parse_attention(phi)
    assert [placement[s] for s in ("feat1", "feat2", "upsample")] == [name] * 3
    assert placement["csp1"] == "none"
    assert parse_attention(str(phi)) == placement


@pytest.mark.parametrize("spec", ["cbam", "feat1=cbam,feat2=se", "csp1=eca", "none", "feat1=se,feat2=se,upsample=se"])
def test_spec_round_trip(spec):
    placement = parse_attention(spec)
    assert parse_attention(attention_to_str(placement)) == placement


def test_spec_with_all_three_sites_the_same_prints_short():
    assert attention_to_str(parse_attention("feat1=se,feat2=se,upsample=se")) == "se"
