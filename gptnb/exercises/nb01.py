"""Notebook 01's exercises (SmolLM2's grouped-query attention from its weights, GPT-2's parameter count, a whole
SmolLM2 block) and quizzes.

Every check compares the learner's function with the library: transformers' `LlamaAttention` and
`LlamaDecoderLayer` on random layers, and a model built on the meta device. Over 300 lines: each check carries
the slips it names (a reference computed each wrong way), and the quizzes' texts sit beside them, one module per
notebook as for the other notebooks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, GPT2Config

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


def _first_difference(got: torch.Tensor, expected: torch.Tensor) -> int:
    """The first position (row) where `got` and `expected` differ."""
    return int((~(got - expected).abs().le(1e-5)).any(dim=-1).nonzero()[0])


def _tiny_llama_layer(n_head: int, n_kv_head: int, seed: int):
    """The first block of a random one-layer Llama (SmolLM2's architecture) with `n_head` query heads of size 8
    sharing `n_kv_head` key/value heads, and its rotary-position module."""
    from transformers import LlamaConfig, LlamaForCausalLM

    width = 8 * n_head
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=width,
        intermediate_size=3 * width,
        num_hidden_layers=1,
        num_attention_heads=n_head,
        num_key_value_heads=n_kv_head,
        max_position_embeddings=64,
        rms_norm_eps=1e-2,  # large enough that leaving it out shows
        attn_implementation="eager",
    )
    with torch.random.fork_rng(devices=[]):  # the learner's own random state stays as it was
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).eval()
        for norm in (model.model.layers[0].input_layernorm, model.model.layers[0].post_attention_layernorm):
            torch.nn.init.normal_(norm.weight, 1.0, 0.5)  # a scale that is not all ones, so that it must be applied
    return model.model.layers[0], model.model.rotary_emb


def _causal(positions: int) -> torch.Tensor:
    """The causal mask as numbers, shaped as transformers' attention layers take it: (1, 1, queries, keys)."""
    return torch.full((positions, positions), float("-inf")).triu(diagonal=1)[None, None]


def _gqa_by_formula(h, attn, n_head, n_kv_head, *, interleave=True, masked=True, scaled=True, project=True):
    """The reference computation and its common slips: attention of h (positions, width) with `attn`'s weights."""
    positions, width = h.shape
    d_k = width // n_head
    q, k, v = (h @ linear.weight.T for linear in (attn.q_proj, attn.k_proj, attn.v_proj))
    q = q.view(positions, n_head, d_k).transpose(0, 1)
    k, v = (t.view(positions, n_kv_head, d_k).transpose(0, 1) for t in (k, v))
    group = n_head // n_kv_head
    k, v = (t.repeat_interleave(group, 0) if interleave else t.repeat(group, 1, 1) for t in (k, v))
    scores = q @ k.transpose(-2, -1) / (d_k**0.5 if scaled else 1.0)
    weights = (scores + _causal(positions)[0, 0] if masked else scores).softmax(dim=-1)
    merged = (weights @ v).transpose(0, 1).reshape(positions, width)
    return merged @ attn.o_proj.weight.T if project else merged


def check_grouped_query_attention(grouped_query_attention) -> bool:
    """Exercise 1.1: `grouped_query_attention(h, attn, n_head, n_kv_head)` is SmolLM2's causal multi-head attention
    of h (positions, width) with the weights of the Llama attention module `attn` (rotary positions left out):
    project, split into heads, share each key/value head with a group of consecutive query heads, attend, merge,
    project. Checked against the module itself (`LlamaAttention`, its rotation turned off) on random layers."""

    def check():
        for n_head, n_kv_head in ((6, 2), (4, 1), (2, 2)):
            layer, _ = _tiny_llama_layer(n_head, n_kv_head, seed=n_head)
            attn, h = layer.self_attn, torch.randn(5, 8 * n_head, generator=torch.Generator().manual_seed(1))
            no_rotation = (torch.ones(1, 5, 8), torch.zeros(1, 5, 8))  # cos 1, sin 0: each vector stays as it is
            with torch.no_grad():
                expected = attn(h[None], position_embeddings=no_rotation, attention_mask=_causal(5))[0][0]
                call = f"grouped_query_attention(h, attn, n_head={n_head}, n_kv_head={n_kv_head})"
                got = call_answer(grouped_query_attention, h.clone(), attn, n_head, n_kv_head)
                got = _returned_tensor(got, call, tuple(h.shape), "(positions, width)")
                if _close(got, expected):
                    continue
                if got.isnan().any():
                    raise AssertionError(f"{call} has NaN: a query masked out every key (each position sees itself)")
                slips = {
                    "consecutive query heads share one key/value head (heads 0-2 of 6 use key/value head 0): "
                    "repeat_interleave, not repeat": dict(interleave=False),
                    "later positions leak in: add the causal mask before the softmax": dict(masked=False),
                    "divide the scores by sqrt(d_k) before the softmax": dict(scaled=False),
                    "the merged heads go through the output projection o_proj last": dict(project=False),
                }
                for hint, slip in slips.items():
                    if _close(got, _gqa_by_formula(h, attn, n_head, n_kv_head, **slip)):
                        raise AssertionError(f"{call}: {hint}")
            position = _first_difference(got, expected)
            raise AssertionError(f"{call} differs from LlamaAttention, first at position {position}")

    return report("1.1", check)


def _block_slips(x, layer, attend) -> dict[str, torch.Tensor]:
    """What common slips in a Llama block give, each with its hint."""
    mlp, first, second = layer.mlp, layer.input_layernorm, layer.post_attention_layernorm

    def swiglu(h, act=F.silu, gate_on_up=False):
        gate, up = h @ mlp.gate_proj.weight.T, h @ mlp.up_proj.weight.T
        gate, up = (up, gate) if gate_on_up else (gate, up)
        return (act(gate) * up) @ mlp.down_proj.weight.T

    def rms_norm(t, norm):
        return norm(t)  # the library's LlamaRMSNorm

    def block(norm=rms_norm, act=F.silu, gate_on_up=False, residual=True):
        after = attend(norm(x, first)) + (x if residual else 0)
        return swiglu(norm(after, second), act, gate_on_up) + (after if residual else 0)

    def layer_norm(t, norm):
        return F.layer_norm(t, t.shape[-1:], norm.weight, None, norm.variance_epsilon)

    def unscaled(t, norm):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)

    def no_eps(t, norm):
        return norm.weight * t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True))

    post_norm = first(x + attend(x))  # the original Transformer's order: norm after each residual
    return {
        "add each sublayer's output to its input (the residual): x = x + attention(...), then x = x + mlp(...)": block(
            residual=False
        ),
        "you subtracted the mean, as LayerNorm does: RMSNorm divides x itself by its root mean square": block(
            layer_norm
        ),
        "multiply the normalised vector by the norm's learned scale (`weight`)": block(unscaled),
        "eps goes inside the square root: rsqrt(mean(x**2) + eps)": block(no_eps),
        "the SiLU goes on gate_proj's output, which then multiplies up_proj's": block(gate_on_up=True),
        "SwiGLU uses SiLU (x * sigmoid(x)), not GELU": block(act=F.gelu),
        "normalise before each sublayer, not after (pre-norm: x + f(norm(x)))": second(post_norm + swiglu(post_norm)),
    }


