"""int8 ONNX graphs by static quantization with ONNX Runtime, and scoring ONNX graphs on a dataset split.

    python -m utils.deploy.quantize --weights logs/run/best.pth [--data VOCdevkit] [--calib-images 100] [--out model_int8.onnx]

writes the fp32 and the int8 raw graph and prints mAP@0.5 of the torch model, the fp32 graph and the
int8 graph on the evaluation split, in one table.

How the int8 graph is made (quantize_onnx):
  * the raw graph (utils/deploy/export.py: images -> out0, out1; decoding and NMS are not in it, they run in
    fp32 after it) is cleaned by ONNX Runtime's quant_pre_process (constant folding, shape inference);
  * calibration: `--calib-images` images spread evenly over a dataset split (the training split by
    default), letterboxed exactly as at inference; activation ranges by `method` (minmax default);
  * QDQ format with uint8 activations and int8 weights (ONNX Runtime's fast U8S8 kernels on x86;
    int8 activations ran ~1.8x slower here), weights per output channel;
  * weights in 7 bits ([-64, 64], `weight_bits` 7): on x86 CPUs without VNNI (AVX2 only) the U8S8 kernels
    add pairs of uint8 x int8 products in int16 (VPMADDUBSW), which saturates with full-range weights
    (2 * 255 * 127 > 32767) and not with these (2 * 255 * 64 = 32640), so the graph gives the same
    outputs on AVX2-only and VNNI CPUs. On the test network, emulated on an AVX2-only CPU, the int8
    error against fp32 was 2.7x the one on a VNNI CPU with 8-bit weights; with 7-bit weights it is the
    same on both, 1.2-1.3x that one, at the same speed. On the fc6c88b demo checkpoint 8 bits gave
    mAP@0.5:0.95 91.82 (VNNI) and 91.81 (emulated AVX2), 7 bits 91.58 on both. `weight_bits` 8 is for x86
    CPUs with VNNI. uint8 weights (U8U8, no saturation either) kept the 8-bit error but ran 2.7x slower
    on the VNNI CPU;
  * the two output convs (1x1, producing the raw logits that decoding reads) stay fp32 (`head_fp32`).
Measured with 8-bit weights on an older demo checkpoint (320 input, 25 epochs, fp32 mAP@0.5 99.63,
mAP@0.5:0.95 77.41) with 100 calibration images: int8 99.62 / 77.48. With the output convs in int8
too: 99.60 / 74.90, and the box-offset error against fp32 2.4x larger, at no measurable speed gain.
Per-tensor weights: same speed and mAP within noise, larger worst objectness error. Percentile and
entropy calibration: no better (76.79, 77.29 mAP@0.5:0.95) and 3-4x slower to calibrate.
The int8 file carries the fp32 export's metadata with precision "int8" and the calibration settings,
so `YOLO("model_int8.onnx")` and evaluate_onnx need nothing else.
"""
import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from utils.core.amp import amp_name, resolve_amp, select_device
from utils.deploy.export import OrtRaw, export_onnx, onnx_metadata, ort_session, read_onnx_spec, set_metadata
from utils.core.fileio import write_bytes_atomic
from utils.ops.image import letterbox_image, read_image, to_tensor_batch
from nets.fuse import fuse_model
from utils.core.cli import run_main
from utils.core.schema_tools import CALIB_METHODS, WEIGHT_BITS
from utils.core.settings import add_flags, default
from utils.core.config import parse_input_size, read_classes
from utils.core.detector_spec import DetectorSpec
from utils.data.layouts import dataset_of, open_dataset
from utils.data.voc import load_samples
from nets.checkpoint import load_detector
from utils.eval.evaluator import CONF_THRES, NMS_THRES, evaluate_model

DEFAULT_CALIB_IMAGES = default("calib_images")  # the schema's (utils/core/schema_tools.py), as the choices below


def calibration_images(data, split: Optional[str], class_names: Sequence[str], count: int = DEFAULT_CALIB_IMAGES,
                       data_format: Optional[str] = None, images_dir=None) -> List[Path]:
    """`count` image paths spread evenly over `split` of `data` (default split: its training split); `data`: a
    utils.data.layouts.Dataset, or what open_dataset takes with `data_format` and `images_dir`."""

    if count < 1:
        raise ValueError(f"--calib-images must be at least 1, found {count}")
    dataset = open_dataset(data, data_format, images_dir)
    samples = load_samples(dataset, split or dataset.default_split("train"), class_names)
    picks = np.unique(np.linspace(0, len(samples) - 1, min(count, len(samples))).round().astype(int))
    return [Path(samples[i].image_path) for i in picks]


