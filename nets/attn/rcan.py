import torch.nn as nn


def conv_gate(channels: int, hidden: int, act_layer=nn.ReLU, gate_layer=nn.Sigmoid) -> nn.Sequential:
    """1x1 conv (with bias) down to `hidden`, activation, 1x1 conv back up, gate: RCAN's `conv_du`."""
    return nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=True), act_layer(),
                         nn.Conv2d(hidden, channels, 1, bias=True), gate_layer())


class RCANChannelAttention(nn.Module):
    """Image Super-Resolution Using Very Deep Residual Channel Attention Networks, https://arxiv.org/abs/1807.02758

    SE-style gate from 1x1 convs with biases. RCAN's channel attention (CALayer): global average
    pooling, 1x1 conv down by `rd_ratio` with bias, ReLU, 1x1 conv up with bias, Sigmoid. The biases are
    what set it apart from SE.
    """

    def __init__(self, channels: int, rd_ratio: int = 16, act_layer=nn.ReLU, gate_layer=nn.Sigmoid):
        super().__init__()
        hidden = max(1, channels // rd_ratio)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = conv_gate(channels, hidden, act_layer, gate_layer)

    def channel_weights(self, x):
        """Tensor[B, C, 1, 1] of gates."""
        return self.conv_du(self.avg_pool(x))

    def forward(self, x):
        return x * self.channel_weights(x)
