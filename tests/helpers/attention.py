"""Attention blocks in tests: building one for a map size, moving its parameters off their initial values,
hand-worked parameter counts, and the functional pieces of the re-statements of their forward passes."""
import torch
import torch.nn as nn

from nets.attention import build_attention
from nets.attn.eca import eca_kernel_size
from nets.attn.registry import site_facts


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def make_block(name, channels, h=13, w=13, **kwargs):
    """build_attention(name, channels) with what a site of an h x w map tells it (map_size; no class head)."""
    return build_attention(name, channels, {"map_size": (h, w)}, **kwargs)


def hand_count(name, c, hw):
    """HAND_COUNTS[name] at c channels; a block fixed to one map size also takes the map's H*W."""
    return HAND_COUNTS[name](c, hw) if "map_size" in site_facts(name) else HAND_COUNTS[name](c)


def sk_count(c, d):
    # two grouped 3x3 branches (32 groups) + their BN, 1x1 down + BN, 1x1 up to 2 branches; no biases
    return 2 * (c * (c // 32) * 9 + 2 * c) + c * d + 2 * d + d * 2 * c


def enc_count(c, k=32):
    # 1x1 conv + BN, K codewords of C and K smoothing factors, BN1d over K, Linear C -> C with bias
    return (c * c + 2 * c) + (k * c + k) + 2 * k + (c * c + c)


def gsop_count(c, d):
    # 1x1 down (+bias), 2 BNs, row-wise grouped conv d -> 4d with a d x 1 kernel (+bias), 1x1 up (+bias)
    return c * d + d + 2 * d + 2 * d + 4 * d * d + 4 * d + 4 * d * c + c


# Parameter counts worked out by hand for C channels with each block's default hyper-parameters.


# Parameter counts worked out by hand for C channels with each block's default hyper-parameters.
HAND_COUNTS = {
    "se": lambda c: 2 * c * (c // 16),  # two bias-free Linear layers through C/16
    "se_max": lambda c: 2 * c * (c // 16),  # same layers, max pooling
    "cbam": lambda c: 2 * c * (c // 8) + 2 * 7 * 7,  # bias-free MLP through C/8, 7x7 conv over 2 maps
    "cbam_eca": lambda c: eca_kernel_size(c) + 2 * 7 * 7,  # one 1-D kernel, 7x7 conv over 2 maps
    "eca": lambda c: eca_kernel_size(c),  # one 1-D kernel
    "ca": lambda c: c * (c // 16) + 2 * (c // 16) + 2 * (c // 16) * c,  # 1x1 down, BN, two 1x1 up
    "sk": lambda c: sk_count(c, max(c // 16, 32)),
    "gct": lambda c: 3 * c,  # alpha, gamma, beta per channel
    "srm": lambda c: 2 * c + 2 * c,  # depthwise width-2 CFC, BN1d
    "fca": lambda c: 2 * c * (c // 16),  # SE's bias-free MLP; the DCT filters are buffers
    "rcan": lambda c: c * (c // 16) + c // 16 + (c // 16) * c + c,  # two 1x1 convs with bias
    "soca": lambda c: c * (c // 8) + c // 8 + (c // 8) * c + c,  # two 1x1 convs with bias, ratio 8
    "gsop": lambda c: gsop_count(c, min(128, c)),
    "triplet": lambda c: 3 * (2 * 7 * 7 + 2),  # three 7x7 convs over 2 maps + BN(1), whatever C
    "safm": lambda c: 4 * ((c // 4) * 9 + c // 4) + c * c + c,  # 4 depthwise 3x3 (+bias), 1x1 (+bias)
    "mfe": lambda c: 4 * (9 * c * c + 2 * c) + 4 * c * c + (c * c + 2 * c),  # 4 3x3+BN, 4 SE 1x1, 1x1+BN
    "osra": lambda c: (c * c + c) + (2 * c * c + 2 * c) + (25 * c + 2 * c + c + 2 * c) + (9 * c + c),  # q, kv, sr, local
    "enc": enc_count,  # no SE-loss head: the model adds C * N + N with se_loss
    # CBAM's channel MLP through C/8, 7x7 conv over 2 maps with bias, bias-free MLP C+HW -> C/8 -> C+HW
    "cbam_joint": lambda c, hw: 2 * c * (c // 8) + (2 * 7 * 7 + 1) + 2 * (c + hw) * (c // 8),
}


def perturb(module: nn.Module, seed: int = 0) -> nn.Module:
    """Move every parameter and BN statistic off its initial value (GCT starts as the exact identity)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.1, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)
    return module


TOL = dict(rtol=1e-6, atol=1e-8)  # the re-statements' tolerance (tests/test_attention_reference.py)


def bn(x, m):
    """BatchNorm in eval mode over dim 1, from the running statistics."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    scale = m.weight / torch.sqrt(m.running_var + m.eps)
    return (x - m.running_mean.view(shape)) * scale.view(shape) + m.bias.view(shape)


def linear(v, weight, bias=None):
    """v: [B, in]; weight: a Linear's [out, in] or a 1x1 conv's [out, in, 1, 1]."""
    out = v @ weight.reshape(weight.shape[0], -1).t()
    return out if bias is None else out + bias


def gate(x, g):
    """x * per-channel gate g: [B, C]."""
    return x * g[:, :, None, None]
