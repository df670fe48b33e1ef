"""`trl-grpo-ext experiment`: controlled ablations of the ladder, rank advantages and the rung baseline, under clean and
corrupted rewards, several seeds, with paired statistics and plots.

    trl-grpo-ext experiment [--output-dir DIR] [--quick] [--workers N] [--seeds 0 1 2] [--steps N]
                            [--conditions clean outliers ...] [--arms trl rank ...] [--select-levels] [--report-only]

Every arm (`arms.ARMS`, one line each) trains from the same SFT warm start of its seed (the demo's, computed once per
seed and cached in DIR/warmstart), with the same data, steps, batch and learning rate, on the demo's digit-reversal
task. The training reward is one of the conditions of `conditions.CONDITIONS`; accuracy is always measured against
the clean exact answer. Finished runs are skipped, so the command resumes, and a new arm or seed only trains itself.
A finished run or a cached warm start made with other settings is refused, by `--report-only` too: runs of different
settings are never compared.

`--select-levels` picks each corrupted condition's level on the validation split: it trains the `trl` arm from a
separate warm start (seed `select_seed`) at every candidate level and at the clean condition, and keeps the level at
which the validation gain is closest to half the clean gain (the corruption hurts, but leaves something to learn);
it writes DIR/levels.json, which later grid runs read. The test split is evaluated only in the grid, once per run.

Outputs: DIR/results.json, DIR/results.md (tables, paired differences, verdicts) and DIR/plots/{condition}.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from . import real
from .arms import available_arms
from .conditions import CONDITIONS
from .results import write_results
from .runner import (
    FULL_SETTINGS,
    QUICK_SETTINGS,
    TINY_TASK,
    RunSpec,
    SettingsMismatch,
    cell_name,
    execute,
    grid_specs,
    mismatch,
    with_steps,
)

DEFAULT_OUTPUT_DIR = "runs/experiment"
# Chosen with --select-levels on the validation split (docs/experiments.md); a DIR/levels.json overrides them.
DEFAULT_LEVELS = {"outliers": 0.1, "distorted": 4.0, "noisy_partial": 0.15}
SELECT_TARGET = 0.5  # keep the level whose validation gain is closest to this fraction of the clean gain


def _levels(root: Path) -> dict[str, float]:
    path = root / "levels.json"
    if path.exists():
        return {**DEFAULT_LEVELS, **json.loads(path.read_text())["levels"]}
    return dict(DEFAULT_LEVELS)


def select_levels(root: Path, settings, workers: int, conditions: list[str], task=None) -> dict:
    """Train the `trl` arm at each candidate level (validation only) and keep the level closest to half the gain."""
    task = task or TINY_TASK
    candidate_levels = task.candidate_levels
    conditions = [name for name in conditions if candidate_levels.get(name)]
    seed = settings.select_seed
    specs = [RunSpec("clean", None, "trl", {}, seed, split=None)]
    for name in conditions:
        for level in candidate_levels[name]:
            specs.append(RunSpec(name, level, "trl", {}, seed, split=None))
    results = list(execute(root, settings, specs, workers, group="select", task=task))
    warm = json.loads(task.start_record(root, seed).read_text())["validation_accuracy"]
    gains = {(r["condition"], r["level"]): r["validation_accuracy"] - warm for r in results}
    clean_gain = gains[("clean", None)]
    chosen = {}
    for name in conditions:
        candidates = [lvl for lvl in candidate_levels[name] if (name, lvl) in gains]
        if candidates:
            chosen[name] = min(candidates, key=lambda lvl: abs(gains[(name, lvl)] - SELECT_TARGET * clean_gain))
    measured = {cell_name(c, lvl): g for (c, lvl), g in gains.items()}
    path = root / "levels.json"
    if path.exists():  # a selection for some conditions keeps the others' earlier choices
        previous = json.loads(path.read_text())
        chosen = {**previous["levels"], **chosen}
        measured = {**previous["validation_gain"], **measured}
    record = {
        "levels": chosen,
        "rule": f"validation gain closest to {SELECT_TARGET} x the clean gain, arm trl, seed {seed}",
        "warm_start_validation_accuracy": warm,
        "validation_gain": measured,
    }
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record


def _finished_results(root: Path, settings, specs: list[RunSpec]) -> list[dict]:
    """The results of the finished runs of `specs`, for `--report-only`; `SettingsMismatch` naming every run that was
    trained with other settings or another arm config than these (the check the training path makes)."""
    results, mismatched = [], []
    for spec in specs:
        path = spec.directory(root) / "result.json"
        if path.exists():
            result = json.loads(path.read_text())
            difference = mismatch(result, settings, spec.arm_config)
            if difference is None:
                results.append(result)
            else:
                mismatched.append(f"{path.parent.relative_to(root).as_posix()} ({difference})")
    if mismatched:
        raise SettingsMismatch(
            f"--report-only: {len(mismatched)} of {len(results) + len(mismatched)} finished runs were trained with "
            f"other settings than these, and would be compared with runs that were not: {', '.join(mismatched)}. "
            "Report them with the settings they were trained with (`--quick`, `--steps`, `--seeds` as when they "
            "were trained), and keep runs of other settings in another `--output-dir`."
        )
    return results


def _tiny_description(settings, levels) -> str:
    return (
        "Digit reversal, tiny Qwen2 'small' (0.8 M parameters), SFT warm start per seed, then GRPO "
        f"({settings.grpo_steps} steps of {settings.demo.grpo_batch_size // settings.demo.num_generations} prompts "
        f"x {settings.demo.num_generations}, lr {settings.demo.grpo_learning_rate}); test accuracy on "
        f"{settings.demo.num_heldout} held-out problems, greedy. Levels: {levels}."
    )


def _meta(settings, levels, arms, args, description: str) -> dict:
    import torch
    import transformers
    import trl

    return {
        "description": description,
        "settings": asdict(settings),
        "levels": levels,
        "arms": arms,
        "command": "trl-grpo-ext experiment " + " ".join(args),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
    }


def main(argv: list[str] | None = None) -> int:
    """`trl-grpo-ext experiment ...`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    arms_all = available_arms()
    parser = argparse.ArgumentParser(
        prog="trl-grpo-ext experiment",
        description="Controlled ablations (arms x reward conditions x seeds) on the demo task, from a shared warm "
        "start, or on a real pretrained model (--model).",
    )
    parser.add_argument(
        "--output-dir",
        default=None,
        help=f"default: {DEFAULT_OUTPUT_DIR} ({DEFAULT_OUTPUT_DIR}-quick); with --model: {DEFAULT_OUTPUT_DIR}-<model>",
    )
    parser.add_argument(
        "--model",
        default=None,
        choices=list(real.REAL_MODELS),
        help="the grid on this real pretrained model of the kit (chat addition, LoRA, no warm start); default: the "
        "tiny kit's digit reversal",
    )
    parser.add_argument("--quick", action="store_true", help="CI size: 2 GRPO steps, 2 arms, 2 conditions, few seeds")
    parser.add_argument("--workers", type=int, default=1, help="parallel runs (processes), 1 torch thread each")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=None, help="GRPO steps per run")
    parser.add_argument(
        "--conditions", nargs="+", default=None, choices=sorted(set(CONDITIONS) | set(real.REAL_CONDITIONS))
    )
    parser.add_argument("--arms", nargs="+", default=None, choices=list(arms_all))
    parser.add_argument("--select-levels", action="store_true", help="choose the levels on validation, then stop")
    parser.add_argument("--report-only", action="store_true", help="summarise finished runs, train nothing")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"`--workers` should be >= 1, got {args.workers}.")

    if args.model:
        task, known = real.REAL_TASK, real.REAL_CONDITIONS
        settings = real.REAL_QUICK if args.quick else real.REAL_FULL
        settings = replace(settings, model=args.model)
        default_dir = f"{DEFAULT_OUTPUT_DIR}-{args.model.split(':')[0]}"
        default_conditions = ["clean", "hackable"] if args.quick else list(real.REAL_CONDITIONS)
        default_arms = ["trl", "ladder_rank"] if args.quick else list(real.DEFAULT_REAL_ARMS)
    else:
        task, known = TINY_TASK, CONDITIONS
        settings = QUICK_SETTINGS if args.quick else FULL_SETTINGS
        default_dir = DEFAULT_OUTPUT_DIR
        default_conditions = ["clean", "outliers"] if args.quick else list(CONDITIONS)
        default_arms = ["trl", "ladder_rank"] if args.quick else list(arms_all)
    unknown = [c for c in args.conditions or () if c not in known]
    if unknown:
        parser.error(f"`--conditions` {unknown} are not conditions of this task; choose from {list(known)}.")
    settings = with_steps(settings, args.steps)
    if args.seeds:
        settings = replace(settings, seeds=tuple(args.seeds))
    root = Path(args.output_dir or (default_dir + ("-quick" if args.quick else "")))
    root.mkdir(parents=True, exist_ok=True)
    conditions = args.conditions or default_conditions
    arms = {name: arms_all[name] for name in (args.arms or default_arms)}

    if args.select_levels:
        try:
            record = select_levels(root, settings, args.workers, [c for c in conditions if c != "clean"], task)
        except SettingsMismatch as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(json.dumps(record, indent=1))
        return 0

    if task is TINY_TASK:
        levels = {c: lvl for c, lvl in _levels(root).items() if c in conditions}
        specs = grid_specs(conditions, levels, arms, list(settings.seeds))
        description = _tiny_description(settings, levels)
    else:
        levels = {c: lvl for c, lvl in real.real_levels(root).items() if c in conditions}
        specs = real.real_specs(conditions, levels, arms, list(settings.seeds))
        description = real.real_description(settings, levels)
    start = time.perf_counter()
    try:
        if args.report_only:
            results = _finished_results(root, settings, specs)
        else:
            results = list(execute(root, settings, specs, args.workers, task=task))
        warm_starts = {}
        for seed in settings.seeds:
            path = task.start_record(root, seed)
            if path.exists():
                warm_starts[seed] = task.check_start(path, settings)
    except SettingsMismatch as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    expected = [(s.cell, s.arm, s.seed) for s in specs]
    preamble = ""
    if task is real.REAL_TASK and warm_starts:
        preamble = real.sampler_markdown(next(iter(warm_starts.values()))["sampler"])
    meta = _meta(settings, levels, arms, argv, description)
    paths = write_results(root, results, warm_starts, expected, meta, preamble=preamble)
    print((root / "results.md").read_text())
    print(f"{len(results)}/{len(specs)} runs finished; {time.perf_counter() - start:.0f} s")
    for path in paths:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
