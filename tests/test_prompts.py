"""gptnb.prompts: the prompt builder, label scoring against a hand computation, calibration."""

import pytest
import torch

import gptnb
from gptnb.prompts import (
    CONTENT_FREE,
    FewShotPrompt,
    calibrate,
    content_free_prior,
    label_logprobs,
    parse_label,
    predict_labels,
    sample_examples,
)

LABELS = [" negative", " positive", " not sure at all"]  # the last one has several tokens
EXAMPLES = [("I love it so much", 1), ("worst day ever", 0), ("meh, fine", 1)]
QUERIES = ["hello world", "a much longer tweet about nothing in particular, really", "bad", "good good good", "x"]


@pytest.fixture(scope="module", params=["tiny-gpt2", "tiny-gpt-neo"])
def loaded(request):
    return gptnb.load_model(request.param, profile="tiny", device="cpu")


def by_hand(model, tokenizer, prompt: str, label: str) -> float:
    """log P(label | prompt) from one unpadded forward pass over prompt + label."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    label_ids = tokenizer(prompt + label)["input_ids"][len(prompt_ids) :]
    with torch.no_grad():
        logprobs = model(torch.tensor([prompt_ids + label_ids])).logits[0].log_softmax(-1)
    return sum(logprobs[len(prompt_ids) - 1 + t, token].item() for t, token in enumerate(label_ids))


def few_shot_prompts() -> list[str]:
    builder = FewShotPrompt(instruction="Classify the sentiment of each tweet. " * 4)  # > GPT-Neo's tiny window
    return [builder.render(query, EXAMPLES) for query in QUERIES]


def test_render_exact_text():
    builder = FewShotPrompt(
        instruction="Below are some examples.",
        template="Review: {text}\nSentiment:{label}",
        label_words=(" Negative", " Positive"),
    )
    assert builder.render("The plot was not so good!", [("A hit!", 1), ("Avoid!", 0)]) == (
        "Below are some examples.\n\nReview: A hit!\nSentiment: Positive\n\n"
        "Review: Avoid!\nSentiment: Negative\n\nReview: The plot was not so good!\nSentiment:"
    )
    assert FewShotPrompt().render("hi") == "Tweet: hi\nSentiment:"


def test_parse_label_finds_the_first_label_word():
    names = ["negative", "positive"]
    assert parse_label(" Negative\n\nTweet: so positive", names) == 0
    assert parse_label("POSITIVE!", names) == 1
    assert parse_label(" I think it is nonpositive", names) is None  # whole words only
    assert parse_label("", names) is None


def test_sample_examples_is_seeded_and_checks_k():
    import pandas as pd

    frame = pd.DataFrame({"text": [f"t{i}" for i in range(10)], "label": [i % 2 for i in range(10)]})
    assert sample_examples(frame, 3, seed=1) == sample_examples(frame, 3, seed=1)
    assert sample_examples(frame, 3, seed=1) != sample_examples(frame, 3, seed=2)
    assert all(isinstance(label, int) for _, label in sample_examples(frame, 4, seed=0))
    assert sample_examples(frame, 0, seed=0) == []
    with pytest.raises(ValueError, match="cannot draw 11"):
        sample_examples(frame, 11, seed=0)


def test_template_must_end_with_label():
    with pytest.raises(ValueError, match="end with"):
        FewShotPrompt(template="{label} Tweet: {text}")


def test_matches_hand_computation(loaded):
    model, tokenizer = loaded
    prompts = few_shot_prompts() + ["An unrelated short prompt"]
    scores = label_logprobs(model, tokenizer, prompts, LABELS, batch_size=4)
    expected = torch.tensor([[by_hand(model, tokenizer, p, label) for label in LABELS] for p in prompts])
    assert scores.shape == (len(prompts), len(LABELS))
    torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-4)


def test_batched_equals_one_by_one(loaded):
    model, tokenizer = loaded
    prompts = few_shot_prompts()  # all share the instruction and examples: the cached-prefix path
    batched = label_logprobs(model, tokenizer, prompts, LABELS, batch_size=3)
    alone = torch.cat([label_logprobs(model, tokenizer, [p], LABELS) for p in prompts])
    mixed = label_logprobs(model, tokenizer, prompts + ["zzz"], LABELS, batch_size=16)[:-1]  # no shared prefix
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batched, mixed, atol=1e-4, rtol=1e-4)


def test_the_cached_prefix_scorer_equals_plain_forward_passes(loaded):
    """The fast path (the shared prefix's cache computed once, reused batch after batch of the same size) gives
    the log-probabilities of one plain forward pass over each whole prompt + label."""
    model, tokenizer = loaded
    prompts = few_shot_prompts() * 2  # 10 prompts in batches of 3, 3, 3, 1: the repeated cache is reused
    scores = label_logprobs(model, tokenizer, prompts, LABELS, batch_size=3)
    expected = torch.tensor([[by_hand(model, tokenizer, p, label) for label in LABELS] for p in prompts])
    torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-4)


def test_predict_labels_is_argmax(loaded):
    model, tokenizer = loaded
    prompts = few_shot_prompts()
    scores = label_logprobs(model, tokenizer, prompts, LABELS[:2])
    assert predict_labels(model, tokenizer, prompts, LABELS[:2]) == scores.argmax(-1).tolist()


def test_empty_label_is_refused(loaded):
    model, tokenizer = loaded
    with pytest.raises(ValueError, match="no tokens"):
        label_logprobs(model, tokenizer, ["hi"], [" yes", ""])


def test_calibration_removes_a_constant_bias():
    # A model that always adds +2 nats to label 1: uncalibrated it says 1 for everything.
    true_scores = torch.tensor([[0.0, -1.0], [-1.0, 0.0], [0.0, -0.5], [-0.3, 0.0]])
    biased = true_scores + torch.tensor([0.0, 2.0])
    assert biased.argmax(-1).tolist() == [1, 1, 1, 1]
    content_free = torch.tensor([[0.0, 2.0], [0.1, 2.0], [-0.1, 2.0]])  # the bias seen on inputs like "N/A"
    prior = content_free_prior(content_free)
    assert prior.exp().sum().item() == pytest.approx(1.0)
    assert prior[1] > prior[0]
    assert calibrate(biased, prior).argmax(-1).tolist() == true_scores.argmax(-1).tolist()


def test_calibration_through_predict_labels(loaded):
    model, tokenizer = loaded
    builder = FewShotPrompt()
    prompts = [builder.render(q, EXAMPLES) for q in QUERIES]
    labels = LABELS[:2]
    prior = content_free_prior(
        label_logprobs(model, tokenizer, [builder.render(c, EXAMPLES) for c in CONTENT_FREE], labels)
    )
    expected = calibrate(label_logprobs(model, tokenizer, prompts, labels), prior).argmax(-1).tolist()
    assert predict_labels(model, tokenizer, prompts, labels, calibration=prior) == expected


@pytest.mark.slow
def test_smollm2_answers_the_seed_prompt_negative():
    model, tokenizer = gptnb.load_model("smollm2-135m", profile="cpu", device="cpu")
    builder = FewShotPrompt(
        instruction="Below are some examples for sentiment detection of movie reviews.",
        template="Review: {text}\nSentiment:{label}",
        label_words=(" Negative", " Positive"),
    )
    prompt = builder.render(
        "The plot was not so good!", [("I am sure this will become a hit movie.", 1), ("Such a bad movie! Avoid!", 0)]
    )
    scores = label_logprobs(model, tokenizer, [prompt], list(builder.label_words))
    assert scores[0, 0] > scores[0, 1]
