"""The attention registry: names -> blocks, `phi` aliases, and parsing of placement specs over a
model's sites. The model (nets.yolo.YoloBody) owns its sites; this module only knows block names.

Three kinds of block, each chosen by name:
- ATTENTION_BLOCKS, at gate sites: take `channels` first and return a tensor shaped like the input.
  A block may ask its site for facts beyond the channel count by listing them in `site_facts`:
  `map_size` (h, w) (cbam_joint, whose weights fix the map size) or `num_classes` (enc's SE-loss head).
- STAGE_BLOCKS, at stage sites: one unit shared by the repeated layers of a backbone stage, called as
  `y, state = block(y, state)` after each layer (dia).
- FUSION_NAMES: how two maps join before a head (concat, or the two-input blocks of FUSION_BLOCKS).

Bilinear attention is left out: the seeds hold no code for it.
"""
from functools import partial
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch.nn as nn

from nets.attn.cbam import CBAM, JointCBAM
from nets.attn.coord import CoordAttention
from nets.attn.dia import DIA, NoStageAttention
from nets.attn.eca import ECA
from nets.attn.enc import EncModule
from nets.attn.fca import FcaAttention
from nets.attn.gated import GatedFusion
from nets.attn.gct import GCT
from nets.attn.gsop import GSoP
from nets.attn.mfe import MFE, SelectiveFusion
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
    "enc": EncModule,
    "cbam_joint": JointCBAM,
}

STAGE_BLOCKS = {"dia": DIA}

# "concat" joins without parameters; the others are two-input blocks over maps of one width.
FUSION_BLOCKS = {"gated": GatedFusion, "msf": SelectiveFusion}
FUSION_NAMES = ("concat",) + tuple(FUSION_BLOCKS)

# The reference implementation's integer switch.
PHI_NAMES = {0: "none", 1: "se", 2: "cbam", 3: "eca", 4: "ca"}

AttentionSpec = Union[None, int, str, Dict[str, Optional[str]]]


def valid_names(blocks: Mapping = ATTENTION_BLOCKS) -> str:
    return ", ".join(["none"] + sorted(blocks))


def _normalise(name: Optional[str]) -> str:
    name = "none" if name is None else str(name).strip().lower()
    return "none" if name in ("", "none", "identity") else name


def check_name(name: Optional[str]) -> str:
    """Normalise a block name ('none' for no block); raise ValueError listing the valid ones."""
    name = _normalise(name)
    if name != "none" and name not in ATTENTION_BLOCKS:
        hint = f" ({name} goes at a stage site: stage1=dia or a bare 'dia')" if name in STAGE_BLOCKS else ""
        raise ValueError(f"unknown attention {name!r}{hint}; valid names: {valid_names()}")
    return name


def check_stage_name(name: Optional[str]) -> str:
    """Normalise a stage block name ('none' for none); raise ValueError listing the valid ones."""
    name = _normalise(name)
    if name != "none" and name not in STAGE_BLOCKS:
        raise ValueError(f"a stage site takes a stage block, got {name!r}; valid names: {valid_names(STAGE_BLOCKS)}")
    return name


def site_facts(name: str) -> Tuple[str, ...]:
    """The facts the block `name` asks its site for (see the module docstring); () for most blocks."""
    block = ATTENTION_BLOCKS.get(check_name(name))
    return tuple(getattr(getattr(block, "func", block), "site_facts", ()))


def build_attention(name: Optional[str], channels: int, facts: Optional[Mapping[str, Any]] = None,
                    **kwargs) -> nn.Module:
    """Make the block `name` for `channels` channels; `nn.Identity()` for none.

    `facts` holds what the site knows (map_size, num_classes); the block gets those of its `site_facts`
    that are not None. Keyword arguments go to the block as they are.
    """
    name = check_name(name)
    if name == "none":
        return nn.Identity()
    wanted = {k: v for k, v in (facts or {}).items() if k in site_facts(name) and v is not None}
    return ATTENTION_BLOCKS[name](channels, **{**wanted, **kwargs})


