"""Benchmarks of trl-grpo-ext: each `bench_*` function returns rows of timings (dicts) and prints nothing.

    trl-grpo-ext bench [--quick] [--gpu] [--only overhead,ladder,estimators,judge] [--out FILE.json]
                       [--model smollm2:135m-instruct]   (overhead, ladder, vllm on that checkpoint)
    python -m trl_grpo_ext.bench ...   (the same)

| name         | module           | what it measures                                                              |
|--------------|------------------|-------------------------------------------------------------------------------|
| `overhead`   | `overhead.py`    | GRPOExtTrainer (ladder + rank + 3 objectives) vs trl.GRPOTrainer: time, RSS  |
| `ladder`     | `ladder.py`      | one ladder `generate` vs constant temperature vs K separate calls            |
| `estimators` | `estimators.py`  | the advantage estimators                                                      |
| `judge`      | `judge.py`       | the `principles` objective with a local judge: seconds per 1,000 completions  |
| `gpu`        | `gpu.py`         | Qwen2.5-shaped models, LoRA vs QLoRA, ext vs trl (`--gpu`; `cpu-toy` w/o CUDA) |
| `vllm`       | `vllm_ladder.py` | ladder vs constant temperature through vLLM; vLLM vs transformers `generate`  |
| `speed`      | `speed.py`       | share_prompt + skip_zero_advantage vs plain TRL: step, loss pass, RSS, MFU    |

`--model NAME` (a kit name or a local checkpoint directory) makes `overhead`, `ladder` and `vllm` measure that model
instead of the tiny ones; the other benchmarks do not take a model, and `--model` with only those is a usage error.

`main` prints one plain-text table per benchmark and writes the rows, with an environment header (machine, versions,
date, command line), to a JSON file. Benchmarks are not tests: they report PASS/FAIL against their targets and exit
with status 0 whatever the figures are; a benchmark that cannot run is reported and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..kit import KIT_MODELS, is_kit_name
from .gpu import QWEN25_SHAPES

__all__ = ["BENCHMARKS", "environment", "format_table", "main", "run_benchmarks"]

# name -> (module, function). Every function takes `quick: bool` and returns a list of row dicts.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "overhead": ("overhead", "bench_overhead"),
    "ladder": ("ladder", "bench_ladder"),
    "estimators": ("estimators", "bench_estimators"),
    "judge": ("judge", "bench_judge"),
    "gpu": ("gpu", "bench_gpu"),
    "vllm": ("vllm_ladder", "bench_vllm"),  # needs vLLM: `--only vllm` in the vLLM venv
    "speed": ("speed", "bench_speed"),  # share_prompt + skip_zero_advantage vs plain TRL, on a real model
}
DEFAULT_BENCHMARKS = ("overhead", "ladder", "estimators", "judge")
MODEL_BENCHMARKS = ("overhead", "ladder", "vllm", "speed")  # the ones that take `--model`
DEFAULT_OUT = "bench-results.json"
# Columns printed per benchmark when its module does not name them (TABLE_COLUMNS): every scalar but these.
_HIDDEN_COLUMNS = {"bench", "runs"}


def environment(command: str | None = None, model: str | None = None) -> dict[str, Any]:
    """Where and when the figures were taken: machine, library versions, date, command line, git commit, `model`.

    `model` is the `--model` argument (None: the benchmarks' tiny models).
    """
    import torch

    versions = {}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "vllm", "trl_grpo_ext"):
        try:
            versions[name] = importlib.import_module(name).__version__
        except Exception:  # a missing optional library is recorded, not fatal
            versions[name] = None
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "argv": list(sys.argv),  # how the process was started (`trl-grpo-ext`, `python -m`, pytest)
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "versions": versions,
        "git_commit": _git_commit(),
        "model": model,
    }
    return env


def _git_commit() -> str | None:
    """HEAD of the checkout the package runs from, with `+dirty` when it has local changes; None outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


# --------------------------------------------------------------------------------------------------------- tables
def _format_value(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return ("PASS" if value else "FAIL") if key.endswith("_pass") else str(value)
    if isinstance(value, float):
        if key.endswith(("ratio", "ratios", "_target")):
            return f"{value:.3f}"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}" if key == "params" else str(value)
    if isinstance(value, (list, tuple)):
        return " ".join(_format_value(key, v) for v in value)
    return str(value)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def format_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """Rows as a plain-text table with aligned columns; list values of number (per-pair ratios) go below it.

    Example:
    ```python
    >>> print(format_table([{"model": "tiny", "time_ratio": 1.0123, "time_pass": True, "time_ratios": [1.0, 1.02]}]))
    model  time_ratio  time_pass
    -----  ----------  ---------
    tiny   1.012       PASS
      tiny: time_ratios = 1.000 1.020

    ```
    """
    if not rows:
        return "(no rows)"
    if columns is None:
        columns = []
        for row in rows:
            columns += [k for k, v in row.items() if k not in _HIDDEN_COLUMNS and _is_scalar(v) and k not in columns]
    columns = [c for c in columns if any(c in row for row in rows)]
    cells = [[_format_value(c, row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in cells]
    for row in rows:
        label = " ".join(str(row[k]) for k in ("model", "peft") if k in row) or "row"
        for key, value in row.items():
            if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) for v in value):
                lines.append(f"  {label}: {key} = {_format_value(key, value)}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------- running
def _load(name: str) -> tuple[Callable[..., list[dict]], Sequence[str] | None]:
    module_name, function = BENCHMARKS[name]
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, function), getattr(module, "TABLE_COLUMNS", None)


def run_benchmarks(
    names: Sequence[str],
    quick: bool = False,
    pairs: int | None = None,
    gpu_models: list[str] | None = None,
    threads: int | None = 1,
    echo: Callable[[str], None] | None = print,
    model: str | None = None,
) -> tuple[dict[str, list[dict]], dict[str, str], dict[str, float]]:
    """Run the benchmarks `names` in order; returns (rows by name, error message by name, seconds by name).

    `pairs` and `threads` go to the overhead benchmark (its child processes), `gpu_models` to the GPU one, `model`
    (a kit name or checkpoint directory; None: the tiny models) to those of `MODEL_BENCHMARKS`. A benchmark whose
    module is missing or which raises is recorded in the errors and the others still run. `echo` (None: silent) gets
    each table as it is ready.
    """
    results: dict[str, list[dict]] = {}
    errors: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name in names:
        start = time.perf_counter()
        try:
            function, columns = _load(name)
            kwargs: dict[str, Any] = {"quick": quick}
            if name == "overhead":
                kwargs.update(pairs=pairs, threads=threads)
            if name == "speed":  # its children use the whole machine (2 threads): a speed claim is about the box
                kwargs["pairs"] = pairs
            if name == "gpu":
                kwargs["models"] = gpu_models
            if model is not None and name in MODEL_BENCHMARKS:
                kwargs["model"] = model
            rows = function(**kwargs)
        except ModuleNotFoundError as err:
            if err.name == f"{__name__}.{BENCHMARKS[name][0]}":
                errors[name] = f"module {err.name} not found: this benchmark is not available in this checkout"
            else:
                errors[name] = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=-3)}"
        except Exception as err:  # report and go on: one broken benchmark should not hide the others
            errors[name] = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=-3)}"
        else:
            results[name] = rows
        seconds[name] = time.perf_counter() - start
        if echo is not None:
            title = f"== {name} ({seconds[name]:.0f} s)"
            body = f"ERROR: {errors[name]}" if name in errors else format_table(results[name], columns)
            echo(f"{title}\n{body}\n")
    return results, errors, seconds


