"""A classification head on a GPT, the usual alternative to label words (notebook 04).

`head_model` gives a causal LM's body a new, random linear layer (hidden size -> number of classes) that reads
the last hidden state of each row's last non-padding token (`AutoModelForSequenceClassification`); `train_head`
fine-tunes the whole model with the `Trainer` on (prompt, class) pairs, keeping the best epoch on validation
pairs as `gptnb.finetune.finetune` does; `predict_head` gives class probabilities. The prompts are the label-word
runs' own (`head_pairs`), so the head reads the very position where label scoring reads the next word.
"""

from __future__ import annotations

import copy
import gc
import tempfile
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForSequenceClassification, Trainer

from .finetune import length_grouped, numbers_of, train_measured, training_arguments
from .lora import count_trainable
from .prompts import tweet_format


def head_pairs(frame, labels) -> list[tuple[str, int]]:
    """(prompt, class) pairs of a tweets frame (columns text, label), with the prompt of the label-word runs."""
    fmt = tweet_format(labels)
    return [(fmt.render(text), int(label)) for text, label in zip(frame["text"], frame["label"])]


def encode_prompts(tokenizer, pairs: list[tuple[str, int]], max_length: int) -> list[dict]:
    """Token ids of each prompt, unpadded, with its class as ``labels``; a long prompt loses tokens from its start
    (as in `gptnb.collate.encode_pairs`), so that the words the head reads survive."""
    ids = tokenizer([prompt for prompt, _ in pairs])["input_ids"]
    return [{"input_ids": row[-max_length:], "labels": label} for row, (_, label) in zip(ids, pairs)]


@dataclass
class HeadCollator:
    """Pad a batch on the right (real tokens keep positions 0, 1, ...), with an attention mask and the classes."""

    pad_token_id: int

    def __call__(self, examples: list[dict]) -> dict:
        width = max(len(example["input_ids"]) for example in examples)
        input_ids = torch.full((len(examples), width), self.pad_token_id)
        attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, example in enumerate(examples):
            input_ids[row, : len(example["input_ids"])] = torch.tensor(example["input_ids"])
            attention_mask[row, : len(example["input_ids"])] = 1
        labels = torch.tensor([example["labels"] for example in examples])
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def head_model(model, tokenizer, labels, seed: int = 0):
    """A sequence-classification model with `model`'s body (its weights copied) and a new random head, one output
    per name in `labels`. The config's ``pad_token_id`` is set: the model pools the last token that is not padding.
    """
    config = copy.deepcopy(model.config)
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {name: i for i, name in enumerate(labels)}
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    head = AutoModelForSequenceClassification.from_config(config, dtype=model.dtype)
    missing, _ = head.load_state_dict(model.state_dict(), strict=False)  # the causal LM's output layer is unused
    if missing != ["score.weight"]:
        raise ValueError(
            f"{type(model).__name__}'s weights do not fit {type(head).__name__}: missing {missing[:3]}; "
            "pass a causal LM loaded with gptnb.load_model"
        )
    head.gptnb_info = getattr(model, "gptnb_info", None)
    return head.to(model.device).eval()


@dataclass
class HeadResult:
    """What `train_head` returns: the trained model (best epoch's weights) and how training went."""

    model: object
    log_history: list[dict]
    train_seconds: float  # wall time of `Trainer.train()` without its evaluations
    trainable_params: int
    peak_memory_gib: float  # during training: GPU memory allocated on CUDA, else the process's RSS
    best_eval_loss: float | None = None
    details: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """The numbers of the result, without the model (for tables and JSON)."""
        return numbers_of(self)


def train_head(
    model,
    tokenizer,
    train: list[tuple[str, int]],
    val: list[tuple[str, int]] | None = None,
    *,
    epochs: float = 1,
    batch_size: int = 16,
    learning_rate: float = 1e-4,
    max_length: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> HeadResult:
    """Fine-tune a `head_model` (every weight) on (prompt, class) pairs with the `Trainer`; return a `HeadResult`.

    The same protocol as `gptnb.finetune.finetune`, with its TrainingArguments: length-grouped batches, a tenth of
    the steps as warm-up, and with `val` the validation loss after each epoch, the best epoch's weights kept over
    several epochs.
    """
    if not train:
        raise ValueError("train_head needs at least one (prompt, class) training pair")
    train_set = length_grouped(encode_prompts(tokenizer, train, max_length), batch_size, seed)
    val_set = encode_prompts(tokenizer, val, max_length) if val else None
    device = next(model.parameters()).device
    with tempfile.TemporaryDirectory(prefix="gptnb-head-") as scratch:
        args = training_arguments(
            scratch, device, model.dtype, len(train_set), bool(val_set), epochs, batch_size,
            learning_rate=learning_rate, mixed_precision=True, progress=progress, seed=seed,
            group_by_length=True, logging_steps=None,
        )  # fmt: skip
        trainer = Trainer(
            model=model,
            args=args,
            data_collator=HeadCollator(tokenizer.pad_token_id),
            train_dataset=train_set,
            eval_dataset=val_set,
        )
        seconds, peak_gib, _ = train_measured(trainer, device, progress)
    model, state = trainer.model.eval(), trainer.state
    del trainer
    gc.collect()  # the trainer holds the optimizer state in reference cycles
    return HeadResult(
        model=model,
        log_history=list(state.log_history),
        train_seconds=seconds,
        trainable_params=count_trainable(model)[0],
        peak_memory_gib=peak_gib,
        best_eval_loss=state.best_metric,
        details={"steps": state.global_step, "epochs": state.epoch, "n_train": len(train), "n_val": len(val or ())},
    )


@torch.no_grad()
def predict_head(model, tokenizer, prompts: list[str], batch_size: int = 16, max_length: int = 128) -> torch.Tensor:
    """(n_prompts, n_classes) class probabilities from a classification-head model."""
    examples = encode_prompts(tokenizer, [(prompt, 0) for prompt in prompts], max_length)
    collate, device = HeadCollator(tokenizer.pad_token_id), next(model.parameters()).device
    chunks = []
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size])
        batch.pop("labels")
        logits = model(**{name: value.to(device) for name, value in batch.items()}).logits
        chunks.append(logits.float().softmax(-1).cpu())
    return torch.cat(chunks)
