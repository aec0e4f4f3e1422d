"""Notebook 02's exercise checks: a right answer passes; a wrong one and the placeholder are told apart."""

import pytest
import torch

import gptnb
from gptnb.exercises import NOT_ANSWERED, RIGHT, nb02
from gptnb.results import paired_share_difference


@pytest.fixture(scope="module")
def tiny():
    return gptnb.load_model("tiny-gpt2", profile="tiny", device="cpu")


def placeholder(*args):
    raise NotImplementedError()


def review_prompt(examples, query):
    blocks = ["\nBelow are some examples for sentiment detection of movie reviews."]
    blocks += [f"Review: {text}\nSentiment: {['Negative', 'Positive'][label]}" for text, label in examples]
    return "\n\n".join(blocks + [f"Review: {query}\nSentiment:"])


def label_scores(model, tokenizer, prompt, label_words):
    prompt_ids = tokenizer(prompt)["input_ids"]
    scores = []
    for word in label_words:
        ids = tokenizer(prompt + word)["input_ids"]
        with torch.no_grad():
            logprobs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
        scores.append(sum(logprobs[t - 1, ids[t]] for t in range(len(prompt_ids), len(ids))))
    return torch.stack(scores)


def calibrated_probs(scores, content_free_scores):
    p_cf = content_free_scores.softmax(-1).mean(0)
    q = scores.softmax(-1) / p_cf
    return q / q.sum(-1, keepdim=True)


def predicted_pull():
    return "positive"


def recency_pull(predict, prompt, negative, positive, texts):
    def predictions(examples):
        return predict([prompt.render(text, examples) for text in texts])

    return paired_share_difference(predictions([negative, positive]), predictions([positive, negative]))


def run(check, answer, *args, capsys):
    passed = check(answer, *args)
    return passed, capsys.readouterr().out.strip()


def test_original_prompt_is_the_original_lessons_exact_string():
    assert nb02.ORIGINAL_PROMPT == (
        "\nBelow are some examples for sentiment detection of movie reviews.\n\nReview: I am sad that the hero died."
        "\nSentiment: Negative\n\nReview: The ending was perfect.\nSentiment: Positive\n\nReview: The plot was not "
        "so good!\nSentiment:"
    )


def test_original_prompt_is_the_builder_with_a_leading_newline():
    assert nb02.ORIGINAL_PROMPT == "\n" + nb02.MOVIES.render(nb02.ORIGINAL_QUERY, nb02.ORIGINAL_EXAMPLES)
    assert review_prompt(nb02.ORIGINAL_EXAMPLES, nb02.ORIGINAL_QUERY) == nb02.ORIGINAL_PROMPT


def test_review_prompt_right_and_placeholder(capsys):
    assert run(nb02.check_review_prompt, review_prompt, capsys=capsys) == (True, f"Exercise 2.1: {RIGHT}")
    passed, line = run(nb02.check_review_prompt, placeholder, capsys=capsys)
    assert not passed and NOT_ANSWERED in line


@pytest.mark.parametrize(
    "wrong, told",
    [
        (lambda examples, query: review_prompt(examples, query).lstrip("\n"), "must start with a newline"),
        (lambda examples, query: review_prompt(examples, query) + " ", "end exactly at 'Sentiment:'"),
        (
            lambda examples, query: review_prompt(examples, query).replace("\n\n", "\n"),  # no blank lines
            "line 3 of your prompt",
        ),
        (lambda examples, query: review_prompt(sorted(examples, key=lambda e: e[1]), query), "other order"),
        (lambda examples, query: None, "must return a str"),
    ],
)
def test_review_prompt(capsys, wrong, told):
    passed, line = run(nb02.check_review_prompt, wrong, capsys=capsys)
    assert not passed and line.startswith("Exercise 2.1: not yet:") and told in line, line


