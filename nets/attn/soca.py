import torch.nn as nn

from nets.attn.covpool import covariance_pool, sqrtm_newton_schulz
from nets.attn.rcan import conv_gate


class SOCA(nn.Module):
    """Second-order Attention Network for Single Image Super-Resolution (SAN, CVPR 2019),
    https://openaccess.thecvf.com/content_CVPR_2019/html/Dai_Second-Order_Attention_Network_for_Single_Image_Super-Resolution_CVPR_2019_paper.html

    A gate from the square-rooted channel covariance (second-order channel attention). In order: global
    covariance pooling (C x C), its matrix square root by Newton-Schulz iterations, the mean of each row
    as the channel descriptor, then RCAN's 1x1 conv down/up with biases and a Sigmoid gate.

    Detector note: the seed crops maps larger than 1000x1000 before pooling, which never triggers here,
    and holds an unused max-pool; both are left out. Cost is O(C^3) per image (a few C x C matrix
    products), independent of H x W beyond the covariance itself.
    """

    def __init__(self, channels: int, rd_ratio: int = 8, iterations: int = 5, act_layer=nn.ReLU,
                 gate_layer=nn.Sigmoid):
        super().__init__()
        hidden = max(1, channels // rd_ratio)
        self.iterations = iterations
        self.conv_du = conv_gate(channels, hidden, act_layer, gate_layer)

    def channel_weights(self, x):
        """Tensor[B, C, 1, 1] of gates."""
        b, c = x.shape[:2]
        cov_sqrt = sqrtm_newton_schulz(covariance_pool(x), self.iterations)
        return self.conv_du(cov_sqrt.mean(dim=1).view(b, c, 1, 1))

    def forward(self, x):
        return x * self.channel_weights(x)
