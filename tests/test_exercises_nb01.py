"""Notebook 01's exercise checks: a right answer passes; a wrong one and the placeholder are told apart;
under nbgrader a wrong answer raises. Quizzes have a right choice and an explanation for every choice."""

from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F

from gptnb.exercises import NOT_ANSWERED, RIGHT, nb01


def placeholder(*args):
    raise NotImplementedError()


def grouped_query_attention(h, attn, n_head, n_kv_head, interleave=True, masked=True, scale=True, project=True):
    positions, width = h.shape
    d_k = width // n_head
    q = (h @ attn.q_proj.weight.T).view(positions, n_head, d_k).transpose(0, 1)
    k, v = ((h @ p.weight.T).view(positions, n_kv_head, d_k).transpose(0, 1) for p in (attn.k_proj, attn.v_proj))
    group = n_head // n_kv_head
    k, v = (t.repeat_interleave(group, dim=0) if interleave else t.repeat(group, 1, 1) for t in (k, v))
    scores = q @ k.transpose(-2, -1) / (d_k**0.5 if scale else 1.0)
    if masked:
        scores = scores + torch.full(scores.shape[-2:], float("-inf")).triu(diagonal=1)
    merged = (scores.softmax(dim=-1) @ v).transpose(0, 1).reshape(positions, width)
    return merged @ attn.o_proj.weight.T if project else merged


def rms_norm(x, norm, *, centred=False, scaled=True, eps=True):
    x = x - x.mean(-1, keepdim=True) if centred else x
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + (norm.variance_epsilon if eps else 0))
    return norm.weight * x if scaled else x


def llama_block(x, layer, attend, *, act=F.silu, gate_on_up=False, residual=True, pre_norm=True, **norm):
    first, second, mlp = layer.input_layernorm, layer.post_attention_layernorm, layer.mlp

    def swiglu(h):
        gate, up = h @ mlp.gate_proj.weight.T, h @ mlp.up_proj.weight.T
        return (act(up if gate_on_up else gate) * (gate if gate_on_up else up)) @ mlp.down_proj.weight.T

    if not pre_norm:
        x = rms_norm(x + attend(x), first, **norm)
        return rms_norm(x + swiglu(x), second, **norm)
    x = x * residual + attend(rms_norm(x, first, **norm))
    return x * residual + swiglu(rms_norm(x, second, **norm))


def gpt2_parameters(config):
    vocab, positions, width, layers = config.vocab_size, config.n_positions, config.n_embd, config.n_layer
    attention = width * 3 * width + 3 * width + width * width + width
    mlp = width * 4 * width + 4 * width + 4 * width * width + width
    return vocab * width + positions * width + layers * (attention + mlp + 4 * width) + 2 * width


def gqa(**options):
    return lambda h, attn, n_head, n_kv_head: grouped_query_attention(h, attn, n_head, n_kv_head, **options)


def block(**options):
    return lambda x, layer, attend: llama_block(x, layer, attend, **options)


def told(check, answer, capsys):
    passed = check(answer)
    return passed, capsys.readouterr().out.strip()


