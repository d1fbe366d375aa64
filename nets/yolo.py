"""YOLOv4-tiny: CSPDarknet53-tiny backbone, FPN neck, two YOLO heads, pluggable attention."""
import math
from types import MappingProxyType
from typing import Dict, Mapping, Sequence

import torch
import torch.nn as nn

from nets.attn.registry import AttentionSpec, build_attention, parse_placement, placement_to_str
from nets.CSPdarknet53_tiny import BasicConv, CSPDarkNet, darknet53_tiny


class Upsample(nn.Module):
    """1x1 conv then nearest-neighbour x2 (darknet `[upsample] stride=2`)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.upsample = nn.Sequential(BasicConv(in_channels, out_channels, 1), nn.Upsample(scale_factor=2, mode="nearest"))

    def forward(self, x):
        return self.upsample(x)


def yolo_head(filters_list: Sequence[int], in_filters: int) -> nn.Sequential:
    """3x3 BasicConv to filters_list[0], then a plain 1x1 conv with bias to filters_list[1] outputs."""
    return nn.Sequential(BasicConv(in_filters, filters_list[0], 3), nn.Conv2d(filters_list[0], filters_list[1], 1))


class YoloBody(nn.Module):
    """YOLOv4-tiny with attention blocks at named sites.

    Args:
        anchors_mask: anchor indices per head, P5 (stride 32) first, e.g. [[3, 4, 5], [1, 2, 3]].
        num_classes: number of object classes.
        phi: the reference's integer switch (0 none, 1 se, 2 cbam, 3 eca, 4 ca); ignored when
            `attention` is given.
        attention: a block name for the default sites, a per-site spec such as
            'feat1=cbam,feat2=se,upsample=none', or a dict (see parse_attention below).

    forward(x: Tensor[B, 3, H, W]) with H, W multiples of 32 returns (out0, out1):
    out0 Tensor[B, A0*(5+C), H/32, W/32] and out1 Tensor[B, A1*(5+C), H/16, W/16], raw logits laid
    out per anchor as (tx, ty, tw, th, objectness, class scores...).
    """

    strides = (32, 16)  # input pixels per grid cell of out0, out1
    # attention site -> channels of the feature map there; each site's block is the module at
    # site_modules[site]. phi and a bare block name fill the default sites: the two backbone
    # features and the upsampled P5 branch.
    site_channels = MappingProxyType({"feat1": CSPDarkNet.out_channels[0], "feat2": CSPDarkNet.out_channels[1],
                                      "upsample": 128, **CSPDarkNet.site_channels})
    site_modules = MappingProxyType({"feat1": "feat1_att", "feat2": "feat2_att", "upsample": "upsample_att",
                                     **{site: f"backbone.{site}_att" for site in CSPDarkNet.site_channels}})
    default_sites = ("feat1", "feat2", "upsample")

    def __init__(self, anchors_mask, num_classes: int, phi: int = 0, pretrained: bool = False,
                 attention: AttentionSpec = None):
        super().__init__()
        self.anchors_mask = [list(m) for m in anchors_mask]
        self.num_classes = num_classes
        self.placement = parse_attention(attention if attention is not None else phi)
        self.attention = attention_to_str(self.placement)
        csp = tuple(self.placement[site] for site in CSPDarkNet.site_channels)
        self.backbone = darknet53_tiny(pretrained, csp_attention=csp)

        # 13,13,512 -> 13,13,256
        self.conv_for_P5 = BasicConv(512, 256, 1)
        # 13,13,256 -> 13,13,512 -> 13,13,A*(5+C)
        self.yolo_headP5 = yolo_head([512, len(anchors_mask[0]) * (5 + num_classes)], 256)
        # 13,13,256 -> 13,13,128 -> 26,26,128
        self.upsample = Upsample(256, self.site_channels["upsample"])
        # 26,26,384 -> 26,26,256 -> 26,26,A*(5+C)
        self.yolo_headP4 = yolo_head([256, len(anchors_mask[1]) * (5 + num_classes)], 384)

        self.feat1_att = build_attention(self.placement["feat1"], self.site_channels["feat1"])
        self.feat2_att = build_attention(self.placement["feat2"], self.site_channels["feat2"])
        self.upsample_att = build_attention(self.placement["upsample"], self.site_channels["upsample"])
        self.init_head_biases()

    def attention_sites(self) -> Dict[str, nn.Module]:
        """{site: the module there} for every site, in site_channels order; nn.Identity where none."""
        return {site: self.get_submodule(path) for site, path in self.site_modules.items()}

    def init_head_biases(self, objects_per_image: float = 8.0, input_size: int = 416):
        """Start objectness and class logits at sensible priors instead of 0.5 probability.

        With every logit at 0 a fresh model predicts an object in every cell, which swamps the
        objectness loss for the first epochs; a prior of ~8 objects per image avoids that.
        """
        for head, stride, mask in zip((self.yolo_headP5, self.yolo_headP4), self.strides, self.anchors_mask):
            bias = head[1].bias.data.view(len(mask), -1)
            bias[:, 4] = math.log(objects_per_image / (input_size / stride) ** 2)
            bias[:, 5:] = math.log(0.6 / max(self.num_classes - 0.99, 0.01))

    def init_normal(self, std: float = 0.02) -> None:
        """bubbliiiing/yolov4-tiny-pytorch's weights_init, for training from scratch as it does: conv
        weights normal(0, std), BatchNorm weights normal(1, std) and biases 0; the output convs' biases
        get PyTorch's default init instead of the priors of init_head_biases."""
        for head in (self.yolo_headP5, self.yolo_headP4):
            head[1].reset_parameters()
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                nn.init.normal_(m.weight, 0.0, std)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, std)
                nn.init.constant_(m.bias, 0.0)

    def forward(self, x):
        # feat1 26,26,256; feat2 13,13,512 (at 416)
        feat1, feat2 = self.backbone(x)
        feat1 = self.feat1_att(feat1)
        feat2 = self.feat2_att(feat2)
        P5 = self.conv_for_P5(feat2)
        out0 = self.yolo_headP5(P5)
        P5_upsample = self.upsample_att(self.upsample(P5))
        # 26,26,128 + 26,26,256 -> 26,26,384
        P4 = torch.cat([P5_upsample, feat1], dim=1)
        out1 = self.yolo_headP4(P4)
        return out0, out1


def parse_attention(spec: AttentionSpec = None) -> Dict[str, str]:
    """{site: block name} for every site of YoloBody ('none' where no block goes).

    Accepted: None (no attention), a phi integer (or its digits as a string), one block name for the
    three default sites, 'feat1=cbam,feat2=se,upsample=none' (sites not named get none), or a dict.
    Raises ValueError naming the valid sites, block names or phi values.
    """
    return parse_placement(spec, tuple(YoloBody.site_channels), YoloBody.default_sites)


def attention_to_str(placement: Mapping[str, str]) -> str:
    """The shortest spec that `parse_attention` turns back into `placement`."""
    return placement_to_str(placement, tuple(YoloBody.site_channels), YoloBody.default_sites)
