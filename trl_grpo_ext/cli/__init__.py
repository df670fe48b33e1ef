"""The `trl-grpo-ext` command line (also `python -m trl_grpo_ext`).

    trl-grpo-ext train --config recipes/tiny/cpu-offline.yaml [--key value ...] [--dry-run]
    trl-grpo-ext tiny --output-dir DIR [--size tiny|small|50m]
    trl-grpo-ext demo|report|bench|experiment|preference-experiment|time-to-accuracy ...

`train` is `cli.train` (a `trl grpo` recipe, with the dataset presets of `cli.data`); `tiny` writes the offline tiny
model; every other command is the `main` of its tool module (`COMMANDS`), imported only when it runs. The tools sit
above the library and import only its public names (`.importlinter` at the repository root holds the layers).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from . import train

# command -> (the module whose `main(argv)` runs it, its line in `trl-grpo-ext --help`)
COMMANDS = {
    "demo": ("trl_grpo_ext.demos", "Run the offline demo (trl_grpo_ext.demos)"),
    "report": ("trl_grpo_ext.report", "Write a report of finished runs (trl_grpo_ext.report)"),
    "bench": ("trl_grpo_ext.bench", "Run the benchmarks (trl_grpo_ext.bench)"),
    "experiment": ("trl_grpo_ext.experiment", "Run the controlled ablations (trl_grpo_ext.experiment)"),
    "preference-experiment": (
        "trl_grpo_ext.experiment.preference",
        "Run the online reward model over-optimisation experiment (trl_grpo_ext.experiment.preference)",
    ),
    "time-to-accuracy": (
        "trl_grpo_ext.experiment.time_to_accuracy",
        "Measure held-out accuracy against training time per GRPO arm on the real model "
        "(trl_grpo_ext.experiment.time_to_accuracy)",
    ),
}


def tiny(argv: list[str]) -> int:
    """`trl-grpo-ext tiny`: write the offline tiny model (and its tokenizer and reward model) to a directory."""
    from ..kit.tiny import MODEL_SIZES, save_tiny  # torch and transformers: not at start-up

    parser = argparse.ArgumentParser(
        prog="trl-grpo-ext tiny",
        description="Write the offline tiny-kit model, tokenizer and reward model (in DIR/reward) to a directory, "
        "for recipes that want a path instead of 'tiny:<size>'.",
    )
    parser.add_argument("--output-dir", "--output_dir", required=True, help="Directory to write (created if needed).")
    parser.add_argument("--size", default="small", choices=list(MODEL_SIZES), help="Model size (default: small).")
    parser.add_argument("--seed", type=int, default=0, help="Initialisation seed (default: 0).")
    args = parser.parse_args(argv)
    path = save_tiny(args.output_dir, size=args.size, seed=args.seed)
    print(f"Wrote the tiny-kit model ({args.size}, seed {args.seed}) to {path} (reward model in {path / 'reward'}).")
    return 0


def dispatch(name: str, argv: list[str]) -> int:
    """Hand `argv` to the `main` of command `name`'s module (`COMMANDS`), imported only now; exit status 2 when this
    installation has no such module."""
    module_name = COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        print(f"error: `{name}` is not available: this installation has no {module_name} module.", file=sys.stderr)
        return 2
    return int(module.main(argv) or 0)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trl-grpo-ext",
        description="GRPO with a temperature ladder, rank advantages and named objectives, on top of TRL.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=_version_string())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.add_parser(
        "train",
        add_help=False,
        help="Train from a recipe: trl-grpo-ext train --config X.yaml [--key value] [--dry-run]",
    )
    sub.add_parser("tiny", add_help=False, help="Write the offline tiny model to a directory: tiny --output-dir DIR")
    for name, (_, text) in COMMANDS.items():
        sub.add_parser(name, add_help=False, help=text)
    return parser


def _version_string() -> str:
    import torch
    import transformers
    import trl

    return f"trl-grpo-ext {__version__} (trl {trl.__version__}, transformers {transformers.__version__}, torch {torch.__version__})"


def main(argv: list[str] | None = None) -> int:
    """Entry point of `trl-grpo-ext` and `python -m trl_grpo_ext`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    try:
        args, _ = parser.parse_known_args(argv)
        if args.command is None:
            parser.print_help()
            return 0 if not argv else 2
        rest = argv[argv.index(args.command) + 1 :]
        if args.command == "train":
            return train.main(rest)
        if args.command == "tiny":
            return tiny(rest)
        return dispatch(args.command, rest)
    except SystemExit as exit_:  # argparse: --help, --version and usage errors
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
