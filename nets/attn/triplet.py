import torch
import torch.nn as nn


class ZPoolGate(nn.Module):
    """Max and mean over dim 1, a bias-free k x k conv + BN to one map, Sigmoid: Tensor[B, 1, D2, D3] gates."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def forward(self, x):
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.bn(self.conv(pooled)))


class TripletAttention(nn.Module):
    """Rotate to Attend: Convolutional Triplet Attention Module, https://arxiv.org/abs/2010.03045

    Three Z-pool + 7x7 conv gates over the (C, W), (H, C) and (H, W) planes, averaged. Each branch
    max- and mean-pools one dimension (H, W or C), a 7x7 conv + BN and Sigmoid give the gates over the
    other two; the third branch is a CBAM-like spatial gate. The three gated tensors are averaged.
    Holds 3 x (2*k*k + 2) parameters whatever the channel count.
    """

    def __init__(self, channels: int, kernel_size: int = 7, no_spatial: bool = False):
        super().__init__()
        self.cw = ZPoolGate(kernel_size)
        self.hc = ZPoolGate(kernel_size)
        self.hw = None if no_spatial else ZPoolGate(kernel_size)

    def spatial_map(self, x):
        """The (H, W) branch's gates, Tensor[B, 1, H, W] (None with no_spatial)."""
        return None if self.hw is None else self.hw(x)

    def forward(self, x):
        x_cw = x.permute(0, 2, 1, 3)  # b,h,c,w: pool over H
        out_cw = (x_cw * self.cw(x_cw)).permute(0, 2, 1, 3)
        x_hc = x.permute(0, 3, 2, 1)  # b,w,h,c: pool over W
        out_hc = (x_hc * self.hc(x_hc)).permute(0, 3, 2, 1)
        if self.hw is None:
            return (out_cw + out_hc) / 2
        return (out_cw + out_hc + x * self.hw(x)) / 3