def first_token_only(model, tokenizer, prompt, label_words):
    with torch.no_grad():
        logprobs = model(**tokenizer(prompt, return_tensors="pt")).logits[0, -1].log_softmax(-1)
    return torch.stack([logprobs[tokenizer(w, add_special_tokens=False)["input_ids"][0]] for w in label_words])


def test_label_scores_right_and_placeholder(capsys, tiny):
    assert run(nb02.check_label_scores, label_scores, *tiny, capsys=capsys) == (True, f"Exercise 2.2: {RIGHT}")
    passed, line = run(nb02.check_label_scores, placeholder, *tiny, capsys=capsys)
    assert not passed and NOT_ANSWERED in line


@pytest.mark.parametrize(
    "wrong, told",
    [
        (first_token_only, "several tokens must add up"),
        (lambda *args: label_scores(*args).exp(), "not probabilities"),
        (lambda *args: label_scores(*args)[:2], "one score per label word"),
        (lambda *args: label_scores(*args) - 1.0, "differ from the model's log-probabilities"),
        (lambda *args: label_scores(*args) + 50.0, "never above 0"),
    ],
)
def test_label_scores(capsys, tiny, wrong, told):
    passed, line = run(nb02.check_label_scores, wrong, *tiny, capsys=capsys)
    assert not passed and told in line, line


def test_calibrated_probs_right_and_placeholder(capsys):
    assert run(nb02.check_calibrated_probs, calibrated_probs, capsys=capsys) == (True, f"Exercise 2.3: {RIGHT}")
    passed, line = run(nb02.check_calibrated_probs, placeholder, capsys=capsys)
    assert not passed and NOT_ANSWERED in line


@pytest.mark.parametrize(
    "wrong, told",
    [
        (lambda scores, cf: scores.softmax(-1), "uncalibrated p"),
        (lambda scores, cf: scores.softmax(-1) / cf.softmax(-1).mean(0), "distribution over the labels"),
        (lambda scores, cf: (scores.log_softmax(-1) - cf.log_softmax(-1).mean(0)).softmax(-1), "not their log-prob"),
        (lambda scores, cf: (scores.softmax(-1) / cf.exp().mean(0)).softmax(-1), "differs from p / p_cf"),
        (lambda scores, cf: calibrated_probs(scores, cf)[:2], "expected shape (4, 2)"),
    ],
)
def test_calibrated_probs(capsys, wrong, told):
    passed, line = run(nb02.check_calibrated_probs, wrong, capsys=capsys)
    assert not passed and told in line, line


def test_recency_pull_right_and_placeholder(capsys):
    assert run(nb02.check_recency_pull, predicted_pull, recency_pull, capsys=capsys) == (True, f"Exercise 2.4: {RIGHT}")
    for prediction, answer in [(placeholder, recency_pull), (predicted_pull, placeholder)]:
        passed, line = run(nb02.check_recency_pull, prediction, answer, capsys=capsys)
        assert not passed and NOT_ANSWERED in line


def unpaired(predict, prompt, negative, positive, texts):
    right = recency_pull(predict, prompt, negative, positive, texts)
    return {**right, "low": right["low"] - 0.1}


@pytest.mark.parametrize(
    "prediction, answer, told",
    [
        (lambda: "up", recency_pull, "must return one of 'positive', 'negative', 'none'"),
        (predicted_pull, lambda p, pr, n, pos, texts: recency_pull(p, pr, pos, n, texts), "swapped"),
        (predicted_pull, unpaired, "right but not its interval"),
        (predicted_pull, lambda p, pr, n, pos, texts: recency_pull(p, pr, n, pos, texts[:3]), "is not the share"),
        (predicted_pull, lambda p, pr, n, pos, texts: recency_pull(p, pr, n, n, texts), "is not the share"),
        (predicted_pull, lambda *args: 0.25, "return the dict"),
    ],
)
def test_recency_pull(capsys, prediction, answer, told):
    passed, line = run(nb02.check_recency_pull, prediction, answer, capsys=capsys)
    assert not passed and line.startswith("Exercise 2.4: not yet:") and told in line, line


