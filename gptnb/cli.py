"""The ``gptnb`` command: ``gptnb info`` (and the subcommands later modules add)."""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
from importlib.metadata import PackageNotFoundError, version

VERSIONED = ("gptnb", "torch", "transformers", "tokenizers", "accelerate", "peft", "datasets", "openai", "nbval")


def info() -> dict:
    """Versions, device, profile, hub reachability and how each named model can be had now."""
    from .device import describe, forced_dtype, pick_device, pick_dtype
    from .models import MODELS, hub_reachable, offline_status
    from .profiles import get_profile

    def installed(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "versions": {package: installed(package) for package in VERSIONED},
        "device": describe(pick_device()),
        "dtype": str(pick_dtype(pick_device())).removeprefix("torch."),
        "dtype_forced": forced_dtype() is not None,
        "profile": get_profile().name,
        "hub_reachable": hub_reachable(),
        "models": {name: offline_status(name) for name in MODELS},
    }


def _print_info(data: dict) -> None:
    print(f"python        {data['python']}")
    for package, found in data["versions"].items():
        print(f"{package:<13} {found or '-'}")
    print(f"device        {data['device']}")
    how = (
        "forced by GPTNB_DTYPE"
        if data["dtype_forced"]
        else "chosen for the device; GPTNB_DTYPE=float32|bfloat16|float16 forces one"
    )
    print(f"dtype         {data['dtype']} ({how})")
    print(f"profile       {data['profile']} (set GPTNB_PROFILE=tiny|cpu|gpu to force one)")
    hub = "reachable" if data["hub_reachable"] else "unreachable: offline copies and substitutes are used"
    print(f"hub           {hub}")
    print("models:")
    for name, status in data["models"].items():
        print(f"  {name:<14} {status}")


def _run_info(args: argparse.Namespace) -> int:
    try:
        data = info()
    except ValueError as error:  # a bad GPTNB_PROFILE or GPTNB_DTYPE
        print(f"gptnb: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        _print_info(data)
    return 0


# Subcommands: the module whose `add_command(commands, summary)` registers a parser whose defaults
# include `run` (a function of the parsed args returning the exit code), and a one-line summary.
# Only the chosen command's module is imported: ``gptnb --help`` loads no torch, transformers or fastapi.
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare-data": ("gptnb.datacheck.prepare", "check a CSV/JSONL of examples and write fine-tuning JSONL"),
    "serve": ("gptnb.serve.cli", "serve local models behind the OpenAI API (fine-tuning included)"),
    "finetune": ("gptnb.finetune_cli", "fine-tune a model on labelled tweets, write it and metrics.json"),
}


class OneLineErrors(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit 2), like every gptnb error, not a usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gptnb`` console script."""
    parser = OneLineErrors(prog="gptnb", description="Plumbing for the gptnb notebooks.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineErrors)
    info_parser = commands.add_parser("info", help="versions, device, profile and which models are available offline")
    info_parser.add_argument("--json", action="store_true", help="print the same as JSON")
    info_parser.set_defaults(run=_run_info)
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, (module, summary) in COMMANDS.items():
        if name == chosen:
            importlib.import_module(module).add_command(commands, summary)
        else:
            commands.add_parser(name, help=summary)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
