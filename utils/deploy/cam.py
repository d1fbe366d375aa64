"""Class activation maps (CAMs) of detections: where in the image the evidence for one detection lies.

The target of a detection is its score S = sigmoid(objectness logit) * sigmoid(class logit) at its own
(head, anchor, cell), before NMS: the number YOLO.detect keeps and ranks it by. log S gives the same
maps (its gradient is dS/dA divided by S > 0, a factor the normalisation removes); the sum of the two
logits would not, as it weighs objectness and class alike however sure the model already is of either.

At a layer whose activation for the image is A [C, h, w]:
    gradcam   ReLU(sum_c mean_hw(dS/dA_c) * A_c)
              Grad-CAM (Selvaraju et al., ICCV 2017), https://arxiv.org/abs/1610.02391
    layercam  ReLU(sum_c ReLU(dS/dA_c) * A_c)
              LayerCAM (Jiang et al., IEEE TIP 2021), https://mmcheng.net/layercam/
    eigencam  ReLU of A projected on its first principal component (positions as samples, channels as
              features), the component's sign chosen so that the projection correlates positively with
              the channel mean of A. Eigen-CAM (Muhammad and Yeasin, IJCNN 2020), https://arxiv.org/abs/2008.00299
              It uses no gradient: at one layer every detection gets the same map.
Each map is upsampled (bilinear) to the network input, cropped to the part the letterboxed image covers
(the image at the input's resolution, as YOLO.objectness; heatmap_overlay resizes it to the image) and
divided by its maximum: float32 in [0, 1], all 0 where the map is 0 everywhere (e.g. a layer the
detection's head does not use).

Layers: 'head' (default) is the input of each detection's own head (P5: conv_for_P5's output; P4: the
FPN merge of the upsampled P5 branch with feat1). A site name (feat1, feat2, upsample, csp1..csp3) is the
output of the module there (YoloBody.attention_sites(), nn.Identity without a block); any other name is
a module path of model.named_modules(), whose output must be a [1, C, h, w] tensor.

Why not the grad-cam package (pytorch_grad_cam 1.5.x): its BaseCAM backpropagates
sum(target(output) for target, output in zip(targets, outputs)), one target per image, so our tuple of
two head maps needs a wrapper model and K detections of one image need K forward passes (here one pass
serves them all); each detection would still need mapping to its own head's layer and cell, which is
most of this module; its EigenCAM keeps the SVD's arbitrary sign; and it adds scikit-learn, scipy,
ttach and tqdm to the install for about forty lines of maths.
"""
from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.core.settings import default
from utils.deploy.attention_maps import FeatureLayer, FeatureRecorder
from utils.deploy.drawing import heat_panel, save_image, tile
from utils.core.detector_spec import DetectorSpec
from utils.ops.boxes import (Letterbox, box_iou, candidate_sources, cxcywh_to_xyxy, decode_boxes, detections_to_image,
                             head_grid, image_to_input_boxes, input_to_image_boxes, letterbox_crop, rows_to_detections)
from utils.ops.image import read_image
from utils.ops.pipeline import Thresholds, decode_select_rows, forward_fp32, input_batch, letterbox_input

HEAD_LAYER = default("cam_layer")  # the schema's (utils/core/schema_tools.py)
DEFAULT_TOP_K = default("cam_top")  # detections with a CAM per image, best first
# Grad-CAM's channel weights are averaged over the whole map, so every place with features like the
# detection's lights up (in the README's demo picture: the other object); LayerCAM keeps the gradient's position.
DEFAULT_METHOD = default("cam_method")


class CamTarget(NamedTuple):
    """The score to explain: objectness * probability of class_id at (head, anchor slot, cell y, cell x)."""

    head: int
    anchor: int
    y: int
    x: int
    class_id: int


