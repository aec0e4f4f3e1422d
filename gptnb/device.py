"""Which device and dtype to run on: cuda, then mps, then cpu; `GPTNB_DEVICE` and `GPTNB_DTYPE` force them."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager

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


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def forced_dtype() -> torch.dtype | None:
    """The dtype `GPTNB_DTYPE` forces (``float32``, ``bfloat16`` or ``float16``), None when it is unset.

    It makes any device take the dtype path of a GPU that runs in it, e.g. ``GPTNB_DTYPE=bfloat16`` on a CPU
    (what CI does, to find the dtype failures of a GPU run without a GPU). A bad value raises a one-line ValueError.
    """
    value = os.environ.get("GPTNB_DTYPE", "").strip()
    if not value:
        return None
    if value.lower() not in DTYPES:
        raise ValueError(f"GPTNB_DTYPE={value!r} is not a dtype gptnb knows; use one of {', '.join(DTYPES)}")
    return DTYPES[value.lower()]


def pick_dtype(device: torch.device | str | None = None, training: bool = False) -> torch.dtype:
    """The dtype for weights on `device`.

    bf16 on GPUs with native bf16 (compute capability 8.0 and newer); on older GPUs such as the T4,
    fp16 for inference and fp32 weights for training (`mixed_precision` then adds fp16 autocast with a
    loss scaler: fp16 weights themselves would overflow); fp32 on CPU and MPS, where half-precision
    matmuls are slow or unsupported.

    `GPTNB_DTYPE` forces the choice on every device, as a GPU of that kind would make it: ``bfloat16``
    everywhere (an A100/H100), ``float16`` for inference and float32 weights for training (a T4),
    ``float32`` everywhere (and no mixed precision).
    """
    forced = forced_dtype()
    if forced is not None:
        return torch.float32 if forced == torch.float16 and training else forced
    device = torch.device(device or pick_device())
    if device.type != "cuda":
        return torch.float32
    if has_native_bf16(device):
        return torch.bfloat16
    return torch.float32 if training else torch.float16


def mixed_precision(device: torch.device | str | None, weights: torch.dtype) -> dict[str, bool]:
    """The Trainer's mixed-precision switch for fp32 `weights` on `device`: ``{"bf16": True}`` on GPUs
    with native bf16, ``{"fp16": True}`` (autocast plus a loss scaler) on older GPUs, ``{}`` elsewhere
    or when the weights are already in half precision. Under `GPTNB_DTYPE` the flag follows the forced dtype
    on any device (``bfloat16``: bf16 autocast, on a CPU too; ``float16``: fp16 autocast; ``float32``: none);
    off CUDA the dict then also holds ``use_cpu``, which the Trainer needs before it autocasts on a CPU. On a CPU
    ``fp16`` alone autocasts nothing (accelerate keeps fp16 mixed precision for accelerators):
    `gptnb.finetune.fp16_autocast_on_cpu` adds the autocast and the loss scaler to the Trainers gptnb runs."""
    device = torch.device(device or pick_device())
    forced = forced_dtype()
    if forced is not None:
        if weights != torch.float32 or forced == torch.float32:
            return {}
        flag = {"bf16": True} if forced == torch.bfloat16 else {"fp16": True}
        # off CUDA the Trainer accepts half-precision autocast only when told it runs on the CPU
        return flag if device.type == "cuda" else {**flag, "use_cpu": device.type == "cpu"}
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
    dtype = str(pick_dtype(device)).removeprefix("torch.")
    forced = " (forced by GPTNB_DTYPE)" if forced_dtype() is not None else ""
    return f"{device.type} ({hardware}), dtype {dtype}{forced}"


_sdpa_lock = threading.Lock()
_sdpa_users = 0
_sdpa_saved: tuple[bool, bool] = (True, True)


def _set_fused_sdpa(flash: bool, cudnn: bool) -> None:
    torch.backends.cuda.enable_flash_sdp(flash)
    torch.backends.cuda.enable_cudnn_sdp(cudnn)


@contextmanager
def padding_safe_attention(device: torch.device | str | None = None):
    """On CUDA, keep `scaled_dot_product_attention` off its cuDNN and flash backends inside this block.

    Why: with an ``attn_mask``, cuDNN's backward gives NaN query gradients on Hopper GPUs (H100, H200)
    since torch 2.11 when a row's logsumexp is very negative and the length is 64 past a multiple of 128
    (pytorch/pytorch#196678; huggingface/trl#7181 trains cleanly with ``enable_cudnn_sdp(False)``). The
    left-padded batches of `gptnb.collate.CompletionCollator` pass a mask whenever they hold padding, and pad rows,
    which attend to nothing under the causal mask, have a logsumexp of -inf. One NaN then reaches every
    weight. The memory-efficient and math backends are clean there and give fully masked rows zeros
    (torch >= 2.5); flash attention takes no mask anyway. This is the likely cause of the NaN training
    seen on an H200 in bf16. The cure in place is `gptnb.attention` (models loaded by gptnb have no fully
    masked rows: each pad attends to itself); this block is a second guard, kept until a GPU run shows
    that the first suffices (neither is verified on a GPU yet). Left-padded batched
    generation runs under it too: its pad rows also attend to nothing, and torch 2.5 made such rows give
    zeros in the math and fused kernels (pytorch/pytorch#133882), with no such promise found for cuDNN.

    Elsewhere (CPU, MPS) nothing changes. The switches are process-wide, so overlapping blocks (a
    training job beside batched generation in the server) share one setting, restored when the last ends.
    """
    global _sdpa_users, _sdpa_saved
    if torch.device(device or pick_device()).type != "cuda":
        yield
        return
    with _sdpa_lock:
        if _sdpa_users == 0:
            _sdpa_saved = (torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.cudnn_sdp_enabled())
            _set_fused_sdpa(flash=False, cudnn=False)
        _sdpa_users += 1
    try:
        yield
    finally:
        with _sdpa_lock:
            _sdpa_users -= 1
            if _sdpa_users == 0:
                _set_fused_sdpa(*_sdpa_saved)
