"""The attention registry: names -> blocks, `phi` aliases, and parsing of placement specs over a
model's sites. The model (nets.yolo.YoloBody) owns its sites; this module only knows block names.

Every block takes `channels` first and returns a tensor shaped like its input.

Seed blocks left out because they have no single-map, shape-keeping form in a detector:
DIA (one LSTM state carried across the layers of a stage), EncNet (needs the class count and
returns a tuple with an auxiliary loss head), the joint channel-spatial CBAM variant (an MLP over
C + H*W, so fixed to one H*W, and two outputs), gated fusion (two inputs), MSF fusion (four inputs;
its single-input form is `mfe`), and bilinear attention (no code in the seeds).
"""
from functools import partial
from typing import Dict, Mapping, Optional, Sequence, Union

import torch.nn as nn

from nets.attn.cbam import CBAM
from nets.attn.coord import CoordAttention
from nets.attn.eca import ECA
from nets.attn.fca import FcaAttention
from nets.attn.gct import GCT
from nets.attn.gsop import GSoP
from nets.attn.mfe import MFE
from nets.attn.osra import OSRA
from nets.attn.rcan import RCANChannelAttention
from nets.attn.safm import SAFM
from nets.attn.se import SEBlock
from nets.attn.sk import SelectiveKernel
from nets.attn.soca import SOCA
from nets.attn.srm import SRM
from nets.attn.triplet import TripletAttention

ATTENTION_BLOCKS = {
    "se": SEBlock,
    "se_max": partial(SEBlock, pool="max"),
    "cbam": CBAM,
    "cbam_eca": partial(CBAM, channel_attn="conv"),
    "eca": ECA,
    "ca": CoordAttention,
    "sk": SelectiveKernel,
    "gct": GCT,
    "srm": SRM,
    "fca": FcaAttention,
    "rcan": RCANChannelAttention,
    "soca": SOCA,
    "gsop": GSoP,
    "triplet": TripletAttention,
    "safm": SAFM,
    "mfe": MFE,
    "osra": OSRA,
}

# The reference implementation's integer switch.
PHI_NAMES = {0: "none", 1: "se", 2: "cbam", 3: "eca", 4: "ca"}

AttentionSpec = Union[None, int, str, Dict[str, Optional[str]]]


def valid_names() -> str:
    return ", ".join(["none"] + sorted(ATTENTION_BLOCKS))


def check_name(name: Optional[str]) -> str:
    """Normalise a block name ('none' for no block); raise ValueError listing the valid ones."""
    name = "none" if name is None else str(name).strip().lower()
    if name in ("", "none", "identity"):
        return "none"
    if name not in ATTENTION_BLOCKS:
        raise ValueError(f"unknown attention {name!r}; valid names: {valid_names()}")
    return name


def build_attention(name: Optional[str], channels: int, **kwargs) -> nn.Module:
    """Make the block `name` for `channels` channels; `nn.Identity()` for none."""
    name = check_name(name)
    if name == "none":
        return nn.Identity()
    return ATTENTION_BLOCKS[name](channels, **kwargs)


def phi_to_name(phi: int) -> str:
    try:
        return PHI_NAMES[int(phi)]
    except (KeyError, ValueError):
        choices = ", ".join(f"{k} ({v})" for k, v in PHI_NAMES.items())
        raise ValueError(f"unknown phi {phi!r}; valid phi values: {choices}") from None


def parse_placement(spec: AttentionSpec, sites: Sequence[str], default_sites: Sequence[str]) -> Dict[str, str]:
    """Turn a placement spec into {site: block name} for every one of `sites`.

    Accepted: None (no attention), a phi integer (or its digits as a string), one block name for
    `default_sites`, 'feat1=cbam,feat2=se,upsample=none' (sites not named get none), or a dict.
    """
    placement = {site: "none" for site in sites}
    if spec is None:
        return placement
    if isinstance(spec, Mapping):
        items = spec.items()
    elif isinstance(spec, int) or str(spec).strip().isdigit():
        items = [(site, phi_to_name(int(spec))) for site in default_sites]
    elif "=" in str(spec):
        items = [_split_pair(part) for part in str(spec).split(",") if part.strip()]
    else:
        items = [(site, spec) for site in default_sites]
    for site, name in items:
        site = str(site).strip().lower()
        if site not in placement:
            raise ValueError(f"unknown attention site {site!r}; valid sites: {', '.join(sites)}")
        placement[site] = check_name(name)
    return placement


def _split_pair(part: str):
    if part.count("=") != 1:
        raise ValueError(f"attention spec part {part!r} must look like site=name, e.g. feat1=cbam")
    site, name = part.split("=")
    return site, name


def placement_to_str(placement: Mapping[str, str], sites: Sequence[str], default_sites: Sequence[str]) -> str:
    """The shortest spec that `parse_placement` turns back into `placement`."""
    names = {placement.get(site, "none") for site in default_sites}
    extra = [s for s in sites if s not in default_sites and placement.get(s, "none") != "none"]
    if len(names) == 1 and not extra:
        return names.pop()
    return ",".join(f"{s}={placement[s]}" for s in sites if placement.get(s, "none") != "none") or "none"
