"""gptnb.generation: presets are valid generate arguments, batched generation equals one-by-one."""

import html
from unittest import mock

import pytest
import torch
from transformers import GenerationConfig

import gptnb
from gptnb.generation import (
    PRESETS,
    STRATEGIES,
    decoding_kwargs,
    generate_text,
    playground,
    playground_html,
    top_tokens,
)


@pytest.fixture(scope="module")
def tiny():
    return gptnb.load_model("tiny-gpt2", profile="tiny", device="cpu")


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_are_valid_generate_arguments(name, tiny):
    GenerationConfig(**PRESETS[name]).validate(strict=True)  # raises on contradictory or unknown settings
    model, tokenizer = tiny
    text = generate_text(model, tokenizer, "Hello there", max_new_tokens=3, **PRESETS[name])
    assert len(text) == 1 and isinstance(text[0], str)


def test_presets_mean_what_they_say():
    assert PRESETS["greedy"]["do_sample"] is False
    assert PRESETS["beam search"]["num_beams"] > 1
    assert PRESETS["temperature 0.7"] == {
        **PRESETS["temperature 0.7"],
        "do_sample": True,
        "temperature": 0.7,
        "top_k": 0,
        "top_p": 1.0,
    }
    assert PRESETS["top-k 40"]["top_k"] == 40 and PRESETS["top-p 0.9"]["top_p"] == 0.9
    assert PRESETS["repetition penalty 1.3"]["repetition_penalty"] == 1.3


def test_decoding_kwargs_rejects_bad_input():
    with pytest.raises(ValueError, match="greedy"):
        decoding_kwargs("sampling", temperature=0)
    with pytest.raises(ValueError, match="choose one of"):
        decoding_kwargs("nucleus")
    assert set(STRATEGIES) == {"greedy", "beam search", "sampling"}


def test_batched_left_padded_generation_equals_one_by_one(tiny):
    model, tokenizer = tiny
    prompts = ["A short one", "A noticeably longer prompt that needs no padding at all"]
    batched = generate_text(model, tokenizer, prompts, max_new_tokens=6)
    alone = [generate_text(model, tokenizer, p, max_new_tokens=6)[0] for p in prompts]
    assert batched == alone
    assert tokenizer.padding_side == "right"  # restored


def test_sampling_is_repeatable_with_a_seed(tiny):
    model, tokenizer = tiny
    kwargs = decoding_kwargs("sampling", temperature=1.5)
    first = generate_text(model, tokenizer, "Once upon a time", max_new_tokens=8, seed=3, **kwargs)
    assert first == generate_text(model, tokenizer, "Once upon a time", max_new_tokens=8, seed=3, **kwargs)


def test_top_tokens_table(tiny):
    _, tokenizer = tiny
    probabilities = torch.zeros(tokenizer.vocab_size)
    probabilities[[464, 11, 13]] = torch.tensor([0.5, 0.3, 0.2])
    table = top_tokens(tokenizer, probabilities, k=2)
    assert table["id"].tolist() == [464, 11]
    assert table["token"].tolist() == [tokenizer.decode([464]), ","]
    assert table["probability"].tolist() == pytest.approx([0.5, 0.3])


def test_playground_runs_headless(tiny, capsys):
    model, tokenizer = tiny
    playground(model, tokenizer, prompt="Hi", max_new_tokens=2)
    lines = capsys.readouterr().out.replace("\r", "\n").splitlines()
    assert any(line.startswith("Hi") and len(line) > 2 for line in lines), lines  # prompt + continuation printed


def test_the_playground_keeps_its_widget_and_adds_what_it_wrote_as_html(tiny, capsys):
    model, tokenizer = tiny
    with mock.patch("IPython.display.display") as display:
        form = playground(model, tokenizer, prompt="<Hi>", max_new_tokens=2)
    (bundle,), options = display.call_args
    written = capsys.readouterr().out.rsplit("\r", 1)[-1].removesuffix("\n")  # after clear_output's escapes
    settings = {name: value for name, value in form.kwargs.items() if name != "prompt"}
    assert options == {"raw": True} and "model_id" in bundle["application/vnd.jupyter.widget-view+json"]
    assert written.startswith("<Hi>") and bundle["text/html"] == playground_html(written, settings)
    assert f">{html.escape(written)}</pre>" in bundle["text/html"]
    assert "strategy=sampling, temperature=0.8" in bundle["text/html"]
