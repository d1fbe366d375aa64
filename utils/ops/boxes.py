"""Box maths shared by training, prediction, evaluation and the exported graphs: the one place of each.

Conventions: boxes are xyxy in pixels unless a name says otherwise; sizes are (height, width).
Contents: letterbox mapping (image <-> input), box formats, decoding of head logits (pixels or grid
units), the score threshold + candidate cap + NMS (class-aware, or class-agnostic) + max detections of every
backend, and
every IoU (torch: pairwise, paired, batched, shape-only; numpy for the numpy evaluators).
"""
import math
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torchvision
from torch import Tensor

from utils.core.settings import default

MAX_NMS = 10000  # most candidates per image (best scores first) that enter NMS, in torch and ONNX alike
Array = Union[Tensor, np.ndarray]


class Letterbox(NamedTuple):
    """How an image of `image_hw` maps into a network input: input = image * scale + pad."""

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int


def letterbox_params(image_hw: Tuple[int, int], input_hw: Tuple[int, int], letterbox: bool = True) -> Letterbox:
    """Scale and padding that fit an image into the input, keeping aspect ratio when `letterbox`.

    The resized image is (round-down) nw x nh pixels centred with grey padding, as the reference does.
    """
    ih, iw = image_hw
    h, w = input_hw
    if not letterbox:
        return Letterbox(w / iw, h / ih, 0, 0)
    scale = min(w / iw, h / ih)
    nw, nh = max(1, int(iw * scale)), max(1, int(ih * scale))
    return Letterbox(nw / iw, nh / ih, (w - nw) // 2, (h - nh) // 2)


def letterbox_region(lb: Letterbox, image_hw: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """(x1, y1, x2, y2) in input pixels of the part of the input that the resized image covers."""
    nw, nh = round(image_hw[1] * lb.scale_x), round(image_hw[0] * lb.scale_y)
    return lb.pad_x, lb.pad_y, lb.pad_x + nw, lb.pad_y + nh


def letterbox_crop(input_map: np.ndarray, lb: Letterbox, image_hw: Tuple[int, int]) -> np.ndarray:
    """The part of an input-sized [..., h, w] array that the resized image covers (letterbox_region)."""
    x1, y1, x2, y2 = letterbox_region(lb, image_hw)
    return input_map[..., y1:y2, x1:x2]


def _scale_pad(boxes: Array, lb: Letterbox) -> Tuple[Array, Array]:
    """The [4] scale and pad of `lb` for xyxy boxes: in the boxes' dtype for a Tensor, float32 for numpy."""
    terms = ([lb.scale_x, lb.scale_y] * 2, [lb.pad_x, lb.pad_y] * 2)
    if isinstance(boxes, Tensor):
        return boxes.new_tensor(terms[0]), boxes.new_tensor(terms[1])
    return np.array(terms[0], dtype=np.float32), np.array(terms[1], dtype=np.float32)


def image_to_input_boxes(boxes: Array, lb: Letterbox) -> Array:
    """[N, 4] xyxy in image pixels -> input pixels (Tensor or numpy array, as given)."""
    scale, pad = _scale_pad(boxes, lb)
    return boxes * scale + pad


def input_to_image_boxes(boxes: Tensor, lb: Letterbox, image_hw: Tuple[int, int]) -> Tensor:
    """Tensor[N, 4] xyxy in input pixels -> image pixels, clipped to the image."""
    scale, pad = _scale_pad(boxes, lb)
    out = (boxes - pad) / scale
    out[:, 0::2] = out[:, 0::2].clamp(0, image_hw[1])
    out[:, 1::2] = out[:, 1::2].clamp(0, image_hw[0])
    return out


def nonempty_boxes(boxes: Tensor) -> Tensor:
    """Tensor[N, 4] xyxy -> Tensor[N] bool: True where the box has positive width and height."""
    return (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def detections_to_image(det: Tensor, lb: Letterbox, image_hw: Tuple[int, int]) -> Tensor:
    """Tensor[K, 6] (x1, y1, x2, y2 input pixels, score, class) -> Tensor[K', 6] in image pixels.

    Boxes are clipped to the image; those left without area (wholly in the padding, or on an image
    thinner than a pixel of the input) are dropped, so every row is a box that can be drawn and scored.
    """
    det = det.float().clone()
    det[:, :4] = input_to_image_boxes(det[:, :4], lb, image_hw)
    return det[nonempty_boxes(det[:, :4])]


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    return torchvision.ops.box_convert(boxes, "cxcywh", "xyxy")


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    return torchvision.ops.box_convert(boxes, "xyxy", "cxcywh")


def head_grid(out: Tensor, num_anchors: int) -> Tensor:
    """Tensor[B, A*(5+C), H, W] raw head output -> Tensor[B, A, H, W, 5+C]."""
    b, _, h, w = out.shape
    return out.view(b, num_anchors, -1, h, w).permute(0, 1, 3, 4, 2)


def grid_cells(h: int, w: int, device=None) -> Tensor:
    """Tensor[H, W, 2] float: the (x, y) index of every cell of an H x W grid."""
    gy, gx = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([gx, gy], dim=-1).float()


def decode_boxes(p: Tensor, cell_xy: Tensor, anchor_wh: Tensor, stride: Union[float, Tensor] = 1,
                 scale_x_y: float = 1.0, max_wh_logit: Optional[float] = None) -> Tensor:
    """Box logits -> Tensor[..., 4] cx, cy, w, h: the one YOLO decoding, in pixels or in grid units.

    Args:
        p: Tensor[..., 4+] logits tx, ty, tw, th first.
        cell_xy: Tensor[..., 2] the grid cell (x, y) of each prediction (broadcast against p).
        anchor_wh: Tensor[..., 2] anchor (w, h), in the unit of the result (pixels, or cells for stride 1).
        stride: input pixels per cell (an int, or Tensor[..., 1]); 1 gives grid units, as the loss uses.
        scale_x_y: darknet's grid sensitivity; centre = (sigmoid(t) * s - (s - 1) / 2 + cell) * stride.
        max_wh_logit: clamp tw, th from above before exp() (the loss: no overflow on wild logits).
    """
    xy = (p[..., :2].sigmoid() * scale_x_y - (scale_x_y - 1) / 2 + cell_xy) * stride
    t_wh = p[..., 2:4] if max_wh_logit is None else p[..., 2:4].clamp(max=max_wh_logit)
    return torch.cat([xy, t_wh.exp() * anchor_wh], dim=-1)


def decode_grid(p: Tensor, anchor_wh: Tensor, stride: float = 1, scale_x_y: float = 1.0,
                max_wh_logit: Optional[float] = None) -> Tensor:
    """decode_boxes at every cell of one head: Tensor[B, A, H, W, 5+C] logits (head_grid) and anchors
    Tensor[A, 2] -> Tensor[B, A, H, W, 4] cx, cy, w, h (grid units with stride 1)."""
    cells = grid_cells(p.shape[2], p.shape[3], p.device)
    return decode_boxes(p, cells, anchor_wh.view(1, -1, 1, 1, 2), stride, scale_x_y, max_wh_logit)


def _objectness_logit(conf_thres: float) -> float:
    """The objectness logit at conf_thres, a hair low: the sigmoid after it may round the other way."""
    if conf_thres <= 0:
        return -math.inf
    return math.log(conf_thres / (1 - conf_thres)) - 1e-4 if conf_thres < 1 else math.inf


def decode_candidates(outputs: Sequence[Tensor], anchors: Tensor, anchors_mask: Sequence[Sequence[int]],
                      input_hw: Tuple[int, int], scale_x_y: float = 1.0,
                      conf_thres: float = default("conf")) -> Tuple[Tensor, Tensor]:
    """Decode the boxes of every image whose objectness reaches conf_thres (all of them at conf_thres 0).

    Args:
        outputs: raw head logits Tensor[B, A*(5+C), H, W] per head, P5 first; stride = input h / H.
        anchors: Tensor[A_all, 2] anchor (w, h) in input pixels; anchors_mask: the indices per head.

    Returns:
        (Tensor[K, 5+C]: x1, y1, x2, y2 input pixels, objectness, class probabilities; Tensor[K] image index).

    A score (objectness x class probability) never exceeds the objectness, so select_detections at
    conf_thres keeps exactly what it keeps from all boxes. Decoding only these makes post-processing
    several times cheaper (in torch and inside ONNX graphs: it is traceable).
    """
    min_logit = _objectness_logit(conf_thres)
    anchors = anchors.to(outputs[0].device).float()
    rows, cells, anchor_wh, strides, images = [], [], [], [], []
    for out, mask in zip(outputs, anchors_mask):
        p = head_grid(out, len(mask))  # B, A, H, W, 5+C
        b, a, y, x = _candidate_places(p, min_logit)
        rows.append(p[b, a, y, x])
        cells.append(torch.stack([x, y], dim=1))
        anchor_wh.append(anchors[list(mask)][a])
        strides.append(torch.full_like(b, input_hw[0] // out.shape[2]))
        images.append(b)
    p, stride = torch.cat(rows).float(), torch.cat(strides).float()[:, None]
    boxes = decode_boxes(p, torch.cat(cells).float(), torch.cat(anchor_wh), stride, scale_x_y)
    return torch.cat([cxcywh_to_xyxy(boxes), p[:, 4:].sigmoid()], dim=1), torch.cat(images)


def _candidate_places(p: Tensor, min_logit: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(image, anchor, cell y, cell x) of the predictions of one head_grid whose objectness logit reaches min_logit."""
    return torch.nonzero(p[..., 4] >= min_logit, as_tuple=True)


def candidate_sources(outputs: Sequence[Tensor], anchors_mask: Sequence[Sequence[int]],
                      conf_thres: float = default("conf")) -> Tensor:
    """Where each row of decode_candidates (same outputs, mask and conf_thres) comes from: Tensor[K, 5]
    int64 (image, head, anchor slot within the head, cell y, cell x), in the same row order."""
    min_logit = _objectness_logit(conf_thres)
    places = []
    for head, (out, mask) in enumerate(zip(outputs, anchors_mask)):
        b, a, y, x = _candidate_places(head_grid(out, len(mask)), min_logit)
        places.append(torch.stack([b, torch.full_like(b, head), a, y, x], dim=1))
    return torch.cat(places)


def select_detections(pred: Tensor, image: Tensor, num_images: int, conf_thres: float = default("conf"),
                      nms_thres: float = default("nms"), max_det: int = default("max_det"),
                      max_nms: int = MAX_NMS, agnostic: bool = default("agnostic_nms")) -> Tensor:
    """Score threshold, candidate cap, NMS and max detections: the one definition, run by the torch backends
    and traced into the ONNX graphs (utils.deploy.export).

    Args:
        pred: Tensor[N, 5+C] x1, y1, x2, y2 (input pixels), objectness, class probabilities (decode_candidates).
        image: Tensor[N] int64 image index of each row, in [0, num_images).
        conf_thres: keep boxes whose score = objectness * best class probability reaches this.
        nms_thres: IoU above which a lower-scoring box of the same image and class is suppressed.
        max_det: most detections kept per image.
        max_nms: most candidates per image (by score) that enter NMS.
        agnostic: class-agnostic NMS: a box suppresses the lower-scoring boxes of every class (each keeps its
            own class id), not only of its own.

    Returns:
        Tensor[K, 7]: image index, x1, y1, x2, y2 (input pixels), score, class id; each image's rows by
        descending score. Eager code runs torchvision's batched_nms image by image; while tracing, one
        NMS over all images runs instead (export-friendly: no loop over a dynamic batch), with the same result.
    """
    return rows_to_detections(pred, image, detection_rows(pred, image, num_images, conf_thres, nms_thres, max_det,
                                                          max_nms, agnostic))


def detection_rows(pred: Tensor, image: Tensor, num_images: int, conf_thres: float = default("conf"),
                   nms_thres: float = default("nms"), max_det: int = default("max_det"),
                   max_nms: int = MAX_NMS, agnostic: bool = default("agnostic_nms")) -> Tensor:
    """Tensor[K] int64: the rows of `pred` that select_detections keeps (same arguments), in its order."""
    pred = pred.float()
    cls_prob, cls_id = pred[:, 5:].max(dim=1)
    score = pred[:, 4] * cls_prob
    keep = torch.nonzero(score >= conf_thres).view(-1)
    boxes, score, cls_id, image = pred[keep, :4], score[keep], cls_id[keep], image[keep]
    group = torch.zeros_like(cls_id) if agnostic else cls_id  # the NMS groups within an image
    if torch.jit.is_tracing():  # NMS within each (image, group) pair, all at once
        kept = _nms_traceable(boxes, score, image * (pred.shape[1] - 5) + group, image, num_images, nms_thres,
                              max_det, max_nms)
    else:  # image by image, NMS within each group
        kept = _nms_per_image(boxes, score, group, image, num_images, nms_thres, max_det, max_nms)
    return keep[kept]


def rows_to_detections(pred: Tensor, image: Tensor, rows: Tensor) -> Tensor:
    """select_detections' Tensor[K, 7] (image index, x1, y1, x2, y2, score, class id) for the given rows of pred."""
    pred = pred[rows].float()
    cls_prob, cls_id = pred[:, 5:].max(dim=1)
    return torch.cat([image[rows, None].float(), pred[:, :4], (pred[:, 4] * cls_prob)[:, None],
                      cls_id[:, None].float()], dim=1)


def split_by_image(det: Tensor, num_images: int) -> List[Tensor]:
    """select_detections' Tensor[K, 7] -> one Tensor[K_i, 6] per image (x1, y1, x2, y2, score, class)."""
    if num_images == 1:
        return [det[:, 1:]]
    return [det[det[:, 0] == i, 1:] for i in range(num_images)]


def _nms_per_image(boxes: Tensor, score: Tensor, group: Tensor, image: Tensor, num_images: int,
                   nms_thres: float, max_det: int, max_nms: int) -> Tensor:
    """select_detections' eager NMS: indices of the kept rows, image by image, each by descending score;
    group: Tensor[N] the NMS group of each row (its class, or 0 for all with class-agnostic NMS)."""
    kept = []
    for i in range(num_images):
        idx = torch.nonzero(image == i).view(-1) if num_images > 1 else torch.arange(len(image), device=image.device)
        if idx.numel() > max_nms:
            idx = idx[score[idx].topk(max_nms).indices]
        kept.append(idx[torchvision.ops.batched_nms(boxes[idx], score[idx], group[idx], nms_thres)[:max_det]])
    return torch.cat(kept) if kept else image.new_zeros(0)


def _first_per_image(image: Tensor, num_images: int, k: int) -> Tensor:
    """Tensor[N] bool: rows among the first k of their image (rows in rank order)."""
    onehot = (image.view(-1, 1) == torch.arange(num_images, device=image.device).view(1, -1)).long()
    rank = (onehot.cumsum(dim=0) * onehot).sum(dim=1)  # 1 for the first row of an image, 2 for the next...
    return rank <= k


def _nms_traceable(boxes: Tensor, score: Tensor, group: Tensor, image: Tensor, num_images, nms_thres: float,
                   max_det: int, max_nms: int) -> Tensor:
    """select_detections' NMS for tracing: indices of the kept rows, by descending score over all images.
    group: Tensor[N] the (image, NMS group) pair of each row as one integer."""
    order = score.argsort(descending=True)
    order = order[_first_per_image(image[order], num_images, max_nms)]  # the candidate cap
    boxes = boxes[order]
    # one NMS over all groups: shift every group to its own region, further apart than any box spans
    span = torch.cat([boxes.abs().reshape(-1), boxes.new_zeros(1)]).max() * 2 + 1  # works when empty
    kept = order[torchvision.ops.nms(boxes + group[order].float().view(-1, 1) * span, score[order], nms_thres)]
    return kept[_first_per_image(image[kept], num_images, max_det)]


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of every box in a with every box in b: Tensor[N, 4], Tensor[M, 4] xyxy -> Tensor[N, M]."""
    return torchvision.ops.box_iou(a, b)


def paired_box_iou(a: Tensor, b: Tensor, eps: float = 1e-9) -> Tensor:
    """IoU of a[i] with b[i] for Tensor[N, 4] xyxy boxes -> Tensor[N]."""
    lt = torch.max(a[:, :2], b[:, :2])
    rb = torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    return inter / (area_a + area_b - inter + eps)


def batched_box_iou(a: Tensor, b: Tensor, eps: float = 1e-9) -> Tensor:
    """IoU of every box in a[k] with every box in b[k]: Tensor[B, N, 4], Tensor[B, M, 4] -> Tensor[B, N, M]."""
    lt = torch.max(a[:, :, None, :2], b[:, None, :, :2])
    rb = torch.min(a[:, :, None, 2:], b[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=3)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(dim=2)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(dim=2)
    return inter / (area_a[:, :, None] + area_b[:, None, :] - inter + eps)


def wh_iou(wh1: Array, wh2: Array) -> Array:
    """IoU of boxes sharing a centre (or a corner), from widths and heights: [N, 2], [M, 2] -> [N, M]
    (Tensor or numpy array, as given)."""
    minimum = torch.minimum if isinstance(wh1, Tensor) else np.minimum
    inter = minimum(wh1[:, None], wh2[None]).prod(2)
    return inter / (wh1.prod(1)[:, None] + wh2.prod(1)[None] - inter)


def box_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """numpy IoU of broadcastable xyxy boxes [..., 4] and [..., 4] -> [...] (float64 in, float64 out), for
    the numpy evaluators and the demo dataset."""
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, np.finfo(np.float64).eps)


def crowd_iou_xywh_np(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """numpy IoU of row-aligned xywh boxes [N, 4] -> [N], computed as pycocotools' C code does: over the
    detection's area where the ground truth is a crowd, 0 without overlap."""
    w = np.minimum(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.maximum(d[:, 0], g[:, 0])
    h = np.minimum(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.maximum(d[:, 1], g[:, 1])
    inter = w * h
    da, ga = d[:, 2] * d[:, 3], g[:, 2] * g[:, 3]
    union = np.where(crowd, da, da + ga - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((w > 0) & (h > 0), inter / union, 0.0)
