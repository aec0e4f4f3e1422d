"""Notebook 04 (fine-tuning): checks for its exercises and its quiz questions.

Exercises: 4.1 one training example's input ids and labels; 4.2 a collator that pads on the right and
masks padding and prompt with -100; 4.3 which positions of a left-padded batch get -100 for label-only and
whole-sequence training. Every check computes its reference here (from the tokenizer, from known answers, or
from `gptnb.collate.CompletionCollator` on a real batch), independently of the notebook's answer.
"""

from __future__ import annotations

import torch

from ..collate import IGNORE_INDEX as IGNORE
from ..collate import LOSS_ON, CompletionCollator
from . import Choice, call_answer, report

CHECK_PAIRS = [
    ("Tweet: Missed the bus again and it is pouring.\nSentiment:", " negative"),
    ("Tweet: Best coffee in town!\nSentiment:", " positive"),
]
# A batch with known answers: GPT-2's end-of-text id 50256 both ends every completion and pads.
PAD = 50256
BATCH = [
    {"input_ids": [10, 11, 12, 13, PAD], "prompt_length": 3},
    {"input_ids": [20, 21, 22, 23, 24, 25, 26, PAD], "prompt_length": 5},
    {"input_ids": [30, 31, PAD], "prompt_length": 2},
]


def _ids(value, what: str) -> list[int]:
    """A learner's list or tensor of token ids as a flat list of ints, or a one-line complaint."""
    try:
        return [int(i) for i in torch.as_tensor(value).flatten().tolist()]
    except (TypeError, ValueError, RuntimeError) as error:
        raise AssertionError(f"{what} must be a list or tensor of ints ({error})") from error


def _first_wrong(got: list[int], expected: list[int]) -> int:
    """The first position where `got` departs from `expected` (the shorter one's end if one extends the other)."""
    return next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))


def check_training_example(training_example, tokenizer) -> bool:
    """Exercise 4.1: `training_example(tokenizer, prompt, completion)` -> (input_ids, labels) of one example."""

    def check():
        for prompt, completion in CHECK_PAIRS:
            prompt_ids = tokenizer(prompt)["input_ids"]
            completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            result = call_answer(training_example, tokenizer, prompt, completion)
            assert isinstance(result, (tuple, list)) and len(result) == 2, "return two things: (input_ids, labels)"
            input_ids, labels = _ids(result[0], "input_ids"), _ids(result[1], "labels")
            expected_ids = prompt_ids + completion_ids
            assert len(input_ids) == len(labels), (
                f"input_ids and labels must be as long as each other (got {len(input_ids)} and {len(labels)})"
            )
            if input_ids != expected_ids:
                if input_ids == expected_ids[:-1]:
                    raise AssertionError("input_ids must end with the end-of-text token, so the model learns to stop")
                raise AssertionError(
                    f"input_ids differ from the tokens of prompt + completion + end-of-text at "
                    f"position {_first_wrong(input_ids, expected_ids)}"
                )
            expected_labels = [IGNORE] * len(prompt_ids) + completion_ids
            if labels == expected_labels:
                continue
            if labels == input_ids:
                raise AssertionError("the prompt's labels must be -100: only the completion is learned")
            if labels[:-1] == expected_labels[1:] or labels[:-1] == input_ids[1:]:
                raise AssertionError(
                    "do not shift the labels: the model itself compares position t's prediction with the label at t + 1"
                )
            position = _first_wrong(labels, expected_labels)
            wanted = "-100 (a prompt token)" if position < len(prompt_ids) else "that position's token id"
            raise AssertionError(f"the label at position {position} must be {wanted}; yours is {labels[position]}")

    return report("4.1", check)


