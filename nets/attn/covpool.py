"""Second-order pooling helpers shared by SOCA and GSoP (MPN-COV, https://arxiv.org/abs/1703.08050)."""
import torch


def covariance_pool(x: torch.Tensor) -> torch.Tensor:
    """Tensor[B, C, H, W] -> Tensor[B, C, C]: the channel covariance over the H*W positions, divided by H*W."""
    b, c, h, w = x.shape
    flat = x.reshape(b, c, h * w)
    centred = flat - flat.mean(dim=-1, keepdim=True)
    return centred @ centred.transpose(1, 2) / (h * w)


def sqrtm_newton_schulz(a: torch.Tensor, iterations: int = 5, eps: float = 1e-5) -> torch.Tensor:
    """Approximate square root of SPD matrices Tensor[B, C, C] by coupled Newton-Schulz iterations.

    As in MPN-COV/iSQRT-COV: pre-normalise by the trace, iterate, post-compensate by sqrt(trace).
    A zero matrix (e.g. the covariance of a 1x1 map) gives zero instead of NaN thanks to `eps`.
    """
    b, c, _ = a.shape
    eye3 = 3.0 * torch.eye(c, dtype=a.dtype, device=a.device).expand(b, c, c)
    trace = a.diagonal(dim1=1, dim2=2).sum(dim=-1).view(b, 1, 1) + eps
    y = a / trace
    z = 0.5 * (eye3 - y)
    y = y @ z
    for _ in range(iterations - 2):
        t = 0.5 * (eye3 - z @ y)
        y, z = y @ t, t @ z
    y = 0.5 * y @ (eye3 - z @ y)
    return y * trace.sqrt()
