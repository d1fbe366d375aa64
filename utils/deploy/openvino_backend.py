"""The openvino backend: the same ONNX graphs as the onnx backend (fp32, or int8 with QDQ nodes from
utils/deploy/quantize.py), run by OpenVINO's CPU plugin instead of ONNX Runtime.

`openvino_session` takes what utils.deploy.export.ort_session takes (a path or the serialized bytes of a
graph, the device, the thread count) and returns an object with the part of an ONNX Runtime
InferenceSession that the project calls: run(output_names, feeds), get_inputs(), get_outputs(). So
yolo.YOLO runs detector_graph (uint8 NHWC in, decoding and NMS inside) on either runtime through
graph_session, and the rest of the pipeline does not know which.

Settings, so that the comparison with ONNX Runtime is fair (and in fp32 the outputs match its own):
  - INFERENCE_PRECISION_HINT: f32, as ONNX Runtime computes, or bf16 (`bf16=True`), the CPU plugin's own
    default on CPUs with native bf16 (AVX512_BF16, AMX), which moves the raw outputs by ~1e-2 and measured about
    twice as fast as fp32 there (bench/bench_infer.py). The hint concerns what is not quantized: an int8 graph
    runs its quantized convolutions in int8 either way. yolo.YOLO passes bf16 by --amp (openvino_bf16).
  - PERFORMANCE_HINT LATENCY (one stream, batch 1), as ONNX Runtime runs a session call.
  - threads: 0 leaves both runtimes at their default, one thread per physical core (ONNX Runtime's
    intra_op_num_threads 0, OpenVINO's latency hint); N sets INFERENCE_NUM_THREADS, as ort_session sets
    intra_op_num_threads.
One rewrite before OpenVINO reads a graph (broadcast_free): OpenVINO 2026.4's CPU plugin gives
`ConstantOfShape(Shape(x)) + scalar` the shape [1] where x has 0 rows (it fuses the broadcast into the
add and takes max(rows, 1)); torch.full_like traces to that pattern in decode_candidates, so an image with no
candidate stopped the detector graph with a shape error. Each ConstantOfShape(Shape(x), value v) becomes
Cast(Cast(x, bool), type of v) * 0 + v: the same tensor (x's shape, every element v, NaN or inf in x
included) from element-wise ops only.
OpenVINO is optional (requirements-extra.txt); without it the backend stops with one line naming
`pip install openvino`.
"""
import threading
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from utils.core.amp import resolve_amp, select_device
from utils.deploy.export import load_onnx_graph, ort_session

# backend name -> what runs its graph, for the backends that run an ONNX graph
GRAPH_RUNTIMES = {"onnx": "ONNX Runtime", "openvino": "OpenVINO"}
OPENVINO_MISSING = "the openvino backend needs OpenVINO, which is not installed: pip install openvino"
_core, _core_lock = None, threading.Lock()


def import_openvino():
    """The openvino module, or a ValueError of one line naming what to install."""
    try:
        import openvino
    except ImportError:
        raise ValueError(OPENVINO_MISSING) from None
    return openvino


def shared_core():
    """The process's one openvino.Core, made on first use and kept. Each Core loads its own CPU plugin, and the
    plugin swaps the calling thread's signal stack (sigaltstack) in when it is made and back when it is freed
    (OpenVINO 2026.4): two plugins freed in the order they were made left the main thread's signal stack in freed
    memory, and the next Python signal handler (Ctrl-C, the SIGCHLD of a finished child) crashed the process with
    SIGSEGV. One Core loads the plugin once (made under a lock: two threads must not make two)."""
    global _core
    with _core_lock:
        if _core is None:
            import openvino
            _core = openvino.Core()
    return _core


