"""Notebook 02 (prompting): checks for its exercises and its quiz questions.

Exercises: 2.1 render the original lesson's few-shot prompt from examples; 2.2 score each label word
by its log-probability; 2.3 contextual calibration; 2.4 predict which way the last example's label pulls
the answers, then measure it with a paired interval. Every check computes its reference here,
independently of the learner's notebook. Over 300 lines: four exercises' checks and three quiz questions, whose
texts (a third of the module) are data that reads best beside the checks.
"""

from __future__ import annotations

import torch

from ..prompts import FewShotPrompt, calibrate, content_free_prior, label_logprobs
from ..results import format_difference, paired_share_difference
from . import Choice, call_answer, report

# The original lesson's few-shot prompt ("GPT models", A Lazy Data Science Guide), as its GPT-2 code writes it:
# a string that starts with a newline, a blank line between the instruction and each Review/Sentiment block, no
# space after the last "Sentiment:".
ORIGINAL_PROMPT = (
    "\nBelow are some examples for sentiment detection of movie reviews.\n\n"
    "Review: I am sad that the hero died.\nSentiment: Negative\n\n"
    "Review: The ending was perfect.\nSentiment: Positive\n\n"
    "Review: The plot was not so good!\nSentiment:"
)
ORIGINAL_EXAMPLES = [("I am sad that the hero died.", 0), ("The ending was perfect.", 1)]  # (review, label index)
ORIGINAL_QUERY = "The plot was not so good!"
MOVIES = FewShotPrompt(
    instruction="Below are some examples for sentiment detection of movie reviews.",
    template="Review: {text}\nSentiment:{label}",
    label_words=(" Negative", " Positive"),
    separator="\n\n",
)
TWEETS = FewShotPrompt(instruction="Classify the sentiment of each tweet as negative or positive.")
# Short made-up tweets for the checks: cheap to score under every profile.
CHECK_TWEETS = [
    "Missed the bus again and it is pouring.",
    "Best coffee in town, I will be back!",
    "The update deleted all my photos.",
    "Sunny afternoon in the park with friends.",
    "Waited an hour for a cold pizza.",
    "My sister got the job, so proud of her!",
    "Flight delayed, then cancelled.",
    "This playlist makes my whole week.",
]


def _first_difference(got: str, expected: str) -> str:
    """Where `got` first departs from `expected`, told as a line number and the learner's own line."""
    got_lines, expected_lines = got.split("\n"), expected.split("\n")
    for number, (mine, theirs) in enumerate(zip(got_lines, expected_lines), start=1):
        if mine != theirs:
            return f"line {number} of your prompt ({mine!r}) is not what the format asks for there"
    return f"your prompt has {len(got_lines)} lines, the format gives {len(expected_lines)}"


def check_review_prompt(review_prompt) -> bool:
    """Exercise 2.1: `review_prompt(examples, query)` writes the original lesson's prompt for any examples."""

    def check():
        cases = [
            ("the original lesson's examples and query", ORIGINAL_EXAMPLES, ORIGINAL_QUERY, ORIGINAL_PROMPT),
            (
                "the same examples in the other order",
                ORIGINAL_EXAMPLES[::-1],
                "Two hours I will never get back.",
                "\n" + MOVIES.render("Two hours I will never get back.", ORIGINAL_EXAMPLES[::-1]),
            ),
            ("no examples", [], "A fine film.", "\n" + MOVIES.render("A fine film.", [])),
        ]
        for name, examples, query, expected in cases:
            got = call_answer(review_prompt, list(examples), query)
            assert isinstance(got, str), f"review_prompt must return a str, got {type(got).__name__}"
            if got == expected:
                continue
            if not got.startswith("\n"):
                raise AssertionError(f"with {name}: the prompt must start with a newline, as the original string does")
            if got.rstrip() == expected:
                raise AssertionError(f"with {name}: end exactly at 'Sentiment:' (the label word brings its own space)")
            raise AssertionError(f"with {name}: {_first_difference(got, expected)}")

    return report("2.1", check)


