"""Training batches for completion fine-tuning: `encode_pairs` tokenizes, `CompletionCollator` pads and masks.

Examples are tokenized without padding; the collator pads each batch only to its longest
example (dynamic padding) and sets the labels to -100, which the loss ignores, on the
padding and (by default) the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100  # labels with this value add nothing to the cross-entropy loss
LOSS_ON = ("completion", "all")


def encode_pairs(tokenizer, pairs: list[tuple[str, str]], max_length: int) -> list[dict]:
    """Token ids of each prompt + completion + eos, unpadded, with the prompt's length.

    The prompt gets the tokenizer's usual special tokens (as at test time); a prompt too long
    for `max_length` loses tokens from its start, so the completion and the words before it survive.
    """
    prompts = tokenizer([prompt for prompt, _ in pairs])["input_ids"]
    completions = tokenizer([completion for _, completion in pairs], add_special_tokens=False)["input_ids"]
    examples = []
    for prompt_ids, completion_ids in zip(prompts, completions):
        completion_ids = completion_ids + [tokenizer.eos_token_id]
        room = max(max_length - len(completion_ids), 1)
        prompt_ids = prompt_ids[-room:]
        examples.append({"input_ids": prompt_ids + completion_ids, "prompt_length": len(prompt_ids)})
    return examples


@dataclass
class CompletionCollator:
    """Pad a batch to its longest example and build the labels the loss is computed on.

    ``labels`` copies ``input_ids`` except for -100 at the padding and, with
    ``loss_on="completion"``, at the prompt. Padding is found by position, never by
    token id: the pad token is usually eos, and the eos that ends each completion must
    stay in the loss or the model never learns to stop.

    Padding goes on the left (with position ids counting real tokens only), so every
    completion ends the row. The output layer, a vocabulary-wide matrix product, then
    runs only on the last columns that predict a label (``logits_to_keep``), and
    ``labels`` holds just those columns.
    """

    pad_token_id: int
    loss_on: str = "completion"

    def __call__(self, examples: list[dict]) -> dict:
        width = max(len(example["input_ids"]) for example in examples)
        input_ids = torch.full((len(examples), width), self.pad_token_id)
        attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE_INDEX)
        for row, example in enumerate(examples):
            padding = width - len(example["input_ids"])
            input_ids[row, padding:] = torch.tensor(example["input_ids"])
            attention_mask[row, padding:] = 1
            # A row's first token has nothing before it to be predicted from: never a label.
            start = padding + max(example["prompt_length"] if self.loss_on == "completion" else 0, 1)
            labels[row, start:] = input_ids[row, start:]
        # The logits at column t predict the token at t + 1: keep from one column before the first label.
        first_label = int((labels != IGNORE_INDEX).int().argmax(-1).min())
        keep = min(width - first_label + 1, width)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0),
            "labels": labels[:, width - keep :],
            "logits_to_keep": keep,
        }


def padding_share(batches) -> float:
    """The fraction of the token positions in `batches` that are padding."""
    real = total = 0
    for batch in batches:
        real += int(batch["attention_mask"].sum())
        total += batch["attention_mask"].numel()
    return 1 - real / max(total, 1)