@dataclass(frozen=True, eq=False)
class CamDetector:
    """What a CAM needs of a detector: the torch network (eval mode), its DetectorSpec and the thresholds with
    which its outputs become detections, as in YOLO.detect (YOLO.cam_detector() gives this for a YOLO);
    amp: autocast dtype or None (fp32). as_detector makes one for a bare model."""

    model: nn.Module
    spec: DetectorSpec
    thresholds: Thresholds = Thresholds()
    amp: Optional[torch.dtype] = None

    @property
    def anchors(self) -> torch.Tensor:
        return self.spec.anchor_tensor()

    @property
    def anchors_mask(self):
        return self.spec.anchors_mask

    @property
    def input_hw(self) -> Tuple[int, int]:
        return self.spec.input_size

    @property
    def class_names(self) -> Sequence[str]:
        return self.spec.class_names

    def preprocess(self, image: np.ndarray) -> Tuple[torch.Tensor, Letterbox]:
        """HxWx3 uint8 RGB -> (Tensor[1, 3, h, w] in [0, 1] on the model's device, Letterbox), as YOLO.preprocess."""
        item = letterbox_input(image, self.spec)
        return input_batch([item.input], next(self.model.parameters()).device, float_on_device=False), item.lb


@dataclass(frozen=True, eq=False)
class DetectionCam:
    """The CAM of one detection. box: float32 [4] xyxy image pixels; heat: float32 [h, w] in [0, 1] over the
    image at the input's resolution (map_to_image); target: the score explained; method, layer: what made it."""

    box: np.ndarray
    score: float
    class_id: int
    target: CamTarget
    heat: np.ndarray
    method: str
    layer: str


def as_detector(variant, **facts) -> CamDetector:
    """A CamDetector from a CamDetector, anything with a cam_detector() method (a YOLO), or a YoloBody
    (put in eval mode) completed by `facts`: anchors, input_hw, class_names (strides: the model's; anchors_mask:
    the model's), and optionally scale_x_y, letterbox, conf, nms, max_det and amp."""
    if isinstance(variant, CamDetector):
        return variant
    if hasattr(variant, "cam_detector"):
        return variant.cam_detector()
    if isinstance(variant, nn.Module):
        facts.setdefault("anchors_mask", getattr(variant, "anchors_mask", None))
        facts.setdefault("strides", getattr(variant, "strides", None))
        missing = [k for k in ("anchors", "input_hw", "class_names", "anchors_mask", "strides") if facts.get(k) is None]
        if missing:
            raise ValueError(f"a bare model needs {', '.join(missing)} to turn its outputs into detections")
        thresholds = Thresholds(**{k: facts.pop(k) for k in Thresholds._fields if k in facts})
        amp = facts.pop("amp", None)
        facts["input_size"] = facts.pop("input_hw")
        return CamDetector(variant.eval(), DetectorSpec(**facts), thresholds, amp)
    raise TypeError(f"expected a YOLO, a YoloBody or a CamDetector, found {type(variant).__name__}")


def cam_layers(model: nn.Module, layer: str = HEAD_LAYER) -> List[FeatureLayer]:
    """The layer of each head for `layer` (see the module docstring): one per head for 'head', else one for all."""
    if layer == HEAD_LAYER:
        return [FeatureLayer("P5 head input", model.yolo_headP5, True),
                FeatureLayer("P4 head input", model.yolo_headP4, True)]
    sites = model.attention_sites()
    if layer in sites:
        return [FeatureLayer(layer, sites[layer], False)]
    modules = dict(model.named_modules())
    if layer and layer in modules:
        return [FeatureLayer(layer, modules[layer], False)]
    raise ValueError(f"unknown CAM layer {layer!r}; valid: {HEAD_LAYER} (the input of each detection's head), "
                     f"an attention site ({', '.join(sites)}) or a module path of model.named_modules(), "
                     "e.g. backbone.resblock_body3.conv3")


def check_method(method: str) -> str:
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; valid: {', '.join(CAM_METHODS)}")
    return method


class _Pass(NamedTuple):
    """One forward pass over an image: outputs, activations per layer, and its detections with their targets."""

    outputs: List[torch.Tensor]
    activations: List[torch.Tensor]
    layers: List[FeatureLayer]
    lb: Letterbox
    detections: torch.Tensor  # [K, 6] x1, y1, x2, y2 image pixels, score, class id; best first
    targets: List[CamTarget]


def _forward(detector: CamDetector, image: np.ndarray, layer: str) -> _Pass:
    """The network on one image with the graph kept for gradients, under the detector's autocast."""
    layers = cam_layers(detector.model, layer)
    batch, lb = detector.preprocess(image)
    batch.requires_grad_(True)  # a graph to the layers even when the weights need no gradient
    with torch.enable_grad(), FeatureRecorder(layers) as recorder:
        outputs = forward_fp32(detector.model, batch, detector.amp)
    missing = [layer.name for i, layer in enumerate(layers) if i not in recorder.seen]
    if missing:
        raise ValueError(f"CAM layer {', '.join(missing)} does not run in the forward pass; choose another layer")
    detections, targets = _detections(detector, outputs, lb, image.shape[:2])
    return _Pass(outputs, [recorder.seen[i] for i in range(len(layers))], layers, lb, detections, targets)


