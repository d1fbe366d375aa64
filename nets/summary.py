"""Print parameters and GFLOPs of the model: `python -m nets.summary --phi 2 --input-size 416`.

FLOPs come from PyTorch's own counter (torch.utils.flop_counter), which counts a multiply-add as 2.
"""
import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from nets.yolo import YoloBody
from utils.core.config import DEFAULT_ANCHORS_MASK


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_gflops(model: torch.nn.Module, input_size: int = 416) -> float:
    model.eval()
    x = torch.zeros(1, 3, input_size, input_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 1e9


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--phi", type=int, default=None, help="attention phi (0 none, 1 se, 2 cbam, 3 eca, 4 ca); "
                        "without --phi or --attention, every phi 0..4 is listed")
    parser.add_argument("--attention", default=None, help="attention name or per-site spec, overrides --phi")
    parser.add_argument("--num-classes", type=int, default=20, help="number of classes")
    parser.add_argument("--input-size", type=int, default=416, help="square input size, a multiple of 32")
    return parser


def main(args) -> None:
    specs = [args.attention] if args.attention else [args.phi] if args.phi is not None else list(range(5))
    print(f"input {args.input_size}x{args.input_size}, {args.num_classes} classes")
    print(f"{'model':<32} {'params':>12} {'GFLOPs':>8}")
    for spec in specs:
        model = YoloBody(DEFAULT_ANCHORS_MASK, args.num_classes, attention=spec)
        label = f"phi {spec} ({model.attention})" if isinstance(spec, int) else model.attention
        print(f"{label:<32} {count_parameters(model):>12,} {count_gflops(model, args.input_size):>8.3f}")


if __name__ == "__main__":
    main(make_parser().parse_args())
