"""The attention API in one import: the block registry (nets.attn.registry) and placement over the
sites of YoloBody (nets.yolo), which owns the sites and their channels.

    build_attention("cbam", 256)             # a block, nn.Identity() for "none"
    parse_attention("feat1=cbam,csp2=se")    # {site: block name} for every YoloBody site
"""
from nets.attn.registry import (ATTENTION_BLOCKS, PHI_NAMES, AttentionSpec, build_attention, check_name,
                                phi_to_name, valid_names)
from nets.yolo import YoloBody, attention_to_str, parse_attention

# The model's facts, read from it (kept under the names callers already import).
SITE_CHANNELS = YoloBody.site_channels
DEFAULT_SITES = YoloBody.default_sites

__all__ = ["ATTENTION_BLOCKS", "PHI_NAMES", "AttentionSpec", "DEFAULT_SITES", "SITE_CHANNELS", "attention_to_str",
           "build_attention", "check_name", "parse_attention", "phi_to_name", "valid_names"]