def check_right_padding_collator(right_padding_collator) -> bool:
    """Exercise 4.2: `right_padding_collator(examples, pad_token_id)` pads on the right and masks with -100."""
    width = max(len(example["input_ids"]) for example in BATCH)

    def check():
        got = call_answer(right_padding_collator, [dict(example) for example in BATCH], PAD)
        assert isinstance(got, dict), f"return a dict of tensors, got {type(got).__name__}"
        for name in ("input_ids", "attention_mask", "labels"):
            assert name in got, f"the batch needs the key {name!r}"
            shape = tuple(torch.as_tensor(got[name]).shape)
            assert shape == (len(BATCH), width), (
                f"{name} must have shape (examples, longest example) = {(len(BATCH), width)}, got {shape}"
            )
        for row, example in enumerate(BATCH):
            ids, length, prompt = example["input_ids"], len(example["input_ids"]), example["prompt_length"]
            input_ids = _ids(got["input_ids"][row], "input_ids")
            mask = _ids(got["attention_mask"][row], "attention_mask")
            labels = _ids(got["labels"][row], "labels")
            assert input_ids[:length] == ids, (
                f"row {row} must start with its own tokens (pad on the right), then pad with pad_token_id"
            )
            assert all(i == PAD for i in input_ids[length:]), f"row {row}: padding positions must hold pad_token_id"
            assert mask == [1] * length + [0] * (width - length), (
                f"attention_mask of row {row} must be 1 at its own tokens and 0 at padding"
            )
            for position in range(length, width):
                assert labels[position] == IGNORE, (
                    f"labels at padding positions must be -100; row {row}, position {position} has {labels[position]}"
                )
            for position in range(prompt):
                assert labels[position] == IGNORE, (
                    f"labels at prompt positions must be -100; row {row}, position {position} has {labels[position]}"
                )
            for position in range(prompt, length):
                assert labels[position] == ids[position], (
                    f"row {row}, position {position} is part of the completion: its label must be its token id "
                    f"(the end-of-text token too, though it is also the pad token: find padding by position)"
                )

    return report("4.2", check)


def lora_shapes(model) -> list[tuple[int, int]]:
    """(in_features, out_features) of every weight matrix a LoRA-wrapped `model` adapts, read from its adapters."""
    return [
        (module.lora_A["default"].in_features, module.lora_B["default"].out_features)
        for module in model.modules()
        if hasattr(module, "lora_A") and "default" in module.lora_A
    ]


def _reference_labels(batch: dict) -> torch.Tensor:
    """The collator's labels at full width: it keeps only the last ``logits_to_keep`` columns, -100 before them."""
    labels = torch.full_like(batch["input_ids"], IGNORE)
    labels[:, labels.shape[1] - batch["labels"].shape[1] :] = batch["labels"]
    return labels


def _why_wrong(got: torch.Tensor, batch: dict, prompt_lengths: list[int], loss_on: str, pad_token_id: int) -> str:
    """What a wrong `loss_labels` answer did, read from the first row and column where it departs."""
    expected, mask, ids = _reference_labels(batch), batch["attention_mask"], batch["input_ids"]
    if torch.equal(got[:, :-1], expected[:, 1:]) or torch.equal(got[:, 1:], expected[:, :-1]):
        return "do not shift the labels: the model compares column t's prediction with the label at t + 1 itself"
    for row in range(len(ids)):
        first = int((mask[row] == 0).sum())  # left padding: the column of the row's first real token
        for column in range(ids.shape[1]):
            if int(got[row, column]) == int(expected[row, column]):
                continue
            where = f"row {row}, column {column}"
            if column < first:
                return f"{where} is padding: its label must be -100 (find padding with the attention mask)"
            if column == first and loss_on == "all":
                return (
                    f"{where} is the row's first real token: only padding comes before it, so nothing predicts it "
                    "and its label is -100, even with loss_on='all'"
                )
            if column < first + prompt_lengths[row]:
                if loss_on == "completion":
                    return f"{where} is in the prompt: with loss_on='completion' the prompt's labels are -100"
                return f"{where} is in the prompt: with loss_on='all' the prompt is learned: its label is its token id"
            if int(ids[row, column]) == pad_token_id and int(got[row, column]) == IGNORE:
                return (
                    f"{where} is the end-of-text token that ends the completion: it has the pad id but is not "
                    "padding, so it stays a label (find padding by position, not by id)"
                )
            return (
                f"{where}: the label must be {int(expected[row, column])} (its token id), yours is "
                f"{int(got[row, column])}"
            )
    return "the labels differ from the collator's"


