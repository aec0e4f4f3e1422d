import math

import pytest
import torch

from gptnb import attention, device


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


PAIRS = [
    ("Tweet: a much longer tweet than the others, with many more words in it than any\nSentiment:", " positive"),
    ("Tweet: ok\nSentiment:", " negative"),
    ("Hi", " neutral"),
]


def _model_and_batch(architecture, make_tiny_llama, loss_on="completion"):
    """tiny-gpt2 or a tiny Llama (SmolLM2's architecture) with gptnb's attention, and a left-padded batch whose
    second and third rows start with pads that, under the causal mask, have no real token to attend to."""
    import gptnb
    from gptnb.collate import CompletionCollator, encode_pairs

    model, tokenizer = gptnb.load_model("tiny-gpt2", device="cpu", training=True)
    if architecture == "llama":
        model = attention.use_on(make_tiny_llama(tokenizer))
    assert model.config._attn_implementation == attention.PADS_ATTEND_TO_THEMSELVES
    batch = CompletionCollator(tokenizer.pad_token_id, loss_on)(encode_pairs(tokenizer, PAIRS, 64))
    assert (batch["attention_mask"][1:, :3] == 0).all()
    return model.train(), batch


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
@pytest.mark.parametrize("implementation", ["sdpa", attention.PADS_ATTEND_TO_THEMSELVES])
def test_left_padded_batch_gives_finite_loss_and_gradients_with_the_chosen_backends(
    architecture, implementation, make_tiny_llama
):
    """CPU has no cuDNN, so this checks the backends kept (math, here), with and without fully masked pad rows."""
    model, batch = _model_and_batch(architecture, make_tiny_llama, "all")
    model.set_attn_implementation(implementation)
    with device.padding_safe_attention("cuda"):
        loss = model(**batch).loss
        loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _attention_masks(model, batch) -> list[torch.Tensor]:
    """The boolean masks (batch, 1, query, key) the model hands `scaled_dot_product_attention` in one forward pass."""
    seen, sdpa = [], torch.nn.functional.scaled_dot_product_attention

    def recording(*args, attn_mask=None, **kwargs):
        seen.append(attn_mask)
        return sdpa(*args, attn_mask=attn_mask, **kwargs)

    with pytest.MonkeyPatch.context() as patch, torch.no_grad():
        patch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
        model(**batch)
    assert seen and all(mask is not None and mask.dtype == torch.bool for mask in seen)
    return seen


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_with_gptnb_attention_no_query_row_is_fully_masked(architecture, make_tiny_llama):
    """Plain SDPA masks hand the kernel rows with no key at all (so the check can fail); gptnb's do not. On such a
    row a softmax over scores masked with -inf, as a kernel without a special case computes it, is NaN."""
    model, batch = _model_and_batch(architecture, make_tiny_llama)
    for implementation, fully_masked in (("sdpa", True), (attention.PADS_ATTEND_TO_THEMSELVES, False)):
        model.set_attn_implementation(implementation)
        for mask in _attention_masks(model, batch):
            assert (~mask.any(-1)).any() == fully_masked, implementation
            by_hand = torch.softmax(torch.randn(mask.shape).masked_fill(~mask, -torch.inf), dim=-1)
            assert by_hand.isnan().any() == fully_masked, implementation


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_gptnb_attention_leaves_real_positions_loss_and_gradients_unchanged(architecture, make_tiny_llama):
    """Only the pads' own outputs change: the logits at real tokens, the loss (-100 at pads) and every gradient are
    those of transformers' own SDPA attention."""
    model, batch = _model_and_batch(architecture, make_tiny_llama, "all")
    model.eval()  # no dropout: both runs compute the same function
    real = batch["attention_mask"].bool()
    runs = {}
    for implementation in ("sdpa", attention.PADS_ATTEND_TO_THEMSELVES):
        model.set_attn_implementation(implementation)
        model.zero_grad()
        outputs = model(**{**batch, "logits_to_keep": 0, "labels": None})
        loss = model(**batch).loss
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        runs[implementation] = outputs.logits.detach(), loss.detach(), grads
    (plain, plain_loss, plain_grads), (ours, our_loss, our_grads) = runs.values()
    torch.testing.assert_close(ours[real], plain[real])
    assert not torch.allclose(ours[~real], plain[~real])  # the pads' outputs did change: the cure is in place
    torch.testing.assert_close(our_loss, plain_loss)
    for mine, theirs in zip(our_grads, plain_grads, strict=True):
        torch.testing.assert_close(mine, theirs)


