"""Supervised fine-tuning of a causal LM on (prompt, completion) pairs: `finetune`, the `transformers.Trainer` recipe.

The recipe, in the order a batch meets it:

1. one text format for training and testing: a tweet becomes the zero-shot prompt of
   `gptnb.prompts.tweet_format` (``"Tweet: {text}\\nSentiment:"``) and its completion is
   the label word (``" positive"``) followed by the end-of-text token;
2. examples are tokenized without padding; `gptnb.collate.CompletionCollator` pads each batch only to
   its longest example (dynamic padding; batches of similar length are grouped by `length_grouped`) and
   sets the labels to -100, which the loss ignores, on the padding and (by default) the prompt;
3. `transformers.Trainer` trains, evaluates each epoch and keeps the best checkpoint;
   ``lora_rank`` trains LoRA adapters (peft, `gptnb.lora`) instead of every weight.

`finetune` runs unchanged on several GPUs under ``torchrun`` or ``accelerate launch``
(see `gptnb.finetune_cli` for the command line). Evaluation is in `gptnb.evaluate`.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from .collate import LOSS_ON, CompletionCollator, encode_pairs, padding_share
from .device import mixed_precision as autocast_flags
from .device import padding_safe_attention
from .lora import add_lora, count_trainable, fit_embeddings
from .memory import PeakMemory


@dataclass
class FinetuneResult:
    """What `finetune` returns: the trained model (best epoch's weights) and how training went."""

    model: object
    tokenizer: object
    log_history: list[dict]  # the Trainer's log: dicts with step, epoch and loss or eval_loss
    train_seconds: float  # wall time of `Trainer.train()` without its evaluations
    tokens_per_second: float  # real (non-padding) tokens trained on per second
    trained_tokens: int  # real (non-padding) tokens trained on, every epoch counted
    trainable_params: int
    total_params: int
    peak_memory_gib: float  # during training: GPU memory allocated on CUDA, else the process's RSS
    padding_share: float  # padding's share of the token positions in the training batches
    best_eval_loss: float | None = None
    stopped: bool = False  # True when `should_stop` ended training early
    details: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """The numbers of the result, without the model (for tables and JSON)."""
        return numbers_of(self)


def numbers_of(result) -> dict:
    """A training result dataclass's fields without its model, tokenizer and log: its numbers, for tables and JSON."""
    skip = {"model", "tokenizer", "log_history"}
    return {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name not in skip}


class TrainingDiverged(RuntimeError):
    """The training or validation loss became NaN or infinite: the weights are broken, so training stopped.

    `problem` says which loss, its value and the step, e.g. ``the training loss is nan at step 1 of 9``."""

    def __init__(self, problem: str, learning_rate: float):
        self.problem = problem
        super().__init__(
            f"fine-tuning diverged: {problem}, so training stopped; try a lower learning rate (it was "
            f"{learning_rate:g}) or plain float32 (a model loaded with dtype=torch.float32 and "
            "finetune(..., mixed_precision=False))"
        )


class _Hooks(TrainerCallback):
    """Stop with `TrainingDiverged` at a non-finite loss; pass each log entry to `on_step`; stop when
    `should_stop()` says so."""

    def __init__(self, on_step, should_stop):
        self.on_step, self.should_stop, self.stopped = on_step, should_stop, False

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key, name in (("loss", "training loss"), ("eval_loss", "validation loss")):
            if logs and key in logs and not math.isfinite(logs[key]):
                problem = f"the {name} is {logs[key]} at step {state.global_step} of {state.max_steps}"
                raise TrainingDiverged(problem, args.learning_rate)
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
    batches = [by_length[start : start + batch_size] for start in range(0, len(by_length), batch_size)]
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
    mixed_precision: bool = True,
) -> FinetuneResult:
    """Fine-tune `model` to continue each prompt with its completion; return a `FinetuneResult`.

    - `train`, `val`: (prompt, completion) pairs, e.g. ``("Tweet: so good\\nSentiment:", " positive")``
      (`tweet_pairs` makes them). An eos token is appended to every completion.
    - `loss_on`: ``"completion"`` learns only the completion; ``"all"`` also the prompt (never the padding).
    - `lora_rank`: train LoRA adapters of this rank instead of all weights (`model` is wrapped in place).
    - `seed`: the adapters' random start, the batch order and dropout: the same seed, data and settings
      train the same weights (on one device and thread count).
    - With `val`, the loss on it is measured each epoch; over several epochs the best epoch's weights are kept.
    - `output_dir`: where the Trainer writes checkpoints; a temporary folder, removed afterwards, when None.
      The trained model is not saved there: use `save_finetuned`.
    - `on_step(info)`: called at every log entry with a dict holding ``step``, ``total_steps``, ``epoch`` and
      either ``loss``, ``learning_rate``, ``grad_norm`` (training) or ``eval_loss`` (validation).
    - `should_stop()`: polled after every step; returning True ends training early (``result.stopped``).
    - `logging_steps`: steps between log entries (default: ~20 per run); `group_by_length` batches
      examples of similar length together (`length_grouped`: a random order of batches, fixed across
      epochs); `progress` shows progress bars.
    - `mixed_precision`: on a GPU, train fp32 weights with bf16 (or fp16) autocast; False trains in plain fp32.
    - A NaN or infinite loss stops training with `TrainingDiverged` (naming the step), instead of returning
      a broken model. On CUDA, training runs under `gptnb.device.padding_safe_attention`.
    """
    if loss_on not in LOSS_ON:
        raise ValueError(f"loss_on must be one of {LOSS_ON}, not {loss_on!r}")
    if not train:
        raise ValueError("finetune needs at least one (prompt, completion) training pair")
    fit_embeddings(model, tokenizer)
    if lora_rank:
        torch.manual_seed(seed)  # LoRA's A matrices start random: from `seed`, not from what ran before
        model = add_lora(model, lora_rank)
    train_set = encode_pairs(tokenizer, train, max_length)
    train_set = length_grouped(train_set, batch_size, seed) if group_by_length else train_set
    val_set = encode_pairs(tokenizer, val, max_length) if val else None
    hooks = _Hooks(on_step, should_stop)
    device = next(model.parameters()).device
    with tempfile.TemporaryDirectory(prefix="gptnb-finetune-") as scratch:
        args = training_arguments(
            output_dir or scratch, device, model.dtype, len(train_set), bool(val_set), epochs, batch_size,
            learning_rate=learning_rate, logging_steps=logging_steps, group_by_length=group_by_length,
            progress=progress, mixed_precision=mixed_precision, seed=seed,
        )  # fmt: skip
        collator = CompletionCollator(tokenizer.pad_token_id, loss_on)
        trainer = Trainer(
            model=model, args=args, data_collator=collator, train_dataset=train_set, eval_dataset=val_set,
            processing_class=tokenizer, callbacks=[hooks],
        )  # fmt: skip
        seconds, peak_gib, share = train_measured(trainer, device, progress)
    model, state = trainer.model.eval(), trainer.state
    del trainer
    gc.collect()  # the trainer holds the optimizer state (twice the model's size) in reference cycles
    trainable, total = count_trainable(model)
    done_epochs = state.epoch  # fewer than `epochs` when `should_stop` ended training
    trained_tokens = round(sum(len(example["input_ids"]) for example in train_set) * done_epochs)
    return FinetuneResult(
        model, tokenizer, list(state.log_history), seconds, trained_tokens / seconds, trained_tokens, trainable,
        total, peak_gib, share, best_eval_loss=state.best_metric, stopped=hooks.stopped,
        details={"steps": state.global_step, "epochs": done_epochs, "loss_on": loss_on, "lora_rank": lora_rank,
                 "max_length": max_length, "n_train": len(train_set), "n_val": len(val_set or [])},
    )  # fmt: skip


