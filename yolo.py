"""YOLO: the one entry point for inference from Python.

    from yolo import YOLO
    yolo = YOLO("logs/run/best.pth")                 # our checkpoint carries classes, anchors, size
    yolo = YOLO("yolov4-tiny.weights", classes="model_data/coco_classes.txt")
    yolo = YOLO("model_int8.onnx")                   # a graph from yolo.export_onnx: ONNX Runtime
    det = yolo.detect("img/street.jpg")              # or an HxWx3 uint8 RGB array
    det.boxes, det.scores, det.class_ids             # xyxy original-image pixels, [K], [K]
    drawn = yolo.draw(image, det)
"""
import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from nets.fuse import fuse_model
from utils.core.amp import amp_name
from utils.ops.boxes import Letterbox, detections_to_image, head_grid, letterbox_crop
from nets.checkpoint import load_detector
from utils.core.config import parse_input_size, read_classes
from utils.core.detector_spec import DetectorSpec
from utils.core.settings import default
from utils.deploy.drawing import draw_detections, heatmap_overlay
from utils.deploy.export import (detector_graph, export_onnx, export_onnx_nms, onnx_metadata, open_raw_graph,
                                  raw_graph)
from utils.deploy.openvino_backend import (GRAPH_RUNTIMES, backend_amp, backend_device, graph_session,
                                            runtime_precision)
from utils.ops.image import read_image
from utils.ops.pipeline import Thresholds, detect_images, forward_fp32, input_batch, letterbox_input, spec_decode_select
from utils.deploy.attention_maps import attention_maps
from utils.deploy.cam import DEFAULT_METHOD, DEFAULT_TOP_K, HEAD_LAYER, CamDetector, DetectionCam, detection_cams
from utils.deploy.predict_modes import export_model, export_path, predict_source
from utils.deploy.predict_outputs import PredictOutputs
from utils.deploy.quantize import DEFAULT_CALIB_IMAGES, export_int8
from utils.deploy.sliced import slicing_of, yolo_detect_sliced
from utils.ops.slicing import slice_settings
from utils.deploy.graph_scoring import evaluate

BACKENDS = ("torch",) + tuple(GRAPH_RUNTIMES)  # torch, onnx (ONNX Runtime), openvino (OpenVINO)
ImageLike = Union[str, Path, np.ndarray]


@dataclass
class Detections:
    """Detections in one image, best first.

    boxes: float32 [K, 4] x1, y1, x2, y2 in original-image pixels (clipped to the image, each with
        positive width and height);
    scores: float32 [K] objectness * class probability; class_ids: int64 [K] indices into class_names.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def _detections(det: torch.Tensor) -> Detections:
    """Tensor[K, 6] in image pixels (x1, y1, x2, y2, score, class) -> Detections."""
    return Detections(det[:, :4].numpy().astype(np.float32), det[:, 4].numpy().astype(np.float32),
                      det[:, 5].numpy().astype(np.int64))


def as_rgb_array(image: ImageLike) -> np.ndarray:
    """A path (read with EXIF orientation) or an array (HxWx3 uint8 RGB, or HxW gray) -> HxWx3 uint8 RGB."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, found shape {image.shape} dtype {image.dtype}")
    return image


