"""Which device and dtype to run on: cuda, then mps, then cpu."""

from __future__ import annotations

import os

import torch


def pick_device() -> torch.device:
    """The best available device; `GPTNB_DEVICE` (e.g. ``cpu``) overrides the choice."""
    forced = os.environ.get("GPTNB_DEVICE")
    if forced:
        return torch.device(forced)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def has_native_bf16(device: torch.device | str | None = None) -> bool:
    """True on CUDA GPUs of compute capability 8.0 or newer (Ampere: A100, RTX 30xx, L4, H100, ...).

    Not `torch.cuda.is_bf16_supported()`: it also says True on older GPUs such as the T4 (7.5), where
    bf16 is emulated and slow.
    """
    device = torch.device(device or pick_device())
    return device.type == "cuda" and torch.cuda.get_device_capability(_cuda_index(device)) >= (8, 0)


def pick_dtype(device: torch.device | str | None = None, training: bool = False) -> torch.dtype:
    """The dtype for weights on `device`.

    bf16 on GPUs with native bf16 (compute capability 8.0 and newer); on older GPUs such as the T4,
    fp16 for inference and fp32 weights for training (`mixed_precision` then adds fp16 autocast with a
    loss scaler: fp16 weights themselves would overflow); fp32 on CPU and MPS, where half-precision
    matmuls are slow or unsupported.
    """
    device = torch.device(device or pick_device())
    if device.type != "cuda":
        return torch.float32
    if has_native_bf16(device):
        return torch.bfloat16
    return torch.float32 if training else torch.float16


def mixed_precision(device: torch.device | str | None, weights: torch.dtype) -> dict[str, bool]:
    """The Trainer's mixed-precision switch for fp32 `weights` on `device`: ``{"bf16": True}`` on GPUs
    with native bf16, ``{"fp16": True}`` (autocast plus a loss scaler) on older GPUs, ``{}`` elsewhere
    or when the weights are already in half precision."""
    device = torch.device(device or pick_device())
    if device.type != "cuda" or weights != torch.float32:
        return {}
    return {"bf16": True} if has_native_bf16(device) else {"fp16": True}


def describe(device: torch.device | str | None = None) -> str:
    """One line naming the device, its hardware and the dtype gptnb uses there."""
    device = torch.device(device or pick_device())
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(_cuda_index(device))
        hardware = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, compute capability {props.major}.{props.minor}"
    elif device.type == "mps":
        hardware = "Apple GPU"
    else:
        hardware = f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads"
    return f"{device.type} ({hardware}), dtype {str(pick_dtype(device)).removeprefix('torch.')}"
