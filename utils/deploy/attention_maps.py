"""What the attention blocks look at: a spatial map per placement site, or the channel weights.

Blocks that compute a spatial map (CBAM, triplet: `spatial_map`; coordinate attention: `gates`) give
the mean gate over channels at each position; channel-only blocks (`channel_weights`: SE, ECA, GCT,
SRM, FcaNet, RCAN, SOCA, GSoP) give one weight per channel. Blocks that build new features instead of
gates (SK, MFE, OSRA, SAFM) have no single map and are left out.
"""
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from utils.deploy.drawing import heatmap_overlay, save_image
from utils.core.plotting import plt, save_figure


def site_blocks(model: nn.Module) -> Dict[str, nn.Module]:
    """The attention block at each site of a YoloBody (its `attention_sites()`); sites without a block are left out."""
    return {site: module for site, module in model.attention_sites().items() if not isinstance(module, nn.Identity)}


def block_map(block: nn.Module, x: torch.Tensor) -> Optional[Tuple[str, torch.Tensor]]:
    """('spatial', Tensor[H, W]) or ('channel', Tensor[C]) for the first image of the block's input x."""
    if hasattr(block, "spatial_map"):
        return "spatial", block.spatial_map(x)[0].mean(dim=0)
    if hasattr(block, "gates"):
        s_h, s_w = block.gates(x)
        return "spatial", (s_h * s_w)[0].mean(dim=0)
    if hasattr(block, "channel_weights"):
        return "channel", block.channel_weights(x)[0].flatten()
    return None


@torch.no_grad()
def attention_maps(model: nn.Module, batch: torch.Tensor) -> Dict[str, Tuple[str, np.ndarray]]:
    """{site: (kind, map)} for one preprocessed image, from the inputs each block saw in a forward pass."""
    blocks = site_blocks(model)
    seen = {}
    hooks = [block.register_forward_hook(lambda mod, args, out, site=site: seen.__setitem__(site, args[0]))
             for site, block in blocks.items()]
    try:
        model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    maps = {}
    for site, block in blocks.items():
        found = block_map(block, seen[site])
        if found is not None:
            maps[site] = (found[0], found[1].float().cpu().numpy())
    return maps


def save_attention_maps(out: Path, stem: str, image: np.ndarray, maps: Dict[str, Tuple[str, np.ndarray]]) -> list:
    """Write `<stem>_att_<site>.jpg` (spatial map over the image) or `.png` (channel weights); returns the paths."""
    written = []
    for site, (kind, values) in maps.items():
        if kind == "spatial":
            span = float(values.max() - values.min())
            heat = (values - values.min()) / span if span > 0 else np.zeros_like(values)
            path = Path(out) / f"{stem}_att_{site}.jpg"
            save_image(path, heatmap_overlay(image, heat))
        else:
            fig, ax = plt.subplots(figsize=(8, 2.5))
            ax.bar(np.arange(len(values)), values, width=1.0)
            ax.set_xlabel("channel")
            ax.set_ylabel("weight")
            ax.set_title(f"{site}: channel weights ({len(values)} channels)")
            path = save_figure(fig, Path(out) / f"{stem}_att_{site}.png")
        written.append(path)
    return written
