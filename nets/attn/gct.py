import torch
import torch.nn as nn


class GCT(nn.Module):
    """Gated Channel Transformation for Visual Recognition, https://arxiv.org/abs/1909.11519

    A per-channel norm embedding, normalised across channels, gates through 1 + tanh. Global context
    embedding (per-channel l2 norm, or l1 norm, over H x W, scaled by `alpha`), channel normalisation
    across channels (scaled by `gamma`), then the gate 1 + tanh(. + beta). `gamma` and `beta` start at
    0, so a fresh block is the identity (x * 1), as in the paper.
    """

    def __init__(self, channels: int, eps: float = 1e-5, mode: str = "l2", after_relu: bool = False):
        super().__init__()
        if mode not in ("l1", "l2"):
            raise ValueError(f"GCT mode must be 'l1' or 'l2', got {mode!r}")
        self.alpha = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.eps = eps
        self.mode = mode
        self.after_relu = after_relu

    def channel_weights(self, x):
        """Tensor[B, C, 1, 1] of gates in (0, 2)."""
        if self.mode == "l2":
            embedding = (x.pow(2).sum((2, 3), keepdim=True) + self.eps).sqrt() * self.alpha
            norm = self.gamma / (embedding.pow(2).mean(dim=1, keepdim=True) + self.eps).sqrt()
        else:
            ax = x if self.after_relu else x.abs()
            embedding = ax.sum((2, 3), keepdim=True) * self.alpha
            norm = self.gamma / (embedding.abs().mean(dim=1, keepdim=True) + self.eps)
        return 1.0 + torch.tanh(embedding * norm + self.beta)

    def forward(self, x):
        return x * self.channel_weights(x)
