"""A plain re-statement of the reference implementation's YOLOv4-tiny (seed 004 and the parameter
names listed in the core issue), written independently of nets/ so tests can compare against it."""
import math

import torch
import torch.nn as nn


class BasicConv(nn.Module):
    def __init__(self, cin, cout, k, s=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.activation = nn.LeakyReLU(0.1)

    def forward(self, x):
        return self.activation(self.bn(self.conv(x)))


class Resblock_body(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.out_channels = cout
        self.conv1 = BasicConv(cin, cout, 3)
        self.conv2 = BasicConv(cout // 2, cout // 2, 3)
        self.conv3 = BasicConv(cout // 2, cout // 2, 3)
        self.conv4 = BasicConv(cout, cout, 1)
        self.maxpool = nn.MaxPool2d(2, 2)

    def forward(self, x):
        x = self.conv1(x)
        route = x
        x = torch.split(x, self.out_channels // 2, dim=1)[1]
        x = self.conv2(x)
        route1 = x
        x = self.conv3(x)
        x = torch.cat([x, route1], dim=1)
        x = self.conv4(x)
        feat = x
        return self.maxpool(torch.cat([route, x], dim=1)), feat


class CSPDarkNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = BasicConv(3, 32, 3, 2)
        self.conv2 = BasicConv(32, 64, 3, 2)
        self.resblock_body1 = Resblock_body(64, 64)
        self.resblock_body2 = Resblock_body(128, 128)
        self.resblock_body3 = Resblock_body(256, 256)
        self.conv3 = BasicConv(512, 512, 3)

    def forward(self, x):
        x = self.conv2(self.conv1(x))
        x, _ = self.resblock_body1(x)
        x, _ = self.resblock_body2(x)
        x, feat1 = self.resblock_body3(x)
        return feat1, self.conv3(x)


class se_block(nn.Module):
    def __init__(self, channel, ratio=16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channel, channel // ratio, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(channel // ratio, channel, bias=False), nn.Sigmoid())

    def forward(self, x):
        b, c, _, _ = x.size()
        return x * self.fc(self.avg_pool(x).view(b, c)).view(b, c, 1, 1)


class ChannelAttention(nn.Module):
    def __init__(self, in_planes, ratio=8):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.fc1 = nn.Conv2d(in_planes, in_planes // ratio, 1, bias=False)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Conv2d(in_planes // ratio, in_planes, 1, bias=False)

    def forward(self, x):
        avg_out = self.fc2(self.relu1(self.fc1(self.avg_pool(x))))
        max_out = self.fc2(self.relu1(self.fc1(self.max_pool(x))))
        return torch.sigmoid(avg_out + max_out)


class SpatialAttention(nn.Module):
    def __init__(self, kernel_size=7):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=3 if kernel_size == 7 else 1, bias=False)

    def forward(self, x):
        avg_out = torch.mean(x, dim=1, keepdim=True)
        max_out, _ = torch.max(x, dim=1, keepdim=True)
        return torch.sigmoid(self.conv1(torch.cat([avg_out, max_out], dim=1)))


class cbam_block(nn.Module):
    def __init__(self, channel, ratio=8, kernel_size=7):
        super().__init__()
        self.channelattention = ChannelAttention(channel, ratio=ratio)
        self.spatialattention = SpatialAttention(kernel_size=kernel_size)

    def forward(self, x):
        x = x * self.channelattention(x)
        return x * self.spatialattention(x)


class eca_block(nn.Module):
    def __init__(self, channel, b=1, gamma=2):
        super().__init__()
        kernel_size = int(abs((math.log(channel, 2) + b) / gamma))
        kernel_size = kernel_size if kernel_size % 2 else kernel_size + 1
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        y = self.avg_pool(x)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * self.sigmoid(y).expand_as(x)


class CA_Block(nn.Module):
    def __init__(self, channel, reduction=16):
        super().__init__()
        self.conv_1x1 = nn.Conv2d(channel, channel // reduction, 1, bias=False)
        self.relu = nn.ReLU()
        self.bn = nn.BatchNorm2d(channel // reduction)
        self.F_h = nn.Conv2d(channel // reduction, channel, 1, bias=False)
        self.F_w = nn.Conv2d(channel // reduction, channel, 1, bias=False)

    def forward(self, x):
        _, _, h, w = x.size()
        x_h = torch.mean(x, dim=3, keepdim=True).permute(0, 1, 3, 2)
        x_w = torch.mean(x, dim=2, keepdim=True)
        y = self.relu(self.bn(self.conv_1x1(torch.cat((x_h, x_w), 3))))
        y_h, y_w = y.split([h, w], 3)
        s_h = torch.sigmoid(self.F_h(y_h.permute(0, 1, 3, 2)))
        s_w = torch.sigmoid(self.F_w(y_w))
        return x * s_h.expand_as(x) * s_w.expand_as(x)


attention_block = [se_block, cbam_block, eca_block, CA_Block]


class Upsample(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.upsample = nn.Sequential(BasicConv(cin, cout, 1), nn.Upsample(scale_factor=2, mode="nearest"))

    def forward(self, x):
        return self.upsample(x)


def yolo_head(filters_list, in_filters):
    return nn.Sequential(BasicConv(in_filters, filters_list[0], 3), nn.Conv2d(filters_list[0], filters_list[1], 1))


class ReferenceYoloBody(nn.Module):
    def __init__(self, anchors_mask, num_classes, phi=0):
        super().__init__()
        self.phi = phi
        self.backbone = CSPDarkNet()
        self.conv_for_P5 = BasicConv(512, 256, 1)
        self.yolo_headP5 = yolo_head([512, len(anchors_mask[0]) * (5 + num_classes)], 256)
        self.upsample = Upsample(256, 128)
        self.yolo_headP4 = yolo_head([256, len(anchors_mask[1]) * (5 + num_classes)], 384)
        if 1 <= phi <= 4:
            self.feat1_att = attention_block[phi - 1](256)
            self.feat2_att = attention_block[phi - 1](512)
            self.upsample_att = attention_block[phi - 1](128)

    def forward(self, x):
        feat1, feat2 = self.backbone(x)
        if 1 <= self.phi <= 4:
            feat1, feat2 = self.feat1_att(feat1), self.feat2_att(feat2)
        P5 = self.conv_for_P5(feat2)
        out0 = self.yolo_headP5(P5)
        up = self.upsample(P5)
        if 1 <= self.phi <= 4:
            up = self.upsample_att(up)
        return out0, self.yolo_headP4(torch.cat([up, feat1], dim=1))


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter and BN statistic a distinct random value (so a mix-up of names shows)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return model


# The loss of the reference at commit 1bbb2f2: nets/yolo_training.py's YOLOLoss.forward per head, summed
# over the heads as its utils/utils_fit.py does, restated with loops over images and truths. Targets: one
# Tensor[n, 5] per image, (cx, cy, w, h, class) normalised to the input; anchors: Tensor[A, 2] in input
# pixels; input_shape: (h, w).

def reference_assignment(targets, anchors, anchors_mask, input_shape, grid_sizes):
    """Per image, one (head, anchor slot, cell y, cell x) list per truth: its best anchor (the best that a
    head uses), in every head that uses it, at the cell holding its centre."""
    used = sorted({i for m in anchors_mask for i in m})
    places = []
    for boxes in targets:
        per_image = []
        for t in boxes:
            w, h = float(t[2]) * input_shape[1], float(t[3]) * input_shape[0]
            inter = [min(w, aw) * min(h, ah) for aw, ah in anchors.tolist()]
            ious = [i / (w * h + aw * ah - i) for i, (aw, ah) in zip(inter, anchors.tolist())]
            best = max(used, key=lambda a: (ious[a], -a))
            per_image.append([(level, mask.index(best), int(torch.floor(t[1] * gh)), int(torch.floor(t[0] * gw)))
                              for level, (mask, (gh, gw)) in enumerate(zip(anchors_mask, grid_sizes)) if best in mask])
        places.append(per_image)
    return places


def reference_bce(prob, target):
    """The reference's BCELoss: probabilities clipped to [1e-7, 1 - 1e-7], no gradient beyond."""
    eps = 1e-7
    prob = torch.where(prob < eps, torch.full_like(prob, eps), prob)
    prob = torch.where(prob > 1 - eps, torch.full_like(prob, 1 - eps), prob)
    return -target * torch.log(prob) - (1 - target) * torch.log(1 - prob)


def reference_ciou(b1, b2):
    """The reference's box_ciou of (cx, cy, w, h) boxes, alpha in the graph."""
    b1_min, b1_max = b1[:, :2] - b1[:, 2:] / 2, b1[:, :2] + b1[:, 2:] / 2
    b2_min, b2_max = b2[:, :2] - b2[:, 2:] / 2, b2[:, :2] + b2[:, 2:] / 2
    inter_wh = torch.clamp(torch.min(b1_max, b2_max) - torch.max(b1_min, b2_min), min=0)
    inter = inter_wh[:, 0] * inter_wh[:, 1]
    union = b1[:, 2] * b1[:, 3] + b2[:, 2] * b2[:, 3] - inter
    iou = inter / torch.clamp(union, min=1e-6)
    centre = ((b1[:, :2] - b2[:, :2]) ** 2).sum(1)
    enclose_wh = torch.clamp(torch.max(b1_max, b2_max) - torch.min(b1_min, b2_min), min=0)
    ciou = iou - centre / torch.clamp((enclose_wh ** 2).sum(1), min=1e-6)
    v = (4 / math.pi ** 2) * (torch.atan(b1[:, 2] / torch.clamp(b1[:, 3], min=1e-6))
                              - torch.atan(b2[:, 2] / torch.clamp(b2[:, 3], min=1e-6))) ** 2
    alpha = v / torch.clamp(1.0 - iou + v, min=1e-6)
    return ciou - alpha * v


def reference_head_loss(level, out, targets, places, anchors, num_classes, anchors_mask, input_shape):
    bs, _, in_h, in_w = out.shape
    mask = list(anchors_mask[level])
    pred = out.view(bs, len(mask), 5 + num_classes, in_h, in_w).permute(0, 1, 3, 4, 2)
    stride = torch.tensor([input_shape[1] / in_w, input_shape[0] / in_h])
    anchor_wh = (anchors[mask] / stride).view(1, len(mask), 1, 1, 2)
    grid_x = torch.arange(in_w, dtype=torch.float32).view(1, 1, 1, in_w)
    grid_y = torch.arange(in_h, dtype=torch.float32).view(1, 1, in_h, 1)
    pred_boxes = torch.stack([pred[..., 0].sigmoid() + grid_x, pred[..., 1].sigmoid() + grid_y,
                              pred[..., 2].exp() * anchor_wh[..., 0], pred[..., 3].exp() * anchor_wh[..., 1]], -1)
    y_true = torch.zeros(bs, len(mask), in_h, in_w, 5 + num_classes)
    noobj = torch.ones(bs, len(mask), in_h, in_w, dtype=torch.bool)
    scale = torch.tensor([in_w, in_h, in_w, in_h], dtype=torch.float32)
    for b in range(bs):
        for t, truth_places in zip(targets[b], places[b]):
            for head, k, j, i in truth_places:
                if head == level:
                    noobj[b, k, j, i] = False
                    y_true[b, k, j, i, :4] = t[:4] * scale
                    y_true[b, k, j, i, 4] = 1
                    y_true[b, k, j, i, 5 + int(t[4])] = 1
        if len(targets[b]):  # ignore: predictions overlapping a truth above IoU 0.5 are not negatives
            ious = _cxcywh_iou(targets[b][:, :4] * scale, pred_boxes[b].detach().reshape(-1, 4))
            noobj[b][ious.max(0).values.view(len(mask), in_h, in_w) > 0.5] = False
    obj_mask = y_true[..., 4] == 1
    loss = out.new_zeros(())
    if obj_mask.any():
        loss_loc = (1 - reference_ciou(pred_boxes[obj_mask], y_true[..., :4][obj_mask])).mean()
        loss_cls = reference_bce(pred[..., 5:].sigmoid()[obj_mask], y_true[..., 5:][obj_mask]).mean()
        loss = loss + loss_loc * 0.05 + loss_cls * (num_classes / 80)
    loss_conf = reference_bce(pred[..., 4].sigmoid(), obj_mask.float())[noobj | obj_mask].mean()
    obj_ratio = 5 * input_shape[0] * input_shape[1] / 416 ** 2
    return loss + loss_conf * [0.4, 1.0, 4][level] * obj_ratio


def _cxcywh_iou(a, b):
    """IoU of every (cx, cy, w, h) box in a with every one in b, as the reference's calculate_iou (no eps)."""
    a_min, a_max = a[:, None, :2] - a[:, None, 2:] / 2, a[:, None, :2] + a[:, None, 2:] / 2
    b_min, b_max = b[None, :, :2] - b[None, :, 2:] / 2, b[None, :, :2] + b[None, :, 2:] / 2
    inter_wh = torch.clamp(torch.min(a_max, b_max) - torch.max(a_min, b_min), min=0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    return inter / (a[:, None, 2] * a[:, None, 3] + b[None, :, 2] * b[None, :, 3] - inter)


def reference_yolo_loss(outputs, targets, anchors, num_classes, anchors_mask, input_shape):
    """Total reference loss over the heads; `targets` must not put two truths on one (image, slot, cell)
    (the reference then keeps the last truth's box and the union of their classes)."""
    places = reference_assignment(targets, anchors, anchors_mask, input_shape, [o.shape[2:] for o in outputs])
    return sum(reference_head_loss(level, out, targets, places, anchors, num_classes, anchors_mask, input_shape)
               for level, out in enumerate(outputs))
