"""What the attention blocks look at: a spatial map per placement site, or the channel weights.

Blocks that compute a spatial map (CBAM, triplet: `spatial_map`; coordinate attention: `gates`) give
the mean gate over channels at each position; channel-only blocks (`channel_weights`: SE, ECA, GCT,
SRM, FcaNet, RCAN, SOCA, GSoP) give one weight per channel. Blocks that build new features instead of
gates (SK, MFE, OSRA, SAFM) have no single map and are left out.
"""
from pathlib import Path
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from utils.deploy.drawing import heatmap_overlay, labelled_heat, save_image
from utils.core.plotting import plt, save_figure


class FeatureLayer(NamedTuple):
    name: str  # as written in messages and on panels
    module: nn.Module
    on_input: bool  # the module's input rather than its output


class FeatureRecorder:
    """Keeps, during one forward pass, the [B, C, H, W] tensor at each FeatureLayer (its module's input or
    output) in `seen`, by layer index; ValueError for another kind of value or a module that runs twice."""

    def __init__(self, layers: Sequence[FeatureLayer]):
        self.layers, self.seen, self.hooks = list(layers), {}, []

    def __enter__(self) -> "FeatureRecorder":
        for i, layer in enumerate(self.layers):
            if layer.on_input:
                hook = layer.module.register_forward_pre_hook(lambda mod, args, i=i: self._keep(i, args[0]))
            else:
                hook = layer.module.register_forward_hook(lambda mod, args, out, i=i: self._keep(i, out))
            self.hooks.append(hook)
        return self

    def _keep(self, i: int, value) -> None:
        name = self.layers[i].name
        if i in self.seen:
            raise ValueError(f"layer {name} runs more than once in a forward pass; choose another layer")
        if not (isinstance(value, torch.Tensor) and value.dim() == 4):
            found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"layer {name} gives {found}, not a feature map [B, C, H, W]; choose another layer")
        self.seen[i] = value

    def __exit__(self, *exc) -> None:
        for hook in self.hooks:
            hook.remove()


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
    with FeatureRecorder([FeatureLayer(site, block, True) for site, block in blocks.items()]) as recorder:
        model(batch)
    maps = {}
    for i, (site, block) in enumerate(blocks.items()):
        found = block_map(block, recorder.seen[i])
        if found is not None:
            maps[site] = (found[0], found[1].float().cpu().numpy())
    return maps


def attention_title(site: str) -> str:
    """The title of a spatial attention map: the site first, so that a narrow image's cut title still names it."""
    return f"{site}: attention gate, mean over channels"


def save_attention_maps(out: Path, stem: str, image: np.ndarray, maps: Dict[str, Tuple[str, np.ndarray]]) -> list:
    """Write `<stem>_att_<site>.jpg` (spatial map over the image, titled with the site, its colour scale from the
    map's lowest to its highest gate on the right) or `.png` (channel weights); returns the paths."""
    written = []
    for site, (kind, values) in maps.items():
        if kind == "spatial":
            span = float(values.max() - values.min())
            heat = (values - values.min()) / span if span > 0 else np.zeros_like(values)
            path = Path(out) / f"{stem}_att_{site}.jpg"
            save_image(path, labelled_heat(heatmap_overlay(image, heat), attention_title(site),
                                           f"{values.min():.2f}", f"{values.max():.2f}"))
        else:
            fig, ax = plt.subplots(figsize=(8, 2.5))
            ax.bar(np.arange(len(values)), values, width=1.0)
            ax.set_xlabel("channel")
            ax.set_ylabel("weight")
            ax.set_title(f"{site}: channel weights ({len(values)} channels)")
            path = save_figure(fig, Path(out) / f"{stem}_att_{site}.png")
        written.append(path)
    return written
