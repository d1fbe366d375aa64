"""CSPDarknet53-tiny, the backbone of darknet's YOLOv4-tiny (layer order of yolov4-tiny.cfg)."""
from types import MappingProxyType
from typing import Mapping, Optional, Sequence

import torch
import torch.nn as nn

from nets.attn.registry import build_attention, build_stage_attention


class BasicConv(nn.Module):
    """Conv (no bias) + BatchNorm + LeakyReLU(0.1), darknet's `[convolutional] batch_normalize=1`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activation = nn.LeakyReLU(0.1)

    def forward(self, x):
        return self.activation(self.bn(self.conv(x)))


class Resblock_body(nn.Module):
    """CSP block: 3x3 conv, keep the second half of the channels, two 3x3 convs, 1x1 conv, concat, max-pool.

    Returns the pooled output and the pre-pool feature (`feat`, used as feat1 by the last block).
    conv2 and conv3 are the block's repeated layers of one width (out_channels / 2): `stage_attention`
    names a stage block (dia) that follows each of them in turn, carrying its state from conv2 to conv3.
    """

    def __init__(self, in_channels: int, out_channels: int, stage_attention: Optional[str] = None):
        super().__init__()
        self.out_channels = out_channels
        self.conv1 = BasicConv(in_channels, out_channels, 3)
        self.conv2 = BasicConv(out_channels // 2, out_channels // 2, 3)
        self.conv3 = BasicConv(out_channels // 2, out_channels // 2, 3)
        self.conv4 = BasicConv(out_channels, out_channels, 1)
        self.maxpool = nn.MaxPool2d(2, 2)
        self.stage_att = build_stage_attention(stage_attention, out_channels // 2)

    def forward(self, x):
        x = self.conv1(x)
        route = x
        # darknet's `[route] groups=2 group_id=1`: the second half of the channels
        x = x[:, self.out_channels // 2:]
        x, state = self.stage_att(self.conv2(x), None)
        route1 = x
        x, _ = self.stage_att(self.conv3(x), state)
        x = torch.cat([x, route1], dim=1)
        x = self.conv4(x)
        feat = x
        x = torch.cat([route, x], dim=1)
        return self.maxpool(x), feat


class CSPDarkNet(nn.Module):
    """Backbone returning feat1 (stride 16, 256 ch) and feat2 (stride 32, 512 ch).

    `csp_attention` names an attention block for the output of each CSP block (sites csp1..csp3), and
    `csp_facts` what each of those sites tells its block (YoloBody's map_size, num_classes);
    `stage_attention` names a stage block inside each CSP block (stage sites stage1..stage3, at conv2
    and conv3). With none they hold no parameters, so state dicts stay as the reference's.
    """

    out_channels = (256, 512)  # feat1, feat2
    out_strides = (16, 32)  # input pixels per cell of feat1, feat2
    # attention site -> channels there: the output of each CSP block (after its max-pool)
    site_channels = MappingProxyType({"csp1": 128, "csp2": 256, "csp3": 512})
    site_strides = MappingProxyType({"csp1": 8, "csp2": 16, "csp3": 32})
    # stage site -> the width of the CSP block's repeated layers (conv2, conv3)
    stage_channels = MappingProxyType({"stage1": 32, "stage2": 64, "stage3": 128})

    def __init__(self, csp_attention: Sequence[Optional[str]] = (None, None, None),
                 stage_attention: Sequence[Optional[str]] = (None, None, None),
                 csp_facts: Optional[Sequence[Mapping]] = None):
        super().__init__()
        facts = csp_facts or ({}, {}, {})
        # 416,416,3 -> 208,208,32 -> 104,104,64
        self.conv1 = BasicConv(3, 32, 3, stride=2)
        self.conv2 = BasicConv(32, 64, 3, stride=2)
        # 104,104,64 -> 52,52,128
        self.resblock_body1 = Resblock_body(64, 64, stage_attention[0])
        # 52,52,128 -> 26,26,256
        self.resblock_body2 = Resblock_body(128, 128, stage_attention[1])
        # 26,26,256 -> 13,13,512, feat1 26,26,256
        self.resblock_body3 = Resblock_body(256, 256, stage_attention[2])
        # 13,13,512 -> 13,13,512
        self.conv3 = BasicConv(512, 512, 3)
        self.csp1_att = build_attention(csp_attention[0], self.site_channels["csp1"], facts[0])
        self.csp2_att = build_attention(csp_attention[1], self.site_channels["csp2"], facts[1])
        self.csp3_att = build_attention(csp_attention[2], self.site_channels["csp3"], facts[2])

    def forward(self, x):
        x = self.conv2(self.conv1(x))
        x, _ = self.resblock_body1(x)
        x = self.csp1_att(x)
        x, _ = self.resblock_body2(x)
        x = self.csp2_att(x)
        x, feat1 = self.resblock_body3(x)
        x = self.csp3_att(x)
        feat2 = self.conv3(x)
        return feat1, feat2


def darknet53_tiny(pretrained: bool = False, **kwargs) -> CSPDarkNet:
    """Reference-compatible constructor. Pretrained weights cannot be downloaded here: load them with --weights."""
    if pretrained:
        raise ValueError("pretrained=True would download weights, which this project never does; "
                         "pass a weights file instead (train.py --weights PATH)")
    return CSPDarkNet(**kwargs)
