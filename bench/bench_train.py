"""Training speed: images/s of eager, --compile, --cache ram and both, in fp32 and (where the CPU has it) bf16 with
channels-last, in one run, with each step's share spent waiting for data, in the forward pass, the loss (target
building included), the backward pass and the optimizer step; --profile also times one whole epoch piece by piece.

    python bench/bench_train.py [--steps 10] [--input-size 416] [--batch-size 8] [--workers 2] [--profile]

Each setting runs `--warmup` steps first (the compiled rows compile there) on a loader of its own (for --cache
ram: filled before its workers start, as train.py does), then `--steps` timed steps.
"""
import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nets.yolo import YoloBody  # noqa: E402
from utils.core.amp import amp_name, autocast, resolve_amp  # noqa: E402
from utils.core.config import DEFAULT_ANCHORS_MASK, read_anchors, read_classes  # noqa: E402
from utils.data.augment import AugmentConfig  # noqa: E402
from utils.data.dataloader import YoloDataset, build_dataloader, yolo_collate  # noqa: E402
from utils.data.demo_data import ensure_demo_dataset  # noqa: E402
from utils.data.image_cache import ImageCache  # noqa: E402
from utils.data.voc import load_samples  # noqa: E402
from utils.engine.compile import compile_model, is_compiled  # noqa: E402
from utils.engine.ema import ModelEMA  # noqa: E402
from utils.eval.evaluator import evaluate_model  # noqa: E402
from utils.engine.loss import HEAD_BALANCE, LossSettings, YOLOLoss  # noqa: E402
from utils.engine.optim import build_optimizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("data", "forward", "loss", "backward", "optimizer")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10, help="timed steps per setting")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compiling happens there)")
    p.add_argument("--input-size", type=int, default=416, help="square input size")
    p.add_argument("--batch-size", type=int, default=8, help="batch size")
    p.add_argument("--workers", type=int, default=2, help="data loader workers")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--phi", type=int, default=0, help="attention phi of the model")
    p.add_argument("--only", nargs="*", default=None,
                   help="rows to run among eager compile cache both eval (default: all)")
    p.add_argument("--profile", action="store_true", help="also time one epoch of the demo set piece by piece")
    return p


class Bench:
    """The demo data, model and loss of every row."""

    def __init__(self, args):
        self.args = args
        data = ensure_demo_dataset()
        self.class_names = read_classes(ROOT / "model_data/demo_classes.txt")
        self.samples = load_samples(data, "train", self.class_names)
        self.val_samples = load_samples(data, "val", self.class_names)
        self.anchors = read_anchors(ROOT / "model_data/yolo_anchors.txt")
        self.cache = None

    def loader(self, cached: bool):
        if cached and self.cache is None:
            start = time.perf_counter()
            self.cache = ImageCache.fill(self.samples, self.args.workers)
            print(f"(--cache ram: {len(self.cache.images)} images, {self.cache.nbytes / 2 ** 20:.0f} MiB, filled in "
                  f"{time.perf_counter() - start:.1f} s)")
        dataset = YoloDataset(self.samples, self.args.input_size, train=True, mosaic=0.5, mixup=0.0,
                              augment=AugmentConfig(), cache=self.cache if cached else None)
        return build_dataloader(dataset, self.args.batch_size, self.args.workers, shuffle=True, seed=0, drop_last=True)

    def model(self, channels_last: bool, compiled: bool):
        torch.manual_seed(0)
        model = YoloBody(DEFAULT_ANCHORS_MASK, len(self.class_names), phi=self.args.phi).train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        return compile_model(model) if compiled else model

    def loss(self):
        return YOLOLoss(self.anchors, len(self.class_names), DEFAULT_ANCHORS_MASK, YoloBody.strides, LossSettings(),
                        self.args.input_size, HEAD_BALANCE)


def timed_steps(batches, model, loss_fn, optimizer, amp_dtype, channels_last: bool, warmup: int, steps: int) -> dict:
    """Seconds per phase over `steps` training steps after `warmup` untimed ones; `batches` an iterator."""
    totals = dict.fromkeys(PHASES, 0.0)
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        images, targets = next(batches)
        images = images.float().div_(255.0)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        t1 = time.perf_counter()
        with autocast(torch.device("cpu"), amp_dtype):
            outputs = model(images)
        outputs = [o.float() for o in outputs]
        t2 = time.perf_counter()
        loss, _ = loss_fn(outputs, targets)
        t3 = time.perf_counter()
        loss.backward()
        t4 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t5 = time.perf_counter()
        if i >= warmup:
            for key, dt in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                totals[key] += dt
    return totals


def forever(loader):
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def row(bench: Bench, precision: str, amp_dtype, compiled: bool, cached: bool, base) -> float:
    """Print one table row; returns its images/s (`base`: the eager row's, for the ratio)."""
    args = bench.args
    channels_last = amp_dtype is not None
    model = bench.model(channels_last, compiled)
    optimizer = build_optimizer(model, "adamw", 1e-4, 0.937, 5e-4)
    start = time.perf_counter()
    t = timed_steps(forever(bench.loader(cached)), model, bench.loss(), optimizer, amp_dtype, channels_last,
                    args.warmup, args.steps)
    total = sum(t.values())
    rate = args.steps * args.batch_size / total
    name = " + ".join([n for n, on in (("--compile all", compiled), ("--cache ram", cached)) if on] or ["eager"])
    if compiled and not is_compiled(model):
        name += " (fell back to eager)"
    shares = " | ".join(f"{100 * t[k] / total:4.1f}%" for k in PHASES)
    print(f"| {precision} | {name} | {rate:6.2f} | {rate / (base or rate):.2f}x | {shares} | "
          f"{time.perf_counter() - start - total:5.1f} s |", flush=True)
    return rate