def _attention_by_hand(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Attention as a kernel with no special case for rows that see no key computes it: their softmax over scores
    that are all -inf is NaN (0/0), as cuDNN's backward goes wrong on such rows (pytorch/pytorch#196678)."""
    groups = query.shape[1] // key.shape[1]  # grouped-query attention (Llama): share each key/value head
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scores = query @ key.transpose(-1, -2) * (scaling or query.shape[-1] ** -0.5)
    weights = torch.softmax(scores.masked_fill(~attention_mask, -torch.inf), dim=-1)
    return (weights @ value).transpose(1, 2).contiguous(), None


@pytest.fixture
def by_hand_kernels():
    """Two attention implementations with the kernel above: one with transformers' SDPA mask, one with gptnb's."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    names = {"sdpa_by_hand_plain": sdpa_mask, "sdpa_by_hand_gptnb": attention.pads_attend_to_themselves_mask}
    for name, mask in names.items():
        AttentionInterface.register(name, _attention_by_hand)
        AttentionMaskInterface.register(name, mask)
    yield list(names)
    for name in names:
        AttentionInterface._global_mapping.pop(name)
        AttentionMaskInterface._global_mapping.pop(name)


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_a_kernel_that_gives_fully_masked_rows_nan_trains_finite_only_with_gptnb_masks(
    architecture, make_tiny_llama, by_hand_kernels
):
    """The H200's failure, on a CPU: a NaN from a pad row reaches every real position (0 * NaN in weights @ values)
    and every gradient. With pads attending to themselves the same kernel gives the loss of transformers' SDPA."""
    model, batch = _model_and_batch(architecture, make_tiny_llama, "all")
    model.eval()  # no dropout: the losses compare
    losses = {}
    for implementation in ("sdpa", *by_hand_kernels):
        model.set_attn_implementation(implementation)
        model.zero_grad()
        losses[implementation] = loss = model(**batch).loss
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        finite = bool(torch.isfinite(loss)) and all(bool(torch.isfinite(g).all()) for g in grads)
        assert finite == (implementation != "sdpa_by_hand_plain"), implementation
    torch.testing.assert_close(losses["sdpa_by_hand_gptnb"], losses["sdpa"])


def test_unpadded_batches_keep_sdpas_is_causal_path():
    """No padding: no mask at all, so SDPA keeps its causal fast path (and its fused kernels on a GPU)."""
    import gptnb

    model, tokenizer = gptnb.load_model("tiny-gpt2", device="cpu")
    seen, sdpa = [], torch.nn.functional.scaled_dot_product_attention

    def recording(*args, attn_mask=None, is_causal=False, **kwargs):
        seen.append((attn_mask, is_causal))
        return sdpa(*args, attn_mask=attn_mask, is_causal=is_causal, **kwargs)

    with pytest.MonkeyPatch.context() as patch, torch.no_grad():
        patch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
        model(**tokenizer(["one two three", "four five six"], return_tensors="pt"))
    assert seen and all(mask is None and causal for mask, causal in seen)


def test_load_model_keeps_eager_models_eager():
    import gptnb

    neo, _ = gptnb.load_model("tiny-gpt-neo", device="cpu")  # GPT-Neo has no SDPA; eager never gives NaN rows
    assert neo.config._attn_implementation == "eager"


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


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_trains_in_bf16_on_left_padded_batches_with_pad_first_rows(monkeypatch, architecture, make_tiny_llama):
    """bf16 weights as an A100/H100 trains them, on a CPU: rows start with pads (under plain SDPA those rows attend to
    nothing; with gptnb's attention they attend to themselves); losses and gradients stay finite."""
    monkeypatch.setenv("GPTNB_DTYPE", "bfloat16")
    model, batch = _model_and_batch(architecture, make_tiny_llama)
    model.to(torch.bfloat16)
    assert model.dtype == torch.bfloat16
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(3):
        loss = model(**batch).loss
        loss.backward()
        assert torch.isfinite(loss), loss
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("lora_rank", [None, 4])
def test_finetune_trains_in_fp16_autocast_with_a_loss_scaler_on_cpu(monkeypatch, lora_rank):
    """What a T4 runs (fp32 weights, fp16 autocast, the Trainer's ``fp16=True`` with a GradScaler), on a CPU, through
    `gptnb.finetune` (every weight, or LoRA adapters) on left-padded batches with pad-first rows: every linear layer
    computes in float16, every optimizer step goes through the scaler, the weights stay float32 and every logged
    loss is finite. Without `gptnb.finetune.fp16_autocast_on_cpu` the layers compute in float32 and no scaler runs."""
    import gptnb
    from gptnb.collate import CompletionCollator, encode_pairs
    from gptnb.finetune import finetune

    monkeypatch.setenv("GPTNB_DTYPE", "float16")
    model, tokenizer = gptnb.load_model("tiny-gpt2", device="cpu", training=True)
    assert model.dtype == torch.float32
    batch = CompletionCollator(tokenizer.pad_token_id, "completion")(encode_pairs(tokenizer, PAIRS, 64))
    assert (batch["attention_mask"][1:, :3] == 0).all()  # the batches finetune makes of PAIRS, in order
    computed_in, scaler_updates = set(), []
    for module in model.modules():
        if type(module).__name__ in ("Linear", "Conv1D"):
            module.register_forward_hook(lambda module, inputs, output: computed_in.add(output.dtype))
    update = torch.amp.GradScaler.update
    monkeypatch.setattr(torch.amp.GradScaler, "update", lambda self, *a: scaler_updates.append(update(self, *a)))
    result = finetune(model, tokenizer, PAIRS * 4, epochs=1, batch_size=3, group_by_length=False, progress=False,
                      lora_rank=lora_rank)  # fmt: skip
    assert computed_in == {torch.float16}
    assert len(scaler_updates) == result.details["steps"] == 4
    assert result.model.dtype == torch.float32
    losses = [entry["loss"] for entry in result.log_history if "loss" in entry]
    assert losses and all(math.isfinite(loss) for loss in losses), losses
