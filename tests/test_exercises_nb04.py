"""Notebook 04's exercise checks: a right answer passes; a wrong one and the placeholder are told apart."""

import pytest
import torch

import gptnb
from gptnb.collate import CompletionCollator, encode_pairs
from gptnb.exercises import NOT_ANSWERED, RIGHT, Choice, nb04


@pytest.fixture(scope="module")
def tokenizer():
    return gptnb.load_model("tiny-gpt2", profile="tiny", device="cpu")[1]


def placeholder(*args):
    raise NotImplementedError()


def training_example(tokenizer, prompt, completion):
    prompt_ids = tokenizer(prompt)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids + completion_ids, [-100] * len(prompt_ids) + completion_ids


def right_padding_collator(examples, pad_token_id):
    width = max(len(example["input_ids"]) for example in examples)
    input_ids = torch.full((len(examples), width), pad_token_id)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100)
    for row, example in enumerate(examples):
        length, prompt = len(example["input_ids"]), example["prompt_length"]
        input_ids[row, :length] = torch.tensor(example["input_ids"])
        attention_mask[row, :length] = 1
        labels[row, prompt:length] = input_ids[row, prompt:length]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def lora_params(shapes, rank):
    return sum(rank * (n_in + n_out) for n_in, n_out in shapes)


def run(check, answer, *args, capsys):
    passed = check(answer, *args)
    return passed, capsys.readouterr().out.strip()


def assert_told(check, exercise, right, wrong, told, *args, capsys):
    assert run(check, right, *args, capsys=capsys) == (True, f"Exercise {exercise}: {RIGHT}")
    passed, line = run(check, wrong, *args, capsys=capsys)
    assert not passed and line.startswith(f"Exercise {exercise}: not yet:") and told in line, line
    passed, line = run(check, placeholder, *args, capsys=capsys)
    assert not passed and NOT_ANSWERED in line, line


def test_reference_answers_agree_with_the_library(tokenizer):
    """The tests' right answers are what gptnb's own encode_pairs and collator compute."""
    for example, (prompt, completion) in zip(encode_pairs(tokenizer, nb04.CHECK_PAIRS, 128), nb04.CHECK_PAIRS):
        input_ids, labels = training_example(tokenizer, prompt, completion)
        assert example["input_ids"] == input_ids and example["prompt_length"] == labels.count(-100)
    library = CompletionCollator(nb04.PAD)(nb04.BATCH)  # pads on the left and keeps only the labels' columns
    ours = right_padding_collator(nb04.BATCH, nb04.PAD)
    for theirs, mine in zip(library["labels"], ours["labels"]):
        assert theirs[theirs != -100].tolist() == mine[mine != -100].tolist()


@pytest.mark.parametrize(
    "wrong, told",
    [
        (lambda t, p, c: training_example(t, p, c)[0][:-1], "return two things"),
        (
            lambda t, p, c: (training_example(t, p, c)[0][:-1], training_example(t, p, c)[1][:-1]),
            "must end with the end-of-text token",
        ),
        (lambda t, p, c: (training_example(t, p, c)[0],) * 2, "the prompt's labels must be -100"),
        (lambda t, p, c: (training_example(t, p, c)[0], training_example(t, p, c)[1][1:] + [-100]), "do not shift"),
        (lambda t, p, c: (training_example(t, p, c)[0], training_example(t, p, c)[1][:-1] + [-100]), "position"),
        (lambda t, p, c: (training_example(t, p, c)[0], training_example(t, p, c)[1][:-1]), "as long as each other"),
        (lambda t, p, c: (t(p + c)["input_ids"], [-100]), "as long as each other"),
        (lambda t, p, c: (t(p)["input_ids"],) * 2, "input_ids differ from the tokens of prompt + completion"),
    ],
)
def test_training_example(capsys, tokenizer, wrong, told):
    assert_told(nb04.check_training_example, "4.1", training_example, wrong, told, tokenizer, capsys=capsys)


def mask_by_id(examples, pad_token_id):
    batch = right_padding_collator(examples, pad_token_id)
    batch["labels"][batch["labels"] == pad_token_id] = -100
    return batch


def pad_label_kept(examples, pad_token_id):
    batch = right_padding_collator(examples, pad_token_id)
    batch["labels"] = torch.where(batch["attention_mask"] == 1, batch["labels"], batch["input_ids"])
    return batch