def _parse_names(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown benchmark(s) {unknown or value!r}; choose from {list(BENCHMARKS)}")
    return names


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def _parse_gpu_models(value: str) -> list[str]:
    models = [m.strip().lower() for m in value.split(",") if m.strip()]
    unknown = [m for m in models if m not in QWEN25_SHAPES]
    if unknown or not models:
        raise argparse.ArgumentTypeError(f"unknown shape(s) {unknown or value!r}; choose from {list(QWEN25_SHAPES)}")
    return models


def _parse_model(value: str) -> str:
    """A kit name whose model the kit has (checked without building it) or an existing checkpoint directory."""
    from ..kit.tiny import MODEL_SIZES  # torch and transformers: not at start-up

    if is_kit_name(value):
        prefix = next(p for p in KIT_MODELS if value.startswith(p))
        spec = value[len(prefix) :]
        if prefix == "tiny:":
            size, _, seed = (spec or "tiny").partition("@")
            if size not in MODEL_SIZES or not (seed == "" or seed.isdigit()):
                raise argparse.ArgumentTypeError(
                    f"unknown tiny-kit model {value!r}; use tiny:<size>[@<seed>] with a size from {list(MODEL_SIZES)}"
                )
        try:
            KIT_MODELS[prefix](spec)  # names the cache directory; raises on an unknown variant; builds nothing
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from err
        return value
    if not os.path.isdir(value):
        kit = ", ".join(f"{p}..." for p in KIT_MODELS)
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither a kit name ({kit}, e.g. smollm2:135m-instruct) nor a local checkpoint directory"
        )
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trl-grpo-ext bench",
        description="Run the trl-grpo-ext benchmarks, print a table per benchmark and write the rows to JSON.",
    )
    parser.add_argument("--quick", action="store_true", help="Small sizes and few repeats (a smoke run).")
    parser.add_argument(
        "--gpu",
        action="store_true",
        help="Also run the GPU benchmark (Qwen2.5 shapes, LoRA vs QLoRA); without CUDA it runs a 'cpu-toy' shape.",
    )
    parser.add_argument(
        "--only",
        type=_parse_names,
        default=None,
        metavar="NAMES",
        help=f"Comma-separated benchmarks to run, from {list(BENCHMARKS)} (default: {','.join(DEFAULT_BENCHMARKS)}).",
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"JSON file to write (default: {DEFAULT_OUT}).")
    parser.add_argument(
        "--pairs",
        type=_positive_int,
        default=None,
        help="A/B pairs of the overhead benchmark (default: 5; 2 with --quick) and of each shape of the speed one.",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads while the in-process benchmarks run (default: 1; 0 keeps torch's setting). "
        "On a shared, busy CPU several threads spin against each other and make small tensor ops ~100x slower.",
    )
    parser.add_argument(
        "--gpu-models",
        type=_parse_gpu_models,
        default=None,
        metavar="SHAPES",
        help="Qwen2.5 shapes of the GPU benchmark, from 0.5b,1.5b,7b (default: all; 0.5b with --quick).",
    )
    parser.add_argument(
        "--model",
        type=_parse_model,
        default=None,
        metavar="NAME",
        help=f"Measure this model instead of the tiny ones in {','.join(MODEL_BENCHMARKS)}: a kit name "
        "(smollm2:135m-instruct: the pretrained SmolLM2-135M-Instruct, with LoRA and chat prompts) or a local "
        "checkpoint directory. The other benchmarks do not take a model (default: the tiny models).",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """`trl-grpo-ext bench`: run the benchmarks, print their tables, write the JSON; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    args = parser.parse_args(argv)
    names = list(args.only or DEFAULT_BENCHMARKS)
    if args.gpu and "gpu" not in names:
        names.append("gpu")
    if args.model is not None and not any(name in MODEL_BENCHMARKS for name in names):
        parser.error(
            f"`--model` applies to the benchmarks {', '.join(MODEL_BENCHMARKS)}, and none of them is selected "
            f"({', '.join(names)}); add one to `--only` or drop `--model`."
        )
    import torch

    previous_threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        env = environment(shlex.join(["trl-grpo-ext", "bench", *argv]), model=args.model)
        on_model = f" (--model {args.model}: {', '.join(n for n in names if n in MODEL_BENCHMARKS)})"
        print(
            f"trl-grpo-ext bench: {', '.join(names)}{' (quick)' if args.quick else ''}"
            + (on_model if args.model else "")
        )
        print(
            f"{env['date']}  {env['platform']}  {env['cpus_usable']} CPUs  torch threads {env['torch_threads']}  "
            f"CUDA: {env['cuda'] or 'none'}"
        )
        print("  ".join(f"{k} {v}" for k, v in env["versions"].items()) + "\n")
        start = time.perf_counter()
        threads = args.threads if args.threads > 0 else None
        results, errors, seconds = run_benchmarks(
            names, args.quick, args.pairs, args.gpu_models, threads, model=args.model
        )
    finally:
        torch.set_num_threads(previous_threads)
    env["seconds"] = {"total": time.perf_counter() - start, **seconds}
    report = {"environment": env, "benchmarks": results, "errors": errors}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"Wrote {out} ({env['seconds']['total']:.0f} s).")
    if errors:
        print(f"{len(errors)} benchmark(s) could not run: {', '.join(errors)}.", file=sys.stderr)
        return 1
    return 0
