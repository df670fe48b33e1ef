"""`trl-grpo-ext demo`: GRPO on a model of the offline kit, held-out accuracy before and after, on a CPU.

    trl-grpo-ext demo [--model tiny:small|smollm2:135m-instruct] [--output-dir DIR] [--compare] [--closed-loop]
                      [--quick] [--seed N] [--threads N]
    python -m trl_grpo_ext.demos ...   (the same)

| module      | demo                                                                                          |
|-------------|-----------------------------------------------------------------------------------------------|
| `tiny.py`   | `--model tiny:small` (default): SFT warm start, then GRPO on digit reversal, ~2 minutes        |
| `real.py`   | `--model smollm2:135m-instruct`: LoRA GRPO on two-digit addition in chat form, ~10 minutes     |
| `common.py` | what both demos, the experiments and the benchmarks share: the one greedy evaluation, the quiet |
|             | environment, the CPU training arguments, the results table                                   |
"""

from __future__ import annotations

import argparse

from . import real, tiny


def main(argv: list[str] | None = None) -> int:
    """`trl-grpo-ext demo [--model NAME] [--output-dir DIR] [--compare] [--closed-loop] [--quick] [--seed N]`: the tiny
    demo (`tiny.run_demo`) or the real-model one (`real.run_real_demo`); returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="trl-grpo-ext demo",
        description="Offline demo: SFT warm start, then GRPO with the temperature ladder, rank advantages and named "
        "objectives on a tiny digit-reversal task; held-out accuracy before and after.",
    )
    parser.add_argument("--output-dir", default=tiny.DEFAULT_OUTPUT_DIR, help=f"default: {tiny.DEFAULT_OUTPUT_DIR}")
    parser.add_argument(
        "--model",
        default="tiny:small",
        choices=["tiny:small", "smollm2:135m-instruct"],
        help="tiny:small (default): the fast tiny-kit demo; smollm2:135m-instruct: LoRA GRPO on the real pretrained "
        "model of the kit (two-digit addition in chat form, ~10 minutes on 2 cores; see docs/demo.md)",
    )
    parser.add_argument("--compare", action="store_true", help="also train plain trl.GRPOTrainer and compare")
    parser.add_argument(
        "--closed-loop",
        action="store_true",
        help="also train with the closed-loop ladder (temperature_control='zero_std') from the same warm start",
    )
    parser.add_argument(
        "--closed-loop-target",
        type=float,
        default=None,
        help="temperature_control_target of the --closed-loop arm (default: GRPOExtConfig's)",
    )
    parser.add_argument("--quick", action="store_true", help="CI size: a short GRPO phase (under a minute in all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model, the data order and sampling")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default 1 for the tiny demo, 2 for the real model; 2 is faster on an idle "
        "2-core CPU)",
    )
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"`--threads` should be >= 1, got {args.threads}.")
    if args.model != "tiny:small":
        if args.closed_loop or args.closed_loop_target is not None:
            parser.error("`--closed-loop` runs with the tiny demo only (`--model tiny:small`).")
        output_dir = (
            args.output_dir if args.output_dir != tiny.DEFAULT_OUTPUT_DIR else f"{tiny.DEFAULT_OUTPUT_DIR}-smollm2"
        )
        real.run_real_demo(
            output_dir, compare=args.compare, quick=args.quick, seed=args.seed, threads=args.threads or 2
        )
        return 0
    tiny.run_demo(
        args.output_dir,
        compare=args.compare,
        quick=args.quick,
        seed=args.seed,
        threads=args.threads or 1,
        closed_loop=args.closed_loop,
        control_target=args.closed_loop_target,
    )
    return 0
