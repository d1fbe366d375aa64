"""CPU inference speed: bare forwards and the whole detect() path, per backend and precision, in one run.

    python bench/bench_infer.py                       # random 80-class model, 416x416, batch 1
    python bench/bench_infer.py --weights best.pth --img street.jpg --data VOCdevkit

Rows are timed round-robin (one call of each row per round) so load from other processes hits all
rows alike; the table shows the best and the median time per row. Each call starts after a --pause
of idle time: torch's OpenMP workers keep spinning for a while after a torch call and would otherwise
tax whichever row runs next (ONNX Runtime's rows most), which a program running one backend never
sees. Paths timed:
  torch fp32 (BN folded, channels-last), torch bf16 (the same under bf16 autocast: --amp bf16);
  onnx (the fp32 raw graph) and onnx int8 (the raw graph quantized by utils/deploy/quantize.py, run by
  YOLO("model_int8.onnx")). Their forward rows run the raw graph file as exported (float NCHW in, raw
  outputs out); detect() runs it as YOLO does, behind uint8 NHWC input with decoding and NMS added
  to the graph (utils.deploy.export.detector_graph);
  openvino and openvino int8: the same two graphs run by OpenVINO's CPU plugin (--backend openvino --amp off,
  utils/deploy/openvino_backend.py: fp32 precision hint, latency hint); openvino bf16: the fp32 graph with the
  bf16 precision hint (--amp bf16, and what --amp auto picks on a CPU with native bf16); openvino int8 bf16: the int8
  graph with the bf16 hint (--amp bf16; auto keeps int8 graphs in fp32). The precision each OpenVINO bf16 row
  ran at is printed as the plugin reports it (where the CPU has no native bf16 it may keep fp32).
Threads: torch rows use --threads; ONNX Runtime and OpenVINO rows both use --runtime-threads (default 0:
each runtime's default, one thread per physical core: ONNX Runtime's intra_op_num_threads 0, OpenVINO's
latency hint; the count OpenVINO took is printed), so the two runtimes compete on equal terms.
The int8 graph is calibrated on --calib-images images from --data, or on random images without
--data (the speed does not depend on them). On a CPU without native bf16 torch's bf16 rows are emulated
and slow. A random model finds nothing at --conf 0.5, so NMS is nearly free here; with trained
weights NMS adds a little. Ratios printed:
  detect/forward per path (target <= 1.15); plain eager forward / best forward (target >= 1.3);
  fastest detect() / fp32 ONNX Runtime forward of the raw graph (target <= 0.7);
  OpenVINO / ONNX Runtime, forward and detect(), fp32 and int8, OpenVINO bf16 / ONNX Runtime fp32, and OpenVINO
  int8 with bf16 / without (below 1: the first is faster).
Run it on a quiet machine (check `uptime`): while other processes keep a core busy, torch's rows
(OpenMP, --threads threads, each parallel op waiting for every thread) were measured 10-40x slower,
ONNX Runtime's forwards about 1.5x slower.
To add a row, append a (name, callable) pair in build_rows().
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
from utils.core.amp import cpu_name, cpu_supports_bf16  # noqa: E402
from utils.engine.checkpoint import CHECKPOINT_FORMAT, model_from_weights, save_atomic  # noqa: E402
from utils.core.config import DEFAULT_ANCHORS_MASK, read_anchors  # noqa: E402
from utils.deploy.export import export_onnx, ort_session  # noqa: E402
from utils.deploy.openvino_backend import import_openvino, openvino_session  # noqa: E402
from utils.ops.image import read_image  # noqa: E402
from utils.deploy.quantize import calibration_images  # noqa: E402
from yolo import YOLO  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EAGER = "forward eager (plain YoloBody)"
# path -> (its forward row, its detect() row)
PATHS = {
    "torch": ("forward fused channels-last [torch]", "detect() torch"),
    "torch bf16": ("forward fused channels-last bf16 [torch]", "detect() torch bf16"),
    "onnx": ("forward ONNX Runtime fp32 raw graph [onnx]", "detect() onnx"),
    "onnx int8": ("forward ONNX Runtime int8 raw graph [onnx int8]", "detect() onnx int8"),
    "openvino": ("forward OpenVINO fp32 raw graph [openvino]", "detect() openvino"),
    "openvino int8": ("forward OpenVINO int8 raw graph [openvino int8]", "detect() openvino int8"),
    "openvino bf16": ("forward OpenVINO bf16 raw fp32 graph [openvino bf16]", "detect() openvino bf16"),
    "openvino int8 bf16": ("forward OpenVINO int8 graph, bf16 between [openvino int8 bf16]",
                           "detect() openvino int8 bf16"),
}
# (OpenVINO path, the ONNX Runtime path it is compared with)
RUNTIME_PAIRS = (("openvino", "onnx"), ("openvino int8", "onnx int8"), ("openvino bf16", "onnx"),
                 ("openvino int8 bf16", "openvino int8"))


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="weights to time (default: a random model with --num-classes classes)")
    p.add_argument("--num-classes", type=int, default=80, help="classes of the random model (default: 80)")
    p.add_argument("--input-size", type=int, default=416, help="square input size (default: 416)")
    p.add_argument("--img", help="image for detect() (default: a random 640x480 image)")
    p.add_argument("--rounds", type=int, default=50, help="timed rounds, one call per row each (default: 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed rounds first (default: 5)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    p.add_argument("--runtime-threads", type=int, default=0, help="ONNX Runtime and OpenVINO threads of the forward "
                   "rows, the same for both (default: 0, each runtime's default: one per physical core)")
    p.add_argument("--pause", type=float, default=0.02, help="idle seconds before each timed call (default: 0.02)")
    p.add_argument("--data", help="dataset for the int8 calibration images (default: none, random images)")
    p.add_argument("--calib-images", type=int, default=8, help="int8 calibration images (default: 8)")
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


def int8_graph(weights: Path, input_size: int, folder: Path, data, calib_images: int) -> Path:
    """The int8 raw graph of `weights`, calibrated on `data` (or random images without it)."""
    fp32 = YOLO(weights, input_size=input_size, device="cpu", amp="off")
    if data:
        images = calibration_images(data, None, fp32.class_names, calib_images)
    else:
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(calib_images)]
    return fp32.export_onnx(folder / "int8.onnx", calibration_images=images)


def build_rows(weights: Path, input_size: int, image: np.ndarray, int8_path: Path, folder: Path, threads: int = 0):
    """[(name, callable)]: each callable runs one timed call; `threads`: the runtimes' threads (0: default)."""
    dets = {"torch": YOLO(weights, input_size=input_size, device="cpu", amp="off"),
            "torch bf16": YOLO(weights, input_size=input_size, device="cpu", amp="bf16"),
            "onnx": YOLO(weights, input_size=input_size, backend="onnx", device="cpu"), "onnx int8": YOLO(int8_path),
            "openvino": YOLO(weights, input_size=input_size, backend="openvino", device="cpu", amp="off"),
            "openvino int8": YOLO(int8_path, backend="openvino", amp="off"),
            "openvino bf16": YOLO(weights, input_size=input_size, backend="openvino", device="cpu", amp="bf16"),
            "openvino int8 bf16": YOLO(int8_path, backend="openvino", amp="bf16")}
    eager = model_from_weights(weights, input_size=[input_size, input_size])[0].eval()
    x = torch.rand(1, 3, input_size, input_size)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    fused_nchw = dets["torch"]._cpu_model()
    fp32_path = export_onnx(fused_nchw, folder / "fp32.onnx", (input_size, input_size))
    raw_fp32, raw_int8 = ort_session(fp32_path, threads=threads), ort_session(int8_path, threads=threads)
    ov_fp32, ov_int8 = openvino_session(fp32_path, threads=threads), openvino_session(int8_path, threads=threads)
    ov_bf16, ov_int8_bf16 = (openvino_session(path, threads=threads, bf16=True) for path in (fp32_path, int8_path))
    print(f"OpenVINO threads: {ov_fp32.threads} (forward rows), {dets['openvino'].session.threads} (detect() rows); "
          f"ONNX Runtime: {threads or 'its default, one per physical core'}; OpenVINO bf16 rows computed in "
          f"{ov_bf16.inference_precision} ({dets['openvino bf16'].precision}, {dets['openvino int8 bf16'].precision})")

    def no_grad(fn):
        def run():
            with torch.inference_mode():
                fn()
        return run

    return [
        (EAGER, no_grad(lambda: eager(x))),
        ("forward fused NCHW", no_grad(lambda: fused_nchw(x))),
        (PATHS["torch"][0], no_grad(lambda: dets["torch"].model(x_cl))),
        (PATHS["torch bf16"][0], lambda: dets["torch bf16"].forward(x_cl)),
        (PATHS["onnx"][0], lambda: raw_fp32.run(None, {"images": x.numpy()})),
        (PATHS["onnx int8"][0], lambda: raw_int8.run(None, {"images": x.numpy()})),
        (PATHS["openvino"][0], lambda: ov_fp32.run(None, {"images": x.numpy()})),
        (PATHS["openvino int8"][0], lambda: ov_int8.run(None, {"images": x.numpy()})),
        (PATHS["openvino bf16"][0], lambda: ov_bf16.run(None, {"images": x.numpy()})),
        (PATHS["openvino int8 bf16"][0], lambda: ov_int8_bf16.run(None, {"images": x.numpy()})),
    ] + [(PATHS[name][1], lambda det=det: det.detect(image)) for name, det in dets.items()]


