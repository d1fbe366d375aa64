"""CPU inference speed: bare forwards and the whole detect() path, per backend, in one run.

    python bench/bench_infer.py                       # random 80-class model, 416x416, batch 1
    python bench/bench_infer.py --weights best.pth --img street.jpg

Rows are timed round-robin (one call of each row per round) so load from other processes hits all
rows alike; the table shows the best and the median time per row. The onnx backend's graph holds
decoding and NMS too; its forward row asks for the raw outputs only. A random model finds nothing
at --conf 0.5, so NMS is nearly free here; with trained weights NMS adds a little. Ratios printed:
  detect/forward per backend (target <= 1.15) and plain eager forward / best forward (target >= 1.3).
To add a row (e.g. bf16 or int8 ONNX), append a (name, callable) pair in build_rows().
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nets.yolo import YoloBody  # noqa: E402
from utils.checkpoint import CHECKPOINT_FORMAT, model_from_weights, save_atomic  # noqa: E402
from utils.config import DEFAULT_ANCHORS_MASK, read_anchors  # noqa: E402
from utils.export import export_onnx, ort_session  # noqa: E402
from utils.image import read_image  # noqa: E402
from yolo import YOLO  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EAGER = "forward eager (plain YoloBody)"


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="weights to time (default: a random model with --num-classes classes)")
    p.add_argument("--num-classes", type=int, default=80, help="classes of the random model (default: 80)")
    p.add_argument("--input-size", type=int, default=416, help="square input size (default: 416)")
    p.add_argument("--img", help="image for detect() (default: a random 640x480 image)")
    p.add_argument("--rounds", type=int, default=50, help="timed rounds, one call per row each (default: 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed rounds first (default: 5)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    return p


def random_checkpoint(folder: Path, num_classes: int, input_size: int) -> Path:
    model = YoloBody(DEFAULT_ANCHORS_MASK, num_classes)
    path = folder / "random.pth"
    save_atomic({"format": CHECKPOINT_FORMAT, "model": model.state_dict(),
                 "class_names": [f"c{i}" for i in range(num_classes)],
                 "anchors": read_anchors(ROOT / "model_data/yolo_anchors.txt").tolist(),
                 "anchors_mask": DEFAULT_ANCHORS_MASK, "attention": "none",
                 "input_size": [input_size, input_size], "scale_x_y": 1.0}, path)
    return path


def build_rows(weights: Path, input_size: int, image: np.ndarray):
    """[(name, callable)]: each callable runs one timed call."""
    dets = {b: YOLO(weights, input_size=input_size, backend=b, device="cpu") for b in ("torch", "onnx")}
    eager = model_from_weights(weights, input_size=[input_size, input_size])[0].eval()
    x = torch.rand(1, 3, input_size, input_size)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    fused_nchw = dets["torch"]._cpu_model()
    session = dets["onnx"].session
    x_u8 = torch.randint(0, 256, (1, input_size, input_size, 3), dtype=torch.uint8).numpy()
    with tempfile.TemporaryDirectory() as tmp:  # the exported graph users get: float NCHW input
        float_session = ort_session(export_onnx(fused_nchw, Path(tmp) / "m.onnx", (input_size, input_size)))

    def no_grad(fn):
        def run():
            with torch.inference_mode():
                fn()
        return run

    return [
        (EAGER, no_grad(lambda: eager(x))),
        ("forward fused NCHW", no_grad(lambda: fused_nchw(x))),
        ("forward fused channels-last [torch]", no_grad(lambda: dets["torch"].model(x_cl))),
        ("forward ONNX Runtime float NCHW", lambda: float_session.run(None, {"images": x.numpy()})),
        ("forward ONNX Runtime uint8 NHWC [onnx]", lambda: session.run(["out0", "out1"], {"images": x_u8})),
        ("detect() torch", lambda: dets["torch"].detect(image)),
        ("detect() onnx", lambda: dets["onnx"].detect(image)),
    ]


def time_rows(rows, rounds: int, warmup: int):
    """{name: (best, median) milliseconds}, timed round-robin."""
    times = {name: [] for name, _ in rows}
    for r in range(warmup + rounds):
        for name, fn in rows:
            start = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(1000.0 * (time.perf_counter() - start))
    return {name: (min(values), statistics.median(values)) for name, values in times.items()}


def ratios(ms, col: int) -> None:
    eager = ms[EAGER][col]
    forwards = {"torch": ms["forward fused channels-last [torch]"][col], "onnx": ms["forward ONNX Runtime uint8 NHWC [onnx]"][col]}
    for backend, forward in forwards.items():
        ratio = ms[f"detect() {backend}"][col] / forward
        print(f"  detect()/forward {backend}: {ratio:.3f} (target <= 1.15) {'ok' if ratio <= 1.15 else 'MISSED'}")
    best = min(forwards, key=forwards.get)
    speedup = eager / forwards[best]
    print(f"  best backend {best}: {speedup:.2f}x faster than the plain eager forward "
          f"(target >= 1.3) {'ok' if speedup >= 1.3 else 'MISSED'}")


def report(ms) -> None:
    print(f"{'row':<42}{'best ms':>9}{'median ms':>11}{'eager/row (best)':>18}")
    for name, (best, median) in ms.items():
        print(f"{name:<42}{best:>9.2f}{median:>11.2f}{ms[EAGER][0] / best:>17.2f}x")
    print("ratios on the best times (least disturbed by other processes):")
    ratios(ms, 0)
    print("ratios on the medians:")
    ratios(ms, 1)


def main(args) -> None:
    torch.set_num_threads(args.threads)
    image = read_image(args.img) if args.img else np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(args.weights) if args.weights else random_checkpoint(Path(tmp), args.num_classes, args.input_size)
        rows = build_rows(weights, args.input_size, image)
    print(f"input {args.input_size}x{args.input_size}, batch 1, {args.threads} torch threads, image "
          f"{image.shape[1]}x{image.shape[0]}, {args.rounds} rounds (median), torch {torch.__version__}")
    report(time_rows(rows, args.rounds, args.warmup))


if __name__ == "__main__":
    main(make_parser().parse_args())
