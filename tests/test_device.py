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