@pytest.mark.parametrize(
    "check, exercise, right, wrong, hint",
    [
        (
            nb01.check_grouped_query_attention,
            "1.1",
            grouped_query_attention,
            gqa(interleave=False),
            "repeat_interleave",
        ),
        (nb01.check_grouped_query_attention, "1.1", grouped_query_attention, gqa(masked=False), "causal mask"),
        (nb01.check_grouped_query_attention, "1.1", grouped_query_attention, gqa(scale=False), "sqrt(d_k)"),
        (nb01.check_grouped_query_attention, "1.1", grouped_query_attention, gqa(project=False), "o_proj"),
        (
            nb01.check_grouped_query_attention,
            "1.1",
            grouped_query_attention,
            lambda h, attn, n_head, n_kv_head: h,
            "position 0",
        ),
        (
            nb01.check_grouped_query_attention,
            "1.1",
            grouped_query_attention,
            lambda h, attn, n_head, n_kv_head: h[:, :8],
            "shape",
        ),
        (
            nb01.check_grouped_query_attention,
            "1.1",
            grouped_query_attention,
            lambda h, attn, n_head, n_kv_head: h / 0 * 0,
            "NaN",
        ),
        (nb01.check_llama_block, "1.3", llama_block, block(residual=False), "residual"),
        (nb01.check_llama_block, "1.3", llama_block, block(centred=True), "mean"),
        (nb01.check_llama_block, "1.3", llama_block, block(scaled=False), "`weight`"),
        (nb01.check_llama_block, "1.3", llama_block, block(eps=False), "inside the square root"),
        (nb01.check_llama_block, "1.3", llama_block, block(gate_on_up=True), "gate_proj"),
        (nb01.check_llama_block, "1.3", llama_block, block(act=F.gelu), "not GELU"),
        (nb01.check_llama_block, "1.3", llama_block, block(pre_norm=False), "pre-norm"),
        (
            nb01.check_llama_block,
            "1.3",
            llama_block,
            lambda x, layer, attend: llama_block(x, layer, attend).tolist(),
            "torch.Tensor",
        ),
        (
            nb01.check_llama_block,
            "1.3",
            llama_block,
            lambda x, layer, attend: llama_block(x, layer, attend) + 0.01,
            "position 0",
        ),
        (
            nb01.check_gpt2_parameters,
            "1.2",
            gpt2_parameters,
            lambda config: gpt2_parameters(config) + config.vocab_size * config.n_embd,
            "tied to the token embedding",
        ),
        (
            nb01.check_gpt2_parameters,
            "1.2",
            gpt2_parameters,
            lambda config: gpt2_parameters(config) - config.n_positions * config.n_embd,
            "position embeddings",
        ),
        (nb01.check_gpt2_parameters, "1.2", gpt2_parameters, lambda config: 354_823_168, "off"),
    ],
)
def test_checks_tell_right_wrong_and_unanswered(check, exercise, right, wrong, hint, capsys):
    assert told(check, right, capsys) == (True, f"Exercise {exercise}: {RIGHT}")
    passed, line = told(check, wrong, capsys)
    assert not passed and line.startswith(f"Exercise {exercise}: not yet:") and hint in line, line
    passed, line = told(check, placeholder, capsys)
    assert not passed and line.startswith(f"Exercise {exercise}: {NOT_ANSWERED}"), line


def test_a_crashing_answer_is_feedback(capsys):
    passed, line = told(nb01.check_grouped_query_attention, lambda h, attn, n_head, n_kv_head: 1 / 0, capsys)
    assert not passed and "ZeroDivisionError" in line


@pytest.mark.parametrize(
    "check, wrong",
    [
        (nb01.check_grouped_query_attention, gqa(masked=False)),
        (nb01.check_llama_block, lambda x, layer, attend: x),
        (nb01.check_gpt2_parameters, lambda config: 1),
    ],
)
def test_wrong_answers_raise_under_nbgrader(check, wrong, monkeypatch, capsys):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(AssertionError, match="not yet"):
        check(wrong)


@pytest.mark.parametrize("question, choices", [nb01.CAUSAL_MASK_QUIZ, nb01.REPORTED_SIZE_QUIZ, nb01.STAND_IN_QUIZ])
def test_quizzes_have_one_right_choice_and_explain_every_choice(question, choices):
    assert question.endswith("?") and sum(choice.correct for choice in choices) == 1
    assert all(choice.why for choice in choices)


def test_the_notebook_prints_each_quiz_question_and_its_choices_in_markdown():
    notebook = nbformat.read(Path(__file__).resolve().parent.parent / "notebooks" / "01_gpt_family.ipynb", 4)
    quizzes = {
        f"nb01.{name}": getattr(nb01, name) for name in ("CAUSAL_MASK_QUIZ", "REPORTED_SIZE_QUIZ", "STAND_IN_QUIZ")
    }
    shown = []
    for before, cell in zip(notebook.cells, notebook.cells[1:]):
        for name, (question, choices) in quizzes.items():
            if f"quiz(*{name})" in cell.source:
                assert before.cell_type == "markdown" and question in before.source, name
                assert all(f"- {choice.text}\n" in before.source for choice in choices), name
                shown.append(name)
    assert sorted(shown) == sorted(quizzes)
