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
