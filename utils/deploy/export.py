"""ONNX export (opset 17, dynamic batch) checked against torch, and ONNX Runtime sessions.

Two graphs can be written:
  raw: input `images` Tensor[B, 3, H, W] float in [0, 1]; outputs `out0`, `out1`, the raw head logits
       exactly as YoloBody.forward returns them (decode them with utils.ops.boxes.decode_candidates).
  nms: same input; one output `detections` Tensor[K, 7]: batch index, x1, y1, x2, y2 (input pixels),
       score, class id, with decoding, score threshold, candidate cap, NMS (class-aware, or class-agnostic
       with Thresholds.agnostic: --agnostic-nms) and max_det per image inside: utils.ops.boxes.select_detections
       traced, the function the torch backend runs.
H and W are fixed at export time (the input size); only the batch is dynamic.
The onnx backend of yolo.YOLO runs a third, made in memory from a raw graph (detector_graph): input
`images` Tensor[B, H, W, 3] uint8, outputs `detections`, out0 and out1.

Metadata: exports made with `metadata` (YOLO.export_onnx always does) carry the detector's spec
(utils/core/detector_spec.py) in the ONNX metadata_props, each value JSON: format (ONNX_FORMAT), class_names,
anchors ([[w, h], ...]), anchors_mask, strides, input_size ([h, w]), scale_x_y, letterbox, attention, fusion,
se_loss, and precision ("fp32" or "int8"; int8 graphs add calibration). `read_onnx_spec` reads them back, so a
raw graph runs with nothing else (`YOLO("model.onnx")`, utils.deploy.quantize.evaluate_onnx); graphs written
before strides, letterbox, fusion and se_loss were stored read with the defaults DetectorSpec.from_record gives.
"""
import io
import json
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from utils.core.settings import default
from nets.yolo import YoloBody
from utils.core.detector_spec import RECORD_KEYS, DetectorSpec
from utils.core.fileio import write_bytes_atomic
from utils.ops.boxes import MAX_NMS
from utils.ops.pipeline import Thresholds, decode_select
from utils.ops.image import PIXEL_MAX

OPSET = 17
ONNX_FORMAT = "yolov4-tiny-attention/onnx/1"
META_KEYS = ("class_names", "anchors", "anchors_mask", "attention", "input_size", "scale_x_y")  # in every graph
EXTRA_KEYS = ("format", "precision", "calibration")
RAW_OUTPUTS = ("out0", "out1")
# operator domains ONNX Runtime implements; a node of any other is a custom op it cannot run
ORT_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")


class RawToDetections(nn.Module):
    """Raw head outputs -> detections: utils.ops.pipeline.decode_select, the torch pipeline's own decode and
    select, traced for ONNX export. forward(out0, out1) -> Tensor[K, 7] (see the module docstring)."""

    def __init__(self, anchors: Tensor, anchors_mask: Sequence[Sequence[int]], input_hw: Tuple[int, int],
                 scale_x_y: float = 1.0, conf: float = default("conf"), nms: float = default("nms"), max_det: int = default("max_det"),
                 max_nms: int = MAX_NMS, agnostic: bool = default("agnostic_nms")):
        super().__init__()
        self.register_buffer("anchors", anchors.float().clone())
        self.anchors_mask = [list(m) for m in anchors_mask]
        self.input_hw = tuple(input_hw)
        self.scale_x_y, self.thresholds, self.max_nms = scale_x_y, Thresholds(conf, nms, max_det, agnostic), max_nms

    @classmethod
    def from_spec(cls, spec: DetectorSpec, thresholds: Thresholds, max_nms: int = MAX_NMS) -> "RawToDetections":
        """The decoding and selection of the detector `spec` describes, with `thresholds` (class-agnostic NMS in
        the graph when thresholds.agnostic)."""
        return cls(spec.anchor_tensor(), spec.anchors_mask, spec.input_size, spec.scale_x_y, thresholds.conf,
                   thresholds.nms, thresholds.max_det, max_nms, thresholds.agnostic)

    def forward(self, out0: Tensor, out1: Tensor) -> Tensor:
        return decode_select([out0, out1], self.anchors, self.anchors_mask, self.input_hw, self.scale_x_y,
                             self.thresholds, out0.shape[0], self.max_nms)


class DecodeNMS(nn.Module):
    """YoloBody followed by RawToDetections: images -> detections."""

    def __init__(self, model: nn.Module, post: RawToDetections):
        super().__init__()
        self.model, self.post = model, post

    def forward(self, images: Tensor) -> Tensor:
        return self.post(*self.model(images))


