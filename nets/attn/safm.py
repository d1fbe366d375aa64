from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def adaptive_max_pool2d(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """F.adaptive_max_pool2d, also when exporting to ONNX with a size that does not divide the input.

    ONNX has no adaptive pooling; the exporter handles only output sizes that divide the input. The
    fallback takes the same windows, [floor(i*H/h), ceil((i+1)*H/h)), one slice per output row/column
    (max pooling is separable), so its numbers equal PyTorch's.
    """
    # int(): while tracing, sizes may be traced values whose `//` truncates instead of flooring
    (h, w), (oh, ow) = [int(s) for s in x.shape[-2:]], size
    if not torch.onnx.is_in_onnx_export() or (h % oh == 0 and w % ow == 0):
        return F.adaptive_max_pool2d(x, size)
    rows = [x[:, :, (i * h) // oh:((i + 1) * h + oh - 1) // oh].amax(dim=2, keepdim=True) for i in range(oh)]
    x = torch.cat(rows, dim=2)
    cols = [x[..., (j * w) // ow:((j + 1) * w + ow - 1) // ow].amax(dim=3, keepdim=True) for j in range(ow)]
    return torch.cat(cols, dim=3)


class SAFM(nn.Module):
    """Spatially-Adaptive Feature Modulation for Efficient Image Super-Resolution, https://arxiv.org/abs/2302.13800

    A multi-scale (max-pooled, depthwise-conv) modulation map times the input. Channels split in
    `n_levels` chunks; chunk i is max-pooled to (H/2^i, W/2^i), filtered by a 3x3 depthwise conv and
    upsampled back (nearest); a 1x1 conv aggregates the chunks, GELU makes the modulation map, and the
    input is multiplied by it.

    Detector note: on small maps H // 2^i can be 0 (a 13x13 map at level 3 gives 1, a 4x4 map gives 0);
    the pooled size is clamped to at least 1x1 so the block works down to 1x1 maps.
    """

    def __init__(self, channels: int, n_levels: int = 4, act_layer=nn.GELU):
        super().__init__()
        if channels % n_levels:
            raise ValueError(f"SAFM: channels ({channels}) must be a multiple of n_levels ({n_levels})")
        self.n_levels = n_levels
        chunk = channels // n_levels
        self.mfr = nn.ModuleList(nn.Conv2d(chunk, chunk, 3, 1, 1, groups=chunk) for _ in range(n_levels))
        self.aggr = nn.Conv2d(channels, channels, 1)
        self.act = act_layer()

    def modulation(self, x):
        """The modulation map, Tensor[B, C, H, W], that multiplies the input."""
        h, w = x.shape[-2:]
        out = []
        for i, (chunk, conv) in enumerate(zip(x.chunk(self.n_levels, dim=1), self.mfr)):
            if i == 0:
                out.append(conv(chunk))
                continue
            size = (max(1, h // 2 ** i), max(1, w // 2 ** i))
            s = conv(adaptive_max_pool2d(chunk, size))
            out.append(F.interpolate(s, size=(h, w), mode="nearest"))
        return self.act(self.aggr(torch.cat(out, dim=1)))

    def forward(self, x):
        return self.modulation(x) * x
