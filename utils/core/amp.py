"""Mixed precision as one setting for training, evaluation and prediction: --amp auto|off|bf16|fp16."""
from typing import Optional

import torch

AMP_CHOICES = ("auto", "off", "bf16", "fp16")
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_supports_bf16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """True when the CPU has native bf16 instructions (AVX-512 BF16 or AMX), read from its feature flags."""
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
            flags = f.read()
    except OSError:
        return False
    return any(flag in flags.split() for flag in _CPU_BF16_FLAGS)


def resolve_amp(choice: str, device: torch.device, cpu_bf16: Optional[bool] = None) -> Optional[torch.dtype]:
    """The autocast dtype for `choice` on `device`, or None for fp32.

    auto: on CUDA bf16 where supported, else fp16; on CPU bf16 when the CPU supports it natively, else off.
    """
    if choice not in AMP_CHOICES:
        raise ValueError(f"--amp must be one of {', '.join(AMP_CHOICES)}, got {choice!r}")
    if choice == "off":
        return None
    if choice == "bf16":
        return torch.bfloat16
    if choice == "fp16":
        if device.type != "cuda":
            raise ValueError("--amp fp16 needs a CUDA device; on CPU use bf16 or off")
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    supported = cpu_supports_bf16() if cpu_bf16 is None else cpu_bf16
    return torch.bfloat16 if supported else None


def amp_name(dtype: Optional[torch.dtype]) -> str:
    return {None: "off (fp32)", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """An autocast context for `dtype` on `device` (a no-op context when dtype is None)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def select_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device
