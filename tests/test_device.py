import pytest
import torch

from gptnb import device


@pytest.fixture(autouse=True)
def _no_forced_dtype(monkeypatch):
    """These tests check the device's own choice; the ones about `GPTNB_DTYPE` set it themselves."""
    monkeypatch.delenv("GPTNB_DTYPE", raising=False)


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


def _sdpa_switches() -> dict[str, bool]:
    cuda = torch.backends.cuda
    return {
        "flash": cuda.flash_sdp_enabled(),
        "cudnn": cuda.cudnn_sdp_enabled(),
        "mem_efficient": cuda.mem_efficient_sdp_enabled(),
        "math": cuda.math_sdp_enabled(),
    }


ALL_ON = {"flash": True, "cudnn": True, "mem_efficient": True, "math": True}
SAFE = {"flash": False, "cudnn": False, "mem_efficient": True, "math": True}


def test_padding_safe_attention_leaves_only_memory_efficient_and_math_on_cuda_then_restores():
    """The switches are process-wide flags, so this runs on a machine without a GPU too."""
    assert _sdpa_switches() == ALL_ON
    with device.padding_safe_attention("cuda"):
        assert _sdpa_switches() == SAFE
    assert _sdpa_switches() == ALL_ON


def test_overlapping_blocks_restore_only_when_the_last_one_ends():
    first, second = device.padding_safe_attention("cuda"), device.padding_safe_attention("cuda")
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert _sdpa_switches() == SAFE  # the second block (a job beside generation) still runs
    second.__exit__(None, None, None)
    assert _sdpa_switches() == ALL_ON


def test_padding_safe_attention_changes_nothing_off_cuda():
    for name in ("cpu", "mps"):
        with device.padding_safe_attention(name):
            assert _sdpa_switches() == ALL_ON


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_left_padded_batch_gives_finite_loss_and_gradients_with_the_chosen_backends(architecture, make_tiny_llama):
    """CPU has no cuDNN, so this checks the backends kept (math, here) on pad rows that attend to nothing."""
    import gptnb
    from gptnb.collate import CompletionCollator, encode_pairs

    model, tokenizer = gptnb.load_model("tiny-gpt2", device="cpu", training=True)
    if architecture == "llama":
        model = make_tiny_llama(tokenizer).train()
    assert model.config._attn_implementation == "sdpa"
    model.train()
    pairs = [("Tweet: a long tweet with many more words than the next\nSentiment:", " positive"), ("Hi", " negative")]
    batch = CompletionCollator(tokenizer.pad_token_id, "all")(encode_pairs(tokenizer, pairs, 64))
    assert (batch["attention_mask"][:, 0] == 0).any()  # a left-padded row: its pads attend to nothing
    with device.padding_safe_attention("cuda"):
        loss = model(**batch).loss
        loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize(
    ("value", "inference", "training", "trainer_flags"),
    [
        # as an A100/H100 does: bf16 weights, and bf16 autocast for the fp32 weights notebook 04 loads
        ("bfloat16", torch.bfloat16, torch.bfloat16, {"bf16": True}),
        # as a T4 does: fp16 inference, fp32 weights + fp16 autocast for training
        ("float16", torch.float16, torch.float32, {"fp16": True}),
        ("float32", torch.float32, torch.float32, {}),
        (" BFloat16 ", torch.bfloat16, torch.bfloat16, {"bf16": True}),
    ],
)
@pytest.mark.parametrize("name", ["cpu", "mps", "cuda"])
def test_gptnb_dtype_forces_the_gpu_path_on_any_device(monkeypatch, name, value, inference, training, trainer_flags):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (7, 5))  # a T4, if it is asked
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setenv("GPTNB_DTYPE", value)
    assert device.pick_dtype(name) == inference
    assert device.pick_dtype(name, training=True) == training
    # the Trainer autocasts off CUDA only when told it runs on the CPU
    off_cuda = {"use_cpu": name == "cpu"} if trainer_flags and name != "cuda" else {}
    assert device.mixed_precision(name, torch.float32) == {**trainer_flags, **off_cuda}
    assert device.mixed_precision(name, torch.bfloat16) == {}  # weights already in half precision


def test_describe_and_info_say_the_dtype_is_forced(monkeypatch):
    from gptnb import cli

    monkeypatch.setenv("GPTNB_DTYPE", "bfloat16")
    assert device.describe("cpu").endswith("dtype bfloat16 (forced by GPTNB_DTYPE)")
    monkeypatch.setenv("GPTNB_OFFLINE", "1")
    data = cli.info()
    assert data["dtype"] == "bfloat16" and data["dtype_forced"] is True
    monkeypatch.delenv("GPTNB_DTYPE")
    assert cli.info()["dtype"] == str(device.pick_dtype()).removeprefix("torch.")
    assert cli.info()["dtype_forced"] is False


@pytest.mark.parametrize("value", ["bf16", "float64", "half"])
def test_a_bad_gptnb_dtype_is_one_clear_line(monkeypatch, capsys, value):
    from gptnb import cli

    monkeypatch.setenv("GPTNB_DTYPE", value)
    with pytest.raises(ValueError, match=f"^GPTNB_DTYPE='{value}' is not a dtype gptnb knows; use one of float32, "):
        device.pick_dtype("cpu")
    monkeypatch.setenv("GPTNB_OFFLINE", "1")
    assert cli.main(["info"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"gptnb: error: GPTNB_DTYPE='{value}' is not a dtype")


def test_load_model_follows_gptnb_dtype(monkeypatch):
    import gptnb

    monkeypatch.setenv("GPTNB_DTYPE", "bfloat16")
    model, _ = gptnb.load_model("tiny-gpt2", device="cpu")
    assert model.dtype == torch.bfloat16
    monkeypatch.setenv("GPTNB_DTYPE", "float16")
    assert gptnb.load_model("tiny-gpt2", device="cpu")[0].dtype == torch.float16
    assert gptnb.load_model("tiny-gpt2", device="cpu", training=True)[0].dtype == torch.float32


def test_tiny_gpt2_trains_in_bf16_on_left_padded_batches_with_fully_masked_pad_rows(monkeypatch):
    """bf16 weights as an A100/H100 trains them, on a CPU: rows whose pads come before any real token attend to
    nothing (their whole causal window is padding); losses and gradients stay finite on the backends used here."""
    import gptnb
    from gptnb.collate import CompletionCollator, encode_pairs

    monkeypatch.setenv("GPTNB_DTYPE", "bfloat16")
    model, tokenizer = gptnb.load_model("tiny-gpt2", device="cpu", training=True)
    assert model.dtype == torch.bfloat16
    model.train()
    long = "Tweet: a much longer tweet than the others, with many more words in it than any\nSentiment:"
    pairs = [(long, " positive"), ("Tweet: ok\nSentiment:", " negative"), ("Hi", " neutral")]
    batch = CompletionCollator(tokenizer.pad_token_id)(encode_pairs(tokenizer, pairs, 64))
    assert (batch["attention_mask"][1:, :3] == 0).all()  # two rows start with pads: fully masked query rows
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(3):
        loss = model(**batch).loss
        loss.backward()
        assert torch.isfinite(loss), loss
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        optimizer.step()
        optimizer.zero_grad()
