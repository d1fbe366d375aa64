import torch
import torch.nn as nn


def bottleneck_map(channels: int, out_features: int, rd_ratio: int) -> nn.Sequential:
    """Linear C -> C / rd_ratio, ReLU, Linear -> out_features, both with biases (DIANet's `small_cell`)."""
    hidden = max(1, channels // rd_ratio)
    return nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_features))


class DIACell(nn.Module):
    """The LSTM cell of a DIA unit (DIANet, https://arxiv.org/abs/1905.10671).

    Input and hidden state enter through bottleneck MLPs (`bottleneck_map`, to the 4 gates) instead of
    single linear maps, and the new hidden state is o * sigmoid(c) instead of o * tanh(c), so that it
    lies in (0, 1) and can gate. forward(x: Tensor[B, C], (h, c)) -> (h, c), each Tensor[B, C].
    """

    def __init__(self, channels: int, rd_ratio: int = 4):
        super().__init__()
        self.input_map = bottleneck_map(channels, 4 * channels, rd_ratio)
        self.hidden_map = bottleneck_map(channels, 4 * channels, rd_ratio)

    def forward(self, x, state):
        h, c = state
        i, f, g, o = (self.input_map(x) + self.hidden_map(h)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.sigmoid(c), c


class DIA(nn.Module):
    """DIANet: Dense-and-Implicit Attention Network (AAAI 2020), https://arxiv.org/abs/1905.10671

    One DIA unit shared by the layers of a stage, called once per layer in order:
    `y, state = dia(y, state)`. The global average of the layer's output y enters the LSTM cell with the
    state the previous layer left (zeros for the first, state=None); the new hidden state h gates the
    output: y + y * h (the notes' Y = sX + X, the layer's own output standing for X twice, since the
    layers it serves here have no shortcut of their own).
    """

    def __init__(self, channels: int, rd_ratio: int = 4):
        super().__init__()
        self.cell = DIACell(channels, rd_ratio)

    def forward(self, y, state=None):
        pooled = y.mean(dim=(2, 3))
        if state is None:
            state = (torch.zeros_like(pooled), torch.zeros_like(pooled))
        h, c = self.cell(pooled, state)
        return y + y * h[:, :, None, None].to(y.dtype), (h, c)


class NoStageAttention(nn.Module):
    """No attention across the layers of a stage: `y, state = m(y, state)` returns both unchanged."""

    def forward(self, y, state=None):
        return y, state
