from typing import Sequence

import torch
import torch.nn as nn


def conv_bn_act(channels: int, kernel_size: int, dilation: int = 1, act_layer=nn.ReLU) -> nn.Sequential:
    padding = dilation * (kernel_size // 2)
    return nn.Sequential(
        nn.Conv2d(channels, channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(channels),
        act_layer(),
    )


def selective_weights(inputs: Sequence[torch.Tensor], score_convs: Sequence[nn.Module]) -> torch.Tensor:
    """SHISRCNet's selective weights: Tensor[B, C, M] for M maps Tensor[B, C, H, W] of one width.

    Input i's global average goes through score_convs[i] (a bias-free 1x1 conv); per channel the
    sigmoid scores are turned into weights by a softmax across the M inputs.
    """
    logits = torch.cat([conv(x.mean(dim=(2, 3), keepdim=True)) for conv, x in zip(score_convs, inputs)], dim=2)
    return torch.sigmoid(logits).softmax(dim=2).squeeze(-1)  # b,c,M


def selective_sum(inputs: Sequence[torch.Tensor], score_convs: Sequence[nn.Module]) -> torch.Tensor:
    """sum_i w_i * inputs[i] with the per-channel weights of `selective_weights`."""
    weights = selective_weights(inputs, score_convs)
    return sum(x * weights[:, :, i, None, None] for i, x in enumerate(inputs))


class MFE(nn.Module):
    """SHISRCNet: Super-resolution And Classification Network For Low-resolution Breast Cancer
    Histopathology Image, https://arxiv.org/abs/2306.14119

    Chained dilated 3x3 convs fused by per-channel softmax weights, plus the input, then a 1x1 conv.
    Multi-Features Extraction block: a 3x3 conv and three dilated 3x3 convs (rates 2, 4, 8) in a chain,
    each fed with the previous output plus the input (conv + BN + ReLU); multi-scale selective fusion
    weighs the four outputs per channel (`selective_sum`); the weighted sum plus the input goes through
    a 1x1 conv + BN + ReLU.

    Like SK this re-computes features rather than gating them (its output is non-negative), and at
    ~41*C^2 parameters it is by far the heaviest block. The seed's fusion block on its own (MSFblock)
    takes several inputs: it is `SelectiveFusion`, the `msf` choice of the FPN merge.
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
        return self.project(selective_sum(feats, self.se) + x)


class SelectiveFusion(nn.Module):
    """SHISRCNet's multi-scale selective fusion (MSFblock), https://arxiv.org/abs/2306.14119, over
    `num_inputs` maps of one width (the seed fuses four; the FPN merge fuses two).

    One bias-free 1x1 conv per input scores its global average; the per-channel softmax across the
    inputs of the sigmoid scores weighs them (`selective_sum`); the sum goes through a 1x1 conv + BN + ReLU.
    forward(*inputs), each Tensor[B, C, H, W] -> Tensor[B, C, H, W].
    """

    def __init__(self, channels: int, num_inputs: int = 2, act_layer=nn.ReLU):
        super().__init__()
        if num_inputs < 2:
            raise ValueError(f"SelectiveFusion weighs several inputs against each other; got num_inputs={num_inputs}")
        self.se = nn.ModuleList(nn.Conv2d(channels, channels, 1, bias=False) for _ in range(num_inputs))
        self.project = conv_bn_act(channels, 1, 1, act_layer)

    def input_weights(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Tensor[B, C, M]: each input's weight per channel; they sum to 1 over the M inputs."""
        return selective_weights(inputs, self.se)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) != len(self.se):
            raise ValueError(f"SelectiveFusion was built for {len(self.se)} inputs, got {len(inputs)}")
        return self.project(selective_sum(inputs, self.se))
