"""Box maths shared by training, prediction and evaluation.

Conventions: boxes are xyxy in pixels unless a name says otherwise; sizes are (height, width).
"""
import math
from typing import List, NamedTuple, Sequence, Tuple

import torch
import torchvision
from torch import Tensor


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


def image_to_input_boxes(boxes: Tensor, lb: Letterbox) -> Tensor:
    """Tensor[N, 4] xyxy in image pixels -> input pixels."""
    scale = boxes.new_tensor([lb.scale_x, lb.scale_y, lb.scale_x, lb.scale_y])
    pad = boxes.new_tensor([lb.pad_x, lb.pad_y, lb.pad_x, lb.pad_y])
    return boxes * scale + pad


def input_to_image_boxes(boxes: Tensor, lb: Letterbox, image_hw: Tuple[int, int]) -> Tensor:
    """Tensor[N, 4] xyxy in input pixels -> image pixels, clipped to the image."""
    scale = boxes.new_tensor([lb.scale_x, lb.scale_y, lb.scale_x, lb.scale_y])
    pad = boxes.new_tensor([lb.pad_x, lb.pad_y, lb.pad_x, lb.pad_y])
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


def _decode(p: Tensor, cell_xy: Tensor, anchor_wh: Tensor, stride, scale_x_y: float) -> Tensor:
    """Logits [..., 5+C] at grid cells cell_xy [..., 2] with anchors anchor_wh [..., 2] and stride (an int,
    or a Tensor [..., 1]) -> [..., 5+C]: cx, cy, w, h in input pixels, sigmoid objectness and class probabilities."""
    xy = (p[..., :2].sigmoid() * scale_x_y - (scale_x_y - 1) / 2 + cell_xy) * stride
    wh = p[..., 2:4].exp() * anchor_wh
    return torch.cat([xy, wh, p[..., 4:].sigmoid()], dim=-1)


def decode_head(out: Tensor, anchors: Tensor, stride: int, scale_x_y: float = 1.0) -> Tensor:
    """Decode one head.

    Args:
        out: Tensor[B, A*(5+C), H, W] raw logits.
        anchors: Tensor[A, 2] anchor (w, h) in input pixels.
        stride: input pixels per grid cell.
        scale_x_y: darknet's grid sensitivity; centre = (sigmoid(t) * s - (s - 1) / 2 + cell) * stride.

    Returns:
        Tensor[B, A*H*W, 5+C]: cx, cy, w, h in input pixels, objectness and class probabilities.
    """
    p = head_grid(out.float(), anchors.shape[0])
    _, _, h, w, _ = p.shape
    gy, gx = torch.meshgrid(torch.arange(h, device=p.device), torch.arange(w, device=p.device), indexing="ij")
    grid = torch.stack([gx, gy], dim=-1).float()  # h,w,2
    decoded = _decode(p, grid, anchors.float().to(p.device).view(1, -1, 1, 1, 2), stride, scale_x_y)
    return decoded.reshape(p.shape[0], -1, p.shape[-1])


def decode_outputs(outputs: Sequence[Tensor], anchors: Tensor, anchors_mask: Sequence[Sequence[int]],
                   input_hw: Tuple[int, int], scale_x_y: float = 1.0) -> Tensor:
    """Decode all heads (P5 first) into Tensor[B, N, 5+C] with xyxy boxes in input pixels."""
    decoded = []
    for out, mask in zip(outputs, anchors_mask):
        stride = input_hw[0] // out.shape[2]
        decoded.append(decode_head(out, anchors[list(mask)], stride, scale_x_y))
    pred = torch.cat(decoded, dim=1)
    return torch.cat([cxcywh_to_xyxy(pred[..., :4]), pred[..., 4:]], dim=-1)