def onnx_metadata(spec: DetectorSpec, precision: str = "fp32", calibration: Optional[Dict] = None) -> Dict[str, str]:
    """metadata_props for a graph of the detector `spec` describes: its record (DetectorSpec.record()), format,
    precision and calibration settings (int8), each value as JSON."""
    props = {"format": ONNX_FORMAT, "precision": precision, **spec.record()}
    if calibration is not None:
        props["calibration"] = calibration
    return {key: json.dumps(value) for key, value in props.items()}


def set_metadata(model, props: Dict[str, str]) -> None:
    """Add or replace metadata_props of an onnx.ModelProto in place."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in props.items():
        entry = existing[key] if key in existing else model.metadata_props.add()
        entry.key, entry.value = key, value


def read_onnx_spec(path) -> Tuple[DetectorSpec, Dict]:
    """(the DetectorSpec stored in an exported graph, {format, precision, calibration (int8)}); graphs written
    before strides and letterbox were recorded read as DetectorSpec.from_record reads older records."""
    props = _read_props(path)
    return DetectorSpec.from_record(props, YoloBody.strides, str(path)), {k: props[k] for k in EXTRA_KEYS if k in props}


def _read_props(path) -> Dict:
    """The JSON values of a graph's metadata_props that this project writes, refused unless it wrote them."""
    import onnx
    from google.protobuf.message import DecodeError
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {path} does not exist")
    try:
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    except DecodeError as e:
        raise ValueError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    missing = [key for key in ("format",) + META_KEYS if key not in props]
    if missing or json.loads(props["format"]) != ONNX_FORMAT:
        raise ValueError(f"{path}: expected a graph exported by this project (format {ONNX_FORMAT}, with its classes, "
                         f"anchors and input size in the metadata); found format {props.get('format', 'none')} and "
                         f"missing keys {missing or 'none'}. Export it again with `python predict.py --export-onnx PATH`")
    # other tools add their own keys (onnxruntime's quantizer: onnx.infer, ...), not JSON: left out
    return {key: json.loads(value) for key, value in props.items() if key in RECORD_KEYS + EXTRA_KEYS}


def open_raw_graph(path, class_names=None, input_hw=None, anchors=None, scale_x_y=None):
    """(the raw graph in `path` as an onnx.ModelProto, its DetectorSpec with the given overrides, its precision
    'fp32' or 'int8') for a graph written by export_onnx or quantized from one. A graph's input size is fixed and its
    class count too: a different one given is refused naming the file."""
    spec, extras = read_onnx_spec(path)
    if input_hw is not None and tuple(input_hw) != spec.input_size:
        raise ValueError(f"{path} was exported for input {spec.input_size[0]}x{spec.input_size[1]}, "
                         f"not {input_hw[0]}x{input_hw[1]}: its size is fixed; leave out the input size or export "
                         "again")
    if class_names is not None and len(class_names) != spec.num_classes:
        raise ValueError(f"{path} predicts {spec.num_classes} classes, {len(class_names)} names given")
    graph = load_onnx_graph(path)  # refuses external data and custom ops, naming the file
    return graph, spec.replace(class_names=class_names, anchors=anchors, scale_x_y=scale_x_y), \
        extras.get("precision", "fp32")


