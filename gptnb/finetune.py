"""Supervised fine-tuning of a causal LM on (prompt, completion) pairs: `finetune`.

The recipe, in the order a batch meets it:

1. one text format for training and testing: a tweet becomes the zero-shot prompt of
   `gptnb.prompts.FewShotPrompt` (``"Tweet: {text}\\nSentiment:"``) and its completion is
   the label word (``" positive"``) followed by the end-of-text token;
2. examples are tokenized without padding; `CompletionCollator` pads each batch only to
   its longest example (dynamic padding; batches of similar length are grouped) and sets
   the labels to -100, which the loss ignores, on the padding and (by default) the prompt;
3. `transformers.Trainer` trains, evaluates each epoch and keeps the best checkpoint;
   ``lora_rank`` trains LoRA adapters (peft) instead of every weight.

`finetune` runs unchanged on several GPUs under ``torchrun`` or ``accelerate launch``
(see `gptnb.finetune_cli` for the command line).
"""
from __future__ import annotations

import dataclasses
import gc
import os
import resource
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil
import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, PrinterCallback, Trainer, TrainerCallback,
                          TrainingArguments)

from .generation import generate_text
from .prompts import FewShotPrompt, label_logprobs, parse_label

IGNORE_INDEX = -100  # labels with this value add nothing to the cross-entropy loss
LOSS_ON = ("completion", "all")


# --- the text format ---------------------------------------------------------------------


def tweet_format(labels) -> FewShotPrompt:
    """The zero-shot prompt format used for training and testing alike, one label word per class."""
    return FewShotPrompt(label_words=tuple(f" {name}" for name in labels))


def tweet_pairs(frame, labels) -> list[tuple[str, str]]:
    """(prompt, completion) pairs of a tweets frame (columns text, label): the same prompt the tests score."""
    fmt = tweet_format(labels)
    return [(fmt.render(text), fmt.label_words[label]) for text, label in zip(frame["text"], frame["label"])]


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
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0),
                "labels": labels[:, width - keep:], "logits_to_keep": keep}


def padding_share(batches) -> float:
    """The fraction of the token positions in `batches` that are padding."""
    real = total = 0
    for batch in batches:
        real += int(batch["attention_mask"].sum())
        total += batch["attention_mask"].numel()
    return 1 - real / max(total, 1)


# --- model helpers -----------------------------------------------------------------------


def fit_embeddings(model, tokenizer) -> bool:
    """Grow the model's embedding matrix when the tokenizer has tokens it lacks (after `add_special_tokens`)."""
    if len(tokenizer) <= model.get_input_embeddings().num_embeddings:
        return False
    model.resize_token_embeddings(len(tokenizer))
    return True


def add_lora(model, rank: int, alpha: int | None = None, dropout: float = 0.05):
    """Wrap `model` with LoRA adapters of `rank` on its attention projections (peft's defaults per architecture).

    Only the adapters train; the base weights are frozen (and modified in place by the wrapping).
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, lora_dropout=dropout, task_type="CAUSAL_LM",
                        fan_in_fan_out=model.config.model_type == "gpt2")  # GPT-2 stores its weights transposed
    return get_peft_model(model, config)


def count_trainable(model) -> tuple[int, int]:
    """(trainable, total) parameters."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def peak_rss_gib() -> float:
    """The largest resident set (RSS) this process has had so far, in GiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.gib``: the most memory used inside the block.

    On CUDA, allocated GPU memory; elsewhere the process's RSS, sampled every 20 ms by a thread
    (the process-wide `peak_rss_gib` cannot tell one block from what ran before it).
    """

    def __init__(self, device: torch.device | None = None):
        self.device, self.gib = device or torch.device("cpu"), 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        process, self._done = psutil.Process(), threading.Event()

        def sample():
            while True:
                self.gib = max(self.gib, process.memory_info().rss / 2**30)
                if self._done.wait(0.02):
                    return

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.gib = torch.cuda.max_memory_allocated(self.device) / 2**30
        else:
            self._done.set()
            self._thread.join()


def save_finetuned(model, tokenizer, path: str | Path, merge: bool = True) -> Path:
    """Save a fine-tuned model with its tokenizer.

    A LoRA model is merged into full weights (in place: `model` keeps no adapters afterwards)
    unless ``merge=False``; then only the small adapter is written, and `load_finetuned` needs
    its base model where it was.
    """
    path = Path(path)
    if merge and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def load_finetuned(path: str | Path, device: torch.device | str | None = None):
    """``(model, tokenizer)`` saved by `save_finetuned` (full weights or a LoRA adapter), in eval mode."""
    from .device import pick_device

    path = Path(path)
    if (path / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path)
    else:
        model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device or pick_device()).eval(), tokenizer


# --- training ----------------------------------------------------------------------------


