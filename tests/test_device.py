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