def load_onnx_graph(path):
    """The graph in `path` as an onnx.ModelProto, refused with a ValueError naming the file when it is not
    self-contained: tensors kept in external data files, or operators of domains ONNX Runtime lacks (custom
    ops). The project's exports are neither; the file is read without following any external path."""
    import onnx
    from google.protobuf.message import DecodeError
    try:
        model = onnx.load(str(path), load_external_data=False)
    except DecodeError as e:
        raise ValueError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]
    external = [t.name for t in tensors if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ValueError(f"{path}: keeps {len(external)} tensors ({', '.join(external[:3])}, ...) in external data "
                         "files, which is not supported; export the graph again with predict.py --export-onnx")
    local = {(f.domain, f.name) for f in model.functions}
    custom = sorted({f"{n.domain}.{n.op_type}" for n in model.graph.node
                     if n.domain not in ORT_DOMAINS and (n.domain, n.op_type) not in local})
    if custom:
        raise ValueError(f"{path}: uses custom operators ONNX Runtime does not have ({', '.join(custom[:5])}); "
                         "not supported: export the graph again with predict.py --export-onnx")
    return model


class OrtRaw(nn.Module):
    """A raw graph (float NCHW `images` -> out0, out1) run by ONNX Runtime, called like YoloBody:
    forward(Tensor[B, 3, H, W]) -> [out0, out1] as CPU float tensors. Lets code written for the torch
    model (utils.eval.detect.detect_samples, YOLO) run the graph unchanged; no autograd."""

    def __init__(self, session, where: str = "ONNX model"):
        super().__init__()
        _raw_graph_check([(i.name, i.type) for i in session.get_inputs()], [o.name for o in session.get_outputs()], where)
        self.session = session

    def forward(self, images: Tensor):
        found = self.session.run(list(RAW_OUTPUTS), {"images": images.detach().cpu().float().contiguous().numpy()})
        return [torch.from_numpy(out) for out in found]


def ort_session(model, device: str = "cpu", threads: int = 0):
    """An onnxruntime InferenceSession of `model` (a path, or the serialized bytes of a graph) on CPU (or
    CUDA when `device` is cuda and available)."""
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    # idle ORT threads would otherwise spin and steal the cores that pre/post-processing run on
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    where = "the ONNX graph" if isinstance(model, bytes) else str(model)
    model = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(model, sess_options=options, providers=providers)
    except (ort_errors.Fail, ort_errors.InvalidGraph, ort_errors.InvalidArgument, ort_errors.InvalidProtobuf,
            ort_errors.NotImplemented, ort_errors.NoSuchFile) as e:
        raise ValueError(f"{where}: ONNX Runtime cannot load it ({str(e).strip().splitlines()[0][:300]})") from None


def _to_onnx(module: nn.Module, args: Tuple[Tensor, ...], input_names: Sequence[str], output_names: Sequence[str],
             dynamic_axes: dict):
    """torch.onnx.export of `module` (eval) into memory -> onnx.ModelProto at OPSET."""
    import onnx
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript exporter is deprecated but handles torchvision's NMS; the new one needs onnxscript
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buffer, opset_version=OPSET, dynamo=False, input_names=list(input_names),
                          output_names=list(output_names), dynamic_axes=dynamic_axes)
    return onnx.load_from_string(buffer.getvalue())


def _write_graph(graph, path: Path, metadata: Optional[Dict[str, str]] = None) -> None:
    """Add `metadata` to an onnx.ModelProto, check it, and write it to `path` atomically."""
    import onnx
    if metadata:
        set_metadata(graph, metadata)
    onnx.checker.check_model(graph)
    write_bytes_atomic(path, graph.SerializeToString())


def raw_graph(model: nn.Module, input_hw: Tuple[int, int]):
    """The raw graph of `model` (eval mode, on CPU) as an onnx.ModelProto, in memory."""
    axes = {"images": {0: "batch"}, "out0": {0: "batch"}, "out1": {0: "batch"}}
    return _to_onnx(model.eval().cpu(), (torch.rand(1, 3, *input_hw),), ["images"], RAW_OUTPUTS, axes)


def export_onnx(model: nn.Module, path, input_hw: Tuple[int, int], check: bool = True, atol: float = 1e-4,
                metadata: Optional[Dict[str, str]] = None) -> Path:
    """Write the raw graph of `model` (eval mode, on CPU) to `path`; with `check`, compare ONNX Runtime
    against torch on a batch of 2 random images and raise RuntimeError beyond `atol`.

    `metadata`: metadata_props to store (see onnx_metadata).
    """
    path = Path(path)
    _write_graph(raw_graph(model, input_hw), path, metadata)
    if check:
        error = max_abs_error(model, path, torch.rand(2, 3, *input_hw))
        if error > atol:
            raise RuntimeError(f"{path}: ONNX Runtime differs from torch by {error:.3g} (more than {atol:g})")
    return path


def export_onnx_nms(model: nn.Module, path, spec: DetectorSpec, thresholds: Thresholds = Thresholds(),
                    metadata: Optional[Dict[str, str]] = None, max_nms: int = MAX_NMS) -> Path:
    """Write the graph of `model`, the detector `spec` describes, with decoding and NMS inside at `thresholds`
    (output `detections`, see module docstring).

    `metadata`: metadata_props to store (see onnx_metadata); `max_nms`: the candidate cap per image.
    """
    path = Path(path)
    module = DecodeNMS(model.eval().cpu(), RawToDetections.from_spec(spec, thresholds, max_nms)).eval()
    graph = _to_onnx(module, (torch.rand(1, 3, *spec.input_size),), ["images"], ["detections"],
                     {"images": {0: "batch"}, "detections": {0: "count"}})
    _write_graph(graph, path, metadata)
    return path


