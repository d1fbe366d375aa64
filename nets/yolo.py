"""YOLOv4-tiny: CSPDarknet53-tiny backbone, FPN neck, two YOLO heads, pluggable attention and FPN merge."""
import math
from contextlib import contextmanager
from types import MappingProxyType
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from nets.attn.registry import (AttentionSpec, build_attention, build_fusion, check_fusion, parse_placement,
                                placement_to_str, site_facts)
from nets.CSPdarknet53_tiny import BasicConv, CSPDarkNet, darknet53_tiny
from utils.core.config import parse_input_size

InputSize = Union[None, int, Sequence[int]]


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


class FPNMerge(nn.Module):
    """The join of the upsampled P5 branch and the lateral feature (feat1) before the P4 head.

    concat: darknet's route layer, torch.cat([branch, lateral]): branch + lateral channels out
    (128 + 256 = 384), no parameters. gated, msf: two-input blocks over maps of one width, so the
    branch is first widened to the lateral's width by a 1x1 BasicConv (`align`, 128 -> 256), then the
    two are fused into `lateral_channels` (256): the P4 head then reads 256 channels instead of 384.
    """

    def __init__(self, fusion: str, branch_channels: int, lateral_channels: int):
        super().__init__()
        self.fusion = check_fusion(fusion)
        if self.fusion == "concat":
            self.out_channels = branch_channels + lateral_channels
        else:
            self.align = BasicConv(branch_channels, lateral_channels, 1)
            self.fuse = build_fusion(self.fusion, lateral_channels)
            self.out_channels = lateral_channels

    def forward(self, branch, lateral):
        if self.fusion == "concat":
            return torch.cat([branch, lateral], dim=1)
        return self.fuse(self.align(branch), lateral)


class YoloBody(nn.Module):
    """YOLOv4-tiny with attention blocks at named sites and a choice of FPN merge.

    Args:
        anchors_mask: anchor indices per head, P5 (stride 32) first, e.g. [[3, 4, 5], [1, 2, 3]].
        num_classes: number of object classes.
        phi: the reference's integer switch (0 none, 1 se, 2 cbam, 3 eca, 4 ca); ignored when
            `attention` is given.
        attention: a block name for the default sites (a stage block such as 'dia' for every stage
            site), a per-site spec such as 'feat1=cbam,feat2=se,stage2=dia', or a dict (see parse_attention).
        fusion: the join before the P4 head (FPNMerge): 'concat' (darknet's, the default), 'gated' or 'msf'.
        input_size: the input size (int or (h, w)), needed by blocks whose weights fix the map size
            (cbam_joint); a model holding one refuses inputs of another size.
        se_loss: give every enc block an SE-loss head over `num_classes` (see collect_se_logits).

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
    site_strides = MappingProxyType({"feat1": CSPDarkNet.out_strides[0], "feat2": CSPDarkNet.out_strides[1],
                                     "upsample": strides[1], **CSPDarkNet.site_strides})
    site_modules = MappingProxyType({"feat1": "feat1_att", "feat2": "feat2_att", "upsample": "upsample_att",
                                     **{site: f"backbone.{site}_att" for site in CSPDarkNet.site_channels}})
    default_sites = ("feat1", "feat2", "upsample")
    # stage site -> width of the repeated layers there; its stage block is the module at stage_modules[site]
    stage_channels = CSPDarkNet.stage_channels
    stage_modules = MappingProxyType({site: f"backbone.resblock_body{i}.stage_att"
                                      for i, site in enumerate(CSPDarkNet.stage_channels, 1)})

    def __init__(self, anchors_mask, num_classes: int, phi: int = 0, pretrained: bool = False,
                 attention: AttentionSpec = None, fusion: str = "concat", input_size: InputSize = None,
                 se_loss: bool = False):
        super().__init__()
        self.anchors_mask = [list(m) for m in anchors_mask]
        self.num_classes = num_classes
        self.placement = parse_attention(attention if attention is not None else phi)
        self.attention = attention_to_str(self.placement)
        self.input_size = None if input_size is None else parse_input_size(input_size)
        self.se_loss = bool(se_loss)
        self.fixed_input_size = self._fixed_input_size()
        self._check_se_loss()
        facts = {site: self.site_facts(site) for site in self.site_channels}
        self.backbone = darknet53_tiny(pretrained, csp_attention=[self.placement[s] for s in CSPDarkNet.site_channels],
                                       stage_attention=[self.placement[s] for s in self.stage_channels],
                                       csp_facts=[facts[s] for s in CSPDarkNet.site_channels])

        # 13,13,512 -> 13,13,256
        self.conv_for_P5 = BasicConv(512, 256, 1)
        # 13,13,256 -> 13,13,512 -> 13,13,A*(5+C)
        self.yolo_headP5 = yolo_head([512, len(anchors_mask[0]) * (5 + num_classes)], 256)
        # 13,13,256 -> 13,13,128 -> 26,26,128
        self.upsample = Upsample(256, self.site_channels["upsample"])
        # 26,26,128 + 26,26,256 -> 26,26,384 (concat) or 26,26,256 (gated, msf)
        self.p4_merge = FPNMerge(fusion, self.site_channels["upsample"], self.site_channels["feat1"])
        self.fusion = self.p4_merge.fusion
        # 26,26,384 (or 256) -> 26,26,256 -> 26,26,A*(5+C)
        self.yolo_headP4 = yolo_head([256, len(anchors_mask[1]) * (5 + num_classes)], self.p4_merge.out_channels)

        self.feat1_att = self._site_block("feat1", facts)
        self.feat2_att = self._site_block("feat2", facts)
        self.upsample_att = self._site_block("upsample", facts)
        self.init_head_biases()

    def _site_block(self, site: str, facts: Mapping[str, Mapping]) -> nn.Module:
        return build_attention(self.placement[site], self.site_channels[site], facts[site])

    def site_facts(self, site: str) -> Dict[str, object]:
        """What the model tells the block at `site`: map_size (h, w) (None without input_size) and
        num_classes (0 unless se_loss)."""
        stride = self.site_strides[site]
        size = None if self.input_size is None else (self.input_size[0] // stride, self.input_size[1] // stride)
        return {"map_size": size, "num_classes": self.num_classes if self.se_loss else 0}

    def _sites_asking(self, fact: str) -> List[str]:
        return [site for site in self.site_channels if fact in site_facts(self.placement[site])]

    def _fixed_input_size(self) -> Optional[Tuple[int, int]]:
        sized = self._sites_asking("map_size")
        if sized and self.input_size is None:
            raise ValueError(f"{', '.join(self.placement[s] for s in sized)} at {', '.join(sized)} fixes the map size: "
                             "give the model its input size (YoloBody(..., input_size=416), train.py --input-size)")
        return self.input_size if sized else None

    def _check_se_loss(self) -> None:
        if self.se_loss and not self._sites_asking("num_classes"):
            raise ValueError(f"se_loss needs an enc block, and attention {self.attention!r} has none; "
                             "place one, e.g. attention='enc' or 'feat2=enc'")

    def attention_sites(self) -> Dict[str, nn.Module]:
        """{site: the module there} for every site, in site_channels order; nn.Identity where none."""
        return {site: self.get_submodule(path) for site, path in self.site_modules.items()}

    def stage_sites(self) -> Dict[str, nn.Module]:
        """{stage site: the stage block there} in stage_channels order; NoStageAttention where none."""
        return {site: self.get_submodule(path) for site, path in self.stage_modules.items()}

    @contextmanager
    def collect_se_logits(self) -> Iterator[List[torch.Tensor]]:
        """A list that each forward pass inside the `with` block fills with the SE-loss logits of every
        enc block's head (Tensor[B, num_classes] each, in the order the blocks run); empty without se_loss.

            with unwrap(model).collect_se_logits() as se_logits:
                outputs = model(images)      # the DDP wrapper may be called: the hooks sit on the heads
        """
        found: List[torch.Tensor] = []
        heads = [m.se_head for m in self.modules() if getattr(m, "se_head", None) is not None]
        hooks = [head.register_forward_hook(lambda mod, args, out: found.append(out)) for head in heads]
        try:
            yield found
        finally:
            for hook in hooks:
                hook.remove()

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

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError when the model holds a block fixed to one map size and x is of another size."""
        if self.fixed_input_size is None or torch.jit.is_tracing():
            return
        if tuple(x.shape[-2:]) != self.fixed_input_size:
            h, w = self.fixed_input_size
            raise ValueError(f"this model takes {h}x{w} inputs only, got {x.shape[-2]}x{x.shape[-1]}: its attention "
                             f"{self.attention!r} holds a block whose weights fix the map size (cbam_joint); "
                             f"feed {h}x{w} images (--input-size) or train a model for the other size")

    def forward(self, x):
        self.check_input(x)
        # feat1 26,26,256; feat2 13,13,512 (at 416)
        feat1, feat2 = self.backbone(x)
        feat1 = self.feat1_att(feat1)
        feat2 = self.feat2_att(feat2)
        P5 = self.conv_for_P5(feat2)
        out0 = self.yolo_headP5(P5)
        P5_upsample = self.upsample_att(self.upsample(P5))
        P4 = self.p4_merge(P5_upsample, feat1)
        out1 = self.yolo_headP4(P4)
        return out0, out1


