"""The YOLOv4 loss: CIoU boxes, BCE objectness with an ignore threshold, BCE classes; optionally
EncNet's SE-loss on the class-presence logits of the model's enc blocks.

Targets are Tensor[M, 6] rows (batch index, class, cx, cy, w, h), coordinates normalised to [0, 1]
of the network input, as yolo_collate makes them. The loss does not depend on the order of the rows.
"""
from dataclasses import fields
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from utils.core.config import parse_input_size, used_anchors
from utils.core.migrate import BEFORE_IT_EXISTED
from utils.core.schema_train import ASSIGNERS, BOX_LOSSES
from utils.core.settings import settings_class, tool_settings
from utils.engine.assign import one_truth_per_slot, task_aligned_positives
from utils.engine.class_weights import power_problem
from utils.ops.boxes import batched_box_iou, cxcywh_to_xyxy, decode_grid, head_grid, paired_box_iou, wh_iou

MAX_WH_LOGIT = 8.0  # tw, th clamped before exp() in the loss: exp(8) ~ 3000 cells, no overflow


def check_loss_settings(s: "LossSettings") -> None:
    """ValueError for loss settings that cannot work together, naming train.py's flags."""
    if s.assigner not in ASSIGNERS:
        raise ValueError(f"unknown assigner {s.assigner!r}; choose one of {', '.join(ASSIGNERS)}")
    if s.box_loss not in BOX_LOSSES:
        raise ValueError(f"unknown box loss {s.box_loss!r}; choose one of {', '.join(BOX_LOSSES)}")
    if s.topk < 1:
        raise ValueError(f"--topk must be >= 1, got {s.topk}")
    if s.neighbor_cells and s.scale_x_y < 2.0:
        raise ValueError(f"neighbour-cell assignment needs --scale-x-y >= 2 so a prediction can reach the truth "
                         f"centre, got {s.scale_x_y}; raise --scale-x-y or give --no-neighbor-cells")
    if not 0.0 <= s.bce_clip < 0.5:
        raise ValueError(f"--bce-clip must be in [0, 0.5), got {s.bce_clip}; the reference uses 1e-7, 0 turns it off")
    if s.se_loss < 0:
        raise ValueError(f"--se-loss must be >= 0 (0 turns the SE-loss off), got {s.se_loss}")
    problem = power_problem(s.cls_weights_power)
    if problem:
        raise ValueError(problem)


def loss_settings(values) -> "LossSettings":
    """The LossSettings of train.py's settings `values` (a mapping, a Namespace or a TrainConfig); a setting that
    `values` lacks (a record from before it existed) takes the value runs had then (utils/core/migrate.py)."""
    values = values if isinstance(values, Mapping) else vars(values)
    return LossSettings(**{k: values.get(k, BEFORE_IT_EXISTED.get(k, getattr(LossSettings, k, None)))
                           for k in LOSS_SETTINGS})


LossSettings = settings_class("LossSettings", tool_settings("train", ("loss",)), namespace={
    "__module__": __name__,
    "__doc__": "The loss settings of utils/core/schema_train.py (concern 'loss'), named as train.py's flags; "
               "the defaults are the schema's (the default recipe)."})
LOSS_SETTINGS = tuple(f.name for f in fields(LossSettings))
REFERENCE_INPUT = 416  # the reference weights objectness by 5 * (input / 416)^2 and classes by C / 80
REFERENCE_CLASSES = 80
HEAD_BALANCE = (0.4, 1.0)  # objectness weight of the P5 and P4 heads (the reference's balance[:2])


