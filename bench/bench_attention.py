"""Print the attention zoo as a Markdown table: paper, params, FLOPs and CPU latency of each block.

    python bench/bench_attention.py                  # 256 channels on a 26x26 map (feat1 at 416)
    python bench/bench_attention.py --channels 512 --size 13

FLOPs come from torch.utils.flop_counter (multiply-add = 2; convs and matrix products only, so
pooling, gating and other element-wise work is not counted). Latency is the median of `--runs`
forward passes of one block on one image, after warm-up, with the given number of CPU threads.
"""
import argparse
import os
import sys
import time
from functools import partial

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nets.attention import ATTENTION_BLOCKS, DEFAULT_SITES, SITE_CHANNELS, build_attention  # noqa: E402
from nets.yolo import YoloBody  # noqa: E402

# registry entries that are partials of another block's class: their own one-line summary
VARIANTS = {
    "se_max": "SE with global max pooling instead of average pooling.",
    "cbam_eca": "CBAM with a 1-D conv (ECA-style) channel attention instead of the MLP.",
}


def describe(name: str):
    """(one-line summary, paper title, link) from the block's docstring (first and second paragraph)."""
    cls = ATTENTION_BLOCKS[name]
    cls = cls.func if isinstance(cls, partial) else cls
    paragraphs = [" ".join(p.split()) for p in (cls.__doc__ or "").strip().split("\n\n")]
    title, _, link = paragraphs[0].rpartition(", ")
    summary = paragraphs[1].split(". ")[0].rstrip(".") + "." if len(paragraphs) > 1 else ""
    return VARIANTS.get(name, summary), title or paragraphs[0], link


def measure(name: str, channels: int, size: int, runs: int):
    """(params, MFLOPs, median latency in ms) of one block on Tensor[1, channels, size, size]."""
    block = build_attention(name, channels, {"map_size": (size, size)}).eval()
    x = torch.randn(1, channels, size, size)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            block(x)
        for _ in range(3):
            block(x)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            block(x)
            times.append(time.perf_counter() - start)
    params = sum(p.numel() for p in block.parameters())
    return params, counter.get_total_flops() / 1e6, 1e3 * sorted(times)[len(times) // 2]


def default_sites_params(name: str) -> int:
    """Parameters the block adds to YOLOv4-tiny at the three default sites (feat1, feat2, upsample)."""
    def params(site: str) -> int:
        side = 416 // YoloBody.site_strides[site]  # a fixed-size block (cbam_joint) is built for the map at 416
        return sum(p.numel() for p in build_attention(name, SITE_CHANNELS[site], {"map_size": (side, side)}).parameters())
    return sum(params(site) for site in DEFAULT_SITES)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=256, help="channels of the test feature map")
    parser.add_argument("--size", type=int, default=26, help="height and width of the test feature map")
    parser.add_argument("--runs", type=int, default=30, help="timed forward passes per block")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for the latency")
    parser.add_argument("--names", nargs="*", default=None, help="blocks to measure (default: all)")
    return parser


def main(args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    names = args.names or list(ATTENTION_BLOCKS)
    c, s = args.channels, args.size
    print(f"Blocks at {c} channels on a {s}x{s} map, batch 1, CPU with {args.threads} thread(s).\n")
    print(f"| name | block | paper | params @{c} | params at default sites | MFLOPs @{s}x{s} | ms @{s}x{s} |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name in names:
        summary, title, link = describe(name)
        params, mflops, ms = measure(name, c, s, args.runs)
        paper = f"[{title}]({link})" if link.startswith("http") else title
        print(f"| `{name}` | {summary} | {paper} | {params:,} | {default_sites_params(name):,} | {mflops:.1f} | {ms:.2f} |")


if __name__ == "__main__":
    main(make_parser().parse_args())
