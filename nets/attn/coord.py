import torch
import torch.nn as nn


class CoordAttention(nn.Module):
    """Coordinate Attention for Efficient Mobile Network Design, https://arxiv.org/abs/2103.02907

    Pools along H and along W, a shared 1x1 conv + BN + ReLU, then one 1x1 conv per direction gives
    gates over rows and columns. Parameter names (`conv_1x1`, `bn`, `F_h`, `F_w`) match the reference's
    `CA_Block`.
    """

    def __init__(self, channels: int, rd_ratio: int = 16):
        super().__init__()
        hidden = max(1, channels // rd_ratio)
        self.conv_1x1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.relu = nn.ReLU()
        self.F_h = nn.Conv2d(hidden, channels, 1, bias=False)
        self.F_w = nn.Conv2d(hidden, channels, 1, bias=False)

    def gates(self, x):
        """Gates over rows, Tensor[B, C, H, 1], and over columns, Tensor[B, C, 1, W]."""
        h, w = x.shape[2:]
        x_h = x.mean(dim=3, keepdim=True).permute(0, 1, 3, 2)  # b,c,1,h
        x_w = x.mean(dim=2, keepdim=True)  # b,c,1,w
        y = self.relu(self.bn(self.conv_1x1(torch.cat([x_h, x_w], dim=3))))
        y_h, y_w = y.split([h, w], dim=3)
        return torch.sigmoid(self.F_h(y_h.permute(0, 1, 3, 2))), torch.sigmoid(self.F_w(y_w))

    def forward(self, x):
        s_h, s_w = self.gates(x)
        return x * s_h * s_w