class YOLOLoss(nn.Module):
    """Loss of a multi-head YOLO model.

    Args:
        anchors: Tensor[A, 2] anchor (w, h) in input pixels.
        num_classes: number of classes.
        anchors_mask: anchor indices per head, in the model's output order (P5 first).
        strides: input pixels per grid cell, per head (YoloBody.strides).
        settings: LossSettings, train.py's loss flags (`python train.py --help`, group 'loss and label
            assignment'): the weights box_weight, obj_weight (times (input / 416)^2 with obj_size_scale) and
            cls_weight (times classes / 80 with cls_count_scale); ignore_thres (a non-target prediction whose box
            overlaps a truth above it is left out of the objectness loss); assign_thres (a truth goes to every
            anchor of a head whose shape IoU with it exceeds this, and always to its best; 1.0: best only);
            hard_obj (objectness target 1 at positives instead of the predicted box's detached IoU);
            label_smoothing (eps/2, or eps/C with smooth_by_classes, the reference's form); focal_loss (sigmoid
            focal loss for classes, alpha 0.25, gamma 2); scale_x_y (darknet's grid sensitivity) and
            neighbor_cells (also the two neighbouring cells nearest a truth's centre, needs scale_x_y >= 2);
            bce_clip (0: BCE from logits; > 0: on probabilities clipped to [c, 1 - c], as the reference);
            box_loss ("ciou", or "giou": torchvision's generalized_box_iou_loss, Rezatofighi et al.,
            https://arxiv.org/abs/1902.09630); ciou_alpha_grad (gradients through CIoU's alpha, as the reference);
            se_loss (weight of EncNet's SE-loss; forward then needs the logits of YoloBody(..., se_loss=True)
            .collect_se_logits); assigner ("shape", or "aligned": of those positives and the cells inside each
            truth at its anchor slots, the `topk` whose prediction aligns best, utils/engine/assign.py, TOOD /
            YOLOv8); iou_cls (class target at positives the predicted box's IoU, so the score ranks tight boxes);
            cls_weights and cls_weights_power say how `class_weights` were found (train.py resolves them).
        input_size: the training input, an int or (h, w) (for obj_size_scale).
        balance: objectness weight per head (HEAD_BALANCE for YOLOv4-tiny's two).
        class_weights: a weight >= 0 per class (train.py --cls-weights, resolved by
            utils/engine/class_weights.py): the weight of that class's positive targets in the class BCE (or
            focal loss), as BCE's pos_weight (ultralytics' cls_pw) weighs them; None: every class 1, the loss
            without weights.
    """

    def __init__(self, anchors: Tensor, num_classes: int, anchors_mask: Sequence[Sequence[int]],
                 strides: Sequence[int], settings: "LossSettings", input_size, balance: Sequence[float],
                 class_weights: Optional[Sequence[float]] = None):
        super().__init__()
        s = settings
        check_loss_settings(s)
        h, w = parse_input_size(input_size)
        self.register_buffer("anchors", torch.as_tensor(anchors, dtype=torch.float32).view(-1, 2), persistent=False)
        self.num_classes = num_classes
        self.anchors_mask = [list(m) for m in anchors_mask]
        self.strides = list(strides)
        self.box_weight = s.box_weight
        self.obj_weight = s.obj_weight * (h * w / REFERENCE_INPUT ** 2 if s.obj_size_scale else 1.0)
        self.cls_weight = s.cls_weight * (num_classes / REFERENCE_CLASSES if s.cls_count_scale else 1.0)
        self.balance = list(balance)
        self.ignore_thres, self.assign_thres = s.ignore_thres, s.assign_thres
        self.iou_aware, self.focal = not s.hard_obj, s.focal_loss
        self.label_smoothing, self.smooth_by_classes = s.label_smoothing, s.smooth_by_classes
        self.scale_x_y, self.neighbor_cells = s.scale_x_y, s.neighbor_cells
        self.bce_clip, self.box_loss, self.ciou_alpha_grad = s.bce_clip, s.box_loss, s.ciou_alpha_grad
        self.se_weight = s.se_loss
        self.assigner, self.topk, self.iou_cls = s.assigner, s.topk, s.iou_cls
        self.used_anchors = used_anchors(self.anchors_mask)
        self.register_buffer("class_weights", checked_class_weights(class_weights, num_classes), persistent=False)

    def forward(self, outputs: Sequence[Tensor], targets: Tensor,
                se_logits: Sequence[Tensor] = ()) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Returns the total loss and its parts {'box', 'obj', 'cls'}, plus 'se' when se_weight > 0 (each
        already weighted). `se_logits`: Tensor[B, num_classes] per enc block; ignored when se_weight is 0."""
        targets = targets.float()
        batch = outputs[0].shape[0]
        positives = self.assign(targets, [o.shape[2:] for o in outputs])
        if self.assigner == "aligned":
            positives = self.align(outputs, targets, positives)
        gt_boxes, gt_valid = self.padded_truths(targets, batch)
        box = obj = cls = outputs[0].new_zeros((), dtype=torch.float32)
        for level, out in enumerate(outputs):
            b, o, c = self.head_loss(level, out, targets, positives[level], gt_boxes, gt_valid)
            box, obj, cls = box + b, obj + o * self.balance[level], cls + c
        parts = {"box": box * self.box_weight, "obj": obj * self.obj_weight, "cls": cls * self.cls_weight}
        if self.se_weight:
            parts["se"] = self.se_loss(se_logits, targets, batch) * self.se_weight
        return sum(parts.values()), parts

    def se_loss(self, se_logits: Sequence[Tensor], targets: Tensor, batch: int) -> Tensor:
        """EncNet's SE-loss (https://arxiv.org/abs/1803.08904), unweighted: float32 BCE of each block's
        logits Tensor[B, C] against presence[b, c] = 1 when a target row of image b has class c, mean
        over images and classes, then over the blocks."""
        if not se_logits:
            raise ValueError("the SE-loss is on (se_weight > 0) but no SE-loss logits were given: build the model "
                             "with an enc block and se_loss=True and pass the list of its collect_se_logits()")
        presence = torch.zeros(batch, self.num_classes, device=se_logits[0].device)
        image_class = targets[:, :2].long().to(presence.device)
        presence[image_class[:, 0], image_class[:, 1]] = 1.0
        losses = [F.binary_cross_entropy_with_logits(logits.float(), presence) for logits in se_logits]
        return torch.stack(losses).mean()

    @torch.no_grad()
    def assign(self, targets: Tensor, grid_sizes) -> list:
        """Per head, (target index, anchor slot, cell y, cell x) LongTensors of the positive pairs: one
        truth per (image, slot, cell), sorted by that place (see `one_truth_per_slot`)."""
        input_hw = (grid_sizes[0][0] * self.strides[0], grid_sizes[0][1] * self.strides[0])
        wh = targets[:, 4:6] * targets.new_tensor([input_hw[1], input_hw[0]])
        shape_iou = wh_iou(wh, self.anchors.to(wh.device))  # M, A_all
        used = torch.as_tensor(self.used_anchors, device=wh.device)
        best = used[shape_iou[:, used].argmax(1)]
        result = []
        for mask, (h, w) in zip(self.anchors_mask, grid_sizes):
            mask_t = torch.as_tensor(mask, device=wh.device)
            fit = shape_iou[:, mask_t]  # M, A_head
            pos = (fit > self.assign_thres) | (best[:, None] == mask_t[None])
            t_idx, slot = pos.nonzero(as_tuple=True)
            gxy = targets[t_idx, 2:4] * targets.new_tensor([w, h])
            t_idx, slot, gy, gx = self.cells(t_idx, slot, gxy, h, w)
            result.append(one_truth_per_slot(targets, fit[t_idx, slot], t_idx, slot, gy, gx, len(mask), (h, w)))
        return result

    def align(self, outputs: Sequence[Tensor], targets: Tensor, shape_positives: list) -> list:
        """Task-aligned positives per head, from the predictions and the shape rule's positives."""
        heads = [head_grid(o.detach().float(), len(m)) for o, m in zip(outputs, self.anchors_mask)]
        anchors = [self.anchors[m].to(o.device) / s for o, m, s in zip(outputs, self.anchors_mask, self.strides)]
        return task_aligned_positives(heads, anchors, targets, shape_positives, self.scale_x_y, MAX_WH_LOGIT,
                                      self.topk)

    def cells(self, t_idx: Tensor, slot: Tensor, gxy: Tensor, h: int, w: int):
        """The cell holding each truth centre, and with `neighbor_cells` also the nearer neighbour in x
        and in y (reachable because scale_x_y >= 2 lets a centre move half a cell outside its cell)."""
        cell = gxy.long()
        cells = [cell]
        if self.neighbor_cells:
            frac = gxy - cell
            step = torch.where(frac < 0.5, -1, 1)
            cells += [cell + torch.stack([step[:, 0], torch.zeros_like(step[:, 0])], 1),
                      cell + torch.stack([torch.zeros_like(step[:, 1]), step[:, 1]], 1)]
        cell = torch.cat(cells)
        t_idx, slot = t_idx.repeat(len(cells)), slot.repeat(len(cells))
        inside = (cell[:, 0] >= 0) & (cell[:, 0] < w) & (cell[:, 1] >= 0) & (cell[:, 1] < h)
        if not self.neighbor_cells:  # a centre exactly on the right or bottom edge
            cell, inside = cell.clone(), torch.ones_like(inside)
            cell[:, 0].clamp_(0, w - 1)
            cell[:, 1].clamp_(0, h - 1)
        return t_idx[inside], slot[inside], cell[inside, 1], cell[inside, 0]

    @staticmethod
    def padded_truths(targets: Tensor, batch: int) -> Tuple[Tensor, Tensor]:
        """Truth boxes per image, xyxy normalised: Tensor[B, N, 4] and a validity mask Tensor[B, N]."""
        img = targets[:, 0].long()
        counts = torch.bincount(img, minlength=batch)
        n = max(int(counts.max()) if len(targets) else 0, 1)
        order = torch.argsort(img, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(targets), device=targets.device) - starts[img[order]]
        boxes = targets.new_zeros(batch, n, 4)
        valid = torch.zeros(batch, n, dtype=torch.bool, device=targets.device)
        boxes[img[order], slot] = cxcywh_to_xyxy(targets[order, 2:6])
        valid[img[order], slot] = True
        return boxes, valid

    def head_loss(self, level, out, targets, positives, gt_boxes, gt_valid):
        mask = self.anchors_mask[level]
        p = head_grid(out.float(), len(mask))  # B,A,H,W,5+C
        h, w = p.shape[2:4]
        anchors = self.anchors[mask].to(p.device) / self.strides[level]  # grid units
        t_idx, slot, gy, gx = positives
        img = targets[t_idx, 0].long()

        pred_boxes = decode_grid(p, anchors, 1, self.scale_x_y, MAX_WH_LOGIT)  # B,A,H,W,4 cxcywh grid units
        tobj = torch.zeros_like(p[..., 4])
        is_pos = torch.zeros_like(tobj, dtype=torch.bool)
        box_loss = cls_loss = p.sum() * 0.0
        if len(t_idx):
            pb = cxcywh_to_xyxy(pred_boxes[img, slot, gy, gx])
            tb = cxcywh_to_xyxy(targets[t_idx, 2:6] * targets.new_tensor([w, h, w, h]))
            box_loss = (complete_iou_loss(pb, tb, alpha_grad=self.ciou_alpha_grad) if self.box_loss == "ciou"
                        else generalized_box_iou_loss(pb, tb, reduction="none")).mean()
            is_pos[img, slot, gy, gx] = True
            iou = paired_box_iou(pb.detach(), tb).clamp(0, 1)
            tobj[img, slot, gy, gx] = iou if self.iou_aware else 1.0
            cls_loss = self.class_loss(p[img, slot, gy, gx, 5:], targets[t_idx, 1].long(),
                                       iou if self.iou_cls else None)

        counted = self.not_ignored(pred_boxes, gt_boxes, gt_valid) | is_pos
        obj_loss = binary_cross_entropy(p[..., 4][counted], tobj[counted], self.bce_clip).mean()
        return box_loss, obj_loss, cls_loss

    @torch.no_grad()
    def not_ignored(self, pred_boxes: Tensor, gt_boxes: Tensor, gt_valid: Tensor) -> Tensor:
        """Tensor[B, A, H, W] bool: predictions whose best IoU with a truth of their image is <= ignore_thres."""
        bsz, _, h, w, _ = pred_boxes.shape
        scale = gt_boxes.new_tensor([w, h, w, h])
        ious = batched_box_iou(cxcywh_to_xyxy(pred_boxes.reshape(bsz, -1, 4)), gt_boxes * scale)
        best = ious.masked_fill(~gt_valid[:, None, :], 0).amax(dim=2)
        return (best <= self.ignore_thres).view(pred_boxes.shape[:4])

    def class_loss(self, logits: Tensor, labels: Tensor, quality: Optional[Tensor] = None) -> Tensor:
        """Class loss of the positives; `quality` Tensor[N] (the IoU) replaces the target 1 when given."""
        target = F.one_hot(labels, self.num_classes).float()
        if quality is not None:
            target = target * quality[:, None]
        if self.label_smoothing:
            eps = self.label_smoothing
            target = target * (1 - eps) + eps / (self.num_classes if self.smooth_by_classes else 2)
        if self.focal:
            return self.weighted(sigmoid_focal_loss(logits, target, reduction="none"), target).sum() / max(len(labels), 1)
        return self.weighted(binary_cross_entropy(logits, target, self.bce_clip), target).mean()

    def weighted(self, loss: Tensor, target: Tensor) -> Tensor:
        """Tensor[N, C] of element-wise class losses against `target`, the positive targets of class c weighing
        w_c: each element times 1 + (w_c - 1) * target (w_c on a target of 1, 1 on a target of 0; between for a
        smoothed or IoU target). A rare class's logit is otherwise pushed down by the many positives of the
        other classes, which are its negatives; scaling its whole column would scale those too."""
        if self.class_weights is None:
            return loss
        return loss * (1 + (self.class_weights.to(loss.dtype) - 1) * target)


