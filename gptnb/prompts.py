"""Few-shot prompts and classification by label scoring: build a prompt, score each label, calibrate.

Label scoring asks the model how likely each label continuation is after the
prompt (the sum of its tokens' log-probabilities) instead of letting it generate
free text: one forward pass per prompt, and the answer is always a valid label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import pandas as pd
import torch
from transformers import DynamicCache

from .kvcache import cache_argument, prefix_copy, shared_length

# Zhao et al. (2021), "Calibrate Before Use": inputs that carry no sentiment at all.
CONTENT_FREE = ("N/A", "", "[MASK]")


@dataclass(frozen=True)
class FewShotPrompt:
    """A plain-text few-shot prompt: an instruction, k solved examples, then the query.

    `template` renders one example; it must end with ``{label}`` so that the query,
    rendered with an empty label, ends exactly where the label word would start.
    """

    instruction: str = ""
    template: str = "Tweet: {text}\nSentiment:{label}"
    label_words: tuple[str, ...] = (" negative", " positive")
    separator: str = "\n\n"

    def __post_init__(self):
        if not self.template.endswith("{label}") or "{text}" not in self.template:
            raise ValueError(
                f"template {self.template!r} must contain {{text}} and end with {{label}}, "
                "e.g. 'Review: {text}\\nSentiment:{label}'"
            )

    def render(self, query: str, examples: Sequence[tuple[str, int]] = ()) -> str:
        """The prompt text for `query` after `examples` given as (text, label index) pairs."""
        blocks = [self.instruction] if self.instruction else []
        blocks += [self.template.format(text=text, label=self.label_words[label]) for text, label in examples]
        blocks.append(self.template.format(text=query, label=""))
        return self.separator.join(blocks)


def tweet_format(labels) -> FewShotPrompt:
    """The zero-shot prompt format used for fine-tuning and testing alike, one label word per class."""
    return FewShotPrompt(label_words=tuple(f" {name}" for name in labels))


def tweet_pairs(frame, labels) -> list[tuple[str, str]]:
    """(prompt, completion) pairs of a tweets frame (columns text, label): the same prompt the tests score."""
    fmt = tweet_format(labels)
    return [(fmt.render(text), fmt.label_words[label]) for text, label in zip(frame["text"], frame["label"])]


def sample_examples(frame: pd.DataFrame, k: int, seed: int) -> list[tuple[str, int]]:
    """`k` random (text, label) examples from a frame with columns text and label, in random order."""
    if k > len(frame):
        raise ValueError(f"cannot draw {k} examples from {len(frame)} rows; use a smaller k or more training data")
    rows = frame.sample(n=k, random_state=seed)
    return list(zip(rows["text"], rows["label"].astype(int)))


def parse_label(generated: str, label_names: Sequence[str]) -> int | None:
    """The generate-and-parse way: the index of the first label name found as a word in
    `generated` (any case), or None when the model wrote none of them."""
    found = re.search(r"\b(" + "|".join(map(re.escape, label_names)) + r")\b", generated, re.IGNORECASE)
    return None if found is None else [name.lower() for name in label_names].index(found.group(1).lower())


def _label_ids(tokenizer, prompts: list[str], prompt_ids: list[list[int]], labels: list[str]) -> list[list[list[int]]]:
    """The token ids of each label as it follows each prompt.

    Taken from tokenizing prompt + label together, so the label's tokens are
    exactly those of the full text; if the prompt's own tokens are not a prefix
    of that (a merge across the boundary), the label is tokenized on its own.
    """
    joined = tokenizer([p + label for p in prompts for label in labels])["input_ids"]
    alone = [tokenizer(label, add_special_tokens=False)["input_ids"] for label in labels]
    result = []
    for i, ids in enumerate(prompt_ids):
        row = []
        for j in range(len(labels)):
            full = joined[i * len(labels) + j]
            row.append(full[len(ids) :] if full[: len(ids)] == ids and len(full) > len(ids) else alone[j])
        result.append(row)
    for j, label in enumerate(labels):
        if not alone[j]:
            raise ValueError(
                f"label {label!r} has no tokens; give each label as the text that follows the prompt, e.g. ' positive'"
            )
    return result


@torch.no_grad()
def label_logprobs(model, tokenizer, prompts: list[str], labels: list[str], batch_size: int = 16) -> torch.Tensor:
    """(n_prompts, n_labels) summed log-probabilities of each label continuation after each prompt.

    `labels` are the continuations exactly as they follow the prompt (e.g. " negative");
    a multi-token label sums over its tokens. The tokens every prompt shares (the
    instruction and examples of a few-shot prompt) run through the model once and
    their key/value cache is reused; the rest runs in right-padded batches with an
    attention mask. Works for GPT-2, GPT-Neo and Llama models.
    """
    prompts, labels = list(prompts), list(labels)
    if not prompts or not labels:
        raise ValueError("label_logprobs needs at least one prompt and one label")
    prompt_ids = tokenizer(prompts)["input_ids"]
    for index, ids in enumerate(prompt_ids):
        if not ids:
            raise ValueError(f"prompt {index} has no tokens; every prompt needs some text before the label")
    shared = shared_length(prompt_ids, min(len(ids) for ids in prompt_ids) - 1)  # each keeps a token of its own
    rows = _plan_rows(prompt_ids, _label_ids(tokenizer, prompts, prompt_ids, labels), shared)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores = _score_rows(model, rows, prompt_ids[0][:shared], pad, batch_size, len(prompts) * len(labels))
    return scores.view(len(prompts), len(labels)).cpu()


@dataclass
class _Row:
    """One sequence the model reads after the shared prefix, and the (prompt, label) pairs scored from it."""

    tokens: tuple[int, ...]
    pairs: list[tuple[int, list[int]]]  # (pair index: prompt * n_labels + label, the label's token ids)


def _plan_rows(prompt_ids: list[list[int]], label_ids: list[list[list[int]]], shared: int) -> list[_Row]:
    """The rows to run: each (prompt, label) pair needs the logits that predict the label's tokens, so the
    model reads the prompt's own tokens (after the shared prefix) and all but the last label token. Pairs
    that read the same tokens (every single-token label of one prompt) share one row."""
    rows: dict[tuple[int, ...], _Row] = {}
    for prompt, ids in enumerate(prompt_ids):
        for label, targets in enumerate(label_ids[prompt]):
            tokens = tuple(ids[shared:] + targets[:-1])
            rows.setdefault(tokens, _Row(tokens, [])).pairs.append((prompt * len(label_ids[prompt]) + label, targets))
    return list(rows.values())


def _score_rows(model, rows: list[_Row], prefix: list[int], pad: int, batch_size: int, n_pairs: int) -> torch.Tensor:
    """The summed log-probability of each pair's label tokens: the rows run in batches of similar length,
    after the key/value cache of `prefix` (computed once, repeated once per batch size)."""
    device, argument = model.device, cache_argument(model)
    prefix_cache = None
    if prefix:
        prefix_cache = DynamicCache()
        model(input_ids=torch.tensor([prefix], device=device), use_cache=True, **{argument: prefix_cache})
    scores = torch.empty(n_pairs, device=device)
    repeated: dict[int, DynamicCache] = {}  # the prefix's cache repeated for a batch of that many rows
    rows = sorted(rows, key=lambda row: len(row.tokens))  # similar lengths, less padding
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        lengths = [len(row.tokens) for row in batch]
        width = max(lengths)
        # Right padding keeps every row's tokens right after the shared prefix, so their
        # positions (shared, shared + 1, ...) are the true ones; pads come last and no real
        # token attends to them. (Left padding would shift GPT-Neo's local attention window.)
        ids = torch.tensor([list(row.tokens) + [pad] * (width - n) for row, n in zip(batch, lengths)], device=device)
        own = torch.tensor([[1] * n + [0] * (width - n) for n in lengths], device=device)
        mask = torch.cat([torch.ones(len(batch), len(prefix), dtype=own.dtype, device=device), own], dim=1)
        cached = {"use_cache": False}
        if prefix_cache is not None:
            if len(batch) not in repeated:
                repeated[len(batch)] = prefix_copy(prefix_cache, batch=len(batch))
            cached = {argument: repeated[len(batch)], "use_cache": True}
        first = min(n - len(targets) for row, n in zip(batch, lengths) for _, targets in row.pairs)
        logits = model(
            input_ids=ids, attention_mask=mask, logits_to_keep=torch.arange(first, width, device=device), **cached
        ).logits
        if prefix_cache is not None:
            cached[argument].crop(-width)  # the batch's own tokens out: the prefix alone, for the next batch
        for batch_row, (row, n) in enumerate(zip(batch, lengths)):
            for pair, targets in row.pairs:
                label_logits = logits[batch_row, n - len(targets) - first : n - first].float().log_softmax(-1)
                scores[pair] = label_logits.gather(-1, torch.tensor(targets, device=device)[:, None]).sum()
    return scores


def content_free_prior(content_free_scores: torch.Tensor) -> torch.Tensor:
    """log p_cf: the model's average label distribution on content-free inputs (rows), in log space."""
    return content_free_scores.log_softmax(-1).exp().mean(0).log()


def calibrate(scores: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Contextual calibration: each label's probability divided by its content-free prior (log space)."""
    return scores.log_softmax(-1) - prior


def predict_labels(
    model,
    tokenizer,
    prompts: list[str],
    labels: list[str],
    batch_size: int = 16,
    calibration: torch.Tensor | None = None,
) -> list[int]:
    """The index of the most likely label for each prompt; `calibration` is a `content_free_prior`."""
    scores = label_logprobs(model, tokenizer, prompts, labels, batch_size=batch_size)
    if calibration is not None:
        scores = calibrate(scores, calibration)
    return scores.argmax(-1).tolist()
