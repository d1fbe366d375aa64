import math

import torch
import torch.nn as nn


class Encoding(nn.Module):
    """The Encoding layer of EncNet (Context Encoding for Semantic Segmentation, CVPR 2018),
    https://arxiv.org/abs/1803.08904

    K codewords d_k (`channels` long) and smoothing factors s_k. For the N = H*W features x_i of a map,
    a_ik = softmax over k of s_k * ||x_i - d_k||^2 and e_k = sum_i a_ik (x_i - d_k):
    Tensor[B, D, H, W] -> Tensor[B, K, D]. The s_k start in [-1, 0), so near codewords weigh most.
    Distances are expanded (||x||^2 - 2 x.d + ||d||^2) and computed in at least float32, with autocast
    off: in half precision the expansion loses the distance.
    """

    def __init__(self, channels: int, codes: int = 32):
        super().__init__()
        self.codewords = nn.Parameter(torch.empty(codes, channels))
        self.scale = nn.Parameter(torch.empty(codes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.codewords.numel())
        nn.init.uniform_(self.codewords, -bound, bound)
        nn.init.uniform_(self.scale, -1, 0)

    def forward(self, x):
        b, d = x.shape[:2]
        dtype = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(x.device.type, enabled=False):
            feats = x.to(dtype).reshape(b, d, -1).transpose(1, 2)  # b,N,D
            codes = self.codewords.to(dtype)
            dist = (feats * feats).sum(dim=2, keepdim=True) - 2 * feats @ codes.t() + (codes * codes).sum(dim=1)
            assign = torch.softmax(dist * self.scale.to(dtype), dim=2)  # b,N,K
            # sum_i a_ik (x_i - d_k) = (A^T X)_k - (sum_i a_ik) d_k
            return assign.transpose(1, 2) @ feats - assign.sum(dim=1).unsqueeze(2) * codes  # b,K,D


class EncModule(nn.Module):
    """EncNet's Context Encoding Module as a channel gate, https://arxiv.org/abs/1803.08904

    1x1 conv + BN + ReLU, the Encoding layer (`codes` codewords), BN over the codewords + ReLU, then the
    mean over the codewords: the encoded vector e, Tensor[B, C]. Gates gamma = sigmoid(W e + b); the
    output is relu(x + x * gamma), as in EncNet.
    With `num_classes` > 0 it also holds EncNet's SE-loss head `se_head` (Linear C -> num_classes, with
    bias) on e: per-image class-presence logits. Its output is not returned; YoloBody.collect_se_logits
    gathers it (a forward hook) for the loss. With num_classes 0 there is no head: the block is a gate.
    """

    site_facts = ("num_classes",)  # YoloBody passes its class count when the SE-loss is on

    def __init__(self, channels: int, codes: int = 32, num_classes: int = 0):
        super().__init__()
        self.encoding = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            Encoding(channels, codes),
            nn.BatchNorm1d(codes),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Sequential(nn.Linear(channels, channels), nn.Sigmoid())
        self.se_head = nn.Linear(channels, num_classes) if num_classes > 0 else None

    def encode(self, x):
        """The encoded vector e, Tensor[B, C] (float32 at least)."""
        return self.encoding(x).mean(dim=1)

    def channel_weights(self, x):
        """Tensor[B, C, 1, 1] of gates gamma in (0, 1)."""
        return self.fc(self.encode(x))[:, :, None, None]

    def forward(self, x):
        encoded = self.encode(x)
        if self.se_head is not None:
            self.se_head(encoded)  # the logits reach the loss through collect_se_logits' hook
        gamma = self.fc(encoded)[:, :, None, None].to(x.dtype)
        return torch.relu(x + x * gamma)
