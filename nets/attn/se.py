import torch.nn as nn


class SEBlock(nn.Module):
    """Squeeze-and-Excitation Networks, https://arxiv.org/abs/1709.01507

    Global pooling, two bias-free Linear layers (ReLU, Sigmoid), channel re-weighting.
    Parameter names (`fc.0`, `fc.2`) match the reference implementation's `se_block`.
    """

    def __init__(self, channels: int, rd_ratio: int = 16, pool: str = "avg"):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"SE pool must be 'avg' or 'max', got {pool!r}")
        self.pool = nn.AdaptiveAvgPool2d(1) if pool == "avg" else nn.AdaptiveMaxPool2d(1)
        hidden = max(1, channels // rd_ratio)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
        )

    def channel_weights(self, x):
        """Tensor[B, C, 1, 1] of gates in (0, 1)."""
        b, c = x.shape[:2]
        return self.fc(self.pool(x).flatten(1)).view(b, c, 1, 1)

    def forward(self, x):
        return x * self.channel_weights(x)
