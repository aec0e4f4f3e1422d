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


def pick_dtype(device: torch.device | str | None = None, training: bool = False) -> torch.dtype:
    """The dtype for weights on `device`.

    bf16 on GPUs that support it (Ampere and newer); fp16 for inference on older
    GPUs such as the T4, whose fp16 training overflows without a loss scaler, so
    training there stays fp32; fp32 on CPU and MPS, where half-precision matmuls
    are slow or unsupported.
    """
    device = torch.device(device or pick_device())
    if device.type != "cuda":
        return torch.float32
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32 if training else torch.float16


def describe(device: torch.device | str | None = None) -> str:
    """One line naming the device, its hardware and the dtype gptnb uses there."""
    device = torch.device(device or pick_device())
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        hardware = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    elif device.type == "mps":
        hardware = "Apple GPU"
    else:
        hardware = f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads"
    return f"{device.type} ({hardware}), dtype {str(pick_dtype(device)).removeprefix('torch.')}"
