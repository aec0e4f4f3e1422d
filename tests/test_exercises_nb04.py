"""Notebook 04's exercise checks: a right answer passes; a wrong one and the placeholder are told apart."""

import json
import re
from pathlib import Path

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


def loss_labels(input_ids, attention_mask, prompt_lengths, loss_on):
    labels = torch.full_like(input_ids, -100)
    for row in range(len(input_ids)):
        first = int((attention_mask[row] == 0).sum())
        start = first + (prompt_lengths[row] if loss_on == "completion" else 1)
        labels[row, start:] = input_ids[row, start:]
    return labels


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


@pytest.fixture(scope="module")
def examples(tokenizer):
    pairs = [
        ("Tweet: ok\nSentiment:", " positive"),
        ("Tweet: the train was late again and nobody told us why\nSentiment:", " negative"),
        ("Tweet: lovely lunch with my sister\nSentiment:", " positive"),
    ]
    return encode_pairs(tokenizer, pairs, 64)


def by_id(input_ids, attention_mask, prompt_lengths, loss_on):
    labels = loss_labels(input_ids, attention_mask, prompt_lengths, loss_on)
    return labels.masked_fill(input_ids == 50256, -100)  # tiny-gpt2's pad id is its end-of-text id


def first_token_learned(input_ids, attention_mask, prompt_lengths, loss_on):
    labels = loss_labels(input_ids, attention_mask, prompt_lengths, loss_on)
    return torch.where(attention_mask == 1, input_ids, -100) if loss_on == "all" else labels


def prompt_always_masked(input_ids, attention_mask, prompt_lengths, loss_on):
    return loss_labels(input_ids, attention_mask, prompt_lengths, "completion")


def prompt_never_masked(input_ids, attention_mask, prompt_lengths, loss_on):
    return loss_labels(input_ids, attention_mask, prompt_lengths, "all")


def padding_learned(input_ids, attention_mask, prompt_lengths, loss_on):
    labels = loss_labels(input_ids, attention_mask, prompt_lengths, loss_on)
    return torch.where(attention_mask == 0, input_ids, labels)


def shifted(input_ids, attention_mask, prompt_lengths, loss_on):
    labels = loss_labels(input_ids, attention_mask, prompt_lengths, loss_on)
    return torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], -100)], dim=1)


@pytest.mark.parametrize(
    "wrong, told",
    [
        (by_id, "find padding by position, not by id"),
        (first_token_learned, "loss_on='all': row 0, column"),
        (first_token_learned, "nothing predicts it"),
        (prompt_always_masked, "loss_on='all'"),
        (prompt_always_masked, "the prompt is learned"),
        (prompt_never_masked, "loss_on='completion'"),
        (padding_learned, "is padding: its label must be -100"),
        (shifted, "do not shift"),
        (lambda ids, mask, lengths, loss_on: loss_labels(ids, mask, lengths, loss_on).clamp(max=5), "its token id"),
        (lambda ids, mask, lengths, loss_on: loss_labels(ids, mask, lengths, loss_on)[:, 1:], "shape"),
        (lambda ids, mask, lengths, loss_on: loss_labels(ids, mask, lengths, loss_on).tolist(), "return a tensor"),
    ],
)
def test_loss_labels(capsys, examples, wrong, told):
    assert_told(nb04.check_loss_labels, "4.3", loss_labels, wrong, told, examples, 50256, capsys=capsys)


def test_loss_labels_reference_is_the_collators(tokenizer, examples):
    """The reference answer writes, at full width, the labels CompletionCollator keeps in its last columns."""
    for loss_on in ("completion", "all"):
        batch = CompletionCollator(tokenizer.pad_token_id, loss_on)(examples)
        ours = loss_labels(batch["input_ids"], batch["attention_mask"], [e["prompt_length"] for e in examples], loss_on)
        keep = batch["labels"].shape[1]
        assert torch.equal(ours[:, -keep:], batch["labels"]) and (ours[:, :-keep] == -100).all()


def test_a_wrong_answer_raises_while_nbgrader_grades(capsys, monkeypatch, tokenizer):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(AssertionError, match="Exercise 4.1: not yet"):
        nb04.check_training_example(lambda t, p, c: (t(p)["input_ids"],) * 2, tokenizer)
    with pytest.raises(AssertionError, match="Exercise 4.2: not yet"):
        nb04.check_right_padding_collator(mask_by_id)
    with pytest.raises(AssertionError, match="Exercise 4.3: not yet"):
        nb04.check_loss_labels(prompt_never_masked, encode_pairs(tokenizer, nb04.CHECK_PAIRS, 64), 50256)
    with pytest.raises(AssertionError, match=NOT_ANSWERED):
        nb04.check_loss_labels(placeholder, encode_pairs(tokenizer, nb04.CHECK_PAIRS, 64), 50256)


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


def test_the_notebooks_quiz_questions_and_choices_are_in_its_markdown():
    """Each quiz cell follows a markdown cell with its question and every choice, readable without running."""
    notebook = json.loads((Path(__file__).parent.parent / "notebooks" / "04_finetuning.ipynb").read_text())["cells"]
    found = 0
    for before, cell in zip(notebook, notebook[1:]):
        called = re.search(r"quiz\(\*nb04\.(\w+)\)", "".join(cell["source"]))
        if called:
            found += 1
            text, choices = getattr(nb04, called.group(1))
            markdown = "".join(before["source"])
            assert before["cell_type"] == "markdown" and text in markdown, called.group(1)
            assert all(f"- {choice.text}" in markdown for choice in choices), called.group(1)
    assert found == 3
