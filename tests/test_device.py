import pytest
import torch

from gptnb import device


def test_cpu_dtype_is_fp32_because_half_matmul_on_cpu_is_unsupported_or_slow():
    assert device.pick_dtype("cpu") == torch.float32
    assert device.pick_dtype("cpu", training=True) == torch.float32


def test_env_var_forces_device(monkeypatch):
    monkeypatch.setenv("GPTNB_DEVICE", "cpu")
    assert device.pick_device() == torch.device("cpu")


def test_describe_names_device_and_dtype():
    line = device.describe("cpu")
    assert line.startswith("cpu (") and "float32" in line


@pytest.mark.parametrize(
    ("gpu", "capability", "emulated_bf16", "inference", "training", "trainer_flags"),
    [
        # Colab's free T4: torch reports bf16 "supported" (emulated); gptnb must still pick fp16 / fp32 + fp16 AMP.
        ("Tesla T4", (7, 5), True, torch.float16, torch.float32, {"fp16": True}),
        ("Tesla V100", (7, 0), False, torch.float16, torch.float32, {"fp16": True}),
        ("NVIDIA A100", (8, 0), True, torch.bfloat16, torch.bfloat16, {"bf16": True}),
        ("NVIDIA H100", (9, 0), True, torch.bfloat16, torch.bfloat16, {"bf16": True}),
    ],
)
def test_cuda_dtype_follows_compute_capability_not_is_bf16_supported(
    monkeypatch, gpu, capability, emulated_bf16, inference, training, trainer_flags
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: emulated_bf16)
    assert device.pick_dtype("cuda") == inference, gpu
    assert device.pick_dtype("cuda", training=True) == training, gpu
    assert device.mixed_precision("cuda", torch.float32) == trainer_flags, gpu
    assert device.mixed_precision("cuda", torch.float16) == {}, gpu


@pytest.mark.parametrize("name", ["cpu", "mps"])
def test_cpu_and_mps_train_and_infer_in_fp32_without_mixed_precision(name):
    assert device.pick_dtype(name) == torch.float32
    assert device.pick_dtype(name, training=True) == torch.float32
    assert device.mixed_precision(name, torch.float32) == {}
    assert not device.has_native_bf16(name)
