import torch.nn as nn

from nets.attn.covpool import covariance_pool


class GSoP(nn.Module):
    """Global Second-order Pooling Convolutional Networks, https://arxiv.org/abs/1811.12006

    A gate from the channel covariance of a reduced map, through a row-wise conv. GSoP block (channel
    attention form, GSoP-Net1): ReLU, 1x1 conv down to d = min(rd_channels, C) with BN + ReLU,
    covariance pooling (d x d), row-wise BN, a row-wise conv (a grouped conv with a d x 1 kernel) to 4d,
    ReLU, a 1x1 conv to C, Sigmoid, and the gate times the input. The down-projection BN needs a batch
    of 2 or more on 1x1 maps in training mode.
    """

    def __init__(self, channels: int, rd_channels: int = 128, act_layer=nn.ReLU, gate_layer=nn.Sigmoid):
        super().__init__()
        d = min(rd_channels, channels)
        self.pre_act = act_layer()
        self.conv_for_DR = nn.Conv2d(channels, d, 1, bias=True)
        self.bn_for_DR = nn.BatchNorm2d(d)
        self.act = act_layer()
        self.row_bn = nn.BatchNorm2d(d)
        # one group per covariance row: each row (d values) -> 4 outputs
        self.row_conv_group = nn.Conv2d(d, 4 * d, kernel_size=(d, 1), groups=d, bias=True)
        self.fc_adapt_channels = nn.Conv2d(4 * d, channels, 1, bias=True)
        self.gate = gate_layer()

    def channel_weights(self, x):
        """Tensor[B, C, 1, 1] of gates."""
        y = self.act(self.bn_for_DR(self.conv_for_DR(self.pre_act(x))))
        cov = covariance_pool(y).unsqueeze(-1)  # b,d,d,1
        y = self.act(self.row_conv_group(self.row_bn(cov)))  # b,4d,1,1
        return self.gate(self.fc_adapt_channels(y))

    def forward(self, x):
        return x * self.channel_weights(x)
