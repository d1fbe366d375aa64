"""Print parameters and GFLOPs of the model: `python -m nets.summary --phi 2 --input-size 416`.

Without --phi, --attention or --fusion it lists every phi (with the concat merge) and then each other
FPN merge (without attention); `--fusion all` lists every merge for the attention given.
FLOPs come from PyTorch's own counter (torch.utils.flop_counter), which counts a multiply-add as 2.
"""
import argparse
import statistics
import time
from typing import Dict

import torch
from torch.utils.flop_counter import FlopCounterMode

from nets.yolo import YoloBody
from utils.core.config import DEFAULT_ANCHORS_MASK, parse_input_size
from nets.attention import PHI_NAMES
from utils.core.settings import add_flags
from nets.attn.registry import FUSION_NAMES
from utils.core.cli import run_main


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_gflops(model: torch.nn.Module, input_size=416) -> float:
    model.eval()
    x = torch.zeros(1, 3, *parse_input_size(input_size))  # an int or (h, w)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 1e9


def measure_models(models: Dict[str, torch.nn.Module], input_size: int, runs: int, warmup: int) -> Dict[str, Dict]:
    """{name: params, gflops, latency_ms} of eval-mode models; latency is the median of `runs` batch-1 passes,
    timed round-robin so that a change in machine load touches every model alike."""
    stats = {name: {"params": count_parameters(m), "gflops": count_gflops(m, input_size)} for name, m in models.items()}
    x = torch.rand(1, 3, *parse_input_size(input_size), generator=torch.Generator().manual_seed(0))
    times = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            for _ in range(warmup):
                model(x)
        for _ in range(max(1, runs)):
            for name, model in models.items():
                start = time.perf_counter()
                model(x)
                times[name].append((time.perf_counter() - start) * 1000)
    for name, ms in times.items():
        stats[name]["latency_ms"] = statistics.median(ms)
    return stats


def make_parser() -> argparse.ArgumentParser:
    """The command's flags, generated from the schema (utils/core/settings.py)."""
    parser = argparse.ArgumentParser(prog="python -m nets.summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(parser, "summary", grouped=False)
    return parser


def summary_rows(args: argparse.Namespace) -> list:
    """(attention spec, fusion) of each model the parsed `args` name."""
    attention = args.attention if args.attention else args.phi
    if args.fusion == "all":
        return [(attention or 0, fusion) for fusion in FUSION_NAMES]
    if attention is not None or args.fusion is not None:
        return [(attention or 0, args.fusion or "concat")]
    return [(phi, "concat") for phi in PHI_NAMES] + [(0, fusion) for fusion in FUSION_NAMES if fusion != "concat"]


def print_summary(args: argparse.Namespace) -> None:
    """Parameters and GFLOPs of the model(s) the parsed `args` name, one line each."""

    size = args.input_size
    print(f"input {size}x{size}, {args.num_classes} classes")
    print(f"{'model':<40} {'params':>12} {'GFLOPs':>8}")
    for spec, fusion in summary_rows(args):
        model = YoloBody(DEFAULT_ANCHORS_MASK, args.num_classes, attention=spec, fusion=fusion, input_size=size)
        label = f"phi {spec} ({model.attention})" if isinstance(spec, int) else model.attention
        label += f", fusion {fusion}" if fusion != "concat" or args.fusion else ""
        print(f"{label:<40} {count_parameters(model):>12,} {count_gflops(model, size):>8.3f}")


def main(argv=None) -> int:
    """`python -m nets.summary` with `argv` (default: the command line); the exit code (utils/core/cli.py)."""
    return run_main("python -m nets.summary", lambda: print_summary(make_parser().parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