@torch.no_grad()
def _detections(detector: CamDetector, outputs, lb: Letterbox, image_hw) -> Tuple[torch.Tensor, List[CamTarget]]:
    """YOLO.postprocess's detections (same decoding, thresholds and NMS) and the (head, anchor, cell) of each."""
    outputs, spec = [o.detach() for o in outputs], detector.spec
    pred, image, rows = decode_select_rows(outputs, spec.anchor_tensor(), spec.anchors_mask, spec.input_size,
                                           spec.scale_x_y, detector.thresholds, 1)
    sources = candidate_sources(outputs, spec.anchors_mask, detector.thresholds.conf)
    det = rows_to_detections(pred, image, rows)[:, 1:]
    # the sources ride along as extra columns, so they stay with the boxes detections_to_image keeps
    det = detections_to_image(torch.cat([det, sources[rows, 1:].float()], dim=1).cpu(), lb, image_hw)
    targets = [CamTarget(*(int(v) for v in row[6:10]), int(row[5])) for row in det]
    return det[:, :6], targets


def target_score(outputs: Sequence[torch.Tensor], anchors_mask, target: CamTarget) -> torch.Tensor:
    """The scalar S = sigmoid(objectness) * sigmoid(class logit) at the target's place in the raw outputs."""
    p = head_grid(outputs[target.head], len(anchors_mask[target.head]))[0, target.anchor, target.y, target.x]
    return p[4].sigmoid() * p[5 + target.class_id].sigmoid()