def time_rows(rows, rounds: int, warmup: int, pause: float):
    """{name: (best, median) milliseconds}, timed round-robin with `pause` seconds idle before each call."""
    times = {name: [] for name, _ in rows}
    for r in range(warmup + rounds):
        for name, fn in rows:
            time.sleep(pause)
            start = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(1000.0 * (time.perf_counter() - start))
    return {name: (min(values), statistics.median(values)) for name, values in times.items()}


def ratios(ms, col: int) -> None:
    forwards = {path: ms[forward][col] for path, (forward, _) in PATHS.items()}
    for path, (forward, detect) in PATHS.items():
        ratio = ms[detect][col] / forwards[path]
        print(f"  detect()/forward {path}: {ratio:.3f} (target <= 1.15) {'ok' if ratio <= 1.15 else 'MISSED'}")
    best = min(forwards, key=forwards.get)
    speedup = ms[EAGER][col] / forwards[best]
    print(f"  best forward {best}: {speedup:.2f}x faster than the plain eager forward "
          f"(target >= 1.3) {'ok' if speedup >= 1.3 else 'MISSED'}")
    fastest = min(PATHS, key=lambda path: ms[PATHS[path][1]][col])
    ratio = ms[PATHS[fastest][1]][col] / forwards["onnx"]
    print(f"  fastest detect() ({fastest}) / fp32 ONNX Runtime forward: {ratio:.2f} "
          f"(target <= 0.7) {'ok' if ratio <= 0.7 else 'MISSED'}")
    for ov, ort in RUNTIME_PAIRS:
        rows = [ms[PATHS[ov][i]][col] / ms[PATHS[ort][i]][col] for i in (0, 1)]
        print(f"  {ov} / {ort}: forward {rows[0]:.3f}, detect() {rows[1]:.3f} (below 1: the first faster)")


