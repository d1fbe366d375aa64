import math
from typing import Dict, Tuple

import torch
import torch.nn as nn

# FcaNet's 'top' frequency ranking in a 7x7 DCT space (u along H, v along W), best first
TOP_FREQ_U = (0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2, 4, 6, 3, 5, 5, 2, 6, 5, 5, 3, 3, 4, 2, 2, 6, 1)
TOP_FREQ_V = (0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2, 6, 3, 3, 3, 5, 1, 1, 2, 4, 2, 1, 1, 3, 0, 5, 3)


def dct_basis(pos: int, freq: int, size: int) -> float:
    """Orthonormal 1-D DCT-II basis value."""
    value = math.cos(math.pi * freq * (pos + 0.5) / size) / math.sqrt(size)
    return value * math.sqrt(2) if freq else value


def dct_filters(channels: int, num_freq: int, size: int = 7) -> torch.Tensor:
    """Tensor[C, size, size]: channel group i (C / num_freq channels) gets the i-th top frequency."""
    filters = torch.zeros(channels, size, size)
    part = channels // num_freq
    for i, (u, v) in enumerate(zip(TOP_FREQ_U[:num_freq], TOP_FREQ_V[:num_freq])):
        for tx in range(size):
            for ty in range(size):
                filters[i * part:(i + 1) * part, tx, ty] = dct_basis(tx, u, size) * dct_basis(ty, v, size)
    return filters


def pool_matrix(size: int, out: int) -> torch.Tensor:
    """Tensor[out, size]: the linear map of adaptive average pooling from `size` to `out` points.

    Output i averages inputs [floor(i*size/out), ceil((i+1)*size/out)), as F.adaptive_avg_pool1d does.
    """
    rows = []
    for i in range(out):
        start, end = (i * size) // out, ((i + 1) * size + out - 1) // out
        rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(size)])
    return torch.tensor(rows)


class FcaAttention(nn.Module):
    """FcaNet: Frequency Channel Attention Networks, https://arxiv.org/abs/2012.11879

    SE with 16 DCT frequencies (one per channel group) in place of average pooling. Multi-spectral
    channel attention: channels split in `num_freq` groups, each pooled by its own 2-D DCT basis (the
    top-16 frequencies of a 7x7 DCT; the (0, 0) one is global average pooling), then SE's bias-free MLP
    and Sigmoid.

    Any input size: FcaNet's detection models average-pool the map to the 7x7 DCT size first. That
    pooling is linear, so here it is folded into the filter: for an H x W map the filter is P_h^T F P_w
    (P = adaptive pooling matrix), built once per size and cached. The result equals
    "adaptive_avg_pool2d to 7x7, then DCT", works on 1x1 maps, and exports to ONNX as a constant.
    """

    def __init__(self, channels: int, rd_ratio: int = 16, num_freq: int = 16, dct_size: int = 7):
        super().__init__()
        if channels % num_freq:
            raise ValueError(f"FcaAttention: channels ({channels}) must be a multiple of num_freq ({num_freq})")
        hidden = max(1, channels // rd_ratio)
        self.dct_size = dct_size
        self.register_buffer("dct_weight", dct_filters(channels, num_freq, dct_size), persistent=False)
        self._filters: Dict[Tuple, torch.Tensor] = {}
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
        )

    def filters_for(self, h: int, w: int) -> torch.Tensor:
        """Tensor[C, h, w] of DCT filters for an h x w map (cached per size, device and dtype)."""
        weight = self.dct_weight
        key = (h, w, weight.device, weight.dtype)
        if key not in self._filters:
            p_h = pool_matrix(h, self.dct_size).to(weight)
            p_w = pool_matrix(w, self.dct_size).to(weight)
            self._filters[key] = p_h.t() @ weight @ p_w
        return self._filters[key]

    def channel_weights(self, x):
        """Tensor[B, C, 1, 1] of gates."""
        b, c, h, w = x.shape
        y = (x * self.filters_for(int(h), int(w))).sum(dim=(2, 3))
        return self.fc(y).view(b, c, 1, 1)

    def forward(self, x):
        return x * self.channel_weights(x)