class LetterboxReader(CalibrationDataReader):
    """Feeds images to the ONNX Runtime calibrator as the model sees them: letterboxed to `input_hw`,
    float NCHW in [0, 1], one image per batch. `images`: paths or HxWx3 uint8 RGB arrays."""

    def __init__(self, images: Sequence, input_hw, letterbox: bool = True):
        self.images, self.input_hw, self.letterbox = list(images), tuple(input_hw), letterbox
        self.position = 0

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        if self.position >= len(self.images):
            return None
        image = self.images[self.position]
        self.position += 1
        rgb = read_image(image) if isinstance(image, (str, Path)) else np.asarray(image)
        resized, _ = letterbox_image(rgb, self.input_hw, self.letterbox)
        return {"images": to_tensor_batch([resized]).contiguous().numpy()}

    def rewind(self) -> None:
        self.position = 0


def output_convs(model) -> List[str]:
    """Names of the Conv nodes of an onnx.ModelProto whose outputs are graph outputs (the raw logits)."""
    outputs = {o.name for o in model.graph.output}
    return [n.name for n in model.graph.node if n.op_type == "Conv" and outputs.intersection(n.output)]


def quantize_onnx(fp32_path, out_path, images: Sequence, letterbox: bool = True, per_channel: bool = True,
                  head_fp32: bool = True, method: str = "minmax", weight_bits: int = default("weight_bits")) -> Path:
    """Write the int8 QDQ version of a raw graph exported with metadata (see the module docstring).

    `images`: calibration images (paths or HxWx3 uint8 RGB arrays). Returns `out_path`.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if weight_bits not in WEIGHT_BITS:
        raise ValueError(f"weight_bits must be one of {WEIGHT_BITS}, found {weight_bits}")
    if method not in CALIB_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; valid: {', '.join(CALIB_METHODS)}")
    if not images:
        raise ValueError("no calibration images: give at least one (--calib-images, --data)")
    spec, _ = read_onnx_spec(fp32_path)
    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory(prefix="quantize.") as tmp:
        clean, quantized = Path(tmp) / "clean.onnx", Path(tmp) / "int8.onnx"
        # symbolic shape inference cannot follow the Resize of the upsample; onnx's own shape inference does
        quant_pre_process(str(fp32_path), str(clean), skip_symbolic_shape=True)
        excluded = output_convs(onnx.load(str(clean))) if head_fp32 else []
        logger = logging.getLogger()
        level = logger.level
        logger.setLevel(logging.ERROR)  # quantize_static warns to pre-process, which is done above
        try:
            quantize_static(str(clean), str(quantized), LetterboxReader(images, spec.input_size, letterbox),
                            quant_format=QuantFormat.QDQ, per_channel=per_channel, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, reduce_range=weight_bits == 7, nodes_to_exclude=excluded,
                            calibrate_method=calibrate,
                            extra_options={"CalibMaxIntermediateOutputs": 16})
        finally:
            logger.setLevel(level)
        graph = onnx.load(str(quantized))
    settings = {"images": len(images), "method": method, "per_channel": per_channel, "head_fp32": head_fp32,
                "weight_bits": weight_bits}
    set_metadata(graph, onnx_metadata(spec, precision="int8", calibration=settings))
    write_bytes_atomic(out_path, graph.SerializeToString())
    return Path(out_path)


def export_int8(model, spec: DetectorSpec, path, images: Sequence, letterbox: bool = True, **options) -> Path:
    """Export `model` (a YoloBody, eval, CPU; BN folded is best) described by `spec` as a raw fp32 graph and
    quantize it to `path` (quantize_onnx; `options`: per_channel, head_fp32, method, weight_bits)."""

    with tempfile.TemporaryDirectory(prefix="export.") as tmp:
        fp32 = export_onnx(model, Path(tmp) / "fp32.onnx", spec.input_size, metadata=onnx_metadata(spec))
        return quantize_onnx(fp32, path, images, letterbox=letterbox, **options)


def evaluate_onnx(onnx_path, samples, class_names: Sequence[str], conf_thres: Optional[float] = None,
                  nms_thres: Optional[float] = None, letterbox: bool = True, batch_size: int = 8, workers: int = 0,
                  progress: bool = True) -> Dict:
    """Run a raw graph exported with metadata (fp32 or int8) over `samples` and score it.

    The same path as utils.eval.evaluator.evaluate_model (same loader, letterbox, fp32 decoding and NMS,
    evaluate_detections; conf and NMS thresholds default to its 0.001 and 0.5), with ONNX Runtime
    running the network. Returns evaluate_model's dict (map50, map50_95, per_class, detections, ...).
    """

    spec, _ = read_onnx_spec(onnx_path)
    if spec.num_classes != len(class_names):
        raise ValueError(f"{onnx_path} predicts {spec.num_classes} classes ({', '.join(spec.class_names[:5])}"
                         f"...), but {len(class_names)} class names were given; score it with the classes it was "
                         "trained on")
    module = OrtRaw(ort_session(onnx_path), str(onnx_path))
    return evaluate_model(module, samples, class_names, spec=spec.replace(letterbox=letterbox),
                          conf_thres=CONF_THRES if conf_thres is None else conf_thres,
                          nms_thres=NMS_THRES if nms_thres is None else nms_thres, batch_size=batch_size,
                          workers=workers, device="cpu", progress=progress)


def make_parser() -> argparse.ArgumentParser:
    """The command's flags, generated from the schema (utils/core/settings.py) by concern."""
    p = argparse.ArgumentParser(prog="python -m utils.deploy.quantize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(p, "quantize")
    return p


def fp32_path(out: Path, fp32_out: Optional[str]) -> Path:
    if fp32_out:
        return Path(fp32_out)
    name = out.name.replace("int8", "fp32") if "int8" in out.name else f"{out.stem}_fp32{out.suffix}"
    return out.with_name(name)


def format_table(rows: Sequence[tuple]) -> str:
    """rows: (name, evaluate dict) -> mAP@0.5 and mAP@0.5:0.95 with the change against the first row."""
    base = rows[0][1]["map50"]
    lines = [f"{'model':<28}{'mAP@0.5':>9}{'vs first':>10}{'mAP@.5:.95':>12}"]
    for name, result in rows:
        lines.append(f"{name:<28}{100 * result['map50']:>8.2f}%{100 * (result['map50'] - base):>+9.2f}"
                     f"{100 * (result['map50_95'] or 0):>11.2f}%")
    return "\n".join(lines)


def compare(args) -> List[tuple]:
    """Export fp32 and int8 graphs and score them with the torch model; returns [(row name, result)]."""

    names = read_classes(args.classes) if args.classes else None
    size = list(parse_input_size(args.input_size)) if args.input_size else None
    model, spec = load_detector(args.weights, class_names=names, attention=args.attention, input_size=size)
    model.eval()
    dataset = dataset_of(args)  # its layout detected once
    split = args.split or dataset.default_split("eval")
    calib = calibration_images(dataset, args.calib_split, list(spec.class_names), args.calib_images)
    samples = load_samples(dataset, split, list(spec.class_names))
    out = Path(args.out)
    fp32 = export_onnx(fuse_model(model), fp32_path(out, args.fp32_out), spec.input_size, metadata=onnx_metadata(spec))
    int8 = quantize_onnx(fp32, out, calib, per_channel=args.per_channel, head_fp32=args.head_fp32,
                         method=args.calib_method, weight_bits=args.weight_bits)
    print(f"wrote {fp32} and {int8} (int8: {len(calib)} calibration images from {dataset.path})")
    device = select_device(args.device)
    torch_eval = dict(spec=spec, batch_size=args.batch_size, device=device, progress=False)
    names = list(spec.class_names)
    rows = [("torch fp32", evaluate_model(model.to(device), samples, names, **torch_eval))]
    amp = resolve_amp(args.amp, device)
    if amp is not None:
        rows.append((f"torch {amp_name(amp)} autocast", evaluate_model(model, samples, names, amp=amp,
                                                                      **torch_eval)))
    for name, path in (("onnx fp32", fp32), ("onnx int8", int8)):
        rows.append((name, evaluate_onnx(path, samples, names, batch_size=args.batch_size, progress=False)))
    print(f"{dataset.path} [{split}], {len(samples)} images, input {spec.input_size[0]}x{spec.input_size[1]}, "
          f"calibration: {len(calib)} images, {args.calib_method}, {args.weight_bits}-bit weights, "
          f"per-channel {'on' if args.per_channel else 'off'}, output convs {'fp32' if args.head_fp32 else 'int8'}")
    return rows


def main(argv=None) -> int:
    """`python -m utils.deploy.quantize` with `argv` (default: the command line); the exit code (utils/core/cli.py)."""

    def body() -> None:
        print(format_table(compare(make_parser().parse_args(argv))))
    return run_main("python -m utils.deploy.quantize", body)


if __name__ == "__main__":
    sys.exit(main())