class YOLO:
    """A detector loaded from a weights file.

    Args:
        weights: our checkpoint, a reference .pth (give `classes` and `attention`), darknet .weights, or a
            raw .onnx graph written by export_onnx (fp32 or int8; it carries its classes, anchors and size).
        classes: class names or a classes file; needed unless the file names its classes.
        attention: phi integer or attention spec for files that do not carry it.
        input_size: network input, int or (h, w), multiples of 32; default the file's (or 416).
        conf: score threshold; nms: NMS IoU threshold (across classes with agnostic_nms); max_det: most per image.
        slice: sliced inference for every detect() (what detect's `slice` takes; utils/ops/slicing.py).
        letterbox: keep aspect ratio with grey padding (True) or stretch (False); default: the weights' spec
            (True for every file this project writes).
        device: 'auto' (cuda when available), 'cpu', 'cuda', 'cuda:1'...
        backend: 'torch' (BN folded, channels-last, autocast), 'onnx' (ONNX Runtime) or 'openvino' (the same graph
            on OpenVINO's CPU plugin, utils/deploy/openvino_backend.py); default torch, onnx for .onnx files.
        amp: 'auto' | 'off' | 'bf16' | 'fp16' (utils.core.amp.resolve_amp: auto is bf16 on CPUs with native bf16
            and on CUDA, else fp32): autocast for torch, the CPU plugin's precision for openvino (where auto keeps
            int8 graphs' unquantized ops in fp32: openvino_bf16); onnx runs fp32. Decoding and NMS run in fp32.
        anchors, scale_x_y: override the file's (darknet files default to scale_x_y 1.05).

    `spec` (utils/core/detector_spec.py) holds the detector's facts, read from the weights file with the
    overrides given here; class_names, input_hw, anchors, anchors_mask, scale_x_y and letterbox read it.
    """

    def __init__(self, weights, classes=None, attention=None, input_size=None, conf: float = default("conf"),
                 nms: float = default("nms"), letterbox: Optional[bool] = None, device: str = "auto",
                 backend: Optional[str] = None, max_det: int = default("max_det"), anchors=None,
                 scale_x_y: Optional[float] = None, amp: str = "auto",
                 agnostic_nms: bool = default("agnostic_nms"), slice=None):
        is_onnx = str(weights).lower().endswith(".onnx")
        backend = backend or ("onnx" if is_onnx else "torch")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        if is_onnx and backend == "torch":
            raise ValueError(f"{weights} is an ONNX graph: it runs on the onnx or openvino backend, not torch")
        names = read_classes(classes) if isinstance(classes, (str, Path)) else classes
        hw = parse_input_size(input_size) if input_size is not None else None
        self.device = backend_device(backend, device)
        self.backend = backend
        self._session, self._session_key, self._raw = None, None, None
        self._source = str(weights)
        self._given = {"classes": names, "attention": attention, "input_size": hw, "anchors": anchors,  # for val
                       "scale_x_y": scale_x_y, "device": device, "amp": amp, "agnostic_nms": agnostic_nms,
                       "backend": backend}
        self._precision = "fp32"
        if is_onnx:
            model, (self._raw, spec, self._precision) = None, open_raw_graph(weights, names, hw, anchors, scale_x_y)
        else:
            model, spec = load_detector(weights, class_names=names, attention=attention, anchors=anchors,
                                        input_size=hw, scale_x_y=scale_x_y)
        parse_input_size(spec.input_size)  # a multiple of 32
        self.spec: DetectorSpec = spec.replace(letterbox=letterbox)
        self.anchors = self.spec.anchor_tensor()
        self.conf, self.nms, self.max_det, self.agnostic_nms, self.slice = conf, nms, max_det, agnostic_nms, slice
        self.amp, self._graph_bf16 = backend_amp(backend, amp, self.device, self._precision)  # torch's; openvino's
        # channels-last measured faster on CPU for this network, fp32 and bf16 (bench/bench_infer.py)
        self.model = None if model is None else fuse_model(model).to(self.device).to(memory_format=torch.channels_last)
        if backend != "torch":
            _ = self.session  # built now, so a graph that cannot serve fails here

    @property
    def class_names(self) -> List[str]:
        return list(self.spec.class_names)

    @property
    def input_hw(self) -> Tuple[int, int]:
        return self.spec.input_size

    @property
    def anchors_mask(self) -> Tuple[Tuple[int, ...], ...]:
        return self.spec.anchors_mask

    @property
    def scale_x_y(self) -> float:
        return self.spec.scale_x_y

    @property
    def letterbox(self) -> bool:
        return self.spec.letterbox

    @property
    def thresholds(self) -> Thresholds:
        """conf, nms, max_det and agnostic_nms as utils.ops.pipeline takes them."""
        return Thresholds(self.conf, self.nms, self.max_det, self.agnostic_nms)

    @property
    def precision(self) -> str:
        """What runs the network: 'bf16 autocast', 'off (fp32)' (torch), 'int8 ONNX Runtime', 'bf16 OpenVINO'..."""
        if self.backend != "torch":
            return runtime_precision(self.backend, self._precision, self.session)
        return f"{amp_name(self.amp)} autocast" if self.amp is not None else amp_name(None)

    @property
    def session(self):
        """The ONNX Runtime (onnx) or OpenVINO (openvino) session, None for torch: the raw graph (the .onnx file, or
        exported from the weights) with uint8 NHWC input, decoding and NMS inside (utils.deploy.export.detector_graph),
        rebuilt when conf, nms or max_det change."""
        key = self.thresholds
        if self.backend != "torch" and self._session_key != key:
            graph = detector_graph(self._raw_graph(), self.spec, key, where=self._source).SerializeToString()
            self._session = graph_session(self.backend, graph, str(self.device), self._graph_bf16)
            self._session_key = key
        return self._session

    def _raw_graph(self):
        """The raw graph as an onnx.ModelProto: the loaded file, or exported from the weights once."""
        if self._raw is None:
            self._raw = raw_graph(self._cpu_model(), self.input_hw)
        return self._raw

    def _cpu_model(self) -> torch.nn.Module:
        if self.model is None:
            raise ValueError("this detector runs an ONNX graph; export from the weights it was made from")
        return copy.deepcopy(self.model).cpu().to(memory_format=torch.contiguous_format).eval()

    def preprocess(self, image: np.ndarray) -> Tuple[torch.Tensor, Letterbox]:
        """HxWx3 uint8 RGB -> (Tensor[1, 3, h, w] float in [0, 1] on the device, Letterbox).

        For the onnx backend the batch is Tensor[1, h, w, 3] uint8: the graph converts it (see session).
        """
        item = letterbox_input(image, self.spec)
        if self.backend != "torch":
            return torch.from_numpy(item.input[None]), item.lb
        return input_batch([item.input], self.device), item.lb  # channels-last, no copy besides the float conversion

    def forward(self, batch: torch.Tensor) -> Sequence[torch.Tensor]:
        """Raw head outputs (out0 stride 32, out1 stride 16), float32, for a preprocessed batch.

        The torch backend runs the network under autocast with self.amp; the outputs come back as fp32.
        """
        if self.backend != "torch":
            return [torch.from_numpy(o) for o in self.session.run(["out0", "out1"], {"images": batch.numpy()})]
        with torch.inference_mode():
            return forward_fp32(self.model, batch, self.amp)

    def infer(self, batch: torch.Tensor):
        """What the backend computes: raw outputs (torch), or Tensor[K, 7] detections in input pixels (onnx)."""
        if self.backend != "torch":
            return torch.from_numpy(self.session.run(["detections"], {"images": batch.numpy()})[0])
        return self.forward(batch)

    def finish(self, result, lb: Letterbox, image_hw: Tuple[int, int]) -> Detections:
        """infer()'s result -> Detections in image pixels."""
        if self.backend != "torch":
            return _detections(detections_to_image(result[:, 1:], lb, image_hw))
        return self.postprocess(result, lb, image_hw)

    def postprocess(self, outputs: Sequence[torch.Tensor], lb: Letterbox, image_hw: Tuple[int, int]) -> Detections:
        """Decode raw outputs, threshold, NMS and map boxes back to the image (utils.ops.pipeline's pieces)."""
        with torch.inference_mode():
            det = spec_decode_select(outputs, self.spec, self.thresholds, 1, self.anchors)
            return _detections(detections_to_image(det[:, 1:].cpu(), lb, image_hw))  # clipped, empty boxes dropped

    def detect(self, image: ImageLike, slice=None) -> Detections:
        """Detect objects in a path or an HxWx3 uint8 RGB array: utils.ops.pipeline.detect_images with the torch
        backend, the graph's own decoding and NMS with onnx. `slice` (None: the detector's): sliced inference, True
        (tiles of the input size), N, (h, w) or a utils.ops.slicing.Slicing (overlap, whole image too); 0: off."""
        image = as_rgb_array(image)
        slicing = slicing_of(self, slice)
        if slicing is not None:
            return _detections(yolo_detect_sliced(self, image, slicing))
        if self.backend == "torch":
            return _detections(detect_images(self.model, [image], self.spec, self.thresholds, self.device, self.amp,
                                             self.anchors)[0])
        batch, lb = self.preprocess(image)
        return self.finish(self.infer(batch), lb, image.shape[:2])

    def draw(self, image: ImageLike, det: Detections) -> np.ndarray:
        """The image (HxWx3 uint8 RGB) with boxes and labels drawn."""
        return draw_detections(as_rgb_array(image), det.boxes, det.scores, det.class_ids, self.class_names)

    def objectness(self, image: np.ndarray) -> np.ndarray:
        """HxW float map in [0, 1] over the image: the highest objectness of any anchor of either head."""
        batch, lb = self.preprocess(image)
        outputs = self.forward(batch)
        h, w = self.input_hw
        maps = []
        for out, mask in zip(outputs, self.anchors_mask):
            obj = head_grid(out.float().cpu(), len(mask))[..., 4].sigmoid().amax(dim=1, keepdim=True)
            maps.append(F.interpolate(obj, size=(h, w), mode="bilinear", align_corners=False))
        return letterbox_crop(torch.maximum(maps[0], maps[1])[0, 0].numpy(), lb, image.shape[:2])

    def attention_maps(self, image: ImageLike) -> Dict[str, Tuple[str, np.ndarray]]:
        """{site: ('spatial', HxW map over the image) or ('channel', [C] weights)} of the model's attention blocks."""
        if self.model is None:
            raise ValueError("attention maps need the torch backend (a .pth or .weights file, --backend torch)")
        image = as_rgb_array(image)
        item = letterbox_input(image, self.spec)  # the torch network's float input, whichever the backend
        maps = attention_maps(self.model, input_batch([item.input], self.device))
        for site, (kind, values) in maps.items():
            if kind == "spatial":  # map grid -> input pixels -> the image part of the letterbox
                full = F.interpolate(torch.from_numpy(values)[None, None], size=self.input_hw, mode="bilinear",
                                     align_corners=False)[0, 0].numpy()
                maps[site] = (kind, letterbox_crop(full, item.lb, image.shape[:2]))
        return maps

    def cam_detector(self) -> CamDetector:
        """The torch network and this detector's settings, for utils.deploy.cam (also with --backend onnx
        when the weights are a .pth or .weights file: the maps always come from the torch network)."""
        if self.model is None:
            raise ValueError("class activation maps need the torch network (a .pth or .weights file, not .onnx)")
        return CamDetector(self.model, self.spec, self.thresholds, self.amp)

    def cam(self, image: ImageLike, method: str = DEFAULT_METHOD, layer: str = HEAD_LAYER,
            top_k: int = DEFAULT_TOP_K) -> List[DetectionCam]:
        """The class activation map of each of the top_k best detections (0: all) of detect(image) with the torch
        backend; method gradcam, layercam or eigencam; layer 'head', a site or a module path (utils/deploy/cam.py)."""
        return detection_cams(self.cam_detector(), as_rgb_array(image), method, layer, top_k)

    def heatmap(self, image: ImageLike, alpha: float = 0.5) -> np.ndarray:
        """The image with its objectness map overlaid as a colour heatmap (HxWx3 uint8 RGB)."""
        image = as_rgb_array(image)
        return heatmap_overlay(image, self.objectness(image), alpha)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def timed_detect(self, image: np.ndarray) -> Tuple[Detections, Dict[str, float]]:
        """detect() on an RGB array, also returning seconds spent in pre, forward and post.

        On the onnx backend decoding and NMS run inside the graph and count as forward.
        """
        t0 = time.perf_counter()
        batch, lb = self.preprocess(image)
        self._sync()
        t1 = time.perf_counter()
        result = self.infer(batch)
        self._sync()
        t2 = time.perf_counter()
        det = self.finish(result, lb, image.shape[:2])
        t3 = time.perf_counter()
        return det, {"pre": t1 - t0, "forward": t2 - t1, "post": t3 - t2}

    def measure_speed(self, image: Optional[ImageLike] = None, runs: int = 50, warmup: int = 5) -> Dict[str, float]:
        """Mean milliseconds of pre, forward, post and total over `runs` after `warmup`, and FPS.

        Without an image a fixed random 640x480 one is used.
        """
        image = as_rgb_array(image) if image is not None else \
            np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        for _ in range(warmup):
            self.timed_detect(image)
        totals = {"pre": 0.0, "forward": 0.0, "post": 0.0}
        for _ in range(max(1, runs)):
            _, times = self.timed_detect(image)
            for key, value in times.items():
                totals[key] += value
        ms = {f"{key}_ms": 1000.0 * value / max(1, runs) for key, value in totals.items()}
        ms["total_ms"] = ms["pre_ms"] + ms["forward_ms"] + ms["post_ms"]
        ms["fps"] = 1000.0 / ms["total_ms"]
        return ms

    @staticmethod
    def train(data: Optional[str] = None, **settings):
        """Train as `python train.py` does with these settings (its flags by name: data, phi=2, epochs=30, seed=0,
        resume=...): the same run, the same losses for a seed. Returns utils.engine.run.TrainRun(run_dir, metrics,
        history)."""
        from utils.engine.run import train_run  # here, not above: inference does not load the training engine
        return train_run({**settings, **({"data": data} if data is not None else {})})

    def val(self, data: str = "VOCdevkit", split: Optional[str] = None, **settings) -> Dict:
        """Score these weights on a dataset split as get_map.py does, on this detector's backend (an .onnx graph
        too); returns the result get_map.py prints and saves (utils.deploy.graph_scoring.evaluate: map, map_voc,
        map_voc07, map50_95, coco, per_class, settings, left_out).

        The weights file is read again with the classes, attention, input size, anchors, scale_x_y, device, amp,
        backend, agnostic_nms and slice this detector was given; the other keywords are get_map.py's flags (conf,
        nms, iou, metric, score_thr, batch_size, workers, skip_unreadable, data_format, images, ...) with its defaults
        (conf 0.001 and NMS 0.5 for the PR curve, not this detector's conf and nms)."""
        given = {**{k: v for k, v in self._given.items() if v is not None}, **slice_settings(self.slice, self.input_hw)}
        return evaluate(weights=self._source, data=data, split=split, **{**given, **settings})

    def export_onnx(self, path, nms: bool = False, check: bool = True, calibration_images=None) -> Path:
        """Write an ONNX graph (opset 17, dynamic batch) at this input size, with this detector's settings in
        its metadata (utils/deploy/export.py): raw head outputs, or with `nms` decoding and NMS inside using this
        detector's conf, nms and max_det. With `calibration_images` (paths or RGB arrays, e.g. from
        utils.deploy.quantize.calibration_images) the raw graph is quantized to int8 (utils/deploy/quantize.py)."""
        if calibration_images is not None:
            if nms:
                raise ValueError("int8 quantizes the raw graph; decoding and NMS stay outside it (drop the NMS option)")
            return export_int8(self._cpu_model(), self.spec, path, calibration_images, letterbox=self.letterbox)
        metadata = onnx_metadata(self.spec)
        if nms:
            return export_onnx_nms(self._cpu_model(), path, self.spec, self.thresholds, metadata=metadata)
        return export_onnx(self._cpu_model(), path, self.input_hw, check=check, metadata=metadata)

    def predict(self, source, out=None, **options) -> list:
        """Detect in an image file, a folder of images, a video file or a camera index, as predict.py does;
        returns (image path or frame index, Detections) pairs in order. With `out`, writes there what predict.py
        writes; `options` are predict.py's output and map flags by name (utils.deploy.predict_outputs)."""
        out = None if out is None else Path(out)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        return predict_source(self, source, out, PredictOutputs.from_keywords(**options))

    def export(self, format: str = "onnx", path=None, export_onnx_nms: bool = False, int8: bool = False, data=None,
               split: Optional[str] = None, calib_images: int = DEFAULT_CALIB_IMAGES, data_format: Optional[str] = None,
               images=None) -> Path:
        """predict.py --export-onnx: the graph at `path` (default beside the weights: <stem>.onnx, _nms, _int8);
        int8 quantizes the raw graph on calib_images images of `split` (default: training) of `data`."""
        default = export_path(self._source, format, export_onnx_nms, int8)  # also refuses an unknown format
        return export_model(self, path or default, export_onnx_nms, int8, data, split, calib_images, data_format,
                            images)[0]
