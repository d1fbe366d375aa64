import torch
import torch.nn as nn


def conv_bn_act(channels: int, kernel_size: int, dilation: int = 1, act_layer=nn.ReLU) -> nn.Sequential:
    padding = dilation * (kernel_size // 2)
    return nn.Sequential(
        nn.Conv2d(channels, channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(channels),
        act_layer(),
    )


class MFE(nn.Module):
    """SHISRCNet: Super-resolution And Classification Network For Low-resolution Breast Cancer
    Histopathology Image, https://arxiv.org/abs/2306.14119

    Chained dilated 3x3 convs fused by per-channel softmax weights, plus the input, then a 1x1 conv.
    Multi-Features Extraction block: a 3x3 conv and three dilated 3x3 convs (rates 2, 4, 8) in a chain,
    each fed with the previous output plus the input (conv + BN + ReLU); multi-scale selective fusion
    weighs the four outputs per channel (GAP, a bias-free 1x1 conv per branch, Sigmoid, then softmax
    over the branches); the weighted sum plus the input goes through a 1x1 conv + BN + ReLU.

    Like SK this re-computes features rather than gating them (its output is non-negative), and at
    ~41*C^2 parameters it is by far the heaviest block. The seed's fusion block (MSFblock) takes four
    inputs and has no single-input form, so only MFE is registered.
    """

    def __init__(self, channels: int, atrous_rates=(2, 4, 8), act_layer=nn.ReLU):
        super().__init__()
        rates = (1,) + tuple(atrous_rates)
        self.layers = nn.ModuleList(conv_bn_act(channels, 3, r, act_layer) for r in rates)
        self.se = nn.ModuleList(nn.Conv2d(channels, channels, 1, bias=False) for _ in rates)
        self.project = conv_bn_act(channels, 1, 1, act_layer)

    def forward(self, x):
        feats, y = [], x
        for i, layer in enumerate(self.layers):
            y = layer(x if i == 0 else y + x)
            feats.append(y)
        # b,c,M: a descriptor per branch, then softmax over the branches of the sigmoid scores
        logits = torch.cat([se(f.mean(dim=(2, 3), keepdim=True)) for se, f in zip(self.se, feats)], dim=2)
        weights = torch.sigmoid(logits).softmax(dim=2).unsqueeze(-1)  # b,c,M,1
        fused = (torch.stack(feats, dim=2) * weights).sum(dim=2)
        return self.project(fused + x)
