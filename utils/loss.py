"""The YOLOv4 loss: CIoU boxes, BCE objectness with an ignore threshold, BCE classes.

Targets are Tensor[M, 6] rows (batch index, class, cx, cy, w, h), coordinates normalised to [0, 1]
of the network input, as yolo_collate makes them.
"""
from typing import Dict, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import complete_box_iou_loss, sigmoid_focal_loss

from utils.boxes import batched_box_iou, cxcywh_to_xyxy, head_grid, paired_box_iou, wh_iou


class YOLOLoss(nn.Module):
    """Loss of a multi-head YOLO model.

    Args:
        anchors: Tensor[A, 2] anchor (w, h) in input pixels.
        num_classes: number of classes.
        anchors_mask: anchor indices per head, in the model's output order (P5 first).
        strides: input pixels per grid cell, per head.
        box_weight, obj_weight, cls_weight: weights of the three parts.
        balance: objectness weight per head.
        ignore_thres: a non-target prediction whose box overlaps a ground truth by more than this
            IoU is left out of the objectness loss (it is not wrong to find that object).
        assign_thres: a truth is assigned to every anchor (of the anchors a head uses) whose shape IoU
            with it exceeds this, and always to its best anchor; 1.0 gives the reference's best-only.
        iou_aware: objectness target at positives is the predicted box's IoU with its truth
            (detached); False gives the reference's hard 1.
        label_smoothing: class targets become eps/2 and 1 - eps/2.
        focal: use the sigmoid focal loss (alpha 0.25, gamma 2) for classes.
        scale_x_y: darknet's grid sensitivity factor for box centres.
        neighbor_cells: also assign each truth to the two neighbouring cells nearest its centre
            (needs scale_x_y >= 2); more positives make training from scratch converge faster.
    """

    def __init__(self, anchors: Tensor, num_classes: int, anchors_mask: Sequence[Sequence[int]],
                 strides: Sequence[int] = (32, 16), box_weight: float = 0.05, obj_weight: float = 1.0,
                 cls_weight: float = 0.5, balance: Sequence[float] = (1.0, 1.0), ignore_thres: float = 0.5,
                 assign_thres: float = 0.213, iou_aware: bool = True, label_smoothing: float = 0.0,
                 focal: bool = False, scale_x_y: float = 1.0, neighbor_cells: bool = False):
        super().__init__()
        if neighbor_cells and scale_x_y < 2.0:
            raise ValueError(f"neighbour-cell assignment needs scale_x_y >= 2 so a prediction can reach the truth "
                             f"centre, got {scale_x_y}; raise scale_x_y or turn neighbour cells off")
        self.register_buffer("anchors", torch.as_tensor(anchors, dtype=torch.float32).view(-1, 2), persistent=False)
        self.num_classes = num_classes
        self.anchors_mask = [list(m) for m in anchors_mask]
        self.strides = list(strides)
        self.box_weight, self.obj_weight, self.cls_weight = box_weight, obj_weight, cls_weight
        self.balance = list(balance)
        self.ignore_thres, self.assign_thres = ignore_thres, assign_thres
        self.iou_aware, self.label_smoothing, self.focal = iou_aware, label_smoothing, focal
        self.scale_x_y, self.neighbor_cells = scale_x_y, neighbor_cells
        self.used_anchors = sorted({i for m in self.anchors_mask for i in m})

    def forward(self, outputs: Sequence[Tensor], targets: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Returns the total loss and its parts {'box', 'obj', 'cls'} (each already weighted)."""
        targets = targets.float()
        batch = outputs[0].shape[0]
        positives = self.assign(targets, [o.shape[2:] for o in outputs])
        gt_boxes, gt_valid = self.padded_truths(targets, batch)
        box = obj = cls = outputs[0].new_zeros((), dtype=torch.float32)
        for level, out in enumerate(outputs):
            b, o, c = self.head_loss(level, out, targets, positives[level], gt_boxes, gt_valid)
            box, obj, cls = box + b, obj + o * self.balance[level], cls + c
        parts = {"box": box * self.box_weight, "obj": obj * self.obj_weight, "cls": cls * self.cls_weight}
        return sum(parts.values()), parts

    @torch.no_grad()
    def assign(self, targets: Tensor, grid_sizes) -> list:
        """Per head, (target index, anchor slot, cell y, cell x) LongTensors of the positive pairs."""
        input_hw = (grid_sizes[0][0] * self.strides[0], grid_sizes[0][1] * self.strides[0])
        wh = targets[:, 4:6] * targets.new_tensor([input_hw[1], input_hw[0]])
        shape_iou = wh_iou(wh, self.anchors.to(wh.device))  # M, A_all
        used = torch.as_tensor(self.used_anchors, device=wh.device)
        best = used[shape_iou[:, used].argmax(1)]
        result = []
        for mask, (h, w) in zip(self.anchors_mask, grid_sizes):
            mask_t = torch.as_tensor(mask, device=wh.device)
            pos = (shape_iou[:, mask_t] > self.assign_thres) | (best[:, None] == mask_t[None])
            t_idx, slot = pos.nonzero(as_tuple=True)
            gxy = targets[t_idx, 2:4] * targets.new_tensor([w, h])
            result.append(self.cells(t_idx, slot, gxy, h, w))
        return result

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
        bsz, _, h, w, _ = p.shape
        anchors = self.anchors[mask].to(p.device) / self.strides[level]  # grid units
        t_idx, slot, gy, gx = positives
        img = targets[t_idx, 0].long()

        pred_boxes = self.decode(p, anchors)  # B,A,H,W,4 cxcywh grid units
        tobj = torch.zeros_like(p[..., 4])
        box_loss = cls_loss = p.sum() * 0.0
        if len(t_idx):
            pb = cxcywh_to_xyxy(pred_boxes[img, slot, gy, gx])
            tb = cxcywh_to_xyxy(targets[t_idx, 2:6] * targets.new_tensor([w, h, w, h]))
            box_loss = complete_box_iou_loss(pb, tb, reduction="mean")
            iou = paired_box_iou(pb.detach(), tb).clamp(0, 1)
            tobj[img, slot, gy, gx] = iou if self.iou_aware else 1.0
            cls_loss = self.class_loss(p[img, slot, gy, gx, 5:], targets[t_idx, 1].long())

        with torch.no_grad():
            scale = gt_boxes.new_tensor([w, h, w, h])
            ious = batched_box_iou(cxcywh_to_xyxy(pred_boxes.view(bsz, -1, 4)), gt_boxes * scale)
            best = ious.masked_fill(~gt_valid[:, None, :], 0).amax(dim=2).view_as(tobj)
            counted = (best <= self.ignore_thres) | (tobj > 0)
        obj_loss = F.binary_cross_entropy_with_logits(p[..., 4][counted], tobj[counted], reduction="mean")
        return box_loss, obj_loss, cls_loss

    def decode(self, p: Tensor, anchors: Tensor) -> Tensor:
        """Tensor[B, A, H, W, 5+C] logits -> Tensor[B, A, H, W, 4] boxes (cx, cy, w, h) in grid units."""
        h, w = p.shape[2:4]
        gy, gx = torch.meshgrid(torch.arange(h, device=p.device), torch.arange(w, device=p.device), indexing="ij")
        grid = torch.stack([gx, gy], dim=-1).float()
        s = self.scale_x_y
        xy = p[..., :2].sigmoid() * s - (s - 1) / 2 + grid
        wh = p[..., 2:4].clamp(max=8.0).exp() * anchors.view(1, -1, 1, 1, 2)
        return torch.cat([xy, wh], dim=-1)

    def class_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        target = F.one_hot(labels, self.num_classes).float()
        if self.label_smoothing:
            target = target * (1 - self.label_smoothing) + self.label_smoothing / 2
        if self.focal:
            return sigmoid_focal_loss(logits, target, reduction="sum") / max(len(labels), 1)
        return F.binary_cross_entropy_with_logits(logits, target, reduction="mean")