def test_the_stand_in_classifier_has_a_pull_the_check_can_see():
    negative, positive = ("Worst service I have ever had.", 0), ("What a lovely surprise this was!", 1)
    pull = recency_pull(nb02._recency_biased(negative, positive), nb02.TWEETS, negative, positive, nb02.CHECK_TWEETS)
    assert pull["difference"] > 0  # a swapped answer gives its opposite, not the same number


@pytest.mark.parametrize(
    "difference, low, high, direction",
    [(0.1, 0.02, 0.18, "positive"), (-0.1, -0.18, -0.02, "negative"), (0.05, -0.01, 0.11, "none")],
)
def test_prediction_verdict_compares_with_the_measured_direction(difference, low, high, direction):
    pull = {"difference": difference, "low": low, "high": high, "includes_zero": low <= 0 <= high}
    assert nb02.pull_direction(pull) == direction
    line = nb02.prediction_verdict(lambda: direction, pull, "60 tweets")
    assert line.startswith(f"Exercise 2.4: you predicted {direction!r}") and line.endswith("your prediction matched")
    other = next(p for p in nb02.PULLS if p != direction)
    assert "not what you predicted" in nb02.prediction_verdict(lambda: other, pull, "60 tweets")
    assert "write your prediction" in nb02.prediction_verdict(placeholder, pull, "60 tweets")


def test_a_wrong_answer_raises_under_nbgrader(monkeypatch, capsys):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(AssertionError, match="Exercise 2.3: not yet"):
        nb02.check_calibrated_probs(lambda scores, cf: scores.softmax(-1))
    with pytest.raises(AssertionError, match=NOT_ANSWERED):
        nb02.check_review_prompt(placeholder)


@pytest.mark.parametrize("quiz", [nb02.QUIZ_ONE_PROMPT, nb02.QUIZ_VALIDATION, nb02.QUIZ_CALIBRATION])
def test_quizzes_have_one_right_choice_and_explain_every_choice(quiz):
    question, choices = quiz
    assert question.endswith("?") and sum(choice.correct for choice in choices) == 1
    assert all(choice.why for choice in choices)
    assert not any("profile." in text for text in [question, *(c.text + c.why for c in choices)])  # words, not code


def test_label_scores_in_bfloat16_passes_a_right_answer(capsys, tiny):
    """On a GPU the model runs in bf16, where two right ways of scoring differ by ~1e-2: the check allows for it."""
    model, tokenizer = tiny
    half = type(model)(model.config).to(torch.bfloat16)
    half.load_state_dict(model.state_dict())
    assert run(nb02.check_label_scores, label_scores, half.eval(), tokenizer, capsys=capsys) == (
        True,
        f"Exercise 2.2: {RIGHT}",
    )
    passed, line = run(nb02.check_label_scores, lambda *args: label_scores(*args) - 1.0, half, tokenizer, capsys=capsys)
    assert not passed and "differ from the model's log-probabilities" in line, line


def test_every_quiz_is_readable_in_the_markdown_above_it():
    """A rendered notebook (GitHub, a static page) shows no widget: the question and choices are in the markdown."""
    from pathlib import Path

    import nbformat

    notebook = Path(__file__).resolve().parent.parent / "notebooks" / "02_prompting.ipynb"
    cells = nbformat.read(notebook, as_version=4).cells
    quizzes = {f"quiz(*nb02.{name});": getattr(nb02, name) for name in dir(nb02) if name.startswith("QUIZ_")}
    shown = [i for i, c in enumerate(cells) if c.cell_type == "code" and c.source.strip() in quizzes]
    assert len(shown) == len(quizzes) == 3
    for index in shown:
        question, choices = quizzes[cells[index].source.strip()]
        above = cells[index - 1]
        assert above.cell_type == "markdown" and question in above.source, cells[index].source
        assert all(f"- {choice.text}" in above.source for choice in choices), cells[index].source
