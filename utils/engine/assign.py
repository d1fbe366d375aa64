"""Which predictions learn which truth: one truth per (image, anchor slot, cell), and the task-aligned
choice of positives among the candidate places of each truth.

A positive is (target index, anchor slot, cell y, cell x) in one head. YOLOLoss.assign chooses them by
shape alone (anchor shape IoU, the truth's cell and its neighbours). `task_aligned_positives` chooses
them by how well each candidate already predicts its truth, as TOOD (Feng et al., "TOOD: Task-aligned
One-stage Object Detection", https://arxiv.org/abs/2108.07755) and YOLOv8 do, applied to anchor slots:
alignment = score^alpha * IoU^beta, the top k per truth kept.
"""
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from utils.core.settings import default
from utils.ops.boxes import cxcywh_to_xyxy, decode_boxes, paired_box_iou

Positives = Tuple[Tensor, Tensor, Tensor, Tensor]  # target index, anchor slot, cell y, cell x


def one_truth_per_slot(targets: Tensor, fit: Tensor, t_idx: Tensor, slot: Tensor, gy: Tensor, gx: Tensor,
                       num_anchors: int, grid_hw: Tuple[int, int]) -> Positives:
    """Keep one truth per (image, anchor slot, cell), the kept pairs sorted by that place.

    A slot predicts one box, so it gets one truth: the one that fits it best (`fit`: the shape IoU with
    the slot's anchor, or the predicted box's IoU under task-aligned assignment), then the smaller box,
    then the lower (cx, cy, w, h, class). Every key is a property of the truth, never of its row number,
    so shuffled target rows give the same positives in the same order, and the same loss.
    """
    h, w = grid_hw
    rows = targets[t_idx]
    place = ((rows[:, 0].long() * num_anchors + slot) * h + gy) * w + gx
    keys = (place, -fit, rows[:, 4] * rows[:, 5], rows[:, 2], rows[:, 3], rows[:, 4], rows[:, 5], rows[:, 1])
    order = lexsort(keys)
    place = place[order]
    first = torch.ones_like(place, dtype=torch.bool)
    first[1:] = place[1:] != place[:-1]
    keep = order[first]
    return t_idx[keep], slot[keep], gy[keep], gx[keep]


def lexsort(keys: Sequence[Tensor]) -> Tensor:
    """The order sorting by keys[0], then keys[1], ...: stable sorts, least significant key first."""
    order = torch.arange(len(keys[0]), device=keys[0].device)
    for key in reversed(keys):
        order = order[torch.argsort(key[order], stable=True)]
    return order


def centre_in_box(boxes: Tensor, h: int, w: int) -> Tensor:
    """Tensor[M, H, W] bool: the cells whose centre lies inside each xyxy box (grid units) [M, 4]."""
    cx = torch.arange(w, device=boxes.device) + 0.5
    cy = torch.arange(h, device=boxes.device) + 0.5
    inside_x = (cx[None] > boxes[:, 0:1]) & (cx[None] < boxes[:, 2:3])  # M, W
    inside_y = (cy[None] > boxes[:, 1:2]) & (cy[None] < boxes[:, 3:4])  # M, H
    return inside_y[:, :, None] & inside_x[:, None, :]


def head_candidates(p: Tensor, anchors: Tensor, targets: Tensor, prior: Positives, scale_x_y: float,
                    max_wh_logit: float):
    """The candidates of one head, p: Tensor[B, A, H, W, 5+C] logits, anchors Tensor[A, 2] in grid units.

    Candidates are the cells whose centre lies in a truth, at the anchor slots the shape prior gave that
    truth (the anchors stay a shape prior: only the cells are chosen anew), and the shape prior's
    positives (so a truth smaller than a cell has some). Returns ((t_idx, slot, gy, gx), IoU of the
    predicted box with its truth, detection score objectness * class probability of the truth's class)."""
    _, num_anchors, h, w, _ = p.shape
    truth_boxes = cxcywh_to_xyxy(targets[:, 2:6] * targets.new_tensor([w, h, w, h]))
    prior_slots = torch.zeros(len(targets), num_anchors, dtype=torch.bool, device=p.device)
    prior_slots[prior[0], prior[1]] = True
    candidate = centre_in_box(truth_boxes, h, w)[:, None] & prior_slots[:, :, None, None]  # M, A, H, W
    candidate[prior] = True
    t_idx, slot, gy, gx = candidate.nonzero(as_tuple=True)
    logits = p[targets[t_idx, 0].long(), slot, gy, gx]
    pred = decode_boxes(logits, torch.stack([gx, gy], 1).float(), anchors[slot], 1, scale_x_y, max_wh_logit)
    iou = paired_box_iou(cxcywh_to_xyxy(pred), truth_boxes[t_idx]).clamp(0, 1)
    labels = targets[t_idx, 1].long()
    score = logits[:, 4].sigmoid() * logits[:, 5:].gather(1, labels[:, None]).squeeze(1).sigmoid()
    return (t_idx, slot, gy, gx), iou, score


def top_k_per_truth(t_idx: Tensor, metric: Tensor, k: int) -> Tensor:
    """Tensor[N] bool: the k candidates of highest `metric` of each truth (ties: the earlier candidate)."""
    order = lexsort((t_idx, -metric))
    sorted_t = t_idx[order]
    starts = torch.ones_like(sorted_t, dtype=torch.bool)
    starts[1:] = sorted_t[1:] != sorted_t[:-1]
    group_start = torch.cummax(torch.where(starts, torch.arange(len(order), device=order.device), 0), 0).values
    rank = torch.arange(len(order), device=order.device) - group_start
    keep = torch.zeros_like(starts)
    keep[order] = rank < k
    return keep


@torch.no_grad()
def task_aligned_positives(heads: Sequence[Tensor], anchors: Sequence[Tensor], targets: Tensor,
                           priors: Sequence[Positives], scale_x_y: float, max_wh_logit: float,
                           topk: int = default("topk"), alpha: float = 0.5, beta: float = 6.0) -> List[Positives]:
    """Per head, the positives of task-aligned assignment.

    heads: Tensor[B, A, H, W, 5+C] logits per head (head_grid); anchors: Tensor[A, 2] per head in grid
    units; priors: the shape prior's positives per head (YOLOLoss.assign), which also give each truth
    its anchor slots. Each truth keeps the `topk` candidates (over all heads) of highest score^alpha * IoU^beta (YOLOv8's alpha and beta); a place
    claimed by several truths goes to the one its predicted box overlaps most.
    """
    found = [head_candidates(p, a, targets, prior, scale_x_y, max_wh_logit)
             for p, a, prior in zip(heads, anchors, priors)]
    t_all = torch.cat([f[0][0] for f in found])
    metric = torch.cat([f[2].pow(alpha) * f[1].pow(beta) for f in found])
    keep = top_k_per_truth(t_all, metric, topk).split([len(f[1]) for f in found])
    result = []
    for p, (place, iou, _), kept in zip(heads, found, keep):
        t_idx, slot, gy, gx = (x[kept] for x in place)
        result.append(one_truth_per_slot(targets, iou[kept], t_idx, slot, gy, gx, p.shape[1], p.shape[2:4]))
    return result