def train_measured(trainer: Trainer, device: torch.device, progress: bool) -> tuple[float, float, float]:
    """Run `trainer`; return its training seconds (without evaluations), peak memory (GiB) and padding share."""
    if not progress:
        trainer.remove_callback(PrinterCallback)  # it prints every log entry when bars are off
    fp16_autocast_on_cpu(trainer)
    started = time.perf_counter()
    with PeakMemory(device) as peak, padding_safe_attention(device):
        trainer.train()
    evaluating = sum(entry.get("eval_runtime", 0.0) for entry in trainer.state.log_history)
    return time.perf_counter() - started - evaluating, peak.gib, padding_share(trainer.get_train_dataloader())


def fp16_autocast_on_cpu(trainer: Trainer) -> None:
    """Give a CPU `trainer` with ``fp16=True`` (``GPTNB_DTYPE=float16``) what a T4 gets: fp16 autocast, a loss scaler.

    accelerate turns fp16 mixed precision on only off the CPU (`Accelerator.__init__` leaves ``native_amp`` off and
    ``scaler`` None when the device is ``cpu``), so ``fp16=True, use_cpu=True`` alone trains in plain fp32, silently
    (seen with accelerate 1.16: every linear layer's output float32, autocast off). torch autocasts to float16 on a
    CPU and has a CPU `torch.amp.GradScaler`, so this switches both on before `Trainer.train` prepares the model
    (which then runs its forward under autocast) and the optimizer (which steps through the scaler). Elsewhere it
    changes nothing. A Trainer built by hand (notebook 04's section 7) does not pass here and stays fp32 on a CPU.
    """
    accelerator = trainer.accelerator
    if trainer.args.fp16 and accelerator.device.type == "cpu" and not accelerator.native_amp:
        accelerator.native_amp = True
        accelerator.scaler = torch.amp.GradScaler("cpu")


