"""Notebook 01's exercises (grouped-query attention, GPT-2's parameter count, RMSNorm) and quizzes.

Every check compares the learner's function with the library: transformers' `repeat_kv` and PyTorch's attention,
a model built on the meta device, transformers' `LlamaRMSNorm`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, GPT2Config
from transformers.models.llama.modeling_llama import LlamaRMSNorm, repeat_kv

from ..models import model_config
from . import Choice, call_answer, report


def _returned_tensor(got, call: str, shape: tuple, meaning: str) -> torch.Tensor:
    """`got` if it is a tensor of `shape`; else an `AssertionError` saying what came back instead."""
    if not isinstance(got, torch.Tensor):
        message = f"{call} returned {type(got).__name__}; return a torch.Tensor"
        raise AssertionError(message)  # noqa: TRY004 (feedback, see report)
    if tuple(got.shape) != shape:
        raise AssertionError(f"{call} has shape {tuple(got.shape)}; expected {meaning} = {shape}")
    return got.detach().float()


def _close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    return torch.allclose(got, expected, atol=1e-5, rtol=1e-4)


def _attention(q, k, v, **options) -> torch.Tensor:
    """PyTorch's attention on (heads, positions, head size) tensors."""
    return F.scaled_dot_product_attention(q[None], k[None], v[None], **options)[0]


def check_grouped_query_attention(grouped_query_attention) -> bool:
    """Exercise 1.1: `grouped_query_attention(q, k, v)` is causal attention with fewer key/value heads than query
    heads, each key/value head shared by a group of consecutive query heads. Checked against transformers' own path
    for grouped heads (`repeat_kv`, then PyTorch's causal `scaled_dot_product_attention`) on random tensors."""

    def check():
        generator = torch.Generator().manual_seed(1)
        for query_heads, kv_heads in ((9, 3), (4, 1), (2, 2)):
            q = torch.randn(query_heads, 5, 8, generator=generator)
            k, v = (torch.randn(kv_heads, 5, 8, generator=generator) for _ in range(2))
            call = f"grouped_query_attention(q, k, v) with {query_heads} query and {kv_heads} key/value heads"
            got = call_answer(grouped_query_attention, q.clone(), k.clone(), v.clone())
            got = _returned_tensor(got, call, tuple(q.shape), "(query heads, positions, head size)")
            if got.isnan().any():
                raise AssertionError(f"{call} has NaN: a query masked out every key (each position sees itself)")
            group = query_heads // kv_heads
            shared_k, shared_v = (repeat_kv(t[None], group)[0] for t in (k, v))
            if _close(got, _attention(q, shared_k, shared_v, is_causal=True)):
                continue
            if _close(got, _attention(q, k.repeat(group, 1, 1), v.repeat(group, 1, 1), is_causal=True)):
                raise AssertionError(
                    f"{call}: query head 1 used key/value head 1; consecutive query heads share one "
                    f"(heads 0-{group - 1} use key/value head 0): repeat_interleave, not repeat"
                )
            if _close(got, _attention(q, shared_k, shared_v)):
                raise AssertionError(f"{call}: later positions leak in: add the causal mask before the softmax")
            if _close(got, _attention(q, shared_k, shared_v, is_causal=True, scale=1.0)):
                raise AssertionError(f"{call}: divide the scores by sqrt(head size) before the softmax")
            expected = _attention(q, shared_k, shared_v, is_causal=True)
            head = int((~(got - expected).abs().le(1e-5)).flatten(1).any(dim=1).nonzero()[0])
            raise AssertionError(f"{call}: query head {head} differs from the library's attention")

    return report("1.1", check)


def _rms_norm_slips(x: torch.Tensor, weight: torch.Tensor, eps: float) -> dict[str, torch.Tensor]:
    """What common slips give, each with its hint."""
    mean_square = x.pow(2).mean(-1, keepdim=True)
    across_positions = x.pow(2).mean(0, keepdim=True)
    layer_norm = F.layer_norm(x, x.shape[-1:], weight, None, eps)
    return {
        "you subtracted the mean, as LayerNorm does: RMSNorm divides x itself by its root mean square": layer_norm,
        "multiply by the learned scale `weight` at the end": x * torch.rsqrt(mean_square + eps),
        "eps goes inside the square root: sqrt(mean(x**2) + eps)": weight * x / (mean_square.sqrt() + eps),
        "take the square root of the mean square": weight * x / (mean_square + eps),
        "average over each position's vector (the last dimension)": weight * x * torch.rsqrt(across_positions + eps),
    }