def decode_candidates_flat(outputs: Sequence[Tensor], anchors: Tensor, anchors_mask: Sequence[Sequence[int]],
                           input_hw: Tuple[int, int], scale_x_y: float = 1.0,
                           conf_thres: float = 0.5) -> Tuple[Tensor, Tensor]:
    """The boxes of every image whose objectness reaches conf_thres, decoded as decode_outputs does:
    (Tensor[K, 5+C] xyxy input pixels, objectness, class probabilities; Tensor[K] image index).

    A score (objectness x class probability) never exceeds the objectness, so postprocess at conf_thres
    keeps exactly what it keeps from decode_outputs. Decoding only these boxes makes post-processing
    several times cheaper (in torch and inside ONNX graphs: it is traceable), and keeps torch's tensors
    small enough to run on the calling thread, without waking its thread pool.
    """
    # objectness logit threshold, a hair low: the sigmoid in _decode may round the other way
    min_logit = math.log(conf_thres / (1 - conf_thres)) - 1e-4 if 0 < conf_thres < 1 else \
        (-math.inf if conf_thres <= 0 else math.inf)
    anchors = anchors.to(outputs[0].device).float()
    rows, cells, anchor_wh, strides, images = [], [], [], [], []
    for out, mask in zip(outputs, anchors_mask):
        p = head_grid(out, len(mask))  # B, A, H, W, 5+C
        b, a, y, x = torch.nonzero(p[..., 4] >= min_logit, as_tuple=True)
        rows.append(p[b, a, y, x])
        cells.append(torch.stack([x, y], dim=1))
        anchor_wh.append(anchors[list(mask)][a])
        strides.append(torch.full_like(b, input_hw[0] // out.shape[2]))
        images.append(b)
    cell_xy, stride = torch.cat(cells).float(), torch.cat(strides).float()[:, None]
    decoded = _decode(torch.cat(rows).float(), cell_xy, torch.cat(anchor_wh), stride, scale_x_y)
    return torch.cat([cxcywh_to_xyxy(decoded[:, :4]), decoded[:, 4:]], dim=1), torch.cat(images)


def decode_candidates(outputs: Sequence[Tensor], anchors: Tensor, anchors_mask: Sequence[Sequence[int]],
                      input_hw: Tuple[int, int], scale_x_y: float = 1.0, conf_thres: float = 0.5) -> List[Tensor]:
    """decode_candidates_flat split by image: one Tensor[K, 5+C] per image, for postprocess."""
    decoded, image = decode_candidates_flat(outputs, anchors, anchors_mask, input_hw, scale_x_y, conf_thres)
    if len(outputs[0]) == 1:
        return [decoded]
    return [decoded[image == i] for i in range(len(outputs[0]))]


def postprocess(pred, conf_thres: float = 0.5, nms_thres: float = 0.3, max_det: int = 300,
                max_nms: int = 10000) -> List[Tensor]:
    """Score filter and class-aware NMS.

    Args:
        pred: Tensor[B, N, 5+C] from decode_outputs, or decode_candidates' list of Tensor[N, 5+C].
        conf_thres: keep boxes whose score = objectness * best class probability reaches this.
        nms_thres: IoU above which a lower-scoring box of the same class is suppressed.
        max_det: most detections kept per image.
        max_nms: most candidates (by score) that enter NMS.

    Returns:
        One Tensor[K, 6] per image: x1, y1, x2, y2 (input pixels), score, class id.
    """
    results = []
    for p in pred:
        p = p.float()
        cls_prob, cls_id = p[:, 5:].max(dim=1)
        score = p[:, 4] * cls_prob
        keep = score >= conf_thres
        boxes, score, cls_id = p[keep, :4], score[keep], cls_id[keep]
        if score.numel() > max_nms:
            top = score.topk(max_nms).indices
            boxes, score, cls_id = boxes[top], score[top], cls_id[top]
        kept = torchvision.ops.batched_nms(boxes, score, cls_id, nms_thres)[:max_det]
        results.append(torch.cat([boxes[kept], score[kept, None], cls_id[kept, None].float()], dim=1))
    return results


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


def wh_iou(wh1: Tensor, wh2: Tensor) -> Tensor:
    """IoU of boxes sharing a centre, from widths and heights: Tensor[N, 2], Tensor[M, 2] -> Tensor[N, M]."""
    inter = torch.min(wh1[:, None], wh2[None]).prod(dim=2)
    return inter / (wh1.prod(dim=1)[:, None] + wh2.prod(dim=1)[None] - inter)