def check_label_scores(label_scores, model, tokenizer) -> bool:
    """Exercise 2.2: `label_scores(model, tokenizer, prompt, label_words)` gives log P(label | prompt) per label."""
    words = [" Negative", " Positive", " not so sure"]  # the last has several tokens: its score sums them
    # Two right ways of scoring agree to ~1e-6 in float32; in bf16 (a GPU), with 8 bits of mantissa, rounding alone
    # moves them by up to ~1 % (0.25 at -33).
    tolerance = {"atol": 1e-3} if model.dtype == torch.float32 else {"atol": 0.05, "rtol": 0.02}

    def check():
        for prompt in [ORIGINAL_PROMPT, TWEETS.render(CHECK_TWEETS[0])]:
            expected = label_logprobs(model, tokenizer, [prompt], words)[0]
            got = (
                torch.as_tensor(call_answer(label_scores, model, tokenizer, prompt, list(words)), dtype=torch.float32)
                .detach()
                .cpu()
                .flatten()
            )
            assert len(got) == len(words), f"expected one score per label word ({len(words)}), got {len(got)}"
            if torch.allclose(got, expected, **tolerance):
                continue
            assert not torch.allclose(got, expected.exp(), atol=1e-4), "return log-probabilities, not probabilities"
            assert (got <= 1e-6).all(), "log-probabilities are never above 0: take log_softmax of the logits"
            single = torch.tensor([len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1 for w in words])
            if single.any() and torch.allclose(got[single], expected[single], **tolerance):
                raise AssertionError(
                    "single-token labels are right; a label of several tokens must add up the "
                    "log-probabilities of all its tokens, each given the prompt and the ones before"
                )
            raise AssertionError(f"the scores for {words} differ from the model's log-probabilities of these labels")

    return report("2.2", check)


def check_calibrated_probs(calibrated_probs) -> bool:
    """Exercise 2.3: `calibrated_probs(scores, content_free_scores)` is contextual calibration's q per input."""
    scores = torch.tensor([[-1.2, -0.9], [-2.0, -0.4], [-0.7, -1.6], [-3.1, -2.2]])  # label log-probs (unnormalised)
    content_free = torch.tensor([[-2.5, -0.6], [-1.9, -0.8], [-3.0, -0.3]])  # biased towards label 1

    def check():
        expected = calibrate(scores, content_free_prior(content_free)).softmax(-1)
        got = torch.as_tensor(call_answer(calibrated_probs, scores.clone(), content_free.clone()), dtype=torch.float32)
        assert got.shape == expected.shape, (
            f"expected shape {tuple(expected.shape)} (inputs x labels), got {tuple(got.shape)}"
        )
        if torch.allclose(got, expected, atol=1e-4):
            return
        assert torch.allclose(got.sum(-1), torch.ones(len(got)), atol=1e-4), (
            "each row must be a distribution over the labels: divide by its sum"
        )
        assert not torch.allclose(got, scores.softmax(-1), atol=1e-4), (
            "these are the uncalibrated p: divide each by the content-free prior p_cf, then renormalise"
        )
        geometric = (scores.log_softmax(-1) - content_free.log_softmax(-1).mean(0)).softmax(-1)
        assert not torch.allclose(got, geometric, atol=1e-4), (
            "average the content-free probabilities (softmax, then mean), not their log-probabilities"
        )
        raise AssertionError(
            "q differs from p / p_cf renormalised, with p and each content-free row first made "
            "distributions over the labels (softmax)"
        )

    return report("2.3", check)


PULLS = ("positive", "negative", "none")  # which way the last example pulls the answers: towards its label, or not


def pull_direction(pull: dict) -> str:
    """What a paired difference (positive last − negative last) says: "none" when its interval includes 0,
    else the label the last example pulls the answers towards."""
    if pull["includes_zero"]:
        return "none"
    return "positive" if pull["difference"] > 0 else "negative"


def _recency_biased(negative, positive):
    """A stand-in classifier with a known recency bias, for checking exercise 2.4 without a model: it answers
    the label of the example that comes last in the prompt for half the tweets, and 'positive' for a "!"."""

    def predict(prompts):
        labels = []
        for prompt in prompts:
            query = prompt.rsplit("Tweet:", 1)[-1]
            last = int(prompt.rfind(positive[0]) > prompt.rfind(negative[0]))
            labels.append(last if len(query) % 2 else int("!" in query))
        return labels

    return predict


def check_recency_pull(predicted_pull, recency_pull) -> bool:
    """Exercise 2.4: `predicted_pull()` is a prediction written down first, and `recency_pull(predict, prompt,
    negative_example, positive_example, texts)` measures the pull of the last example as a paired difference."""
    negative, positive = ("Worst service I have ever had.", 0), ("What a lovely surprise this was!", 1)
    predict = _recency_biased(negative, positive)

    def predictions(examples):
        return [predict([TWEETS.render(text, examples)])[0] for text in CHECK_TWEETS]

    def check():
        guess = call_answer(predicted_pull)
        assert guess in PULLS, f"predicted_pull() must return one of {', '.join(map(repr, PULLS))}, got {guess!r}"
        got = call_answer(recency_pull, predict, TWEETS, negative, positive, list(CHECK_TWEETS))
        assert isinstance(got, dict) and {"difference", "low", "high"} <= set(got), (
            "return the dict that paired_share_difference(...) gives (difference, low, high, ...)"
        )
        expected = paired_share_difference(predictions([negative, positive]), predictions([positive, negative]))
        if all(abs(float(got[key]) - expected[key]) < 1e-9 for key in ("difference", "low", "high")):
            return
        if abs(float(got["difference"]) + expected["difference"]) < 1e-9:
            raise AssertionError("the two orders are swapped: first the prompts whose last example is positive")
        if abs(float(got["difference"]) - expected["difference"]) < 1e-9:
            raise AssertionError(
                "the difference is right but not its interval: give paired_share_difference the two orders' "
                "predictions on the same texts, in the same order, with its default resamples and seed"
            )
        raise AssertionError(
            f"your difference {float(got['difference']):+.3f} is not the share of the {len(CHECK_TWEETS)} texts "
            "predicted positive with the positive example last minus that with the negative one last"
        )

    return report("2.4", check)