def check_rms_norm(rms_norm) -> bool:
    """Exercise 1.3: `rms_norm(x, weight, eps)` is Llama's RMSNorm: each position's vector divided by its root
    mean square, then scaled. Checked against transformers' `LlamaRMSNorm` with the same scale and eps."""

    def check():
        generator = torch.Generator().manual_seed(2)
        for offset, spread, eps in ((1.0, 1.0, 1e-5), (0.0, 0.1, 0.1)):
            x = offset + spread * torch.randn(5, 12, generator=generator)
            weight = torch.randn(12, generator=generator)
            norm = LlamaRMSNorm(12, eps=eps)
            with torch.no_grad():
                norm.weight.copy_(weight)
                expected = norm(x)
            call = f"rms_norm(x, weight, eps={eps})"
            got = call_answer(rms_norm, x.clone(), weight.clone(), eps)
            got = _returned_tensor(got, call, tuple(x.shape), "the shape of x")
            if _close(got, expected):
                continue
            for hint, slip in _rms_norm_slips(x, weight, eps).items():
                if _close(got, slip):
                    raise AssertionError(f"{call}: {hint}")
            row = int((~(got - expected).abs().le(1e-5)).any(dim=-1).nonzero()[0])
            raise AssertionError(f"{call} differs from LlamaRMSNorm, first at position {row}")

    return report("1.3", check)


def _meta_count(config) -> int:
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def _hint(difference: int, config) -> str:
    """What a common slip would make the formula miss, from the size of the difference."""
    vocab, positions, width = config.vocab_size, config.n_positions, config.n_embd
    hints = {
        vocab * width: "is the output layer counted? it is tied to the token embedding (one matrix, counted once)",
        -positions * width: "are the position embeddings (n_positions x n_embd) counted?",
        -2 * width: "is the final LayerNorm (scale and shift) counted?",
        -4 * width * config.n_layer: "are the two LayerNorms per block (scale and shift each) counted?",
    }
    return hints.get(
        difference, f"it is too {'high' if difference > 0 else 'low'}; compare part by part with the table of section 4"
    )


def check_gpt2_parameters(gpt2_parameters) -> bool:
    """Exercise 1.2: `gpt2_parameters(config)` counts a GPT-2's parameters from its config, by formula.

    Checked on GPT-2 medium's config and on a small made-up one, against models built on the meta device.
    """

    def check():
        configs = {
            "GPT-2 medium": model_config("gpt2-medium"),
            "a made-up GPT-2 (vocab 1000, 128 positions, width 64, 3 layers)": GPT2Config(
                vocab_size=1000, n_positions=128, n_embd=64, n_layer=3, n_head=4, bos_token_id=0, eos_token_id=0
            ),
        }
        for name, config in configs.items():
            got = call_answer(gpt2_parameters, config)
            if isinstance(got, bool) or not isinstance(got, int):
                message = f"for {name} it returned {got!r}; return a whole number (int)"
                raise AssertionError(message)  # noqa: TRY004 (feedback, see report)
            difference = got - _meta_count(config)
            if difference:
                raise AssertionError(f"for {name} your count is off: {_hint(difference, config)}")

    return report("1.2", check)


CAUSAL_MASK_QUIZ = (
    "While training, a GPT predicts every position of a text in one forward pass. Why does that teach it anything?",
    [
        Choice(
            "The causal mask hides each position's future, so predicting token t+1 is never a copy of it",
            True,
            "Right: position t attends to 1..t only, so every position is an honest next-token "
            "prediction and one pass yields a training signal at every position.",
        ),
        Choice(
            "Attention sees the whole text, so the model learns from the full context",
            False,
            "Without a mask, position t could read token t+1 and copy it; the loss would fall without the "
            "model learning to predict anything.",
        ),
        Choice(
            "It does not: the loss uses only the last position of each text",
            False,
            "The loss is averaged over every position; that is what makes training on long texts efficient.",
        ),
    ],
)

REPORTED_SIZE_QUIZ = (
    "The original lesson lists GPT-2 medium as 345M; the released model has about 355M parameters. Why?",
    [
        Choice(
            "The paper's counts match GPT-2's shapes with GPT-1's smaller vocabulary",
            True,
            "Right: section 4 recomputes all four sizes with GPT-1's vocabulary and gets the paper's numbers; "
            "OpenAI later said the original counts were wrong.",
        ),
        Choice(
            "The output layer is counted twice in the 355M",
            False,
            "The output layer is tied to the token embedding: one matrix, counted once in every count here.",
        ),
        Choice(
            "355M is 345M rounded differently",
            False,
            "Ten million is about 3%, far more than rounding; and the other three sizes are off in the "
            "same direction, most for the smallest model.",
        ),
        Choice(
            "The LayerNorms were left out of the paper's count",
            False,
            "All LayerNorms of GPT-2 medium add up to about a hundred thousand parameters, not ten million.",
        ),
    ],
)

STAND_IN_QUIZ = (
    "Offline, SmolLM2-135M-Instruct (Llama-style) stands in for GPT-2. Which part of a GPT-2 has it none of?",
    [
        Choice(
            "A learned position table (GPT-2's wpe)",
            True,
            "Right: it uses rotary positions, which rotate queries and keys inside attention and add no parameters.",
        ),
        Choice(
            "The causal mask", False, "Every GPT has it: without it the model could read the token it must predict."
        ),
        Choice("An output layer (LM head)", False, "It has one, tied to its token embedding as in GPT-2."),
        Choice(
            "An MLP in every block",
            False,
            "It has one, gated (SwiGLU, three matrices) instead of GPT-2's two matrices with GELU.",
        ),
    ],
)