@dataclass
class FinetuneResult:
    """What `finetune` returns: the trained model (best epoch's weights) and how training went."""

    model: object
    tokenizer: object
    log_history: list[dict]  # the Trainer's log: dicts with step, epoch and loss or eval_loss
    train_seconds: float  # wall time of `Trainer.train()` without its evaluations
    tokens_per_second: float  # real (non-padding) tokens trained on per second
    trainable_params: int
    total_params: int
    peak_memory_gib: float  # during training: GPU memory allocated on CUDA, else the process's RSS
    padding_share: float  # padding's share of the token positions in the training batches
    best_eval_loss: float | None = None
    stopped: bool = False  # True when `should_stop` ended training early
    details: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """The numbers of the result, without the model (for tables and JSON)."""
        skip = {"model", "tokenizer", "log_history"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}


class _Hooks(TrainerCallback):
    """Pass each log entry to `on_step`; stop when `should_stop()` says so."""

    def __init__(self, on_step, should_stop):
        self.on_step, self.should_stop, self.stopped = on_step, should_stop, False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.on_step and logs:
            self.on_step({"step": state.global_step, "total_steps": state.max_steps, "epoch": state.epoch, **logs})

    def on_step_end(self, args, state, control, **kwargs):
        if self.should_stop and self.should_stop():
            self.stopped = control.should_training_stop = True


def length_grouped(examples: list[dict], batch_size: int, seed: int = 0) -> list[dict]:
    """`examples` reordered so that consecutive runs of `batch_size` have similar lengths, in a random batch order.

    Read in this order, batches need almost no padding. (`Trainer`'s own length grouping sorts only
    within random groups of a few batches, which leaves ~10 % padding on tweets.)
    """
    by_length = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    batches = [by_length[start:start + batch_size] for start in range(0, len(by_length), batch_size)]
    order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(seed)).tolist()
    return [examples[i] for b in order for i in batches[b]]


def _sampling_args(in_order: bool) -> dict:
    """Read the training set in the given order (transformers 5); transformers 4 can only group by itself."""
    if "train_sampling_strategy" in {f.name for f in dataclasses.fields(TrainingArguments)}:
        return {"train_sampling_strategy": "sequential" if in_order else "random"}
    return {"group_by_length": in_order}


