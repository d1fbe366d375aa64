"""Training speed: images/s at 416, batch 8, for fp32 and the --amp auto setting, in one run, and the
share of each step spent waiting for data, building targets and in the loss.

    python bench/bench_train.py [--steps 10] [--input-size 416] [--batch-size 8] [--workers 2]
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nets.yolo import YoloBody  # noqa: E402
from utils.core.amp import amp_name, autocast, resolve_amp  # noqa: E402
from utils.data.augment import AugmentConfig  # noqa: E402
from utils.core.config import DEFAULT_ANCHORS_MASK, read_anchors, read_classes  # noqa: E402
from utils.data.dataloader import YoloDataset, build_dataloader  # noqa: E402
from utils.data.demo_data import ensure_demo_dataset  # noqa: E402
from utils.engine.loss import HEAD_BALANCE, LossSettings, YOLOLoss  # noqa: E402
from utils.engine.optim import build_optimizer  # noqa: E402
from utils.data.voc import load_samples  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10, help="timed steps per setting (after 2 warm-up steps)")
    p.add_argument("--input-size", type=int, default=416, help="square input size")
    p.add_argument("--batch-size", type=int, default=8, help="batch size")
    p.add_argument("--workers", type=int, default=2, help="data loader workers")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--phi", type=int, default=0, help="attention phi of the model")
    return p


def timed_steps(loader, model, loss_fn, optimizer, amp_dtype, channels_last: bool, steps: int) -> dict:
    """Run warm-up + `steps` training steps; seconds spent per phase over the timed steps."""
    device = torch.device("cpu")
    totals = dict.fromkeys(("data", "forward", "targets", "loss", "backward", "step"), 0.0)
    it = iter(loader)
    for i in range(steps + 2):
        t0 = time.perf_counter()
        images, targets = next(it)
        images = images.float().div_(255.0)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        t1 = time.perf_counter()
        with autocast(device, amp_dtype):
            outputs = model(images)
        outputs = [o.float() for o in outputs]
        t2 = time.perf_counter()
        loss, _ = loss_fn(outputs, targets)
        t3 = time.perf_counter()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        # target building alone (it also runs inside the loss above)
        loss_fn.assign(targets, [o.shape[2:] for o in outputs])
        loss_fn.padded_truths(targets, images.shape[0])
        t5 = time.perf_counter()
        if i >= 2:
            for key, dt in (("data", t1 - t0), ("forward", t2 - t1), ("loss", t3 - t2), ("backward", t4 - t3),
                            ("targets", t5 - t4)):
                totals[key] += dt
    totals["step"] = totals["data"] + totals["forward"] + totals["loss"] + totals["backward"]
    return totals


def main(args) -> None:
    torch.set_num_threads(args.threads)
    data = ensure_demo_dataset()
    class_names = read_classes(ROOT / "model_data/demo_classes.txt")
    samples = load_samples(data, "train", class_names)
    anchors = read_anchors(ROOT / "model_data/yolo_anchors.txt")
    dataset = YoloDataset(samples, args.input_size, train=True, mosaic=0.5, mixup=0.0, augment=AugmentConfig())
    loader = build_dataloader(dataset, args.batch_size, args.workers, shuffle=True, seed=0, drop_last=True)
    cpu = torch.device("cpu")
    settings = [("fp32", None, False), (f"auto ({amp_name(resolve_amp('auto', cpu))}, channels-last)",
                                         resolve_amp("auto", cpu), True)]
    print(f"input {args.input_size}, batch {args.batch_size}, {args.workers} workers, {args.threads} threads, "
          f"phi {args.phi}, {args.steps} timed steps")
    rates = []
    for name, amp_dtype, channels_last in settings:
        torch.manual_seed(0)
        model = YoloBody(DEFAULT_ANCHORS_MASK, len(class_names), phi=args.phi).train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        loss_fn = YOLOLoss(anchors, len(class_names), DEFAULT_ANCHORS_MASK, (32, 16), LossSettings(),
                           args.input_size, HEAD_BALANCE)
        optimizer = build_optimizer(model, "adamw", 1e-4, 0.937, 5e-4)
        t = timed_steps(loader, model, loss_fn, optimizer, amp_dtype, channels_last, args.steps)
        rate = args.steps * args.batch_size / t["step"]
        rates.append(rate)
        share = {k: 100 * t[k] / t["step"] for k in ("data", "targets", "loss")}
        print(f"{name:<32} {rate:6.2f} images/s | waiting for data {share['data']:4.1f}% | "
              f"target building {share['targets']:4.1f}% | loss incl. targets {share['loss']:4.1f}% of a step")
    print(f"auto / fp32 speed-up: {rates[1] / rates[0]:.2f}x (target >= 1.8x)")


if __name__ == "__main__":
    main(make_parser().parse_args())
