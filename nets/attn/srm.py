import torch
import torch.nn as nn


class SRM(nn.Module):
    """SRM: A Style-based Recalibration Module for Convolutional Neural Networks, https://arxiv.org/abs/1903.10829

    A gate from style pooling (mean and std per channel). Style pooling (per-channel mean and standard
    deviation over H x W), a channel-wise fully connected layer (a depthwise Conv1d of width 2 over
    [mean, std]), BatchNorm, Sigmoid.

    Detector note: the seed's `x.std()` is NaN on a 1x1 map and has an infinite gradient on a constant
    one; here the std is sqrt(unbiased variance + eps), with variance 0 for a single pixel. The BN needs
    a batch of 2 or more in training mode.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.cfc = nn.Conv1d(channels, channels, kernel_size=2, groups=channels, bias=False)
        self.bn = nn.BatchNorm1d(channels)

    def channel_weights(self, x):
        """Tensor[B, C, 1, 1] of gates."""
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h * w)
        mean = flat.mean(dim=-1, keepdim=True)
        var = (flat - mean).pow(2).sum(dim=-1, keepdim=True) / max(h * w - 1, 1)
        u = torch.cat([mean, (var + self.eps).sqrt()], dim=-1)  # b,c,2
        return torch.sigmoid(self.bn(self.cfc(u))).view(b, c, 1, 1)

    def forward(self, x):
        return x * self.channel_weights(x)
