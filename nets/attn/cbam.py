import torch
import torch.nn as nn

from nets.attn.eca import eca_kernel_size


class ChannelAttention(nn.Module):
    """CBAM's channel attention: a shared bias-free 1x1-conv MLP over avg- and max-pooled features."""

    def __init__(self, channels: int, rd_ratio: int = 8):
        super().__init__()
        hidden = max(1, channels // rd_ratio)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def mlp(self, x):
        return self.fc2(self.relu1(self.fc1(x)))

    def logits(self, x):
        """Tensor[B, C, 1, 1]: the gates before the sigmoid."""
        return self.mlp(self.avg_pool(x)) + self.mlp(self.max_pool(x))

    def forward(self, x):
        """Tensor[B, C, 1, 1] of gates."""
        return torch.sigmoid(self.logits(x))


class ConvChannelAttention(nn.Module):
    """CBAM's channel attention with ECA's 1-D conv in place of the MLP, shared by the avg and max paths."""

    def __init__(self, channels: int, gamma: int = 2, b: int = 1, kernel_size: int = 0):
        super().__init__()
        k = kernel_size or eca_kernel_size(channels, gamma, b)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)

    def forward(self, x):
        """Tensor[B, C, 1, 1] of gates."""
        avg = self.conv(x.mean(dim=(2, 3)).unsqueeze(1))  # b,1,c
        mx = self.conv(x.amax(dim=(2, 3)).unsqueeze(1))
        return torch.sigmoid(avg + mx).transpose(1, 2).unsqueeze(-1)


class SpatialAttention(nn.Module):
    """CBAM's spatial attention: a k x k conv (bias-free unless `bias`) over the channel mean and max."""

    def __init__(self, kernel_size: int = 7, bias: bool = False):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"spatial attention kernel_size must be odd, got {kernel_size}")
        self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=bias)

    def logits(self, x):
        """Tensor[B, 1, H, W]: the gates before the sigmoid."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return self.conv1(pooled)

    def forward(self, x):
        """Tensor[B, 1, H, W] of gates."""
        return torch.sigmoid(self.logits(x))


class CBAM(nn.Module):
    """CBAM: Convolutional Block Attention Module, https://arxiv.org/abs/1807.06521

    Channel attention, then spatial attention. Parameter names (`channelattention.fc1`, `.fc2`,
    `spatialattention.conv1`) match the reference implementation's `cbam_block`.
    `channel_attn="conv"` swaps the MLP for a 1-D conv across channels (the seed's `cbam_eca` form);
    `kernel_size` is the spatial conv's (odd) size.
    """

    def __init__(self, channels: int, rd_ratio: int = 8, kernel_size: int = 7, channel_attn: str = "mlp"):
        super().__init__()
        if channel_attn == "mlp":
            self.channelattention = ChannelAttention(channels, rd_ratio)
        elif channel_attn == "conv":
            self.channelattention = ConvChannelAttention(channels)
        else:
            raise ValueError(f"CBAM channel_attn must be 'mlp' or 'conv', got {channel_attn!r}")
        self.spatialattention = SpatialAttention(kernel_size)

    def spatial_map(self, x):
        """The spatial gates, Tensor[B, 1, H, W], as computed inside forward."""
        return self.spatialattention(x * self.channelattention(x))

    def forward(self, x):
        x = x * self.channelattention(x)
        return x * self.spatialattention(x)


class JointCBAM(nn.Module):
    """CBAM (https://arxiv.org/abs/1807.06521) with one MLP over the channel and spatial logits together,
    the seed notes' CBAM variant.

    CBAM's channel logits (the shared MLP on avg and max pooling: C values) and spatial logits (a k x k
    conv with bias over the channel mean and max: H*W values) are concatenated and mixed by a bias-free
    MLP C + H*W -> C // rd_ratio -> C + H*W; split again and squashed, both gate the input:
    x * sigmoid(channel) * sigmoid(spatial). (The seed returns the two gated maps separately; a site
    needs one output.) The MLP's width fixes the map size: `map_size` (h, w) is required, and a map of
    another size is refused.
    """

    site_facts = ("map_size",)  # YoloBody passes the site's map size, from the model's input size

    def __init__(self, channels: int, map_size=None, rd_ratio: int = 8, kernel_size: int = 7):
        super().__init__()
        if map_size is None:
            raise ValueError("cbam_joint needs the map size at its site (its MLP runs over C + H*W): YoloBody gives "
                             "it from input_size=...; on its own, pass map_size=(h, w)")
        self.map_size = (map_size, map_size) if isinstance(map_size, int) else tuple(int(v) for v in map_size)
        joint = channels + self.map_size[0] * self.map_size[1]
        hidden = max(1, channels // rd_ratio)
        self.channelattention = ChannelAttention(channels, rd_ratio)
        self.spatialattention = SpatialAttention(kernel_size, bias=True)
        self.mlp = nn.Sequential(nn.Linear(joint, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, joint, bias=False))

    def joint_gates(self, x):
        """(channel gates Tensor[B, C, 1, 1], spatial gates Tensor[B, 1, H, W]), both in (0, 1)."""
        b, c, h, w = x.shape
        if not torch.jit.is_tracing() and (h, w) != self.map_size:  # a traced graph is fixed to its size
            raise ValueError(f"cbam_joint was built for {self.map_size[0]}x{self.map_size[1]} maps (its MLP runs "
                             f"over C + H*W) and got {h}x{w}; build it for this size or feed the size it was built for")
        joint = torch.cat([self.channelattention.logits(x).flatten(1), self.spatialattention.logits(x).flatten(1)], 1)
        mixed = self.mlp(joint)
        return torch.sigmoid(mixed[:, :c]).view(b, c, 1, 1), torch.sigmoid(mixed[:, c:]).view(b, 1, h, w)

    def spatial_map(self, x):
        """The spatial gates, Tensor[B, 1, H, W]."""
        return self.joint_gates(x)[1]

    def forward(self, x):
        channel, spatial = self.joint_gates(x)
        return x * channel * spatial
