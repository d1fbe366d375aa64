import torch.nn as nn


class OSRA(nn.Module):
    """TransXNet: Learning Both Global and Local Dynamics with a Dual Dynamic Token Mixer for Visual
    Recognition, https://arxiv.org/abs/2310.19380

    Multi-head self-attention whose keys and values come from a strided-conv reduced map. Overlapping
    Spatial Reduction Attention: multi-head self-attention over the H*W positions whose keys and values
    come from a map reduced by an overlapping strided depthwise conv (kernel sr_ratio+3, stride
    sr_ratio) + BN + ReLU + depthwise 1x1 + BN, refined by a residual 3x3 depthwise conv, then projected
    to K and V by one 1x1 conv.

    As in the seed, the output is the attention output itself (no residual, no output projection, no
    relative position bias: TransXNet adds those in the surrounding block), so placing it in the
    detector replaces the features with their attention mix. `channels` must be a multiple of
    `num_heads`.
    """

    def __init__(self, channels: int, num_heads: int = 8, sr_ratio: int = 2, qk_scale=None):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"OSRA: channels ({channels}) must be a multiple of num_heads ({num_heads})")
        self.num_heads = num_heads
        self.scale = qk_scale or (channels // num_heads) ** -0.5
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Conv2d(channels, channels * 2, 1)
        if sr_ratio > 1:
            k = sr_ratio + 3
            self.sr = nn.Sequential(
                nn.Conv2d(channels, channels, k, stride=sr_ratio, padding=k // 2, groups=channels, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(),
                nn.Conv2d(channels, channels, 1, groups=channels, bias=False),
                nn.BatchNorm2d(channels),
            )
        else:
            self.sr = nn.Identity()
        self.local_conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)

    def forward(self, x):
        b, c, h, w = x.shape
        heads = self.num_heads
        q = self.q(x).reshape(b, heads, c // heads, h * w).transpose(-1, -2)  # b,heads,HW,d
        kv = self.sr(x)
        kv = self.local_conv(kv) + kv
        k, v = self.kv(kv).chunk(2, dim=1)
        k = k.reshape(b, heads, c // heads, -1)  # b,heads,d,H'W'
        v = v.reshape(b, heads, c // heads, -1).transpose(-1, -2)  # b,heads,H'W',d
        attn = ((q @ k) * self.scale).softmax(dim=-1)
        return (attn @ v).transpose(-1, -2).reshape(b, c, h, w)