def parse_attention(spec: AttentionSpec = None) -> Dict[str, str]:
    """{site: block name} for every attention site and stage site of YoloBody ('none' where no block goes).

    Accepted: None (no attention), a phi integer (or its digits as a string), one block name for the
    three default sites (a stage block, 'dia', for the three stage sites), 'feat1=cbam,stage2=dia'
    (sites not named get none), or a dict. Raises ValueError naming the valid sites, block names or phi values.
    """
    return parse_placement(spec, tuple(YoloBody.site_channels), YoloBody.default_sites, tuple(YoloBody.stage_channels))


def attention_to_str(placement: Mapping[str, str]) -> str:
    """The shortest spec that `parse_attention` turns back into `placement`."""
    return placement_to_str(placement, tuple(YoloBody.site_channels), YoloBody.default_sites,
                            tuple(YoloBody.stage_channels))


def split_fusion(variant: str) -> Tuple[str, str]:
    """(attention spec, fusion) of a variant that may name its fusion as one more part, 'fusion=NAME':
    'feat1=se,fusion=gated' -> ('feat1=se', 'gated'); 'fusion=msf' -> ('none', 'msf'); 'cbam' -> ('cbam', 'concat').
    """
    text = str(variant).strip()
    parts = [part.strip() for part in text.split(",") if part.strip()] if "=" in text else [text]
    is_fusion = [part.split("=", 1)[0].strip().lower() == "fusion" for part in parts]
    named = [part.split("=", 1)[1] for part, fusion in zip(parts, is_fusion) if fusion]
    if len(named) > 1:
        raise ValueError(f"variant {variant!r} names its fusion {len(named)} times; name it once")
    rest = [part for part, fusion in zip(parts, is_fusion) if not fusion]
    return ",".join(rest) or "none", check_fusion(named[0] if named else None)
