import math

import torch.nn as nn


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA's adaptive kernel size |log2(C)/gamma + b/gamma|, made odd."""
    k = int(abs((math.log(channels, 2) + b) / gamma))
    return k if k % 2 else k + 1


class ECA(nn.Module):
    """ECA-Net: Efficient Channel Attention, https://arxiv.org/abs/1910.03151

    Global average pooling, a bias-free 1-D conv across channels, Sigmoid. Parameter name `conv`
    matches the reference implementation's `eca_block`.
    """

    def __init__(self, channels: int, gamma: int = 2, b: int = 1, kernel_size: int = 0):
        super().__init__()
        k = kernel_size or eca_kernel_size(channels, gamma, b)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def channel_weights(self, x):
        """Tensor[B, C, 1, 1] of gates."""
        y = self.avg_pool(x).flatten(1).unsqueeze(1)  # b,1,c
        return self.sigmoid(self.conv(y)).transpose(1, 2).unsqueeze(-1)

    def forward(self, x):
        return x * self.channel_weights(x)
