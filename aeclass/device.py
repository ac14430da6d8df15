"""Where and how tensors run: the device (chosen once), bf16 autocast, and the memory format of conv models."""
from __future__ import annotations

import contextlib
import functools
import platform

import torch
from torch import nn

from .errors import ConfigError


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device: expected auto, cpu, cuda or cuda:N, got '{name}'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"--device {name}: MPS is not available on this machine")
    return dev


def native_bf16(device: torch.device) -> bool:
    """Whether `device` has bf16 arithmetic in hardware: a CUDA GPU that supports it (Ampere and later), an x86
    CPU with AVX512-BF16 or AMX, an Arm CPU whose oneDNN has bf16 kernels. Elsewhere torch still runs bf16
    autocast, but by converting in software around fp32 kernels, far slower than plain fp32: on a 2-core AVX2
    CPU a fastcnn training step took about 15x fp32's time (`python benchmarks/precision.py`)."""
    if device.type == "cuda":  # not torch.cuda.is_bf16_supported(), which also says yes where bf16 is emulated
        if not torch.cuda.is_available():
            return False
        if torch.version.hip:  # AMD's GPUs that ROCm supports all have bf16
            return True
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_properties(index).major >= 8  # compute capability 8.0 (Ampere) and later
    return device.type == "cpu" and _cpu_has_bf16()


@functools.lru_cache(maxsize=None)  # a CPU's flags do not change while the process runs; autocast asks each step
def _cpu_has_bf16() -> bool:
    try:
        if platform.machine().lower() in ("x86_64", "amd64", "i686", "x86"):
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without these probes: do not guess that it is fast
        return False


def resolve_precision(device: torch.device, precision: str) -> str:
    """The precision a run computes in: 'auto' is bf16 where `device` has it in hardware (native_bf16), fp32
    elsewhere; 'fp32' and 'bf16' are themselves."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def precision_note(device: torch.device, precision: str) -> str | None:
    """One line for a run that asked for bf16 on a device that only emulates it; None otherwise."""
    if precision != "bf16" or native_bf16(device):
        return None
    what = "this CPU has neither AVX512-BF16 nor AMX" if device.type == "cpu" else f"{device} has no bf16 arithmetic"
    return (f"note: --precision bf16: {what}, so bf16 is emulated and training runs many times slower than in fp32; "
            "--precision auto (or fp32) computes in fp32 here")


def autocast(device: torch.device, precision: str):
    """bf16 autocast where the run computes in bf16 ('bf16', or 'auto' on a device with bf16 in hardware), a
    no-op context otherwise."""
    if resolve_precision(device, precision) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def use_channels_last(model: nn.Module, memory_format: str) -> bool:
    """channels_last (NHWC) lets oneDNN/cuDNN run convolutions without layout conversions: measured 1.4x
    (fp32) and 1.6x (bf16) faster training of the `hybrid` model on a 2-core CPU. 'auto' uses it when
    the model has 2-D convolutions; dense models gain nothing from it."""
    if memory_format == "auto":
        return any(isinstance(m, nn.Conv2d) for m in model.modules())
    return memory_format == "channels_last"


def memory_format_for(model: nn.Module, memory_format: str) -> torch.memory_format:
    """The torch memory format that `memory_format` ('auto' | 'channels_last' | 'contiguous') means for `model`."""
    return torch.channels_last if use_channels_last(model, memory_format) else torch.contiguous_format