def checked_class_weights(weights: Optional[Sequence[float]], num_classes: int) -> Optional[Tensor]:
    """Tensor[C] float32 of per-class weights, or None; ValueError unless one finite weight >= 0 per class."""
    if weights is None:
        return None
    w = torch.as_tensor(weights, dtype=torch.float32).flatten()
    if len(w) != num_classes or not bool(torch.isfinite(w).all() and (w >= 0).all()):
        raise ValueError(f"class weights: expected {num_classes} finite weights >= 0, one per class, found "
                         f"{[float(v) for v in w]}")
    return w


def binary_cross_entropy(logits: Tensor, target: Tensor, clip: float = 0.0) -> Tensor:
    """Element-wise BCE of sigmoid(logits) against `target`.

    With `clip` > 0 it is computed as the reference computes it: on the probability clipped to
    [clip, 1 - clip], so saturated logits contribute a bounded loss and no gradient.
    """
    if not clip:
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    prob = logits.sigmoid().clamp(clip, 1 - clip)
    return -target * prob.log() - (1 - target) * (1 - prob).log()


def complete_iou_loss(pred: Tensor, target: Tensor, alpha_grad: bool = False, eps: float = 1e-7) -> Tensor:
    """1 - CIoU of paired Tensor[N, 4] xyxy boxes -> Tensor[N].

    CIoU: Zheng et al., "Distance-IoU Loss: Faster and Better Learning for Bounding Box Regression",
    https://arxiv.org/abs/1911.08287. Computed as
    torchvision.ops.complete_box_iou_loss (same eps), which takes the aspect trade-off weight alpha
    without gradient; `alpha_grad` keeps alpha in the graph, as bubbliiiing/yolov4-tiny-pytorch does.
    """
    inter = (torch.min(pred[:, 2:], target[:, 2:]) - torch.max(pred[:, :2], target[:, :2])).clamp(min=0).prod(1)
    wh_p, wh_t = pred[:, 2:] - pred[:, :2], target[:, 2:] - target[:, :2]
    iou = inter / (wh_p.prod(1) + wh_t.prod(1) - inter + eps)
    enclose = torch.max(pred[:, 2:], target[:, 2:]) - torch.min(pred[:, :2], target[:, :2])
    centre_dist = ((pred[:, :2] + pred[:, 2:]) / 2 - (target[:, :2] + target[:, 2:]) / 2).pow(2).sum(1)
    # heights clamped: exp() of a very negative size logit (bf16 training reaches -150) flushes a predicted
    # height to 0, and w / 0 = inf has a finite atan but a NaN gradient (0 * inf) that poisons every weight
    aspect_t, aspect_p = (torch.atan(wh[:, 0] / wh[:, 1].clamp(min=eps)) for wh in (wh_t, wh_p))
    v = (4 / torch.pi ** 2) * (aspect_t - aspect_p).pow(2)
    with torch.set_grad_enabled(alpha_grad and torch.is_grad_enabled()):
        alpha = v / (1 - iou + v + eps)
    return 1 - iou + centre_dist / (enclose.pow(2).sum(1) + eps) + alpha * v
