"""Notebook 01's exercises (causal attention, GPT-2's parameter count, GPT-Neo's local mask) and quizzes.

Every check compares the learner's function with a reference computed independently: PyTorch's own
attention, a model built on the meta device, a mask from position arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, GPT2Config

from ..models import model_config
from . import Choice, call_answer, report


def _expected_mask(size: int, window: int | None = None) -> torch.Tensor:
    """True where query row i may attend to key column j: j <= i, and i - j < window when given."""
    distance = torch.arange(size)[:, None] - torch.arange(size)[None, :]
    allowed = distance >= 0
    return allowed & (distance < window) if window else allowed


def _compare_mask(got, expected: torch.Tensor, call: str) -> None:
    if not isinstance(got, torch.Tensor):
        message = f"{call} returned {type(got).__name__}; return a torch.Tensor"
        raise AssertionError(message)  # noqa: TRY004 (feedback, see report)
    if tuple(got.shape) != tuple(expected.shape):
        raise AssertionError(f"{call} has shape {tuple(got.shape)}; expected (query, key) = {tuple(expected.shape)}")
    if got.dtype != torch.bool:
        raise AssertionError(f"{call} has dtype {got.dtype}; return booleans (True = may attend), e.g. with .bool()")
    wrong = (got.cpu() != expected).nonzero()
    if len(wrong):
        row, col = wrong[0].tolist()
        relation = "a later" if col > row else "the same" if col == row else "an earlier"
        verb = "must not" if got[row, col] else "must"
        raise AssertionError(f"{call}: query {row} {verb} attend to key {col} ({relation} position)")


def check_causal_attention(causal_attention) -> bool:
    """Exercise 1.1: `causal_attention(q, k, v)` is one attention head with the causal mask; checked against
    PyTorch's `scaled_dot_product_attention(..., is_causal=True)` on random queries, keys and values."""

    def check():
        generator = torch.Generator().manual_seed(1)
        q, k, v = (torch.randn(6, 8, generator=generator) for _ in range(3))
        got = call_answer(causal_attention, q.clone(), k.clone(), v.clone())
        if not isinstance(got, torch.Tensor):
            message = f"causal_attention(q, k, v) returned {type(got).__name__}; return a torch.Tensor"
            raise AssertionError(message)  # noqa: TRY004 (feedback, see report)
        if tuple(got.shape) != tuple(v.shape):
            raise AssertionError(
                f"the output has shape {tuple(got.shape)}; expected (positions, head size) = "
                f"{tuple(v.shape)}: weights @ v"
            )
        expected = F.scaled_dot_product_attention(q[None], k[None], v[None], is_causal=True)[0]
        if torch.allclose(got, expected, atol=1e-5):
            return
        if torch.allclose(got, F.scaled_dot_product_attention(q[None], k[None], v[None])[0], atol=1e-5):
            raise AssertionError("the output uses later positions: mask the future before the softmax")
        if torch.allclose(
            got, F.scaled_dot_product_attention(q[None], k[None], v[None], is_causal=True, scale=1.0)[0], atol=1e-5
        ):
            raise AssertionError("the scores must be scaled by 1 / sqrt(head size) before the softmax")
        row = int((got - expected).abs().amax(dim=-1).gt(1e-5).nonzero()[0])
        raise AssertionError(f"the output differs from masked, scaled softmax attention, first at position {row}")

    return report("1.1", check)


def check_local_mask(local_mask) -> bool:
    """Exercise 1.3: `local_mask(size, window)` is GPT-Neo's local mask: causal, and only the last `window` keys."""

    def check():
        for size, window in ((6, 3), (5, 1), (4, 10), (8, 4)):
            got = call_answer(local_mask, size, window)
            _compare_mask(got, _expected_mask(size, window), f"local_mask({size}, window={window})")

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
        difference, f"it is too {'high' if difference > 0 else 'low'}; compare part by part with the table of section 3"
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
            "Right: section 3 recomputes all four sizes with GPT-1's vocabulary and gets the paper's numbers; "
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
