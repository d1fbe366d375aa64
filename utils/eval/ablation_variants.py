"""The variants ablate.py compares: parsed from --variants, or made by --sweep-sites."""
import itertools
import re
from dataclasses import dataclass
from typing import List

from nets.attention import attention_to_str, parse_attention, split_fusion
from nets.yolo import YoloBody


@dataclass(frozen=True)
class Variant:
    label: str      # name in the table: phi3, cbam_eca, feat1=cbam,feat2=se, enc,fusion=gated
    spec: str       # what train.py --attention gets
    attention: str  # the normalised placement spec
    fusion: str = "concat"  # what train.py --fusion gets (nets.attention.FUSION_NAMES)

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9_]+", "-", self.label)


def shown_name(label: str, attention: str) -> str:
    """A variant's name on the ablation pictures: a phi label with its block, 'phi2 (cbam)', as the table's
    variant and attention columns read together; other labels name their blocks already."""
    phi = re.fullmatch(r"phi\d+(,.*)?", label)
    return f"{label} ({attention})" if phi else label


def parse_variants(items: List[str]) -> List[Variant]:
    """Variants from --variants; ValueError for an unknown name or a variant listed twice."""
    words = [w.strip() for item in items for w in (item.split(",") if "=" not in item else [item]) if w.strip()]
    variants = []
    for word in words:
        spec, fusion = split_fusion(word)
        attention = attention_to_str(parse_attention(spec))
        label = f"phi{int(spec)}" if spec.isdigit() else attention
        label = label if fusion == "concat" else f"{label},fusion={fusion}".removeprefix("none,")
        if any(v.label == label for v in variants):
            raise ValueError(f"variant {word!r} is listed twice (as {label}); list each variant once")
        variants.append(Variant(label, spec, attention, fusion))
    if not variants:
        raise ValueError("--variants is empty; give at least one phi integer, block name or per-site spec")
    return variants


def sweep_variants(block: str, pairs: bool) -> List[str]:
    """--variants of --sweep-sites: phi 0, then `block` at each site of YoloBody (each pair of sites with `pairs`)."""
    if attention_to_str(parse_attention(block)) == "none":
        raise ValueError(f"--sweep-sites needs an attention block, got {block!r}")
    sites = list(YoloBody.site_channels)
    groups = itertools.combinations(sites, 2) if pairs else ((site,) for site in sites)
    return ["0"] + [",".join(f"{site}={block}" for site in group) for group in groups]