def eval_row(bench: Bench, precision: str, amp_dtype) -> None:
    """Images/s of the evaluation forward pass (eval mode, no autograd, contiguous as the mAP evaluation runs it),
    eager against `--compile eval`, interleaved on one batch so that other jobs slow both alike."""
    images = next(iter(bench.loader(False)))[0].float().div_(255.0)
    models = [bench.model(False, False).eval(), compile_model(bench.model(False, False).eval(), training=False)]

    def forward(model) -> float:
        start = time.perf_counter()
        with torch.no_grad(), autocast(torch.device("cpu"), amp_dtype):
            model(images)
        return time.perf_counter() - start

    warmup = sum(forward(models[1]) for _ in range(bench.args.warmup))
    times = [[], []]
    for i in range(bench.args.steps):
        for k in ((0, 1) if i % 2 else (1, 0)):
            times[k].append(forward(models[k]))
    eager, compiled = (len(images) * len(t) / sum(t) for t in times)
    print(f"| {precision} | evaluation forward: eager {eager:.2f}, --compile eval {compiled:.2f} images/s | "
          f"{compiled / eager:.2f}x | | | | | | {warmup:5.1f} s |", flush=True)


def profile_epoch(bench: Bench, amp_dtype) -> None:
    """Where one epoch's seconds go: the training process's phases, the data pipeline's (done by the workers,
    timed here in one process), and the evaluation after the epoch."""
    args, channels_last = bench.args, amp_dtype is not None
    loader = bench.loader(False)
    model, loss_fn = bench.model(channels_last, False), bench.loss()
    optimizer = build_optimizer(model, "adamw", 1e-4, 0.937, 5e-4)
    start = time.perf_counter()
    t = timed_steps(iter(loader), model, loss_fn, optimizer, amp_dtype, channels_last, 0, len(loader))
    wall = time.perf_counter() - start
    ema, targets = ModelEMA(model), 0.0
    t["ema"] = timed(lambda: ema.update(model), len(loader))
    for images, boxes in loader:
        t0 = time.perf_counter()
        loss_fn.assign(boxes, [(args.input_size // s,) * 2 for s in YoloBody.strides])
        loss_fn.padded_truths(boxes, images.shape[0])
        targets += time.perf_counter() - t0
    print(f"\none epoch: {len(loader)} batches of {args.batch_size} ({amp_name(amp_dtype)}, eager, {args.workers} "
          f"workers), {wall:.1f} s in the training loop; per epoch, in the training process:")
    print("  " + ", ".join(f"{k} {t[k]:.1f} s" for k in (*PHASES, "ema")) + f" (target building {targets:.1f} s of "
          "the loss)")
    print("  in the data pipeline (the workers' work, one process): " + data_pipeline(bench))
    eval_model = copy.deepcopy(model).eval()
    start = time.perf_counter()
    evaluate_model(eval_model, bench.val_samples, bench.class_names, args.input_size, bench.anchors,
                   DEFAULT_ANCHORS_MASK, scale_x_y=2.0, device=torch.device("cpu"), amp=amp_dtype, progress=False,
                   workers=args.workers)
    print(f"  evaluation (mAP of {len(bench.val_samples)} val images, {args.workers} workers): "
          f"{time.perf_counter() - start:.1f} s")


def timed(fn, times: int) -> float:
    start = time.perf_counter()
    for _ in range(times):
        fn()
    return time.perf_counter() - start


def data_pipeline(bench: Bench) -> str:
    """Seconds of one epoch's decoding, augmentation and collation, in this process."""
    dataset = YoloDataset(bench.samples, bench.args.input_size, train=True, mosaic=0.5, mixup=0.0,
                          augment=AugmentConfig())
    read, spent = dataset.load, {"decode": 0.0}

    def load(index, keep_difficult=False):
        t0 = time.perf_counter()
        out = read(index, keep_difficult)
        spent["decode"] += time.perf_counter() - t0
        return out

    dataset.load = load
    start = time.perf_counter()
    items = [dataset[i] for i in range(len(dataset))]
    total = time.perf_counter() - start
    b = bench.args.batch_size
    collate = timed(lambda: [yolo_collate(items[i:i + b]) for i in range(0, len(items) - b + 1, b)], 1)
    return (f"decoding {spent['decode']:.1f} s, augmentation and targets {total - spent['decode']:.1f} s, "
            f"collation {collate:.2f} s ({len(items)} samples)")


def main(args) -> None:
    torch.set_num_threads(args.threads)
    bench = Bench(args)
    cpu = torch.device("cpu")
    precisions = [("fp32", None)]
    auto = resolve_amp("auto", cpu)
    if auto is not None:
        precisions.append((f"{amp_name(auto)}, channels-last", auto))
    rows = [("eager", False, False), ("compile", True, False), ("cache", False, True), ("both", True, True)]
    rows = [r for r in rows if args.only is None or r[0] in args.only]
    print(f"input {args.input_size}, batch {args.batch_size}, {args.workers} workers, {args.threads} threads, "
          f"phi {args.phi}, {args.warmup} warm-up and {args.steps} timed steps per row")
    if rows:
        print(f"| precision | setting | images/s | vs {rows[0][0]} | waiting for data | forward | loss incl. targets "
              "| backward | optimizer | warm-up (compiling) |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for precision, amp_dtype in precisions:
        base = None
        for _, compiled, cached in rows:
            rate = row(bench, precision, amp_dtype, compiled, cached, base)
            base = base or rate
        if args.only is None or "eval" in args.only:
            eval_row(bench, precision, amp_dtype)
    if args.profile:
        profile_epoch(bench, precisions[-1][1])


if __name__ == "__main__":
    main(make_parser().parse_args())
