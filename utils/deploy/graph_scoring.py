"""Scoring on every backend, as get_map.py does: utils.eval.scoring with the network run by torch, or by ONNX Runtime
or OpenVINO on the raw graph (an .onnx file, fp32 or int8, or the graph exported from a checkpoint).

    from utils.deploy.graph_scoring import evaluate
    evaluate(weights="logs/exp/model_int8.onnx", data="demo_data/demo", backend="openvino")

The graph runs as utils.deploy.quantize.evaluate_onnx runs it: raw outputs from the runtime (utils.deploy.export.
OrtRaw), then the evaluation's own letterbox, fp32 decoding and NMS. The backend follows YOLO's rule: torch for
checkpoints, onnx for .onnx files unless --backend says otherwise; --amp sets OpenVINO's precision as predict.py
does (utils.deploy.openvino_backend.backend_amp). scoring.py cannot import this layer, so get_map.py and YOLO.val
pass `graph_runner` down.
"""
from typing import Dict

from nets.fuse import fuse_model
from utils.core.cli import UserError
from utils.data.layouts import Dataset
from utils.deploy.export import OrtRaw, open_raw_graph, raw_graph
from utils.deploy.openvino_backend import backend_amp, backend_device, graph_session, runtime_precision
from utils.eval import scoring


def graph_runner(s: scoring.EvalSettings, dataset: Dataset):
    """scoring.Runner for every backend: the torch model (scoring.torch_runner), or OrtRaw over the raw graph on
    s.backend with what ran ({"device", "backend", "amp": 'int8 OpenVINO', ...}). A graph file's class names are its
    own: other names given are refused, as for a checkpoint (scoring.build_model)."""
    is_onnx = str(s.weights).lower().endswith(".onnx")
    backend = s.backend or ("onnx" if is_onnx else "torch")
    if backend == "torch":
        if is_onnx:
            raise UserError(f"{s.weights} is an ONNX graph: it runs on the onnx or openvino backend, not torch")
        return scoring.torch_runner(s, dataset)
    if is_onnx:
        graph, spec, graph_precision = open_raw_graph(s.weights, None, scoring.given_size(s), s.anchors, s.scale_x_y)
        check_graph_settings(s, spec.class_names)
        ours = True  # written by this project (export_onnx's metadata): results go beside it
    else:
        model, spec, ours = scoring.build_model(s, dataset)
        graph, graph_precision = raw_graph(fuse_model(model), spec.input_size), "fp32"
    device = backend_device(backend, s.device)
    _, bf16 = backend_amp(backend, s.amp, device, graph_precision)
    session = graph_session(backend, graph.SerializeToString(), str(device), bf16)
    # where the session runs: ONNX Runtime may fall back from CUDA to the CPU; OpenVINO runs on the CPU
    on_cuda = backend == "onnx" and session.get_providers()[0] == "CUDAExecutionProvider"
    ran = {"device": "cuda" if on_cuda else "cpu", "backend": backend,
           "amp": runtime_precision(backend, graph_precision, session)}
    return OrtRaw(session, str(s.weights)), spec, ours, ran


def check_graph_settings(s: scoring.EvalSettings, own_names) -> None:
    """--classes must be the graph's own class names (it scores its outputs under them); --phi / --attention are
    the graph's already (noted, as for a checkpoint that records them)."""
    given = scoring.given_classes(s)
    if given is not None and list(given) != list(own_names):
        raise UserError(f"--classes {s.classes} ({len(given)}: {', '.join(given[:6])}...) differs from the "
                        f"{len(own_names)} classes {s.weights} was exported with ({', '.join(own_names[:6])}...); "
                        "leave out --classes to use the graph's")
    if s.attention is not None or s.phi is not None:
        print(f"note: {s.weights} is a graph with its attention built in; --phi/--attention ignored")


def score(**settings) -> scoring.Scored:
    """scoring.score on every backend (keywords: get_map.py's flags, `backend` among them)."""
    return scoring.score(runner=graph_runner, **settings)


def evaluate(**settings) -> Dict:
    """The result dict get_map.py prints and saves, on every backend (scoring.evaluate's, with `backend`)."""
    return score(**settings).result
