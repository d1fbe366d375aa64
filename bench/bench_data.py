"""Is data loading ever the bottleneck? Training-loader images/s vs the model's training images/s.

    python bench/bench_data.py [--batches 12] [--model-steps 4]

Measures, in one run, the training loader at --input-size with mosaic on and off and with each
worker count, and a YoloBody forward+backward step (stand-in loss: mean of squared outputs) at
--batch-size. Prints each rate and the ratio slowest-loader / model; the loader should be >= 3x.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nets.yolo import YoloBody  # noqa: E402
from utils.core.config import DEFAULT_ANCHORS_MASK, read_classes  # noqa: E402
from utils.data.dataloader import YoloDataset, build_dataloader  # noqa: E402
from utils.data.demo_data import ensure_demo_dataset  # noqa: E402
from utils.core.amp import autocast, resolve_amp  # noqa: E402
from utils.data.voc import default_split, load_samples, resolve_classes  # noqa: E402


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=None, help="dataset to read; default: the demo dataset")
    p.add_argument("--classes", default="model_data/voc_classes.txt", help="classes file (the demo's own for the demo)")
    p.add_argument("--input-size", type=int, default=416, help="network input size")
    p.add_argument("--batch-size", type=int, default=8, help="batch size for the loader and the model")
    p.add_argument("--batches", type=int, default=12, help="loader batches timed per setting (after one warm-up batch)")
    p.add_argument("--workers", default="0,2", help="comma-separated worker counts to time")
    p.add_argument("--model-steps", type=int, default=4, help="model training steps timed (after two warm-up steps)")
    p.add_argument("--phi", type=int, default=0, help="attention phi of the model")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    return p


def loader_rate(dataset: YoloDataset, batch_size: int, workers: int, batches: int) -> float:
    """Images per second over `batches` batches, after the first (worker start-up) batch."""
    loader = build_dataloader(dataset, batch_size, workers=workers, seed=0)
    loader.set_epoch(0)
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
        images, _ = next(it)
        count += images.shape[0]
    return count / (time.perf_counter() - start)


def model_rate(num_classes: int, phi: int, batch_size: int, input_size: int, steps: int) -> float:
    """Training images per second of YoloBody as train.py runs it by default (--amp auto, channels-last):
    forward, stand-in loss, backward, SGD step; two untimed warm-up steps first."""
    cpu = torch.device("cpu")
    amp_dtype = resolve_amp("auto", cpu)
    model = YoloBody(DEFAULT_ANCHORS_MASK, num_classes, phi=phi).train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    batch = torch.randint(0, 256, (batch_size, 3, input_size, input_size), dtype=torch.uint8)
    batch = batch.contiguous(memory_format=torch.channels_last)
    for step in range(steps + 2):
        if step == 2:
            start = time.perf_counter()
        with autocast(cpu, amp_dtype):
            outputs = model(batch.float() / 255.0)
        loss = sum(o.float().pow(2).mean() for o in outputs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - start)


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    data = Path(args.data) if args.data else ensure_demo_dataset()
    names = read_classes(resolve_classes(data, args.classes))
    samples = load_samples(data, default_split(data, "train"), names)
    # the model first: OpenCV's thread pool, busy after a loader ran in this process, slows torch's threads
    model = model_rate(len(names), args.phi, args.batch_size, args.input_size, args.model_steps)
    rates = {}
    for mosaic in (True, False):
        dataset = YoloDataset(samples, args.input_size, train=True, mosaic=1.0 if mosaic else 0.0, mixup=0.5)
        for workers in (int(w) for w in args.workers.split(",")):
            rates[(mosaic, workers)] = loader_rate(dataset, args.batch_size, workers, args.batches)
            print(f"loader  input {args.input_size}  mosaic {'on ' if mosaic else 'off'}  workers {workers}: "
                  f"{rates[(mosaic, workers)]:7.1f} images/s")
    print(f"model   input {args.input_size}  batch {args.batch_size}  phi {args.phi}  train step: {model:7.1f} images/s "
          f"({args.batch_size / model:.2f} s/step)")
    for (mosaic, workers), rate in rates.items():
        print(f"ratio loader/model  mosaic {'on ' if mosaic else 'off'}  workers {workers}: {rate / model:6.1f}x")
    slowest = min(rates.values()) / model
    print(f"slowest loader setting is {slowest:.1f}x the model's rate: "
          f"{'OK, data is not the bottleneck' if slowest >= 3 else 'BELOW the 3x target'}")


if __name__ == "__main__":
    main(make_parser().parse_args())
