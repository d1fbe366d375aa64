import torch
import torch.nn as nn


class GatedFusion(nn.Module):
    """Gated fusion of two maps of one width, from GMAN: A Graph Multi-Attention Network for Traffic
    Prediction (AAAI 2020), https://arxiv.org/abs/1911.08415

    z = sigmoid(W1 x1 + b1 + W2 x2 + b2) per position and channel, out = z * x1 + (1 - z) * x2.
    As in the seed notes both maps have biases and there is no output layer; the seed's Linear layers
    over the channel axis of (B, H, W, C) tensors are 1x1 convs over NCHW here (the same maps).
    forward(x1, x2), each Tensor[B, C, H, W] -> Tensor[B, C, H, W].
    """

    def __init__(self, channels: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels, 1)
        self.fc2 = nn.Conv2d(channels, channels, 1)

    def gate(self, x1, x2):
        """z, Tensor[B, C, H, W] in (0, 1): the share of x1 at each position and channel."""
        return torch.sigmoid(self.fc1(x1) + self.fc2(x2))

    def forward(self, x1, x2):
        z = self.gate(x1, x2)
        return z * x1 + (1 - z) * x2
