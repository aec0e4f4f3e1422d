"""gptnb.baselines: notebook 02's prompting baselines read back when recorded, computed the same way when not."""

from __future__ import annotations

import pytest

from gptnb import baselines, results
from gptnb.data import load_tweets
from gptnb.profiles import get_profile


@pytest.fixture(autouse=True)
def _own_table(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTNB_RESULTS", str(tmp_path))


@pytest.fixture(scope="module")
def splits():
    return load_tweets("sample", n_train=40, n_val=12, n_test=16, profile="tiny", verbose=False)


def test_computed_once_then_read_from_the_table(tiny_gpt2, splits):
    model, tokenizer = tiny_gpt2
    profile = get_profile("tiny")
    first = baselines.prompting_baselines(model, tokenizer, splits, profile=profile, model_name="tiny-gpt2")
    assert first.source.startswith("computed here in")
    assert set(first.predictions) == {"zero-shot", "best few-shot"}
    assert all(len(p) == len(splits.test) for p in first.predictions.values())
    assert first.rows.method.tolist() == list(baselines.METHODS)
    zero = first.rows.set_index("method").loc["zero-shot"]
    assert zero.macro_f1 == pytest.approx(results.score(splits.test.label, first.predictions["zero-shot"])["macro_f1"])

    again = baselines.prompting_baselines(model, tokenizer, splits, profile=profile, model_name="tiny-gpt2")
    assert again.source == "notebook 02's results table" and again.predictions == first.predictions
    other = baselines.prompting_baselines(model, tokenizer, splits, profile=profile, model_name="another model")
    assert other.source.startswith("computed here")  # another model's rows are not reused


def test_the_same_as_scoring_the_chosen_prompt_by_hand(tiny_gpt2, splits):
    from gptnb.prompts import calibrate, content_free_prior, label_logprobs, sample_examples

    model, tokenizer = tiny_gpt2
    profile = get_profile("tiny")
    got = baselines.prompting_baselines(model, tokenizer, splits, profile=profile, model_name="tiny-gpt2")
    splits = splits.with_train_size(profile.n_train)  # notebook 02's training tweets, which it draws examples from
    runs = baselines.sweep(model, tokenizer, splits, profile=profile)
    assert len(runs) == len(baselines.variants(profile))
    k, draw = baselines.best_variant(runs)
    assert got.rows.set_index("method").loc["best few-shot"].shots == k
    prompt, examples = baselines.tweet_prompt(splits.labels), sample_examples(splits.train, k, seed=draw)
    words = list(prompt.label_words)
    scores = label_logprobs(model, tokenizer, [prompt.render(t, examples) for t in splits.test.text], words)
    prior = content_free_prior(
        label_logprobs(model, tokenizer, [prompt.render(c, examples) for c in ("N/A", "", "[MASK]")], words)
    )
    assert got.predictions["best few-shot"] == scores.argmax(-1).tolist()
    assert got.rows.set_index("method").loc["best few-shot calibrated"].macro_f1 == pytest.approx(
        results.score(splits.test.label, calibrate(scores, prior).argmax(-1).tolist())["macro_f1"]
    )


def test_a_notebook_with_fewer_training_tweets_gets_notebook_02s_examples(tiny_gpt2, splits, monkeypatch):
    """Notebooks 04 and 05 load fewer training tweets than 02; the best prompt's examples still come from 02's."""
    model, tokenizer = tiny_gpt2
    profile = get_profile("tiny")
    as_02 = splits.with_train_size(profile.n_train)
    assert len(splits.train) < profile.n_train == len(as_02.train)
    assert as_02.test.text.tolist() == splits.test.text.tolist() and as_02.val.text.tolist() == splits.val.text.tolist()
    drawn_from = []
    monkeypatch.setattr(baselines, "sample_examples", lambda pool, k, seed: drawn_from.append(len(pool)) or [])
    baselines.prompting_baselines(model, tokenizer, splits, profile=profile, model_name="tiny-gpt2")
    assert drawn_from and set(drawn_from) == {profile.n_train}, drawn_from


def test_splits_not_made_by_load_tweets_say_why_they_cannot_be_resized(splits):
    from dataclasses import replace

    with pytest.raises(ValueError, match="not made by load_tweets"):
        replace(splits, loaded_with={}).with_train_size(len(splits.train) + 1)


def test_best_variant_needs_a_few_shot_run():
    import pandas as pd

    runs = pd.DataFrame({"k": [0, 2, 2, 4], "draw": [0, 0, 1, 0], "macro_f1": [0.9, 0.5, 0.7, 0.6]})
    assert baselines.best_variant(runs) == (2, 1)  # the zero-shot run is not a candidate
    with pytest.raises(ValueError, match="no few-shot variant"):
        baselines.best_variant(runs[runs.k == 0])