def report(ms) -> None:
    print(f"{'row':<50}{'best ms':>9}{'median ms':>11}{'eager/row (best)':>18}")
    for name, (best, median) in ms.items():
        print(f"{name:<50}{best:>9.2f}{median:>11.2f}{ms[EAGER][0] / best:>17.2f}x")
    print("ratios on the best times (least disturbed by other processes):")
    ratios(ms, 0)
    print("ratios on the medians:")
    ratios(ms, 1)


def main(args) -> None:
    openvino = import_openvino()  # one line naming `pip install openvino` when it is missing
    import onnxruntime
    torch.set_num_threads(args.threads)
    image = read_image(args.img) if args.img else np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(args.weights) if args.weights else random_checkpoint(Path(tmp), args.num_classes, args.input_size)
        int8 = int8_graph(weights, args.input_size, Path(tmp), args.data, args.calib_images)
        rows = build_rows(weights, args.input_size, image, int8, Path(tmp), args.runtime_threads)
    print(f"input {args.input_size}x{args.input_size}, batch 1, {args.threads} torch threads, image "
          f"{image.shape[1]}x{image.shape[0]}, {args.rounds} rounds (median), {args.pause * 1000:.0f} ms pause, "
          f"torch {torch.__version__}, ONNX Runtime {onnxruntime.__version__}, OpenVINO {openvino.__version__}, "
          f"CPU {cpu_name()}, "
          f"native bf16: {'yes' if cpu_supports_bf16() else 'no (torch bf16 rows emulated)'}")
    report(time_rows(rows, args.rounds, args.warmup, args.pause))


if __name__ == "__main__":
    try:
        main(make_parser().parse_args())
    except ValueError as e:  # bad input or a missing optional package: one line
        sys.exit(f"bench_infer.py: {e}")
