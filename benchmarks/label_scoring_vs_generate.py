"""Few-shot tweet classification: batched label scoring vs the original notebook's generate-and-parse.

The original way: for each tweet, ``model.generate(..., max_length=512)`` (greedy), then
search the generated text for a label word. Label scoring: one batched forward pass
per group of prompts, comparing the log-probability of each label word
(`gptnb.prompts.label_logprobs`). A middle row, generating only a few new tokens in
batches, shows how much of the gap is the 512-token budget alone.

Same model, same prompts, same process; prints seconds, the time ratio and how
often the answers agree. Example:

    python benchmarks/label_scoring_vs_generate.py               # cpu profile, 4 tweets: a few minutes on 2 cores
    python benchmarks/label_scoring_vs_generate.py --n 40 --shots 4 --model smollm2-135m
"""

from __future__ import annotations

import argparse
import time

import torch

import gptnb
from gptnb.data import load_tweets
from gptnb.generation import generate_text
from gptnb.prompts import FewShotPrompt, label_logprobs, parse_label, sample_examples

PROMPT = FewShotPrompt(
    instruction="Classify the sentiment of each tweet as negative or positive.",
    template="Tweet: {text}\nSentiment:{label}",
    label_words=(" negative", " positive"),
)


def seed_way(model, tokenizer, prompts: list[str], names: list[str]) -> list[int | None]:
    """One prompt at a time, up to 512 tokens in all, then a regular expression."""
    answers = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").to(model.device)
        with torch.no_grad():
            output = model.generate(**ids, max_length=512, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        answers.append(parse_label(tokenizer.decode(output[0, ids["input_ids"].shape[1] :]), names))
    return answers


def timed(run):
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu", help="gptnb profile for the model name and data (default: cpu)")
    parser.add_argument("--model", default=None, help="model name (default: the profile's prompting model)")
    parser.add_argument("--n", type=int, default=4, help="test tweets to classify (default: 4)")
    parser.add_argument("--shots", type=int, default=2, help="examples in each prompt (default: 2)")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)

    profile = gptnb.get_profile(args.profile)
    model, tokenizer = gptnb.load_model(args.model or profile.prompting_model, profile=profile.name)
    splits = load_tweets(profile=profile.name, verbose=False)
    test = splits.test.head(args.n)
    examples = sample_examples(splits.train, args.shots, seed=0)
    prompts = [PROMPT.render(text, examples) for text in test.text]
    names = [word.strip() for word in PROMPT.label_words]
    gold = test.label.tolist()
    print(f"model: {gptnb.describe_model(model)}\ndevice: {gptnb.describe_device(model.device)}")
    print(f"data: {splits.source}; {len(prompts)} test tweets, {args.shots}-shot prompts")

    label_logprobs(model, tokenizer, prompts[:2], list(PROMPT.label_words))  # warm-up: first-call costs hit no one
    scores, scoring_s = timed(
        lambda: label_logprobs(model, tokenizer, prompts, list(PROMPT.label_words), args.batch_size)
    )
    scored = scores.argmax(-1).tolist()
    short, short_s = timed(
        lambda: [
            parse_label(text, names)
            for text in generate_text(model, tokenizer, prompts, max_new_tokens=3, do_sample=False)
        ]
    )
    seed, seed_s = timed(lambda: seed_way(model, tokenizer, prompts, names))

    def row(method, answers, seconds):
        correct = sum(a == g for a, g in zip(answers, gold)) / len(gold)
        agree = sum(a == s for a, s in zip(answers, scored)) / len(gold)
        missing = sum(a is None for a in answers)
        print(
            f"| {method:<46} | {seconds:8.2f} | {1000 * seconds / len(gold):9.1f} | {seconds / scoring_s:7.1f}x "
            f"| {correct:8.1%} | {missing:8d} | {agree:16.1%} |"
        )

    print(
        "\n| method                                         |  seconds | ms/tweet  | vs label | accuracy | no label "
        "| agrees w/ scoring |"
    )
    print(
        "|------------------------------------------------|----------|-----------|----------|----------|----------|-------------------|"
    )
    row(f"label scoring, batched ({args.batch_size})", scored, scoring_s)
    row("generate 3 new tokens, batched, parse", short, short_s)
    row("original: generate max_length=512 each, parse", seed, seed_s)
    print(
        f"\nlabel scoring is {seed_s / scoring_s:.0f}x faster than the original way "
        f"(goal: >= 20x); answers agree on {sum(a == s for a, s in zip(seed, scored))}/{len(gold)} tweets"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
