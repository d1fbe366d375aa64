"""Mixed precision as one setting for training, evaluation and prediction: --amp auto|off|bf16|fp16; and the
CPU threads of --threads.

torch is imported where it is used, so that the schema (utils/core/schema_train.py reads AMP_CHOICES), and
with it every script's --help, does not import it.
"""
import platform
import warnings
from typing import Optional

AMP_CHOICES = ("auto", "off", "bf16", "fp16")
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
SLOW_BF16 = ("--amp bf16 on a CPU without native bf16 instructions (neither avx512_bf16 nor amx_bf16 among its "
             "flags): bf16 is emulated there and the network runs several times slower than in fp32; use --amp auto "
             "or off")


def cpu_supports_bf16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """True when the CPU has native bf16 instructions (AVX-512 BF16 or AMX), read from its feature flags."""
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
            flags = f.read()
    except OSError:
        return False
    return any(flag in flags.split() for flag in _CPU_BF16_FLAGS)


def cpu_name(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """The CPU's model name, for benchmarks to say which CPU their figures come from."""
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def resolve_amp(choice: str, device, cpu_bf16: Optional[bool] = None):
    """The autocast dtype (a torch.dtype) for `choice` on `device` (a torch.device), or None for fp32.

    auto: on CUDA bf16 where supported, else fp16; on CPU bf16 when the CPU supports it natively, else off.
    bf16 on a CPU without native bf16 is used as asked, with a warning (SLOW_BF16).
    """
    import torch

    if choice not in AMP_CHOICES:
        raise ValueError(f"--amp must be one of {', '.join(AMP_CHOICES)}, got {choice!r}")
    if choice == "off":
        return None
    supported = None if device.type == "cuda" else (cpu_supports_bf16() if cpu_bf16 is None else cpu_bf16)
    if choice == "bf16":
        if supported is False:
            warnings.warn(SLOW_BF16, stacklevel=2)
        return torch.bfloat16
    if choice == "fp16":
        if device.type != "cuda":
            raise ValueError("--amp fp16 needs a CUDA device; on CPU use bf16 or off")
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if supported else None


def amp_name(dtype) -> str:
    import torch

    return {None: "off (fp32)", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def autocast(device, dtype):
    """An autocast context for `dtype` on `device` (a no-op context when dtype is None)."""
    import torch

    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def select_device(name: str = "auto"):
    """'auto' picks CUDA when present, else CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def set_threads(threads: Optional[int]) -> None:
    """--threads N: the CPU threads PyTorch computes with (intra-op N; inter-op N too where this process has not
    started parallel work yet); 0 or None leaves PyTorch's choice."""
    if threads is None or threads == 0:
        return
    if threads < 0:
        raise ValueError(f"--threads must be >= 0 (0: PyTorch's choice), got {threads}")
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # only possible before the first parallel work; a second run in one process keeps it
        pass