def grad_cam(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """[C, h, w] activation and dS/dA -> [h, w] ReLU(sum_c mean_hw(dS/dA_c) * A_c)."""
    return F.relu((gradient.mean(dim=(1, 2), keepdim=True) * activation).sum(dim=0))


def layer_cam(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """[C, h, w] activation and dS/dA -> [h, w] ReLU(sum_c ReLU(dS/dA_c) * A_c)."""
    return F.relu((F.relu(gradient) * activation).sum(dim=0))


def eigen_cam(activation: torch.Tensor, gradient: Optional[torch.Tensor] = None) -> torch.Tensor:
    """[C, h, w] activation -> [h, w] ReLU of its projection on the first principal component (gradient unused)."""
    c, h, w = activation.shape
    positions = activation.reshape(c, h * w).T.double()
    centred = positions - positions.mean(dim=0)
    if h * w < 2:
        return activation.new_zeros(h, w)
    projection = centred @ torch.linalg.svd(centred, full_matrices=False).Vh[0]
    channel_mean = positions.mean(dim=1)
    if torch.dot(projection, channel_mean - channel_mean.mean()) < 0:  # SVD's sign is arbitrary
        projection = -projection
    return F.relu(projection).reshape(h, w).to(activation.dtype)


CAM_METHODS = {"gradcam": grad_cam, "layercam": layer_cam, "eigencam": eigen_cam}


def _grid_map(run: _Pass, target: CamTarget, method: str, anchors_mask) -> Tuple[torch.Tensor, str]:
    """(the [h, w] map on the layer's grid, the layer's name) of one target."""
    index = target.head if len(run.layers) > 1 else 0
    activation = run.activations[index]
    gradient = None
    if method != "eigencam":
        score = target_score(run.outputs, anchors_mask, target)
        gradient, = torch.autograd.grad(score, activation, retain_graph=True, allow_unused=True)
        gradient = torch.zeros_like(activation) if gradient is None else gradient  # the head does not use it
        gradient = gradient[0].detach().float()
    return CAM_METHODS[method](activation[0].detach().float(), gradient), run.layers[index].name


def normalised(heat: np.ndarray) -> np.ndarray:
    """A map divided by its maximum (negatives clipped): float32 in [0, 1], zeros where the maximum is 0."""
    heat = np.maximum(heat, 0).astype(np.float32)
    top = float(heat.max()) if heat.size else 0.0
    return heat / top if top > 0 else np.zeros_like(heat)


def map_to_image(grid_map: torch.Tensor, input_hw, lb: Letterbox, image_hw) -> np.ndarray:
    """[h, w] map on a layer's grid -> float32 in [0, 1] over the image: bilinear to the input, cropped to the
    letterboxed image's part (letterbox_crop: the image at the input's resolution), normalised."""
    up = F.interpolate(grid_map[None, None].float().cpu(), size=tuple(input_hw), mode="bilinear", align_corners=False)
    return normalised(letterbox_crop(up[0, 0].numpy(), lb, image_hw))


def _cam(detector: CamDetector, run: _Pass, target: CamTarget, box, score: float, method: str,
         image_hw) -> DetectionCam:
    grid, layer_name = _grid_map(run, target, method, detector.anchors_mask)
    heat = map_to_image(grid, detector.input_hw, run.lb, image_hw)
    return DetectionCam(np.asarray(box, np.float32), float(score), target.class_id, target, heat, method, layer_name)


def detection_cams(detector: CamDetector, image: np.ndarray, method: str = DEFAULT_METHOD, layer: str = HEAD_LAYER,
                   top_k: int = DEFAULT_TOP_K) -> List[DetectionCam]:
    """The CAM of each of the top_k best detections (0: all) in an HxWx3 uint8 RGB image, best first; the
    detections are those of YOLO.detect with the detector's settings."""
    check_method(method)
    run = _forward(detector, image, layer)
    count = len(run.targets) if top_k <= 0 else min(top_k, len(run.targets))
    return [_cam(detector, run, target, row[:4].numpy(), float(row[4]), method, image.shape[:2])
            for row, target in zip(run.detections[:count], run.targets[:count])]


def target_cams(detector: CamDetector, image: np.ndarray, targets: Sequence[CamTarget], method: str = DEFAULT_METHOD,
                layer: str = HEAD_LAYER) -> List[DetectionCam]:
    """The CAM of chosen targets (any head, anchor slot, cell and class, kept by NMS or not), from one forward
    pass; each with the box that place predicts (image pixels) and its score."""
    check_method(method)
    run = _forward(detector, image, layer)
    return [_cam(detector, run, t, _predicted_box(detector, run, t, image.shape[:2]),
                 float(target_score(run.outputs, detector.anchors_mask, t).detach()), method, image.shape[:2])
            for t in targets]


@torch.no_grad()
def _predicted_box(detector: CamDetector, run: _Pass, target: CamTarget, image_hw) -> np.ndarray:
    """[4] xyxy image pixels: the box decoded at the target's place, as decode_candidates decodes it."""
    out = run.outputs[target.head].detach()
    p = head_grid(out, len(detector.anchors_mask[target.head]))[0, target.anchor, target.y, target.x]
    anchor_wh = detector.anchors[detector.anchors_mask[target.head][target.anchor]].to(p.device).float()
    stride = detector.input_hw[0] // out.shape[2]
    box = decode_boxes(p, p.new_tensor([target.x, target.y]), anchor_wh, stride, detector.spec.scale_x_y)
    return input_to_image_boxes(cxcywh_to_xyxy(box[None]).cpu(), run.lb, image_hw)[0].numpy()


def cam_caption(cam: DetectionCam, class_names: Sequence[str], title: str = "") -> List[str]:
    """The caption lines of a CAM panel: [title,] class and score, method and layer."""
    lines = [title] if title else []
    return lines + [f"{class_names[cam.class_id]} {cam.score:.2f}", f"{cam.method} @ {cam.layer}"]


def cam_panel(image: np.ndarray, cam: DetectionCam, class_names: Sequence[str], title: str = "") -> np.ndarray:
    """The image with the CAM overlaid and the box drawn, under its caption (drawing.heat_panel)."""
    lines = cam_caption(cam, class_names, title)
    return heat_panel(image, cam.heat, cam.box, cam.score, cam.class_id, class_names, lines)


def cam_grid(image: np.ndarray, cams: Sequence[DetectionCam], class_names: Sequence[str],
             columns: int = 4) -> np.ndarray:
    """One panel per CAM, `columns` to a row (predict.py --cam's <name>_cam.jpg)."""
    return tile([cam_panel(image, cam, class_names) for cam in cams], columns)


def _reference(detector: CamDetector, image: np.ndarray, method: str, layer: str) -> DetectionCam:
    """The first variant's best detection; its best box at any score when nothing reaches its threshold."""
    found = detection_cams(detector, image, method, layer, top_k=1)
    if found:
        return found[0]
    return detection_cams(replace(detector, thresholds=detector.thresholds._replace(conf=0.0)), image, method, layer,
                          top_k=1)[0]


def _cell_target(detector: CamDetector, run: _Pass, reference: DetectionCam) -> CamTarget:
    """The reference's class, head and anchor slot at the cell holding the reference box's centre in this input."""
    head = min(reference.target.head, len(run.outputs) - 1)
    anchor = min(reference.target.anchor, len(detector.anchors_mask[head]) - 1)
    grid_h, grid_w = run.outputs[head].shape[2:]
    x1, y1, x2, y2 = image_to_input_boxes(reference.box[None].astype(np.float32), run.lb)[0]
    x = int((x1 + x2) / 2 * grid_w / detector.input_hw[1])
    y = int((y1 + y2) / 2 * grid_h / detector.input_hw[0])
    return CamTarget(head, anchor, min(max(y, 0), grid_h - 1), min(max(x, 0), grid_w - 1), reference.class_id)


def _best_overlap(run: _Pass, reference: DetectionCam) -> Optional[int]:
    """The index of this pass's detection of the reference's class that overlaps its box most; None if none does."""
    if not len(run.detections):
        return None
    iou = box_iou(run.detections[:, :4], torch.from_numpy(reference.box[None]).float())[:, 0]
    iou[run.detections[:, 5].long() != reference.class_id] = 0
    return int(iou.argmax()) if float(iou.max()) > 0 else None


def variant_cam(detector: CamDetector, image: np.ndarray, reference: DetectionCam, method: str = DEFAULT_METHOD,
                layer: str = HEAD_LAYER) -> Tuple[DetectionCam, bool]:
    """(the CAM of the variant's detection that best overlaps the reference, True), or (the CAM of its score
    at the reference's cell, see _cell_target, False) when none of its detections of that class overlaps."""
    check_method(method)
    run = _forward(detector, image, layer)
    best = _best_overlap(run, reference)
    if best is None:
        target = _cell_target(detector, run, reference)
        score = float(target_score(run.outputs, detector.anchors_mask, target).detach())
        return _cam(detector, run, target, reference.box, score, method, image.shape[:2]), False
    row = run.detections[best]
    return _cam(detector, run, run.targets[best], row[:4].numpy(), float(row[4]), method, image.shape[:2]), True


def compare_variants(image, variants: Sequence[Tuple[str, object]], method: str = DEFAULT_METHOD,
                     layer: str = HEAD_LAYER, **facts) -> np.ndarray:
    """One row of panels, one per variant, left to right: the same image and detection target, each
    variant's map, named. The target is the first variant's best detection (its best box at any score
    when none reaches its threshold); see variant_cam for the others.

    image: a path or HxWx3 uint8 RGB; variants: [(label, YOLO | CamDetector | YoloBody)], a YoloBody
    completed by `facts` (as_detector). The variants must share their class names.
    """
    image = read_image(image) if isinstance(image, (str, Path)) else np.asarray(image)
    detectors = [(label, as_detector(variant, **facts)) for label, variant in variants]
    if not detectors:
        raise ValueError("no variants to compare")
    names = list(detectors[0][1].class_names)
    differ = [label for label, d in detectors if list(d.class_names) != names]
    if differ:
        raise ValueError(f"variants {', '.join(differ)} name other classes than {detectors[0][0]}; compare "
                         "variants trained on the same classes")
    reference = _reference(detectors[0][1], image, check_method(method), layer)
    panels = []
    for label, detector in detectors:
        cam, matched = variant_cam(detector, image, reference, method, layer)
        panels.append(cam_panel(image, cam, names, title=label if matched else f"{label} (score at the box's cell)"))
    return tile(panels, columns=len(panels))


def write_variant_cams(path, image, variants: Sequence[Tuple[str, object]], method: str = DEFAULT_METHOD,
                       layer: str = HEAD_LAYER, **facts) -> Path:
    """Write compare_variants' panel row to `path` (atomically; JPEG unless the suffix says otherwise)."""
    save_image(path, compare_variants(image, variants, method, layer, **facts))
    return Path(path)
