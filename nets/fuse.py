"""Folding BatchNorm into the preceding convolution for inference."""
import copy

import torch
import torch.nn as nn


def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv with bias computing bn(conv(x)) in eval mode: w' = w * g / s, b' = (b - mean) * g / s + beta."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused.to(conv.weight.device, conv.weight.dtype)


def fuse_model(model: nn.Module) -> nn.Module:
    """A fused copy of `model` in eval mode: every module with a `conv` (Conv2d) followed by a `bn`
    (BatchNorm2d), such as BasicConv, gets the BN folded into the conv and the BN replaced by Identity.

    The input model is left untouched. The copy is for inference only (BN statistics are frozen in).
    """
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            module.conv = fuse_conv_bn(conv, bn)
            module.bn = nn.Identity()
    return fused