def prompt_learned(examples, pad_token_id):
    batch = right_padding_collator(examples, pad_token_id)
    batch["labels"] = torch.where(batch["attention_mask"] == 1, batch["input_ids"], -100)
    return batch


def on_the_left(examples, pad_token_id):
    width = max(len(example["input_ids"]) for example in examples)
    shifted = [
        {
            "input_ids": [pad_token_id] * (width - len(e["input_ids"])) + e["input_ids"],
            "prompt_length": e["prompt_length"] + width - len(e["input_ids"]),
        }
        for e in examples
    ]
    return right_padding_collator(shifted, pad_token_id)


@pytest.mark.parametrize(
    "wrong, told",
    [
        (mask_by_id, "find padding by position"),
        (pad_label_kept, "labels at padding positions must be -100; row 0, position 5 has 50256"),
        (prompt_learned, "labels at prompt positions must be -100; row 0, position 0 has 10"),
        (on_the_left, "pad on the right"),
        (lambda examples, pad: {k: v[:, :-1] for k, v in right_padding_collator(examples, pad).items()}, "shape"),
        (lambda examples, pad: [examples], "return a dict"),
    ],
)
def test_right_padding_collator(capsys, wrong, told):
    assert_told(nb04.check_right_padding_collator, "4.2", right_padding_collator, wrong, told, capsys=capsys)


@pytest.mark.parametrize(
    "wrong, told",
    [
        (lambda shapes, rank: sum(rank * n_in * n_out for n_in, n_out in shapes), "two thin matrices"),
        (lambda shapes, rank: rank * sum(shapes[0]), "not only the first"),
        (lambda shapes, rank: 2 * lora_params(shapes, rank), "too large"),
        (lambda shapes, rank: lora_params(shapes, rank) - 1, "too small"),
        (lambda shapes, rank: str(lora_params(shapes, rank)), "return a number"),
    ],
)
def test_lora_params(capsys, wrong, told):
    assert_told(nb04.check_lora_params, "4.3", lora_params, wrong, told, capsys=capsys)


def test_a_wrong_answer_raises_while_nbgrader_grades(capsys, monkeypatch, tokenizer):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(AssertionError, match="Exercise 4.1: not yet"):
        nb04.check_training_example(lambda t, p, c: (t(p)["input_ids"],) * 2, tokenizer)
    with pytest.raises(AssertionError, match="Exercise 4.2: not yet"):
        nb04.check_right_padding_collator(mask_by_id)
    with pytest.raises(AssertionError, match="Exercise 4.3: not yet"):
        nb04.check_lora_params(lambda shapes, rank: 0)
    with pytest.raises(AssertionError, match=NOT_ANSWERED):
        nb04.check_lora_params(placeholder)


@pytest.mark.parametrize("question", [nb04.QUIZ_PAD_BY_POSITION, nb04.QUIZ_EVAL_TUPLE, nb04.QUIZ_LORA_ZERO])
def test_quizzes_have_one_right_choice_each_explained(question):
    text, choices = question
    assert text.strip() and all(isinstance(choice, Choice) and choice.why for choice in choices)
    assert sum(choice.correct for choice in choices) == 1


def shifted_loss(logits, labels):
    """The notebook's loss by hand: logits at t against the label at t + 1, -100 left out."""
    log_probs = logits[:, :-1].float().log_softmax(-1)
    targets = labels[:, 1:]
    learned = targets != -100
    return -log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)[learned].mean()


def test_the_notebooks_loss_by_hand_check_can_fail():
    """The hand-written loss equals outputs.loss on a collator batch; without the shift, assert_close fails."""
    model, tok = gptnb.load_model("tiny-gpt2", profile="tiny", device="cpu")
    pairs = [("Tweet: so good\nSentiment:", " positive"), ("Tweet: rain again, all day\nSentiment:", " negative")]
    batch = CompletionCollator(tok.pad_token_id)(encode_pairs(tok, pairs, 64))
    with torch.no_grad():
        outputs = model(**batch)
    torch.testing.assert_close(shifted_loss(outputs.logits, batch["labels"]), outputs.loss.float())
    unshifted = -outputs.logits.log_softmax(-1).gather(-1, batch["labels"].clamp(min=0).unsqueeze(-1)).squeeze(-1)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(unshifted[batch["labels"] != -100].mean(), outputs.loss.float())