def prediction_verdict(predicted_pull, pull: dict, where: str) -> str:
    """One line for exercise 2.4: the learner's prediction against the direction `pull` measured on `where`."""
    measured = pull_direction(pull)
    said = f"measured on {where}: {format_difference(pull)}, so {measured!r}"
    try:
        guess = predicted_pull()
    except NotImplementedError:
        return f"Exercise 2.4: {said}; write your prediction in predicted_pull() before you run this again"
    verdict = "your prediction matched" if guess == measured else "not what you predicted: what does that teach?"
    return f"Exercise 2.4: you predicted {guess!r}; {said}: {verdict}"


QUIZ_ONE_PROMPT = (
    (
        "Suppose a model answers Positive to the original lesson's prompt, whose last example is Positive. "
        "What does that single answer show?"
    ),
    [
        Choice(
            "That the model has a recency bias",
            False,
            "One answer cannot tell recency from other causes: the model may misread 'not so good', or prefer the "
            "word Positive whatever the order. It takes many inputs and both orders to see a bias.",
        ),
        Choice(
            "Little on its own: compare both orders over many inputs",
            True,
            "Yes. Swap the examples and score many reviews or tweets: if the share of Positive answers follows the "
            "last example's label, that is recency bias, measured.",
        ),
        Choice(
            "That the prompt needs more examples",
            False,
            "Maybe, maybe not: more examples change accuracy by an amount you have to measure, and they bring "
            "their own order and majority-label effects.",
        ),
        Choice(
            "That the model is too small to classify",
            False,
            "A single answer says nothing about size; the accuracy over a test split does, with its interval.",
        ),
    ],
)

QUIZ_VALIDATION = (
    (
        "The best prompt is chosen on a few validation tweets and then scored once on the test split. "
        "Why not choose it on the test tweets directly?"
    ),
    [
        Choice(
            "The chosen prompt's test score would then overstate how well it does on new tweets",
            True,
            "Right: the best of many noisy scores is partly luck. Choosing on validation tweets and reporting on "
            "unseen test tweets keeps that luck out of the reported number.",
        ),
        Choice(
            "The validation split is larger, so it is more accurate",
            False,
            "It is not larger here: each variant is scored on only the validation tweets of the sweep "
            "(section 5 prints how many), fewer than the test split has, which is why the choice itself is noisy.",
        ),
        Choice(
            "It makes no difference: the test tweets are new to the model either way",
            False,
            "The model never trained on them, but the choice did: picking the best of many prompts on the test tweets "
            "fits the prompt to their luck, and the same score then no longer predicts how it does on new tweets.",
        ),
        Choice(
            "Choosing on validation tweets makes the chosen prompt more accurate on the test split",
            False,
            "It does not make the prompt better; it makes the reported test score honest. The best prompt on a few "
            "validation tweets may well do worse on the test split than another one.",
        ),
    ],
)


QUIZ_CALIBRATION = (
    (
        "Under a prompt, content-free inputs get p_cf = (negative 0.2, positive 0.8). A tweet gets p = (0.3, 0.7). "
        "What does contextual calibration answer?"
    ),
    [
        Choice(
            "negative",
            True,
            "q is proportional to p / p_cf = (0.3/0.2, 0.7/0.8) = (1.5, 0.875): negative wins. The prompt alone "
            "pushes towards positive, and this tweet is less positive than the prompt's bias.",
        ),
        Choice(
            "positive",
            False,
            "That is the uncalibrated answer (0.7 > 0.3). Calibration divides each probability by its "
            "content-free prior first.",
        ),
        Choice(
            "positive: calibration changes how confident an answer is, never the answer",
            False,
            "That holds for temperature scaling, which divides every label's logit by the same number. Contextual "
            "calibration divides each label's probability by its own content-free prior, so it can change the "
            "answer: here 1.5 > 0.875.",
        ),
    ],
)