def check_llama_block(llama_block) -> bool:
    """Exercise 1.3: `llama_block(x, layer, attend)` is one SmolLM2 (Llama) block on x (positions, width): RMSNorm,
    the given attention `attend`, the residual, RMSNorm, the SwiGLU MLP, the residual. Checked against the library's
    `LlamaDecoderLayer` (rotary positions included) on random layers whose norms have a scale of their own."""

    def check():
        for n_head, n_kv_head, seed in ((6, 2, 3), (4, 4, 4)):
            layer, rotary = _tiny_llama_layer(n_head, n_kv_head, seed)
            x = 0.5 + torch.randn(5, 8 * n_head, generator=torch.Generator().manual_seed(seed))  # mean not zero
            rotation = rotary(x[None], torch.arange(5)[None])

            def attend(h):
                """The block's attention (rotary positions, grouped heads, causal mask) of h (positions, width)."""
                return layer.self_attn(h[None], position_embeddings=rotation, attention_mask=_causal(len(h)))[0][0]

            with torch.no_grad():
                expected = layer(x[None], attention_mask=_causal(5), position_embeddings=rotation)
                expected = (expected[0] if isinstance(expected, tuple) else expected)[0]  # a tuple before 5.x
                call = f"llama_block(x, layer, attend) with {n_head} query and {n_kv_head} key/value heads"
                got = _returned_tensor(
                    call_answer(llama_block, x.clone(), layer, attend), call, tuple(x.shape), "(positions, width)"
                )
                if _close(got, expected):
                    continue
                for hint, slip in _block_slips(x, layer, attend).items():
                    if _close(got, slip):
                        raise AssertionError(f"{call}: {hint}")
            position = _first_difference(got, expected)
            raise AssertionError(f"{call} differs from LlamaDecoderLayer, first at position {position}")

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