def build_stage_attention(name: Optional[str], channels: int, **kwargs) -> nn.Module:
    """Make the stage block `name` for layers of `channels` channels; `NoStageAttention()` for none."""
    name = check_stage_name(name)
    return NoStageAttention() if name == "none" else STAGE_BLOCKS[name](channels, **kwargs)


def check_fusion(name: Optional[str]) -> str:
    """Normalise a fusion name (None means concat); raise ValueError listing the valid ones."""
    name = "concat" if name is None else str(name).strip().lower()
    if name not in FUSION_NAMES:
        raise ValueError(f"unknown fusion {name!r}; valid names: {', '.join(FUSION_NAMES)}")
    return name


def build_fusion(name: str, channels: int) -> nn.Module:
    """The two-input block `name` (gated or msf) over maps of `channels` channels."""
    name = check_fusion(name)
    if name not in FUSION_BLOCKS:
        raise ValueError(f"fusion {name!r} has no block; blocks: {', '.join(FUSION_BLOCKS)}")
    return FUSION_BLOCKS[name](channels)


def phi_to_name(phi: int) -> str:
    try:
        return PHI_NAMES[int(phi)]
    except (KeyError, ValueError):
        choices = ", ".join(f"{k} ({v})" for k, v in PHI_NAMES.items())
        raise ValueError(f"unknown phi {phi!r}; valid phi values: {choices}") from None


def parse_placement(spec: AttentionSpec, sites: Sequence[str], default_sites: Sequence[str],
                    stage_sites: Sequence[str] = ()) -> Dict[str, str]:
    """Turn a placement spec into {site: block name} for every one of `sites` and `stage_sites`.

    Accepted: None (no attention), a phi integer (or its digits as a string), one block name (an
    attention block fills `default_sites`, a stage block every stage site), 'feat1=cbam,stage2=dia'
    (sites not named get none), or a dict. A stage site takes only stage blocks, the others only
    attention blocks.
    """
    placement = {site: "none" for site in (*sites, *stage_sites)}
    if spec is None:
        return placement
    if isinstance(spec, Mapping):
        items = spec.items()
    elif isinstance(spec, int) or str(spec).strip().isdigit():
        items = [(site, phi_to_name(int(spec))) for site in default_sites]
    elif "=" in str(spec):
        items = [_split_pair(part) for part in str(spec).split(",") if part.strip()]
    elif stage_sites and _normalise(spec) in STAGE_BLOCKS:
        items = [(site, spec) for site in stage_sites]
    else:
        items = [(site, spec) for site in default_sites]
    for site, name in items:
        site = str(site).strip().lower()
        if site not in placement:
            raise ValueError(f"unknown attention site {site!r}; valid sites: {', '.join(placement)}")
        placement[site] = check_stage_name(name) if site in stage_sites else check_name(name)
    return placement


def _split_pair(part: str):
    if part.count("=") != 1:
        raise ValueError(f"attention spec part {part!r} must look like site=name, e.g. feat1=cbam")
    site, name = part.split("=")
    return site, name


def placement_to_str(placement: Mapping[str, str], sites: Sequence[str], default_sites: Sequence[str],
                     stage_sites: Sequence[str] = ()) -> str:
    """The shortest spec that `parse_placement` turns back into `placement`."""
    gate_names = {placement.get(site, "none") for site in default_sites}
    stage_names = {placement.get(site, "none") for site in stage_sites}
    extra = [s for s in sites if s not in default_sites and placement.get(s, "none") != "none"]
    if not extra and stage_names <= {"none"} and len(gate_names) == 1:
        return gate_names.pop()
    if not extra and gate_names == {"none"} and len(stage_names) == 1:
        return stage_names.pop()
    named = [s for s in (*sites, *stage_sites) if placement.get(s, "none") != "none"]
    return ",".join(f"{s}={placement[s]}" for s in named) or "none"
