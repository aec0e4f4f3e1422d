"""What the local OpenAI-compatible server costs over calling the model in-process.

1. Completion latency: the same greedy completion (same prompt length, same number of new
   tokens) through ``gptnb serve`` with the official ``openai`` client, against
   ``model.generate`` in-process and against the server's own generation loop called
   directly (the HTTP + JSON share alone). Each prompt differs, so the server's prompt
   cache cannot help. Goal (issue 5): server <= 1.15x in-process.
2. Fine-tuning: a job through ``/v1/files`` + ``/v1/fine_tuning/jobs`` (upload, create, poll
   until it succeeds) against the same work done directly: load the model, `gptnb.finetune`
   on the same examples and hyperparameters, save the adapter. Goal: job <= 1.1x direct.

Everything runs in one process (the server in a background thread), one measurement at a time.

    python benchmarks/api_overhead.py                                  # tiny-gpt2, sample tweets
    python benchmarks/api_overhead.py --model smollm2-135m --n-train 64
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import gptnb
from gptnb.data import load_tweets
from gptnb.datacheck.formats import Example, training_pair
from gptnb.finetune import finetune
from gptnb.lora import save_finetuned
from gptnb.prompts import tweet_pairs
from gptnb.serve import local_server
from gptnb.serve.engine.reference import choice_pieces


def interleaved_medians(runs: list[tuple[str, object]], repeats: int) -> list[tuple[str, float]]:
    """Median seconds of each run, the runs taking turns so that a change in machine load hits all alike."""
    times = {name: [] for name, _ in runs}
    for i in range(repeats):
        for name, run in runs:
            started = time.perf_counter()
            run(i)
            times[name].append(time.perf_counter() - started)
    return [(name, statistics.median(times[name])) for name, _ in runs]


def latency(server, model_name: str, new_tokens: int, repeats: int) -> list[tuple[str, float]]:
    client = server.client(max_retries=0, timeout=600)
    loaded = server._background.app.state.pool.get(model_name)
    model, tokenizer = loaded.model, loaded.tokenizer

    def prompt(i):  # a different first token for every call: the server's prompt cache cannot help
        return f"{1000 + i} Once upon a time, in a small town by the sea, there lived a"

    def hf(i):
        ids = tokenizer(prompt(i), return_tensors="pt").to(model.device)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        assert out.shape[1] - ids.input_ids.shape[1] == new_tokens

    def loop(i):
        pieces = list(choice_pieces(loaded, tokenizer(prompt(i + 3000)).input_ids, (), new_tokens, temperature=0))
        assert sum(len(piece.tokens) for piece in pieces) == new_tokens, "the model stopped early; use another prompt"

    def http(i):
        reply = client.completions.create(
            model=model_name, prompt=prompt(i + 6000), max_tokens=new_tokens, temperature=0
        )
        assert reply.usage.completion_tokens == new_tokens, "the model stopped early; use another prompt"

    for run in (hf, loop, http):  # warm-up
        run(repeats)
    return interleaved_medians(
        [
            ("in-process model.generate", hf),
            ("server loop, called directly", loop),
            ("through the server (openai SDK)", http),
        ],
        repeats,
    )


def fine_tuning(
    server, model_name: str, n_train: int, epochs: int, batch_size: int, rounds: int
) -> list[tuple[str, float]]:
    profile = gptnb.get_profile()
    splits = load_tweets(n_train=n_train, verbose=False)
    pairs = tweet_pairs(splits.train, splits.labels)
    lines = [json.dumps({"prompt": prompt, "completion": completion}) for prompt, completion in pairs]
    client = server.client(max_retries=0, timeout=600)
    uploaded = client.files.create(file=("train.jsonl", io.BytesIO("\n".join(lines).encode())), purpose="fine-tune")
    train_seconds = []

    def direct(_):
        model, tokenizer = gptnb.load_model(model_name, training=True)
        train = [training_pair(Example(0, prompt=p, completion=c), tokenizer) for p, c in pairs]
        result = finetune(
            model,
            tokenizer,
            train,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=profile.learning_rate,
            lora_rank=profile.lora_rank,
            max_length=profile.max_length,
            seed=0,
            progress=False,
        )
        train_seconds.append(result.train_seconds)
        with tempfile.TemporaryDirectory() as folder:
            save_finetuned(result.model, tokenizer, Path(folder) / "model", merge=False)

    def through_api(_):
        job = client.fine_tuning.jobs.create(
            model=model_name,
            training_file=uploaded.id,
            seed=0,
            hyperparameters={"n_epochs": epochs, "batch_size": batch_size, "learning_rate_multiplier": 1.0},
        )
        while job.status not in ("succeeded", "failed", "cancelled"):
            time.sleep(0.2)
            job = client.fine_tuning.jobs.retrieve(job.id)
        assert job.status == "succeeded", job.error

    rows = interleaved_medians(
        [
            ("direct: load + gptnb.finetune + save", direct),
            (f"API job: create, poll until done ({len(lines)} examples, {epochs} epoch)", through_api),
        ],
        rounds,
    )
    return rows + [("  (training alone, direct run)", statistics.median(train_seconds))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-gpt2")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="fine-tuning runs of each kind (they take turns)")
    parser.add_argument("--n-train", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as data_dir, local_server(args.model, data_dir=data_dir) as server:
        print(f"model: {server.describe()} | device: {gptnb.describe_device()} | profile {gptnb.get_profile().name}")
        rows = latency(server, args.model, args.new_tokens, args.repeats)
        base = rows[0][1]
        heading = f"completion, {args.new_tokens} new tokens (median of {args.repeats})"
        print(f"\n| {heading} | seconds | x in-process generate |")
        print("|---|---|---|")
        for name, seconds in rows:
            print(f"| {name} | {seconds:.3f} | {seconds / base:.2f} |")
        rows = fine_tuning(server, args.model, args.n_train, args.epochs, args.batch_size, args.rounds)
        base = rows[0][1]
        print("\n| fine-tuning | seconds | x direct |")
        print("|---|---|---|")
        for name, seconds in rows:
            print(f"| {name} | {seconds:.1f} | {seconds / base:.2f} |")


if __name__ == "__main__":
    main()