def check_loss_labels(loss_labels, examples: list[dict], pad_token_id: int) -> bool:
    """Exercise 4.3: `loss_labels(input_ids, attention_mask, prompt_lengths, loss_on)` writes the labels of a
    left-padded batch as `CompletionCollator` does, for both values of `loss_on`; checked on a batch of `examples`
    (the shortest, a middle and the longest, so that two rows have padding)."""
    by_length = sorted(examples, key=lambda example: len(example["input_ids"]))
    chosen = [by_length[0], by_length[len(by_length) // 2], by_length[-1]]
    prompt_lengths = [example["prompt_length"] for example in chosen]

    def check():
        for loss_on in LOSS_ON:
            batch = CompletionCollator(pad_token_id, loss_on)(chosen)
            got = call_answer(
                loss_labels, batch["input_ids"].clone(), batch["attention_mask"].clone(), list(prompt_lengths), loss_on
            )
            assert torch.is_tensor(got), f"return a tensor, got {type(got).__name__}"
            assert got.shape == batch["input_ids"].shape, (
                f"the labels must have input_ids' shape {tuple(batch['input_ids'].shape)}, got {tuple(got.shape)}"
            )
            if not torch.equal(got.long(), _reference_labels(batch)):
                why = _why_wrong(got, batch, prompt_lengths, loss_on, pad_token_id)
                raise AssertionError(f"loss_on={loss_on!r}: {why}")

    return report("4.3", check)


QUIZ_PAD_BY_POSITION = (
    (
        "The pad token here is the end-of-text token (GPT-2's <|endoftext|>, SmolLM2-135M-Instruct's <|im_end|>). "
        "What goes wrong if the collator sets every label equal to the pad token's id to -100?"
    ),
    [
        Choice(
            "Nothing: padding and end-of-text play the same role",
            False,
            "They do not: padding is filler the model must ignore; the end-of-text token after the label is "
            "something it must learn to write.",
        ),
        Choice(
            "The model never learns to stop after the label word",
            True,
            "Right: the end-of-text token that ends each completion has the pad id too, so it leaves the loss; "
            "the model is never taught to end its answer. Masking by position keeps it.",
        ),
        Choice(
            "The attention mask stops working",
            False,
            "The attention mask is built from the lengths, not from the labels: it is unaffected. The loss is what "
            "loses the end-of-text token.",
        ),
        Choice(
            "Training crashes with an index error",
            False,
            "-100 is a valid label (the loss skips it): nothing crashes, which is what makes the bug quiet.",
        ),
    ],
)

QUIZ_EVAL_TUPLE = (
    (
        "The original lesson passes eval_dataset=(texts, labels), a plain tuple, with evaluation at every epoch's "
        "end. When does that go wrong?"
    ),
    [
        Choice(
            "At once, when Trainer(...) is created",
            False,
            "The Trainer does not look inside eval_dataset when it is built; that is why the bug costs an epoch.",
        ),
        Choice(
            "Never: the Trainer tokenizes the texts itself",
            False,
            "The Trainer does not tokenize: the collator receives the dataset's items as they are.",
        ),
        Choice(
            "At the first evaluation, after a whole epoch of training",
            True,
            "Right: the Trainer only touches eval_dataset when it evaluates, so the run trains for an epoch first "
            "and then fails on data that is not a list of tokenized examples. Check your data before long runs.",
        ),
        Choice("Only on a GPU", False, "Nothing about this depends on the device."),
    ],
)

QUIZ_LORA_ZERO = (
    "LoRA adds B @ A to a frozen weight matrix, with B filled with zeros at the start. Why zeros?",
    [
        Choice(
            "So that fewer parameters are trained",
            False,
            "The count is r x (in + out) per matrix whatever the starting values.",
        ),
        Choice(
            "So that the wrapped model starts out computing exactly what the pretrained model did",
            True,
            "Right: B @ A is zero until training moves B, so training starts from the pretrained model's "
            "behaviour, not from a random disturbance of it.",
        ),
        Choice("Because zeros need no memory", False, "A zero takes the same memory as any other number."),
        Choice(
            "So that A gets no gradient",
            False,
            "With B zero, A's first gradient is zero, but B's is not; after one step both learn. That is a "
            "side effect, not the reason.",
        ),
    ],
)