def finetune(
    model,
    tokenizer,
    train: list[tuple[str, str]],
    val: list[tuple[str, str]] | None = None,
    *,
    epochs: float = 1,
    batch_size: int = 16,
    learning_rate: float = 1e-4,
    lora_rank: int | None = None,
    loss_on: str = "completion",
    max_length: int = 128,
    seed: int = 0,
    output_dir: str | Path | None = None,
    on_step: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    logging_steps: int | None = None,
    group_by_length: bool = True,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune `model` to continue each prompt with its completion; return a `FinetuneResult`.

    - `train`, `val`: (prompt, completion) pairs, e.g. ``("Tweet: so good\\nSentiment:", " positive")``
      (`tweet_pairs` makes them). An eos token is appended to every completion.
    - `loss_on`: ``"completion"`` learns only the completion; ``"all"`` also the prompt (never the padding).
    - `lora_rank`: train LoRA adapters of this rank instead of all weights (`model` is wrapped in place).
    - With `val`, the loss on it is measured each epoch; over several epochs the best epoch's weights are kept.
    - `output_dir`: where the Trainer writes checkpoints; a temporary folder, removed afterwards, when None.
      The trained model is not saved there: use `save_finetuned`.
    - `on_step(info)`: called at every log entry with a dict holding ``step``, ``total_steps``, ``epoch`` and
      either ``loss``, ``learning_rate``, ``grad_norm`` (training) or ``eval_loss`` (validation).
    - `should_stop()`: polled after every step; returning True ends training early (``result.stopped``).
    - `logging_steps`: steps between log entries (default: ~20 per run); `group_by_length` batches
      examples of similar length together (`length_grouped`: a random order of batches, fixed across
      epochs); `progress` shows progress bars.
    """
    if loss_on not in LOSS_ON:
        raise ValueError(f"loss_on must be one of {LOSS_ON}, not {loss_on!r}")
    if not train:
        raise ValueError("finetune needs at least one (prompt, completion) training pair")
    fit_embeddings(model, tokenizer)
    if lora_rank:
        model = add_lora(model, lora_rank)
    train_set = encode_pairs(tokenizer, train, max_length)
    if group_by_length:
        train_set = length_grouped(train_set, batch_size, seed)
    val_set = encode_pairs(tokenizer, val, max_length) if val else None
    collator = CompletionCollator(tokenizer.pad_token_id, loss_on)
    processes = int(os.environ.get("WORLD_SIZE", 1))  # under torchrun / accelerate launch, one per GPU
    steps_per_epoch = -(-len(train_set) // (batch_size * processes))
    total_steps = max(1, round(steps_per_epoch * epochs))
    hooks = _Hooks(on_step, should_stop)
    device = next(model.parameters()).device
    keep_best = bool(val_set) and epochs > 1  # after one epoch the best weights are the last ones
    with tempfile.TemporaryDirectory(prefix="gptnb-finetune-") as scratch:
        args = TrainingArguments(
            output_dir=str(output_dir or scratch),
            num_train_epochs=epochs,
            per_device_train_batch_size=batch_size,
            per_device_eval_batch_size=batch_size,
            learning_rate=learning_rate,
            warmup_steps=total_steps // 10,
            weight_decay=0.0,
            logging_strategy="steps",
            logging_steps=logging_steps or max(1, total_steps // 20),
            eval_strategy="epoch" if val_set else "no",
            save_strategy="epoch" if keep_best else "no",
            load_best_model_at_end=keep_best,
            metric_for_best_model="eval_loss",
            greater_is_better=False,
            save_total_limit=1,
            save_only_model=True,
            bf16=device.type == "cuda" and model.dtype == torch.float32 and torch.cuda.is_bf16_supported(),
            use_cpu=device.type == "cpu",
            dataloader_pin_memory=device.type == "cuda",
            remove_unused_columns=False,
            ddp_find_unused_parameters=False,  # every trainable weight gets a gradient; the search costs a pass
            report_to="none",
            disable_tqdm=not progress,
            seed=seed,
            **_sampling_args(group_by_length),
        )
        trainer = Trainer(model=model, args=args, data_collator=collator, train_dataset=train_set,
                          eval_dataset=val_set, processing_class=tokenizer, callbacks=[hooks])
        if not progress:
            trainer.remove_callback(PrinterCallback)  # it prints every log entry when bars are off
        started = time.perf_counter()
        with PeakMemory(device) as peak:
            trainer.train()
        evaluating = sum(entry.get("eval_runtime", 0.0) for entry in trainer.state.log_history)
        seconds = time.perf_counter() - started - evaluating
        share = padding_share(trainer.get_train_dataloader())
    model, state = trainer.model.eval(), trainer.state
    del trainer
    gc.collect()  # the trainer holds the optimizer state (twice the model's size) in reference cycles
    trainable, total = count_trainable(model)
    done_epochs = state.epoch  # fewer than `epochs` when `should_stop` ended training
    real_tokens = sum(len(example["input_ids"]) for example in train_set) * done_epochs
    return FinetuneResult(
        model=model,
        tokenizer=tokenizer,
        log_history=list(state.log_history),
        train_seconds=seconds,
        tokens_per_second=real_tokens / seconds,
        trainable_params=trainable,
        total_params=total,
        peak_memory_gib=peak.gib,
        padding_share=share,
        best_eval_loss=state.best_metric,
        stopped=hooks.stopped,
        details={"steps": state.global_step, "epochs": done_epochs, "loss_on": loss_on, "lora_rank": lora_rank,
                 "max_length": max_length, "n_train": len(train_set), "n_val": len(val_set or [])},
    )


# --- evaluation --------------------------------------------------------------------------


def classify(model, tokenizer, texts, labels, batch_size: int = 16) -> torch.Tensor:
    """(n_texts, n_labels) probabilities of each label, by scoring every label word after the prompt."""
    fmt = tweet_format(labels)
    scores = label_logprobs(model, tokenizer, [fmt.render(text) for text in texts], list(fmt.label_words), batch_size)
    return scores.softmax(-1)


def generate_labels(model, tokenizer, texts, labels, batch_size: int = 16, max_new_tokens: int = 3) -> list[int]:
    """The label each text gets by greedy generation, parsed from the words written; -1 when none is named."""
    fmt = tweet_format(labels)
    prompts = [fmt.render(text) for text in texts]
    predictions = []
    for start in range(0, len(prompts), batch_size):
        generated = generate_text(model, tokenizer, prompts[start:start + batch_size], max_new_tokens, do_sample=False)
        predictions += [-1 if (found := parse_label(text, labels)) is None else found for text in generated]
    return predictions


def classification_metrics(y_true, y_pred, labels) -> dict:
    """Accuracy, macro-F1 and sklearn's per-class report (precision, recall, F1, support)."""
    from sklearn.metrics import classification_report

    from .results import score

    report = classification_report(y_true, y_pred, labels=list(range(len(labels))), target_names=list(labels),
                                   output_dict=True, zero_division=0)
    return {**score(y_true, y_pred), "per_class": {name: report[name] for name in labels}}


def worst_mistakes(frame, probabilities: torch.Tensor, labels, k: int = 8):
    """The `k` test tweets the model got wrong most confidently: text, true and predicted label, confidence."""
    confidence, predicted = probabilities.max(-1)
    table = frame.assign(predicted=[labels[i] for i in predicted.tolist()], confidence=confidence.tolist())
    wrong = table[predicted.numpy() != table["label"].to_numpy()]
    return wrong.sort_values("confidence", ascending=False).head(k)[["text", "label_name", "predicted", "confidence"]]
