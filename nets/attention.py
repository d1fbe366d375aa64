"""The attention API in one import: the block registry (nets.attn.registry) and placement over the
sites of YoloBody (nets.yolo), which owns the sites and their channels.

    build_attention("cbam", 256)             # a block, nn.Identity() for "none"
    parse_attention("feat1=cbam,stage2=dia") # {site: block name} for every YoloBody site and stage site
    split_fusion("feat1=se,fusion=gated")    # ('feat1=se', 'gated'): a variant's attention and FPN merge
"""
from nets.attn.registry import (ATTENTION_BLOCKS, FUSION_NAMES, PHI_NAMES, STAGE_BLOCKS, AttentionSpec,
                                build_attention, check_fusion, check_name, phi_to_name, site_facts, valid_names)
from nets.yolo import YoloBody, attention_to_str, parse_attention, split_fusion

# The model's facts, read from it (kept under the names callers already import).
SITE_CHANNELS = YoloBody.site_channels
DEFAULT_SITES = YoloBody.default_sites
STAGE_CHANNELS = YoloBody.stage_channels

__all__ = ["ATTENTION_BLOCKS", "DEFAULT_SITES", "FUSION_NAMES", "PHI_NAMES", "SITE_CHANNELS", "STAGE_BLOCKS",
           "STAGE_CHANNELS", "AttentionSpec", "attention_to_str", "build_attention", "check_fusion", "check_name",
           "parse_attention", "phi_to_name", "site_facts", "split_fusion", "valid_names"]
