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

    def forward(self, x):
        """Tensor[B, C, 1, 1] of gates."""
        return torch.sigmoid(self.mlp(self.avg_pool(x)) + self.mlp(self.max_pool(x)))


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
    """CBAM's spatial attention: a bias-free k x k conv over the channel mean and max."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"spatial attention kernel_size must be odd, got {kernel_size}")
        self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x):
        """Tensor[B, 1, H, W] of gates."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv1(pooled))


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