def ov_config(threads: int = 0, bf16: bool = False) -> Dict[str, str]:
    """The CPU plugin's settings (see the module docstring): fp32 (bf16: bf16), latency, `threads` (0: its
    default)."""
    config = {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(int(threads))
    return config


def broadcast_free(graph):
    """A copy of the onnx.ModelProto `graph` with each ConstantOfShape(Shape(x)) made element-wise (see the module
    docstring); other ConstantOfShape nodes and every other node stay as they are."""
    import onnx
    from onnx import helper, numpy_helper
    graph = onnx.ModelProto.FromString(graph.SerializeToString())
    made_by = {name: node for node in graph.graph.node for name in node.output}
    nodes = []
    for node in graph.graph.node:
        shape = made_by.get(node.input[0]) if node.op_type == "ConstantOfShape" else None
        if shape is None or shape.op_type != "Shape" or len(shape.attribute):  # Shape with start/end: left as is
            nodes.append(node)
            continue
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        value = numpy_helper.from_array(np.zeros(1, np.float32)) if value is None else value  # ONNX's default
        v, name = numpy_helper.to_array(value).reshape(()), node.output[0]
        graph.graph.initializer.extend([numpy_helper.from_array(np.zeros((), v.dtype), f"{name}/ov_zero"),
                                        numpy_helper.from_array(v, f"{name}/ov_value")])
        nodes += [helper.make_node("Cast", [shape.input[0]], [f"{name}/ov_bool"], to=onnx.TensorProto.BOOL),
                  helper.make_node("Cast", [f"{name}/ov_bool"], [f"{name}/ov_number"], to=value.data_type),
                  helper.make_node("Mul", [f"{name}/ov_number", f"{name}/ov_zero"], [f"{name}/ov_zeros"]),
                  helper.make_node("Add", [f"{name}/ov_zeros", f"{name}/ov_value"], [name])]
    del graph.graph.node[:]
    graph.graph.node.extend(nodes)
    return graph


class IoInfo:
    """What get_inputs()/get_outputs() of an ONNX Runtime session give: a name and a type ('tensor(float)')."""

    def __init__(self, name: str, element_type: str):
        self.name, self.type = name, f"tensor({ {'f32': 'float', 'u8': 'uint8'}.get(element_type, element_type)})"


class OpenVinoSession:
    """A compiled OpenVINO model called like an ONNX Runtime InferenceSession (see the module docstring)."""

    def __init__(self, compiled):
        self.compiled = compiled
        self.request = compiled.create_infer_request()

    @property
    def threads(self) -> int:
        """The threads the CPU plugin runs inference on."""
        return int(self.compiled.get_property("INFERENCE_NUM_THREADS"))

    @property
    def inference_precision(self) -> str:
        """What the CPU plugin computes the unquantized ops in, as it reports it: 'f32' or 'bf16'."""
        return self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()

    def get_inputs(self) -> List[IoInfo]:
        return [IoInfo(p.get_any_name(), p.get_element_type().get_type_name()) for p in self.compiled.inputs]

    def get_outputs(self) -> List[IoInfo]:
        return [IoInfo(p.get_any_name(), p.get_element_type().get_type_name()) for p in self.compiled.outputs]

    def run(self, output_names, feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
        """Outputs `output_names` (None: all) for the inputs `feeds` {name: array}, as numpy arrays (copies)."""
        results = self.request.infer({name: np.ascontiguousarray(a) for name, a in feeds.items()})
        by_name = {port.get_any_name(): value for port, value in results.items()}
        names: Sequence[str] = output_names or [o.get_any_name() for o in self.compiled.outputs]
        return [np.array(by_name[name], copy=True) for name in names]


def openvino_session(model, device: str = "cpu", threads: int = 0, bf16: bool = False) -> OpenVinoSession:
    """An OpenVinoSession of `model` (a path to an .onnx file, or the serialized bytes of an ONNX graph) on
    OpenVINO's CPU plugin, computing its unquantized ops in bf16 when `bf16`. `device` must be the CPU: this
    backend does not run on CUDA."""
    if not str(device).startswith("cpu"):
        raise ValueError(f"the openvino backend runs on the CPU; found device {device}: give --device cpu "
                         "(or use --backend onnx or torch on CUDA)")
    import_openvino()  # one line naming what to install when it is missing
    core = shared_core()
    import onnx
    where = "the ONNX graph" if isinstance(model, bytes) else str(model)
    graph = onnx.load_from_string(model) if isinstance(model, bytes) else load_onnx_graph(model)
    try:
        read = core.read_model(broadcast_free(graph).SerializeToString(), b"")
        session = OpenVinoSession(core.compile_model(read, "CPU", ov_config(threads, bf16)))
    except RuntimeError as e:  # OpenVINO raises its errors (unreadable graph, unsupported op) as RuntimeError
        raise ValueError(f"{where}: OpenVINO cannot load it ({str(e).strip().splitlines()[0][:300]})") from None
    if bf16 and session.inference_precision != "bf16":
        warnings.warn(f"--amp bf16: OpenVINO's CPU plugin computes in {session.inference_precision} on this CPU, "
                      "not bf16", stacklevel=2)
    return session


def openvino_bf16(amp: str, amp_dtype, graph_precision: str) -> bool:
    """Whether the openvino backend computes in bf16: where --amp resolves to bf16 (`amp_dtype`, from
    utils.core.amp.resolve_amp: auto is bf16 on CPUs with native bf16), except that auto leaves an int8 graph's
    unquantized ops in fp32: there bf16 measured slower (bench/bench_infer.py's openvino int8 bf16 row)."""
    return amp_dtype is not None and not (amp == "auto" and graph_precision == "int8")


def backend_device(backend: str, device: str = "auto"):
    """The torch.device a backend runs on for --device `device`: auto is the CPU for openvino (its CPU plugin is
    the only one this backend uses), and select_device's choice for the others."""
    return select_device("cpu" if backend == "openvino" and device == "auto" else device)


def backend_amp(backend: str, amp: str, device, graph_precision: str = "fp32") -> Tuple[Optional[object], bool]:
    """(torch's autocast dtype or None, whether OpenVINO computes in bf16) for --amp `amp` on `backend`, one rule
    (utils.core.amp.resolve_amp): torch autocasts; openvino asks its plugin for bf16 (openvino_bf16), and
    openvino_session warns if the plugin keeps fp32; onnx computes fp32. resolve_amp's warning about emulated bf16
    speaks of torch, so only the torch backend gives it; a choice that cannot be (fp16 on a CPU) fails on every
    backend."""
    with warnings.catch_warnings():
        if backend != "torch":
            warnings.simplefilter("ignore")
        dtype = resolve_amp(amp, device)
    if backend == "torch":
        return dtype, False
    return None, backend == "openvino" and openvino_bf16(amp, dtype, graph_precision)


def graph_session(backend: str, graph: bytes, device: str, bf16: bool = False):
    """A session running the serialized ONNX `graph` on `backend`: 'onnx' (ONNX Runtime, fp32: its CPU has no bf16)
    or 'openvino' (its unquantized ops in bf16 where `bf16`: openvino_bf16, else fp32)."""
    if backend == "openvino":
        return openvino_session(graph, device, bf16=bf16)
    return ort_session(graph, device)


def runtime_precision(backend: str, graph_precision: str, session) -> str:
    """What runs a graph of `graph_precision` ('fp32', 'int8') on `backend`, in the words of YOLO.precision:
    'fp32 ONNX Runtime', 'int8 ONNX Runtime', 'fp32 OpenVINO', 'bf16 OpenVINO' (an fp32 graph computed in bf16),
    'int8 + bf16 OpenVINO'. OpenVINO's precision is read from `session`, as its CPU plugin reports it."""
    if backend == "openvino" and session.inference_precision == "bf16":
        graph_precision = "bf16" if graph_precision == "fp32" else f"{graph_precision} + bf16"
    return f"{graph_precision} {GRAPH_RUNTIMES[backend]}"
