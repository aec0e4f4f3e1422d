"""Notebook 03's checks of what it builds by hand can fail: each cell runs here as written (it passes), then with one
line broken as a learner might break it (its check raises)."""

from pathlib import Path

import nbformat
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import gptnb
from gptnb.profiles import get_profile

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "03_generation.ipynb"
CELLS = nbformat.read(NOTEBOOK, as_version=4).cells


def cell(marker: str) -> str:
    """The source of the one code cell that contains `marker`."""
    found = [c.source for c in CELLS if c.cell_type == "code" and marker in c.source]
    assert len(found) == 1, f"{len(found)} code cells contain {marker!r}"
    return found[0]


def broken(source: str, line: str, instead: str) -> str:
    assert source.count(line) == 1, f"the cell no longer has {line!r}: update this test"
    return source.replace(line, instead)


LOOP = cell("next_id = model(ids).logits[0, -1].argmax()")
AGAINST_GENERATE = cell("the loop by hand and model.generate chose different tokens")
ONE_STEP = cell("cached_logits = model(")
MEMORY = cell("def cache_bytes(tokens):")
ANSWER = next(c.source for c in CELLS if c.metadata.get("nbgrader", {}).get("grade_id") == "ex03-1-answer")
CHECK = next(c.source for c in CELLS if c.metadata.get("nbgrader", {}).get("grade_id") == "ex03-1-check")


@pytest.fixture(scope="module")
def grouped(tiny_untied):
    """A random two-layer Llama-style model with grouped-query attention (2 key/value heads for 4 query heads)."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tiny_untied[1]),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(config).eval(), tiny_untied[1]


def run(model, tokenizer, *sources: str) -> dict:
    """Run the notebook's imports, then `sources`, with `model` as the notebook's model; the names they left."""
    names = {}
    exec(cell("from gptnb.exercises import nb03, quiz"), names)
    prompt = "The meaning of life is"
    inputs = tokenizer(prompt, return_tensors="pt")
    names.update(
        gptnb=gptnb, model=model, tokenizer=tokenizer, profile=get_profile("tiny"), prompt=prompt, inputs=inputs
    )
    for source in sources:
        exec(source, names)
    return names


def test_the_loop_without_a_cache_equals_generate_and_its_check_can_fail(tiny_untied):
    assert len(run(*tiny_untied, LOOP, AGAINST_GENERATE)["by_hand"]) == get_profile("tiny").max_new_tokens
    stale = broken(LOOP, "ids = torch.cat([ids, next_id.view(1, 1)], dim=1)", "ids = torch.cat([ids, ids[:, -1:]], 1)")
    with pytest.raises(AssertionError, match="different tokens"):
        run(*tiny_untied, stale, AGAINST_GENERATE)


@pytest.mark.parametrize("model", ["tiny_untied", "grouped"])
def test_one_cached_step_equals_the_whole_text_and_the_cache_is_as_big_as_the_formula(model, request):
    names = run(*request.getfixturevalue(model), ONE_STEP, MEMORY)
    assert names["step_difference"] < 1e-4 and names["cache"].get_seq_length() == names["ids"].shape[1] + 1


@pytest.mark.parametrize(
    "line, instead",
    [
        (  # the cache update dropped: the new token sees an empty cache
            "cached_logits = model(next_id, use_cache=True, **{cache_arg: cache})",
            "cached_logits = model(next_id, use_cache=True, **{cache_arg: DynamicCache()})",
        ),
        (  # the new token fed at the wrong position
            "cached_logits = model(next_id, use_cache=True, **{cache_arg: cache})",
            "cached_logits = model(next_id, position_ids=torch.zeros_like(next_id), use_cache=True, "
            "**{cache_arg: cache})",
        ),
    ],
)
def test_the_one_step_check_can_fail(line, instead, tiny_untied):
    with pytest.raises(AssertionError):
        run(*tiny_untied, broken(ONE_STEP, line, instead))


def test_the_memory_check_can_fail(grouped):
    """Counting every query head as a key/value head overstates a grouped-query model's cache, and the check says so."""
    line = 'kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads'
    with pytest.raises(AssertionError):
        run(*grouped, ONE_STEP, broken(MEMORY, line, "kv_heads = config.num_attention_heads"))


def test_the_cached_loop_passes_its_check_and_fails_it_when_broken(tiny_untied, monkeypatch, capsys):
    run(*tiny_untied, ONE_STEP, ANSWER, CHECK)
    assert capsys.readouterr().out.strip().endswith("Exercise 3.1: right")
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")  # as nbgrader grades: a wrong answer raises
    feed = "logits = model(new_ids, use_cache=True, **{cache_arg: cache}).logits"
    for instead, hint in [
        ("logits = model(new_ids, use_cache=True, **{cache_arg: DynamicCache()}).logits", "not a new one"),
        (
            "logits = model(new_ids, position_ids=torch.zeros_like(new_ids), use_cache=True, "
            "**{cache_arg: cache}).logits",
            "differs",
        ),
    ]:
        with pytest.raises(AssertionError, match=f"Exercise 3.1: not yet: .*{hint}"):
            run(*tiny_untied, ONE_STEP, broken(ANSWER, feed, instead), CHECK)
