import torch
import torch.nn as nn


class SelectiveKernel(nn.Module):
    """Selective Kernel Networks, https://arxiv.org/abs/1903.06586

    Two or more dilated grouped 3x3 branches mixed by per-channel softmax weights. Split: M grouped 3x3
    convs with dilation 1..M (a dilated 3x3 stands in for 5x5, 7x7, ...), each with BN + ReLU. Fuse: sum
    the branches, global average pool, 1x1 conv down to d = max(C // rd_ratio, rd_min) with BN + ReLU.
    Select: a 1x1 conv up to M*C logits, softmax over the M branches per channel, and the weighted sum
    of the branches.

    Unlike a gate (x * weights) this block replaces the features by new convolutions of them, as SKConv
    does in SKNet; in == out channels and stride 1, so the shape is kept. The fuse BN needs a batch of 2
    or more in training mode. `channels` must be a multiple of `groups`.
    """

    def __init__(self, channels: int, rd_ratio: int = 16, rd_min: int = 32, branches: int = 2,
                 groups: int = 32, act_layer=nn.ReLU):
        super().__init__()
        if channels % groups:
            raise ValueError(f"SelectiveKernel: channels ({channels}) must be a multiple of groups ({groups})")
        d = max(channels // rd_ratio, rd_min)
        self.branches = branches
        self.convs = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=1 + i, dilation=1 + i, groups=groups, bias=False),
                nn.BatchNorm2d(channels),
                act_layer(),
            )
            for i in range(branches)
        )
        self.fc1 = nn.Sequential(nn.Conv2d(channels, d, 1, bias=False), nn.BatchNorm2d(d), act_layer())
        self.fc2 = nn.Conv2d(d, channels * branches, 1, bias=False)

    def branch_weights(self, feats):
        """Softmax weights over the branches, Tensor[B, M, C, 1, 1]."""
        u = torch.stack(feats, dim=1).sum(dim=1)
        z = self.fc1(u.mean(dim=(2, 3), keepdim=True))
        b, c = u.shape[:2]
        return self.fc2(z).view(b, self.branches, c, 1, 1).softmax(dim=1)

    def forward(self, x):
        feats = [conv(x) for conv in self.convs]
        weights = self.branch_weights(feats)
        return (torch.stack(feats, dim=1) * weights).sum(dim=1)