def _raw_graph_check(inputs: Sequence[Tuple[str, str]], outputs: Sequence[str], where: str) -> None:
    """Raise unless a graph has the raw layout: one input `images` of float, outputs out0 and out1.
    inputs: (name, type) pairs, type as ONNX Runtime writes it ('tensor(float)')."""
    if len(inputs) != 1 or inputs[0] != ("images", "tensor(float)") or any(name not in outputs for name in RAW_OUTPUTS):
        found = ", ".join(f"{name} {kind}" for name, kind in inputs)
        raise ValueError(f"{where}: expected a raw graph (input images float [B, 3, H, W]; outputs out0, out1), "
                         f"found inputs {found} and outputs {', '.join(outputs)}; export it without "
                         "--export-onnx-nms (python predict.py --export-onnx PATH)")


def _uint8_nhwc_input(graph) -> None:
    """Make a raw onnx.ModelProto take `images` as Tensor[B, H, W, 3] uint8 RGB, in place: Transpose, Cast
    and a multiply by 1/255 run inside the runtime, in place of a numpy pass over the image per call."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    g = graph.graph
    old = g.input[0]
    batch, _, h, w = old.type.tensor_type.shape.dim
    for node in g.node:
        node.input[:] = ["images_nchw" if name == "images" else name for name in node.input]
    g.initializer.append(numpy_helper.from_array(np.array(1.0 / PIXEL_MAX, dtype=np.float32), "inv_255"))
    g.node.insert(0, helper.make_node("Mul", ["images_float", "inv_255"], ["images_nchw"], name="scale_images"))
    g.node.insert(0, helper.make_node("Cast", ["images_nhwc_t"], ["images_float"], to=TensorProto.FLOAT,
                                      name="cast_images"))
    g.node.insert(0, helper.make_node("Transpose", ["images"], ["images_nhwc_t"], perm=[0, 3, 1, 2],
                                      name="transpose_images"))
    shape = [batch.dim_param or batch.dim_value, h.dim_value, w.dim_value, 3]
    g.input.remove(old)
    g.input.insert(0, helper.make_tensor_value_info("images", TensorProto.UINT8, shape))
    onnx.checker.check_model(graph)


def detector_graph(raw, spec: DetectorSpec, thresholds: Thresholds = Thresholds(), where: str = "ONNX model",
                   max_nms: int = MAX_NMS):
    """The raw graph `raw` (onnx.ModelProto, fp32 or int8) of the detector `spec` describes made into a whole
    detector for ONNX Runtime, at `thresholds`: input `images` Tensor[B, H, W, 3] uint8 RGB (letterboxed),
    outputs `detections` (as the nms graph's) and out0, out1. Returns a new onnx.ModelProto; `raw` is not
    changed. The spec's strides (the model's where it records none) shape out0 and out1; `max_nms`: the
    candidate cap per image.

    With the input conversion, decoding and NMS inside, a detect() call does little more than one
    session.run, on fp32 and int8 graphs alike.
    """
    import onnx
    from onnx import compose
    graph = onnx.ModelProto()
    graph.CopyFrom(raw)
    weights = {init.name for init in graph.graph.initializer}  # old IR versions list them as inputs too
    inputs = [(i.name, f"tensor({onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type).lower()})")
              for i in graph.graph.input if i.name not in weights]
    _raw_graph_check(inputs, [o.name for o in graph.graph.output], where)
    _uint8_nhwc_input(graph)
    post = RawToDetections.from_spec(spec, thresholds, max_nms).eval()
    (h, w), strides = spec.input_size, spec.strides or YoloBody.strides
    out0, out1 = (torch.rand(1, len(mask) * (5 + spec.num_classes), h // stride, w // stride)
                  for mask, stride in zip(spec.anchors_mask, strides))
    post_graph = _to_onnx(post, (out0, out1), RAW_OUTPUTS, ["detections"],
                          {"out0": {0: "batch"}, "out1": {0: "batch"}, "detections": {0: "count"}})
    post_graph.ir_version = graph.ir_version
    merged = compose.merge_models(graph, post_graph, io_map=[(n, n) for n in RAW_OUTPUTS], prefix2="post/",
                                  outputs=["post/detections"] + list(RAW_OUTPUTS))
    for node in merged.graph.node:
        node.output[:] = ["detections" if name == "post/detections" else name for name in node.output]
    for out in merged.graph.output:
        out.name = "detections" if out.name == "post/detections" else out.name
    return merged


def max_abs_error(model: nn.Module, path, images: Tensor) -> float:
    """Largest absolute difference between the torch model and the raw ONNX graph on `images`."""
    with torch.no_grad():
        expected = [t.numpy() for t in model(images)]
    found = ort_session(path).run(None, {"images": images.numpy()})
    return max(float(np.abs(e - f).max()) for e, f in zip(expected, found))