def training_arguments(
    output_dir, device, dtype, n_train: int, validate: bool, epochs: float, batch_size: int, **options
) -> TrainingArguments:
    """`finetune`'s TrainingArguments: evaluation each epoch with `validate` (keeping the best epoch's weights when
    there are several), warm-up over the first tenth of the steps; the first step's loss is logged, then ~20 more
    entries unless `logging_steps` says."""
    keep_best = validate and epochs > 1  # after one epoch the best weights are the last ones
    args = TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        learning_rate=options["learning_rate"],
        weight_decay=0.0,
        logging_strategy="steps",
        logging_first_step=True,  # the first loss, at once: a job's first metrics event, a loss curve's start
        eval_strategy="epoch" if validate else "no",
        save_strategy="epoch" if keep_best else "no",
        load_best_model_at_end=keep_best,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        save_total_limit=1,
        save_only_model=True,
        # bf16 on Ampere and newer, fp16 with a loss scaler on a T4 (or as GPTNB_DTYPE says, on any device)
        **{"use_cpu": device.type == "cpu", **(autocast_flags(device, dtype) if options["mixed_precision"] else {})},
        logging_nan_inf_filter=False,  # a NaN loss must show in the log (the filter logs an average instead)
        dataloader_pin_memory=device.type == "cuda",
        remove_unused_columns=False,
        ddp_find_unused_parameters=False,  # every trainable weight gets a gradient; the search costs a pass
        report_to="none",
        disable_tqdm=not options["progress"],
        seed=options["seed"],
        **_sampling_args(options["group_by_length"]),
    )
    # Under torchrun / accelerate launch there is one process per GPU, and each step takes a batch from each.
    steps_per_epoch = -(-n_train // (batch_size * args.world_size))
    total_steps = max(1, round(steps_per_epoch * epochs))
    args.warmup_steps = total_steps // 10
    args.logging_steps = options["logging_steps"] or max(1, total_steps // 20)
    return args
