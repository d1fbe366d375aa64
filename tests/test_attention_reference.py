"""Each attention block against a plain re-statement of its forward pass, written from its paper / seed.

se, cbam, eca and ca are compared with the reference implementation's modules in
tests/test_reference_compat.py; this file covers the other registered blocks (and GCT's l1 mode).
A re-statement uses only the block's parameter tensors and torch's functional ops, never a helper or
sub-module call from nets/attn/, and writes every hyper-parameter (dilation, padding, kernel, axis)
out itself. Both sides run in float64 in eval mode with every parameter and BN statistic moved off
its initial value; they must agree to TOL (relative 1e-6, absolute 1e-8: FcaNet's DCT filters are
stored in float32 by the block and computed in float64 here). A wrong pooling, gate, axis or a
missing residual moves the output by 1e-2 or more.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from nets.attention import ATTENTION_BLOCKS
from tests.helpers.attention import TOL, bn, gate, linear, make_block, perturb

# (batch, channels, height, width): non-square, batch > 1, a map smaller than FcaNet's 7x7, a 1x1 map
SHAPES = [(2, 32, 13, 9), (3, 32, 8, 8), (2, 64, 5, 7), (2, 32, 1, 1)]


def se_max_ref(block, x):
    # SE with global max pooling: sigmoid(W2 relu(W1 max_hw(x)))
    s = x.amax(dim=(2, 3))
    return gate(x, torch.sigmoid(linear(torch.relu(linear(s, block.fc[0].weight)), block.fc[2].weight)))


def conv1d_across_channels(v, kernel):
    """ECA's 1-D conv: out[c] = sum_j kernel[j] * v[c + j - k//2], zeros outside; v: [B, C]."""
    k = kernel.numel()
    padded = F.pad(v, (k // 2, k // 2))
    return sum(kernel[j] * padded[:, j:j + v.shape[1]] for j in range(k))


def cbam_eca_ref(block, x):
    # channel: sigmoid(conv1d(avg) + conv1d(max)); spatial: sigmoid(conv7x7([mean_c, max_c]))
    kernel = block.channelattention.conv.weight.flatten()
    g = torch.sigmoid(conv1d_across_channels(x.mean(dim=(2, 3)), kernel)
                      + conv1d_across_channels(x.amax(dim=(2, 3)), kernel))
    x = gate(x, g)
    # channel mean first, then max, as the reference implementation's SpatialAttention
    pooled = torch.stack([x.mean(dim=1), x.amax(dim=1)], dim=1)
    return x * torch.sigmoid(F.conv2d(pooled, block.spatialattention.conv1.weight, padding=3))


def sk_ref(block, x):
    # split: grouped 3x3 convs, dilation 1 and 2 (32 groups), BN, ReLU; fuse: GAP of the sum, FC + BN +
    # ReLU; select: FC to 2C logits, softmax over the two branches per channel
    b, c = x.shape[:2]
    feats = []
    for i, branch in enumerate(block.convs):
        y = F.conv2d(x, branch[0].weight, padding=1 + i, dilation=1 + i, groups=32)
        feats.append(torch.relu(bn(y, branch[1])))
    s = (feats[0] + feats[1]).mean(dim=(2, 3))
    z = torch.relu(bn(linear(s, block.fc1[0].weight), block.fc1[1]))
    logits = linear(z, block.fc2.weight).view(b, 2, c)  # branch-major, as the seed's reshape(b, M, C)
    a = torch.exp(logits) / torch.exp(logits).sum(dim=1, keepdim=True)
    return gate(feats[0], a[:, 0]) + gate(feats[1], a[:, 1])


def gct_ref(block, x, mode="l2", eps=1e-5):
    # embedding alpha * ||x_c||, channel normalisation gamma / rms_c(embedding), gate 1 + tanh(. + beta)
    alpha, gamma, beta = (p.flatten() for p in (block.alpha, block.gamma, block.beta))
    if mode == "l2":
        emb = alpha * torch.sqrt((x * x).sum(dim=(2, 3)) + eps)
        norm = gamma / torch.sqrt((emb * emb).mean(dim=1, keepdim=True) + eps)
    else:
        emb = alpha * x.abs().sum(dim=(2, 3))
        norm = gamma / (emb.abs().mean(dim=1, keepdim=True) + eps)
    return gate(x, 1 + torch.tanh(emb * norm + beta))


def srm_ref(block, x, eps=1e-5):
    # style pooling (mean, std) per channel, channel-wise FC over the two, BN, sigmoid
    b, c, h, w = x.shape
    n = h * w
    mean = x.sum(dim=(2, 3)) / n
    var = ((x - mean[:, :, None, None]) ** 2).sum(dim=(2, 3)) / max(n - 1, 1)
    std = torch.sqrt(var + eps)
    wt = block.cfc.weight[:, 0, :]  # [C, 2]
    z = wt[:, 0] * mean + wt[:, 1] * std
    return gate(x, torch.sigmoid(bn(z, block.bn)))


# FcaNet's 'top16' frequencies (u along H, v along W), cfzd/FcaNet model/layer.py get_freq_indices
FCA_TOP16 = [(0, 0), (0, 1), (6, 0), (0, 5), (0, 2), (1, 0), (1, 2), (4, 0),
             (5, 0), (1, 6), (3, 0), (0, 4), (0, 6), (0, 3), (3, 5), (2, 2)]


def dct_row(freq, n=7):
    """Orthonormal DCT-II basis vector of frequency `freq` over n points, float64."""
    i = torch.arange(n, dtype=torch.float64)
    scale = math.sqrt(1 / n) if freq == 0 else math.sqrt(2 / n)
    return scale * torch.cos(math.pi * freq * (i + 0.5) / n)


def fca_ref(block, x):
    # detection form: average-pool to 7x7, then channel group g is summed against DCT basis g
    b, c = x.shape[:2]
    pooled = F.adaptive_avg_pool2d(x, 7)
    part = c // 16
    y = torch.empty(b, c, dtype=x.dtype)
    for g, (u, v) in enumerate(FCA_TOP16):
        basis = torch.outer(dct_row(u), dct_row(v))
        y[:, g * part:(g + 1) * part] = (pooled[:, g * part:(g + 1) * part] * basis).sum(dim=(2, 3))
    return gate(x, torch.sigmoid(linear(torch.relu(linear(y, block.fc[0].weight)), block.fc[2].weight)))


def conv_du_gate(block, s):
    """RCAN's conv_du on a descriptor s: [B, C]: sigmoid(W2 relu(W1 s + b1) + b2)."""
    down, up = block.conv_du[0], block.conv_du[2]
    return torch.sigmoid(linear(torch.relu(linear(s, down.weight, down.bias)), up.weight, up.bias))


def rcan_ref(block, x):
    return gate(x, conv_du_gate(block, x.mean(dim=(2, 3))))


def covariance(y):
    """[B, C, H, W] -> [B, C, C], divided by H*W (MPN-COV), one torch.cov per image."""
    flat = y.flatten(2)
    return torch.stack([torch.cov(f, correction=0) for f in flat])


def newton_schulz_sqrt(a, iterations=5, eps=1e-5):
    """iSQRT-COV: Y0 = A / tr(A), Z0 = I; T = (3I - Z Y) / 2, Y <- Y T, Z <- T Z; sqrt(tr(A)) * Y."""
    out = []
    for m in a:
        tr = torch.trace(m) + eps
        y, z = m / tr, torch.eye(m.shape[0], dtype=m.dtype)
        for _ in range(iterations):
            t = 0.5 * (3 * torch.eye(m.shape[0], dtype=m.dtype) - z @ y)
            y, z = y @ t, t @ z
        out.append(y * torch.sqrt(tr))
    return torch.stack(out)


def soca_ref(block, x):
    # covariance pooling, Newton-Schulz square root (5 iterations), row mean, RCAN's gate
    root = newton_schulz_sqrt(covariance(x))
    return gate(x, conv_du_gate(block, root.mean(dim=1)))


def gsop_ref(block, x):
    # ReLU, 1x1 conv + BN + ReLU to d, covariance (d x d), BN per row, row-wise conv (row i -> 4 outputs),
    # ReLU, 1x1 conv to C, sigmoid
    y = F.conv2d(torch.relu(x), block.conv_for_DR.weight, block.conv_for_DR.bias)
    cov = covariance(torch.relu(bn(y, block.bn_for_DR)))  # b,d,d
    d = cov.shape[1]
    rows = bn(cov, block.row_bn)  # BN channel i = row i
    wt = block.row_conv_group.weight.view(d, 4, d)  # output 4i+k reads row i
    z = torch.einsum("bij,ikj->bik", rows, wt).reshape(-1, 4 * d) + block.row_conv_group.bias
    fc = block.fc_adapt_channels
    return gate(x, torch.sigmoid(linear(torch.relu(z), fc.weight, fc.bias)))


def zpool_gate(pooled_max, pooled_mean, branch):
    """sigmoid(BN(conv7x7([max, mean]))) over a plane: [B, D1, D2] maps -> [B, D1, D2] gates."""
    z = F.conv2d(torch.stack([pooled_max, pooled_mean], dim=1), branch.conv.weight, padding=3)
    return torch.sigmoid(bn(z, branch.bn))[:, 0]


def triplet_ref(block, x):
    # branch 1 pools over H and gates the (C, W) plane; branch 2 pools over W and gates the (H, C)
    # plane (H as rows, C as columns, as the official permute(0, 3, 2, 1) lays it out); branch 3
    # pools over C and gates (H, W); the three gated tensors are averaged
    g_cw = zpool_gate(x.amax(dim=2), x.mean(dim=2), block.cw)  # b,c,w
    g_hc = zpool_gate(x.amax(dim=3).transpose(1, 2), x.mean(dim=3).transpose(1, 2), block.hc)  # b,h,c
    g_hw = zpool_gate(x.amax(dim=1), x.mean(dim=1), block.hw)  # b,h,w
    out_cw = x * g_cw[:, :, None, :]
    out_hc = x * g_hc.transpose(1, 2)[:, :, :, None]
    out_hw = x * g_hw[:, None]
    return (out_cw + out_hc + out_hw) / 3


def gelu(v):
    return 0.5 * v * (1 + torch.erf(v / math.sqrt(2)))


def safm_ref(block, x):
    # 4 channel chunks; chunk i max-pooled to (H / 2^i, W / 2^i) (at least 1), depthwise 3x3,
    # nearest upsampling; 1x1 aggregation, GELU, times the input
    b, c, h, w = x.shape
    part = c // 4
    out = []
    for i in range(4):
        chunk = x[:, i * part:(i + 1) * part]
        conv = block.mfr[i]
        if i > 0:
            chunk = F.adaptive_max_pool2d(chunk, (max(1, h // 2 ** i), max(1, w // 2 ** i)))
        s = F.conv2d(chunk, conv.weight, conv.bias, padding=1, groups=part)
        out.append(F.interpolate(s, size=(h, w), mode="nearest") if i > 0 else s)
    m = F.conv2d(torch.cat(out, dim=1), block.aggr.weight, block.aggr.bias)
    return gelu(m) * x


def mfe_ref(block, x):
    # y0 = CBR3x3(x), y_i = CBR3x3_dilated(y_{i-1} + x) with rates 2, 4, 8; per-channel weights
    # softmax_i(sigmoid(W_i GAP(y_i))); project(sum_i w_i y_i + x) with a 1x1 conv + BN + ReLU
    feats, prev = [], None
    for i, rate in enumerate((1, 2, 4, 8)):
        layer = block.layers[i]
        inp = x if i == 0 else prev + x
        prev = torch.relu(bn(F.conv2d(inp, layer[0].weight, padding=rate, dilation=rate), layer[1]))
        feats.append(prev)
    scores = torch.stack([torch.sigmoid(linear(f.mean(dim=(2, 3)), se.weight)) for f, se in zip(feats, block.se)])
    weights = torch.exp(scores) / torch.exp(scores).sum(dim=0)  # softmax over the 4 branches: 4,b,c
    fused = sum(gate(f, wi) for f, wi in zip(feats, weights))
    proj = block.project
    return torch.relu(bn(F.conv2d(fused + x, proj[0].weight), proj[1]))


def osra_ref(block, x, heads=8):
    # q from a 1x1 conv of x; k, v from the map reduced by a depthwise 5x5 stride-2 conv + BN + ReLU +
    # depthwise 1x1 + BN, plus a residual depthwise 3x3, then a 1x1 conv; per-head softmax(q k^T / sqrt(d)) v
    b, c, h, w = x.shape
    d = c // heads
    q = F.conv2d(x, block.q.weight, block.q.bias).flatten(2)  # b,c,HW
    sr = block.sr
    r = torch.relu(bn(F.conv2d(x, sr[0].weight, stride=2, padding=2, groups=c), sr[1]))
    r = bn(F.conv2d(r, sr[3].weight, groups=c), sr[4])
    r = r + F.conv2d(r, block.local_conv.weight, block.local_conv.bias, padding=1, groups=c)
    kv = F.conv2d(r, block.kv.weight, block.kv.bias).flatten(2)  # b,2c,N
    k, v = kv[:, :c], kv[:, c:]
    out = torch.empty(b, c, h * w, dtype=x.dtype)
    for i in range(heads):
        sl = slice(i * d, (i + 1) * d)
        logits = q[:, sl].transpose(1, 2) @ k[:, sl] / math.sqrt(d)  # b,HW,N
        attn = torch.exp(logits - logits.amax(dim=-1, keepdim=True))
        attn = attn / attn.sum(dim=-1, keepdim=True)
        out[:, sl] = (attn @ v[:, sl].transpose(1, 2)).transpose(1, 2)
    return out.view(b, c, h, w)


def enc_ref(block, x):
    # 1x1 conv + BN + ReLU; each position x_i soft-assigned to codeword d_k by softmax_k(s_k ||x_i - d_k||^2);
    # e_k = sum_i a_ik (x_i - d_k); BN over the K codewords + ReLU; mean over k; gates sigmoid(W e + b);
    # output relu(x + x * gates)
    conv, bn_in, _, encoding, bn_codes, _ = block.encoding
    y = torch.relu(bn(F.conv2d(x, conv.weight), bn_in))
    b, c, h, w = y.shape
    feats = y.reshape(b, c, h * w).transpose(1, 2)  # b,N,D
    resid = feats[:, :, None, :] - encoding.codewords[None, None]  # b,N,K,D
    logits = encoding.scale * (resid * resid).sum(dim=3)  # b,N,K
    a = torch.exp(logits - logits.amax(dim=2, keepdim=True))
    a = a / a.sum(dim=2, keepdim=True)
    e = (a[..., None] * resid).sum(dim=1)  # b,K,D
    e = torch.relu(bn(e, bn_codes)).mean(dim=1)
    fc = block.fc[0]
    return torch.relu(x + gate(x, torch.sigmoid(linear(e, fc.weight, fc.bias))))


def cbam_joint_ref(block, x):
    # channel logits: bias-free MLP through C/8 on the avg and on the max pooling, summed; spatial
    # logits: 7x7 conv with bias over [mean_c, max_c]; concatenated (C + H*W), bias-free MLP through C/8
    # with ReLU, split, sigmoid; x * channel gates * spatial gates
    b, c, h, w = x.shape
    ca, sa = block.channelattention, block.spatialattention.conv1

    def channel_mlp(v):
        return linear(torch.relu(linear(v, ca.fc1.weight)), ca.fc2.weight)

    channel = channel_mlp(x.mean(dim=(2, 3))) + channel_mlp(x.amax(dim=(2, 3)))
    spatial = F.conv2d(torch.stack([x.mean(dim=1), x.amax(dim=1)], dim=1), sa.weight, sa.bias, padding=3)
    joint = torch.cat([channel, spatial.flatten(1)], dim=1)
    mixed = linear(torch.relu(linear(joint, block.mlp[0].weight)), block.mlp[2].weight)
    return gate(x, torch.sigmoid(mixed[:, :c])) * torch.sigmoid(mixed[:, c:]).view(b, 1, h, w)


def built(name, **kwargs):
    """A maker (channels, (h, w)) -> the block, given the facts a site of that map size gives."""
    return lambda c, size: make_block(name, c, *size, **kwargs)


REFERENCES = {
    "se_max": (built("se_max"), se_max_ref),
    "cbam_eca": (built("cbam_eca"), cbam_eca_ref),
    "sk": (built("sk"), sk_ref),
    "gct": (built("gct"), gct_ref),
    "gct_l1": (built("gct", mode="l1"), lambda blk, x: gct_ref(blk, x, mode="l1")),
    "srm": (built("srm"), srm_ref),
    "fca": (built("fca"), fca_ref),
    "rcan": (built("rcan"), rcan_ref),
    "soca": (built("soca"), soca_ref),
    "gsop": (built("gsop"), gsop_ref),
    "triplet": (built("triplet"), triplet_ref),
    "safm": (built("safm"), safm_ref),
    "mfe": (built("mfe"), mfe_ref),
    "osra": (built("osra"), osra_ref),
    "enc": (built("enc"), enc_ref),
    "cbam_joint": (built("cbam_joint"), cbam_joint_ref),
}

# checked against the reference implementation's modules in tests/test_reference_compat.py
CHECKED_ELSEWHERE = {"se", "cbam", "eca", "ca"}


def test_every_block_has_a_numeric_reference():
    covered = {name for name in REFERENCES if name in ATTENTION_BLOCKS} | CHECKED_ELSEWHERE
    assert covered == set(ATTENTION_BLOCKS), "write a re-statement for each new block"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_block_equals_its_re_statement(name, shape):
    make, reference = REFERENCES[name]
    b, c, h, w = shape
    block = perturb(make(c, (h, w)), seed=len(name)).double().eval()
    x = torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(h * w), dtype=torch.float64)
    with torch.no_grad():
        got, expected = block(x), reference(block, x)
    assert got.shape == x.shape
    torch.testing.assert_close(got, expected, **TOL)
