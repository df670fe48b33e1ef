r"""`trl-grpo-ext time-to-accuracy`: held-out accuracy against training time and generated completions, per GRPO arm,
on the real pretrained model (`smollm2:135m-instruct`) and the real-model demo's chat task (two-digit addition).

    trl-grpo-ext time-to-accuracy --output-dir DIR [--arms a,b,...] [--seeds 0,1] [--threads N] [--quick]
                                  [--report-only]

Every run (arm, seed) trains LoRA GRPO from the pretrained model in this process, one after another, seed-major
(seed 0: every requested arm, then seed 1, ...). During training a callback measures the greedy validation accuracy
at step 0, every `eval_every` steps and at the last step, with the cumulative *training* wall and CPU seconds (the
clocks stop during these evaluations, which also leave torch's random state as they found it) and the cumulative
completions generated (per step: `dynamic_sampling/groups_generated` x K where the step logs it, else the step's
batch). After training: the greedy test accuracy, once.

Layout of DIR:

    runs/{arm}/seed{s}/result.json   one finished run: its curve, test accuracy, times, log history, peak RSS and the
                                     fingerprint of the settings it was trained with
    runs/{arm}/seed{s}/lock          held (PID inside) while a worker trains that run
    results.md, results.json         the report of the finished runs
    plots/validation_vs_time.png, plots/validation_vs_completions.png, plots/group_size.png

Resume and workers: a finished run with the same fingerprint is skipped; one with another fingerprint is an error
naming the differences (never overwritten). Two workers may share DIR (pin each to its own core with `taskset`): a
run is claimed with an exclusive lock file holding the worker's PID; a run locked by a live PID is left to it, a lock
whose PID is dead is taken over.

The training clock starts when `trainer.train()` is called (its own set-up before the first step counts; building
the trainer and loading the model do not), pauses during every evaluation, and stops when `train()` returns; the
step-0 point therefore sits at the second or so that `train()` spends before its first step.

Time to a validation accuracy: the curve is measured at the evaluation points only; between two points it is
interpolated linearly, and the time reported is the first crossing (a curve at or above the level at step 0 reaches
it at 0 s). A seed that never reaches the level counts as "not reached", not as a time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import re
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .. import kit
from ..demos.common import demo_environment, greedy_evaluation, last_number_scores
from ..demos.real import real_demo_reward, real_grpo_args, real_lora
from .runner import SettingsMismatch
from .stats import mean_se, paired_difference, t975, verdict

__all__ = [
    "ARMS",
    "COMPARISONS",
    "DEFAULT_ARMS",
    "FULL",
    "QUICK",
    "Arm",
    "ArmUnavailable",
    "SettingsMismatch",
    "TimeToAccuracySettings",
    "arm_config",
    "arm_shape",
    "check_finished",
    "claim_run",
    "evaluate_greedy",
    "fingerprint",
    "fingerprint_differences",
    "fraction_of_reference",
    "group_size_arms",
    "group_size_verdict",
    "lock_holder",
    "main",
    "paired_ratio",
    "release_run",
    "run_one",
    "summarise",
    "time_to_target",
    "write_report",
]


# ---------------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class TimeToAccuracySettings:
    """Sizes and hyper-parameters of the time-to-accuracy runs (the real-model demo's GRPO settings; constant
    learning rate, beta 0, LoRA on every linear layer).

    Attributes:
        model (`str`): the kit's model name (`kit.resolve_model_path`), the pretrained start of every run.
        num_train (`int`): training problems, drawn from the train split with the run's seed (as the real demo does).
        num_validation (`int`): validation problems (validation split, seed 0: the same for every run), for the curve.
        num_test (`int`): test problems (test split, seed 0), evaluated once per finished run.
        grpo_steps (`int`): optimiser steps per run.
        prompts_per_step (`int`): prompts per step of the arms at the default group size.
        num_generations (`int`): the default group size K (completions per prompt). `prompts_per_step x
            num_generations` is the completion budget per step, which the group-size arms keep.
        max_completion_length (`int`): completion tokens at most while training.
        learning_rate (`float`): AdamW learning rate, constant.
        lora_r (`int`): LoRA rank (every linear layer).
        lora_alpha (`int`): LoRA alpha.
        logging_steps (`int`): must be 1: the completions and batch statistics are read from every step's log.
        eval_every (`int`): validation accuracy at step 0, every this many steps and at the last step.
        eval_batch_size (`int`): prompts per greedy `generate` call of the evaluations.
        eval_max_new_tokens (`int`): new tokens of a greedy evaluation reply ("23 + 45 = 68" fits in 16).
        validation_target (`float`): the validation accuracy whose first crossing the report times.
        seeds (`tuple[int, ...]`): the seeds run by default (not part of a run's fingerprint).
        threads (`int`): torch intra-op threads (`--threads`); part of the fingerprint, since it changes the timings.
    """

    model: str = "smollm2:135m-instruct"
    num_train: int = 1000
    num_validation: int = 100
    num_test: int = 300
    grpo_steps: int = 40
    prompts_per_step: int = 4
    num_generations: int = 8
    max_completion_length: int = 16
    learning_rate: float = 3e-4
    lora_r: int = 16
    lora_alpha: int = 32
    logging_steps: int = 1
    eval_every: int = 5
    eval_batch_size: int = 100
    eval_max_new_tokens: int = 16
    validation_target: float = 0.55
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    threads: int = 1

    def __post_init__(self):
        positive = (
            "num_train",
            "num_validation",
            "num_test",
            "grpo_steps",
            "prompts_per_step",
            "max_completion_length",
            "lora_r",
            "lora_alpha",
            "eval_every",
            "eval_batch_size",
            "eval_max_new_tokens",
            "threads",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
        if isinstance(self.num_generations, bool) or not isinstance(self.num_generations, int):
            raise ValueError(f"`num_generations` must be an integer >= 2, got {self.num_generations!r}.")
        if self.num_generations < 2:
            raise ValueError(
                f"`num_generations` must be an integer >= 2 (GRPO compares a group), got {self.num_generations}."
            )
        if self.logging_steps != 1:
            raise ValueError(
                f"`logging_steps` must be 1 (the completions and batch statistics are read from every step's log), "
                f"got {self.logging_steps!r}."
            )
        if not (isinstance(self.learning_rate, int | float) and self.learning_rate > 0):
            raise ValueError(f"`learning_rate` must be a number > 0, got {self.learning_rate!r}.")
        if not (isinstance(self.validation_target, int | float) and 0 < self.validation_target <= 1):
            raise ValueError(f"`validation_target` must be in (0, 1], got {self.validation_target!r}.")
        if not self.seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in self.seeds):
            raise ValueError(f"`seeds` must be a non-empty tuple of integers, got {self.seeds!r}.")


FULL = TimeToAccuracySettings()
QUICK = TimeToAccuracySettings(  # the CI size: every phase runs, in well under a minute per run
    num_train=16,
    num_validation=8,
    num_test=8,
    grpo_steps=2,
    prompts_per_step=2,
    num_generations=4,
    max_completion_length=8,
    eval_every=1,
    seeds=(0,),
)


# ---------------------------------------------------------------------------------------------------- arms
@dataclass(frozen=True)
class Arm:
    """One GRPO arm.

    Attributes:
        description (`str`): one line for the report.
        plain (`bool`): plain `trl.GRPOTrainer` / `trl.GRPOConfig` at TRL's defaults; else `GRPOExtTrainer` with
            `options`.
        options (`dict`): `GRPOExtConfig` fields on top of the shared GRPO arguments (`demos.real.real_grpo_args`).
        group_size (`int | None`): K of the arm at the same completion budget per step (`prompts_per_step x
            num_generations` of the settings: budget / K prompts per step); `None`: the settings' K and prompts.
        seeds (`tuple[int, ...] | None`): the only seeds the arm runs, of those requested (the others are neither
            trained nor missing); `None`: every requested seed.
    """

    description: str
    plain: bool = False
    options: dict = field(default_factory=dict)
    group_size: int | None = None
    seeds: tuple[int, ...] | None = None

    def runs_seed(self, seed: int) -> bool:
        """Whether the arm runs `seed` when it is requested."""
        return self.seeds is None or seed in self.seeds


# The one table of the arms' options: each field is written once, the arms compose them.
_FAST = {"share_prompt": True, "skip_zero_advantage": True, "log_tied_groups": True}
_DYNAMIC = {**_FAST, "dynamic_sampling": True}  # dynamic_sampling_max_rounds at GRPOExtConfig's default
_K_SEEDS = (0, 1, 2)
ARMS: dict[str, Arm] = {
    "trl": Arm("plain trl.GRPOTrainer (T 1.0, z-score), the real demo's weighted reward as one function", plain=True),
    "fast": Arm("GRPOExtTrainer, TRL's math (T 1.0, z-score) + share_prompt, skip_zero_advantage", options=_FAST),
    "fast_dynamic": Arm("fast + dynamic sampling (tied groups replaced by new prompts)", options=_DYNAMIC),
    "fast_t085": Arm("fast at temperature 0.85", options={**_FAST, "temperature": 0.85}),
    "fast_dynamic_rank": Arm("fast_dynamic + rank advantages", options={**_DYNAMIC, "advantage_estimator": "rank"}),
    # The group-size sweep runs 3 seeds (the `fast` arm is its K = 8); the other arms run all 5.
    "fast_k2": Arm("fast, K = 2 at the same completions per step", options=_FAST, group_size=2, seeds=_K_SEEDS),
    "fast_k4": Arm("fast, K = 4 at the same completions per step", options=_FAST, group_size=4, seeds=_K_SEEDS),
    "fast_k16": Arm("fast, K = 16 at the same completions per step", options=_FAST, group_size=16, seeds=_K_SEEDS),
}
DEFAULT_ARMS = ("trl", "fast", "fast_dynamic", "fast_t085", "fast_dynamic_rank", "fast_k2", "fast_k4", "fast_k16")
GROUP_SIZE_REFERENCE = "fast"  # the arm whose K is the settings' num_generations (the group-size arms' K = 8)
COMPARISONS = (  # paired test-accuracy differences (a - b, same seed)
    ("fast", "trl"),
    ("fast_dynamic", "fast"),
    ("fast_t085", "fast"),
    ("fast_dynamic_rank", "fast_dynamic"),
    ("fast_dynamic", "trl"),
)
# The clock of every time the report compares: training CPU seconds of the run's one thread. On a dedicated core it is
# the wall time; unlike wall time it does not grow when another process shares the core (two workers, a test run), so
# runs measured while the machine was busy stay comparable. Wall seconds are reported beside it.
CLOCK = "cpu_seconds"
TIME_REFERENCE = "trl"  # time ratios and the "time to TRL's final accuracy" are relative to this arm, seed by seed
# Metrics the arm's options promise; a run whose log lacks them says so (a trainer without the feature yet).
_PROMISED_METRICS = {
    "log_tied_groups": ("tied_groups/top_frac", "tied_groups/bottom_frac"),
    "dynamic_sampling": (
        "dynamic_sampling/groups_generated",
        "dynamic_sampling/rounds",
        "dynamic_sampling/groups_per_kept",
    ),
}
BATCH_METRICS = (
    "frac_reward_zero_std",
    "tied_groups/top_frac",
    "tied_groups/bottom_frac",
    "dynamic_sampling/groups_per_kept",
)


class ArmUnavailable(ValueError):
    """An arm that cannot run under these settings or with this installation (a missing config field, a group size
    that does not divide the completion budget)."""


def _arm(name: str, arms: Mapping[str, Arm] | None = None) -> Arm:
    arms = ARMS if arms is None else arms
    if name not in arms:
        raise ArmUnavailable(f"unknown arm {name!r}; valid arms: {', '.join(arms)}.")
    return arms[name]


def arm_shape(settings: TimeToAccuracySettings, name: str, arms: Mapping[str, Arm] | None = None) -> tuple[int, int]:
    """(prompts per step, K) of arm `name`: the settings' for most arms; budget / K prompts for a group-size arm
    (budget = `prompts_per_step x num_generations` completions per step). `ArmUnavailable` where that does not fit.

    Example:
    >>> arm_shape(FULL, "fast"), arm_shape(FULL, "fast_k2"), arm_shape(FULL, "fast_k16")
    ((4, 8), (16, 2), (2, 16))
    """
    arm = _arm(name, arms)
    if arm.group_size is None:
        return settings.prompts_per_step, settings.num_generations
    k, budget = arm.group_size, settings.prompts_per_step * settings.num_generations
    if k == settings.num_generations:
        raise ArmUnavailable(
            f"arm {name!r} has K = {k}, the settings' own group size: it is the {GROUP_SIZE_REFERENCE!r} arm under "
            "these settings (trained once, as that arm)."
        )
    if k < 2 or budget % k:
        raise ArmUnavailable(
            f"arm {name!r} needs K = {k} to divide the completion budget per step, {settings.prompts_per_step} "
            f"prompts x {settings.num_generations} = {budget} completions, which it does not."
        )
    return budget // k, k


def arm_config(settings: TimeToAccuracySettings, name: str, arms: Mapping[str, Arm] | None = None) -> dict:
    """What defines arm `name` beyond the settings: its trainer, shape and config options (part of a run's
    fingerprint).

    Example:
    >>> arm_config(FULL, "fast_k2")["prompts_per_step"], arm_config(FULL, "trl")["trainer"]
    (16, 'trl.GRPOTrainer')
    """
    arm = _arm(name, arms)
    prompts, k = arm_shape(settings, name, arms)
    return {
        "trainer": "trl.GRPOTrainer" if arm.plain else "GRPOExtTrainer",
        "prompts_per_step": prompts,
        "num_generations": k,
        "options": json.loads(json.dumps(dict(arm.options))),
    }


def missing_config_fields(options: Mapping) -> list[str]:
    """The `options` that `GRPOExtConfig` has no field for (in this installation)."""
    from ..config import GRPOExtConfig

    known = {f.name for f in dataclasses.fields(GRPOExtConfig)}
    return [name for name in options if name not in known]


def check_arm(settings: TimeToAccuracySettings, name: str, arms: Mapping[str, Arm] | None = None) -> None:
    """`ArmUnavailable` naming the problem when arm `name` cannot run here: unknown, a shape that does not fit, or a
    `GRPOExtConfig` field this installation lacks (the option is never dropped silently)."""
    arm = _arm(name, arms)
    arm_shape(settings, name, arms)
    if not arm.plain:
        missing = missing_config_fields(arm.options)
        if missing:
            raise ArmUnavailable(
                f"arm {name!r} needs the GRPOExtConfig field(s) {missing}, which this installation of trl_grpo_ext "
                "does not have yet; run the other arms (--arms ...) until they exist."
            )


def group_size_arms(settings: TimeToAccuracySettings, arms: Mapping[str, Arm] | None = None) -> dict[int, str]:
    """K -> arm at the same completion budget: the group-size arms that fit these settings, and
    `GROUP_SIZE_REFERENCE` at the settings' K.

    Example:
    >>> group_size_arms(FULL)
    {2: 'fast_k2', 4: 'fast_k4', 8: 'fast', 16: 'fast_k16'}
    """
    arms = ARMS if arms is None else arms
    out = {settings.num_generations: GROUP_SIZE_REFERENCE}
    for name, arm in arms.items():
        if arm.group_size is None:
            continue
        with contextlib.suppress(ArmUnavailable):
            out[arm_shape(settings, name, arms)[1]] = name
    return dict(sorted(out.items()))


# ---------------------------------------------------------------------------------------------------- fingerprints
def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("torch", "trl", "transformers"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def fingerprint(settings: TimeToAccuracySettings, name: str, arms: Mapping[str, Arm] | None = None) -> dict:
    """What a run of arm `name` was trained with: the settings (without the list of seeds, which only says which
    runs exist), the arm's config and the versions of torch, trl and transformers."""
    recorded = json.loads(json.dumps(asdict(settings)))
    recorded.pop("seeds", None)
    return {"settings": recorded, "arm": arm_config(settings, name, arms), "versions": _versions()}


def fingerprint_differences(recorded, expected, prefix: str = "") -> list[str]:
    """`key: recorded in the run, expected here` for every entry that differs (nested keys dotted).

    Example:
    >>> fingerprint_differences({"settings": {"grpo_steps": 40, "threads": 1}}, {"settings": {"grpo_steps": 20, "threads": 1}})
    ['settings.grpo_steps: 40 in the run, 20 here']
    """
    if isinstance(recorded, dict) and isinstance(expected, dict):
        out = []
        for key in sorted(set(recorded) | set(expected), key=str):
            if key not in recorded:
                out.append(f"{prefix}{key}: missing in the run, {expected[key]!r} here")
            elif key not in expected:
                out.append(f"{prefix}{key}: {recorded[key]!r} in the run, missing here")
            else:
                out += fingerprint_differences(recorded[key], expected[key], f"{prefix}{key}.")
        return out
    return [] if recorded == expected else [f"{prefix.rstrip('.')}: {recorded!r} in the run, {expected!r} here"]


def check_finished(path: Path, expected: dict) -> bool:
    """Whether the run at `path` (its result.json) is finished, with the fingerprint `expected`; `SettingsMismatch`
    naming the differences when it was trained with another one (it is not overwritten)."""
    path = Path(path)
    if not path.exists():
        return False
    try:
        recorded = json.loads(path.read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, ValueError) as err:
        raise SettingsMismatch(f"{path} cannot be read ({err}); move it away to train the run again.") from None
    if recorded is None:
        raise SettingsMismatch(f"{path} records no fingerprint; move it away to train the run again.")
    differences = fingerprint_differences(recorded, expected)
    if differences:
        raise SettingsMismatch(
            f"{path} was trained with other settings: {'; '.join(differences)}. Use another --output-dir for these "
            f"settings, or move {path.parent} away to train the run again."
        )
    return True


def _write_json(path: Path, data) -> None:
    """Atomically: a temporary file in the same directory, then renamed over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _finite(value):
    """JSON-safe: NaN and infinities become None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------------- locks
_HOST = socket.gethostname()
FRESH_LOCK_SECONDS = 60.0  # an empty lock (its writer between create and write) younger than this is held


def _process_start(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot (Linux), to tell a reused PID; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return False
    return True


def _read_lock(lock: Path) -> dict | None:
    """The lock's record ({"pid", "host", "start"}; a bare PID is read too); None when empty or unreadable."""
    try:
        text = lock.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if not text:
        return None
    if text.isdigit():
        return {"pid": int(text)}
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def _holder_alive(record: dict | None, lock: Path) -> bool:
    if record is None:  # being written, or garbage: held while fresh
        try:
            return time.time() - lock.stat().st_mtime < FRESH_LOCK_SECONDS
        except OSError:
            return False
    if record.get("host", _HOST) != _HOST:
        return True  # another machine's process: it cannot be checked from here
    pid = record["pid"]
    if not _pid_alive(pid):
        return False
    start = record.get("start")
    return start is None or _process_start(pid) in (None, start)


def lock_holder(lock: Path) -> int | None:
    """The PID of the live process holding `lock`; None when there is no lock or its holder is dead."""
    lock = Path(lock)
    if not lock.exists():
        return None
    record = _read_lock(lock)
    if not _holder_alive(record, lock):
        return None
    return record["pid"] if record else -1


def claim_run(lock: Path) -> bool:
    """Claim a run: create `lock` exclusively (`O_CREAT | O_EXCL`) with this process's PID. False when a live
    process holds it; a lock whose process is dead (or this process's own) is taken over, under a second exclusive
    file (`lock.takeover`) so that two workers never both take over the same dead lock."""
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": _HOST, "start": _process_start(os.getpid())}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(me) + "\n")
            return True
        record = _read_lock(lock)
        if record is not None and record.get("pid") == me["pid"] and record.get("host", _HOST) == _HOST:
            return True  # ours (an earlier attempt of this process)
        if _holder_alive(record, lock):
            return False
        guard = lock.with_name(lock.name + ".takeover")
        try:
            guard_fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            with contextlib.suppress(OSError):
                if time.time() - guard.stat().st_mtime > FRESH_LOCK_SECONDS:  # its taker died mid-way
                    guard.unlink()
                    continue
            return False  # another worker is taking it over
        try:
            if _read_lock(lock) == record:  # still the dead holder's
                lock.unlink(missing_ok=True)
        finally:
            os.close(guard_fd)
            guard.unlink(missing_ok=True)
    return False


def release_run(lock: Path) -> None:
    """Delete `lock` if this process holds it."""
    lock = Path(lock)
    record = _read_lock(lock)
    if record is not None and record.get("pid") == os.getpid() and record.get("host", _HOST) == _HOST:
        lock.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------- curves
def _points(curve: Sequence[dict], x: str) -> list[tuple[float, float]]:
    return [(float(p[x]), float(p["validation_accuracy"])) for p in curve]


def time_to_target(curve: Sequence[dict], target: float, x: str = "train_seconds") -> float | None:
    """The first `x` (training seconds, completions, ...) at which the validation curve reaches `target`: linear
    interpolation between the two evaluation points around the first crossing; None if it never does.

    Example:
    >>> curve = [{"train_seconds": 0, "validation_accuracy": 0.3}, {"train_seconds": 10, "validation_accuracy": 0.5},
    ...          {"train_seconds": 30, "validation_accuracy": 0.7}]
    >>> time_to_target(curve, 0.6), time_to_target(curve, 0.3), time_to_target(curve, 0.8)
    (20.0, 0.0, None)
    """
    previous = None
    for x_value, accuracy in _points(curve, x):
        if accuracy >= target:
            if previous is None:
                return x_value
            x0, a0 = previous
            return x0 + (target - a0) / (accuracy - a0) * (x_value - x0)
        previous = (x_value, accuracy)
    return None


def fraction_of_reference(
    curve: Sequence[dict], reference_accuracy: float, reference_seconds: float, x: str = "train_seconds"
) -> float | None:
    """Time for `curve` to first reach `reference_accuracy` (the reference run's final validation accuracy, same
    seed), as a fraction of the reference run's total training seconds; None if never reached.

    Example:
    >>> curve = [{"train_seconds": 0, "validation_accuracy": 0.2}, {"train_seconds": 40, "validation_accuracy": 0.6}]
    >>> fraction_of_reference(curve, 0.5, 120.0)
    0.25
    """
    reached = time_to_target(curve, reference_accuracy, x=x)
    if reached is None or not reference_seconds > 0:
        return None
    return reached / reference_seconds


def paired_ratio(a: Mapping[int, float], b: Mapping[int, float]) -> dict:
    """Paired ratio a / b over the seeds both have, in log space: the geometric mean of the per-seed ratios and its
    95 % t interval, exp(mean(log r) +- t_{0.975, n-1} se(log r)).

    Example:
    >>> r = paired_ratio({0: 50.0, 1: 60.0}, {0: 100.0, 1: 120.0})
    >>> r["n"], r["ratios"], round(r["geometric_mean"], 6), r["ci95"]
    (2, [0.5, 0.5], 0.5, [0.5, 0.5])
    """
    seeds = sorted(s for s in set(a) & set(b) if a[s] and b[s] and a[s] > 0 and b[s] > 0)
    ratios = [a[s] / b[s] for s in seeds]
    logs = [math.log(r) for r in ratios]
    mean, se = mean_se(logs)
    if len(logs) > 1:
        half = t975(len(logs) - 1) * se
        ci = [math.exp(mean - half), math.exp(mean + half)]
    else:
        ci = [math.nan, math.nan]
    return {
        "n": len(seeds),
        "seeds": seeds,
        "ratios": ratios,
        "geometric_mean": math.exp(mean) if logs else math.nan,
        "ci95": ci,
    }


def group_size_verdict(differences: Mapping[str, dict]) -> str:
    """One sentence on whether test accuracy rises with K and saturates at the top: `differences` maps "Kb - Ka"
    (consecutive group sizes, ascending) to `paired_difference` results."""
    steps = list(differences.items())
    if len(steps) < 2:
        return "Group size: fewer than three group sizes finished, no verdict."
    if any(d["n"] < 2 for _, d in steps):
        thin = [name for name, d in steps if d["n"] < 2]
        return f"Group size: fewer than 2 paired seeds for {', '.join(thin)}: no verdict."
    *lower, (top_name, top) = steps

    def described(name, d):
        return f"{name} {100 * d['mean']:+.1f} points" + (" (detectable)" if d["detectable"] else " (not detectable)")

    rise_shown = all(d["mean"] > 0 and d["detectable"] for _, d in lower)
    if all(d["mean"] > 0 for _, d in lower):
        rises = "rises with K up to the second-largest size" + (
            ", every step detectable" if rise_shown else ", not every step detectable"
        )
    else:
        rises = "does not rise monotonically with K up to the second-largest size"
    if not top["detectable"]:
        # A flat top says "saturated" only after a rise that was shown; otherwise it says nothing.
        top_part = f"no detectable change at the top ({described(top_name, top)})" + (
            ": consistent with saturation" if rise_shown else ""
        )
    elif top["mean"] > 0:
        top_part = f"it still rises at the top ({described(top_name, top)}): not saturated"
    else:
        top_part = f"it falls at the top ({described(top_name, top)})"
    details = "; ".join(described(name, d) for name, d in lower)
    verdict = f"Test accuracy {rises} ({details}); {top_part}."
    if not any(d["detectable"] for _, d in steps):
        verdict += " No step is detectable: these seeds neither show nor refute a rise or a saturation."
    return verdict


# ---------------------------------------------------------------------------------------------------- one run
def run_paths(root: Path, arm: str, seed: int) -> tuple[Path, Path]:
    """(result.json, lock) of run (arm, seed) under `root`."""
    directory = Path(root) / "runs" / arm / f"seed{seed}"
    return directory / "result.json", directory / "lock"


class _Clock:
    """Wall and process CPU seconds, accumulated while running; `pause()` stops both (evaluations)."""

    def __init__(self):
        self.wall = self.cpu = 0.0
        self._since: tuple[float, float] | None = None

    def start(self):
        if self._since is None:
            self._since = (time.perf_counter(), time.process_time())

    def stop(self):
        if self._since is not None:
            wall, cpu = self._since
            self.wall += time.perf_counter() - wall
            self.cpu += time.process_time() - cpu
            self._since = None

    def read(self) -> tuple[float, float]:
        if self._since is None:
            return self.wall, self.cpu
        wall, cpu = self._since
        return self.wall + time.perf_counter() - wall, self.cpu + time.process_time() - cpu

    @contextlib.contextmanager
    def paused(self):
        running = self._since is not None
        self.stop()
        try:
            yield
        finally:
            if running:
                self.start()


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak RSS of this process (Linux: `/proc/self/clear_refs`); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb(reset: bool) -> tuple[float, str]:
    """(peak resident memory in MiB, what it covers)."""
    if reset:
        with contextlib.suppress(OSError, AttributeError):
            match = re.search(r"VmHWM:\s+(\d+)\s*kB", Path("/proc/self/status").read_text())
            if match:
                return int(match.group(1)) / 1024, "this run (VmHWM, reset at its start)"
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024), "this process so far (ru_maxrss)"


def evaluate_greedy(model, tokenizer, dataset, settings: TimeToAccuracySettings) -> float:
    """Greedy accuracy on `dataset`, leaving torch's (and Python's, NumPy's) random state as it found it and the model
    in train mode."""
    import random

    import numpy
    import torch

    states = torch.get_rng_state(), random.getstate(), numpy.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        return greedy_evaluation(
            model,
            tokenizer,
            dataset,
            settings.eval_max_new_tokens,
            last_number_scores,
            batch_size=settings.eval_batch_size,
        ).accuracy
    finally:
        torch.set_rng_state(states[0])
        random.setstate(states[1])
        numpy.random.set_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        model.train()


def _numeric_log(log_history: Sequence[dict]) -> list[dict]:
    """The trainer's log entries with their numeric values only (NaN and infinities as None)."""
    out = []
    for entry in log_history:
        kept = {
            k: (v if math.isfinite(v) else None)
            for k, v in entry.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        if kept:
            out.append(kept)
    return out


def build_trainer(
    settings: TimeToAccuracySettings,
    name: str,
    seed: int,
    output_dir: Path,
    train,
    model_path: str,
    arms: Mapping[str, Arm] | None = None,
):
    """The trainer of run (arm `name`, `seed`): LoRA GRPO from `model_path` with the real demo's GRPO arguments and
    reward (`real_demo_reward()`: plain TRL calls it as one function, GRPOExtTrainer expands its objectives)."""
    check_arm(settings, name, arms)
    arm = _arm(name, arms)
    prompts, k = arm_shape(settings, name, arms)
    shaped = replace(settings, prompts_per_step=prompts, num_generations=k)
    common = real_grpo_args(shaped, output_dir, seed, settings.logging_steps)
    if arm.plain:
        from trl import GRPOConfig, GRPOTrainer

        args, trainer_cls = GRPOConfig(**common), GRPOTrainer
    else:
        from ..config import GRPOExtConfig
        from ..trainer import GRPOExtTrainer

        args, trainer_cls = GRPOExtConfig(**{**common, **arm.options}), GRPOExtTrainer
    trainer = trainer_cls(
        model=model_path,
        reward_funcs=real_demo_reward(),
        args=args,
        train_dataset=train,
        peft_config=real_lora(settings),
    )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    return trainer


def run_one(
    root: Path,
    name: str,
    seed: int,
    settings: TimeToAccuracySettings,
    arms: Mapping[str, Arm] | None = None,
    log=print,
) -> dict:
    """Train run (arm `name`, `seed`) in this process and write `runs/{name}/seed{seed}/result.json` atomically;
    returns the result. The caller holds the run's lock (`claim_run`)."""
    from transformers import AutoTokenizer, TrainerCallback, set_seed

    from ..kit.tasks import chat_addition_dataset

    result_path, _ = run_paths(root, name, seed)
    expected = fingerprint(settings, name, arms)
    check_arm(settings, name, arms)
    _, k = arm_shape(settings, name, arms)
    arm = _arm(name, arms)
    gc.collect()  # the previous run's trainer, before the peak memory is reset
    reset = _reset_peak_rss()
    started = time.time()
    with demo_environment(settings.threads):
        model_path = kit.resolve_model_path(settings.model)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        train = chat_addition_dataset(settings.num_train, seed=seed, split="train")
        validation = chat_addition_dataset(settings.num_validation, seed=0, split="validation")
        test = chat_addition_dataset(settings.num_test, seed=0, split="test")
        set_seed(seed)
        setup = time.perf_counter()
        trainer = build_trainer(settings, name, seed, result_path.parent / "trainer", train, model_path, arms)
        setup_seconds = time.perf_counter() - setup
        args = trainer.args
        batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        clock = _Clock()
        points: list[dict] = []
        per_step: dict[int, int] = {}  # completions generated at each step, from its log
        eval_seconds = [0.0]

        def measure(step: int, model):
            with clock.paused():  # the evaluation and its progress line are not training time
                start = time.perf_counter()
                accuracy = evaluate_greedy(model, tokenizer, validation, settings)
                wall, cpu = clock.read()
                points.append(
                    {"step": step, "validation_accuracy": accuracy, "train_seconds": wall, "cpu_seconds": cpu}
                )
                log(
                    f"  {name} seed {seed} step {step}/{settings.grpo_steps}: validation {100 * accuracy:.1f} %, "
                    f"training {wall:.1f} s (cpu {cpu:.1f} s)"
                )
                eval_seconds[0] += time.perf_counter() - start

        class Curve(TrainerCallback):
            """Validation accuracy at step 0, every `eval_every` steps and at the end; completions per step."""

            def on_train_begin(self, args, state, control, model=None, **kwargs):
                measure(0, model)

            def on_step_end(self, args, state, control, model=None, **kwargs):
                step = state.global_step
                if step % settings.eval_every == 0 or step >= state.max_steps:
                    measure(step, model)

            def on_log(self, args, state, control, logs=None, **kwargs):
                logs = logs or {}
                if "train_runtime" in logs or not any(key in logs for key in ("reward", "loss")):
                    return  # the end-of-training summary, or not a step's log
                groups = logs.get("dynamic_sampling/groups_generated")
                if isinstance(groups, int | float) and math.isfinite(groups):
                    per_step[state.global_step] = round(groups * k)
                else:
                    per_step[state.global_step] = batch

        trainer.add_callback(Curve())
        clock.start()
        trainer.train()
        clock.stop()
        train_seconds, cpu_seconds = clock.read()
        steps = trainer.state.global_step
        missing_logs = [s for s in range(1, steps + 1) if s not in per_step]
        for point in points:
            point["completions"] = sum(per_step.get(s, batch) for s in range(1, point["step"] + 1))
        start = time.perf_counter()
        test_accuracy = evaluate_greedy(trainer.model, tokenizer, test, settings)
        test_seconds = time.perf_counter() - start
        log_history = _numeric_log(trainer.state.log_history)
        logged = {key for entry in log_history for key in entry}
        promised = [m for option, metrics in _PROMISED_METRICS.items() if arm.options.get(option) for m in metrics]
        not_logged = [m for m in promised if m not in logged]
        peak_mb, peak_what = _peak_rss_mb(reset)
        del trainer
        gc.collect()
    if not_logged:
        log(f"  warning: {name} seed {seed}: the trainer logged none of {not_logged} (its options promise them)")
    result = {
        "arm": name,
        "seed": seed,
        "description": arm.description,
        "steps": steps,
        "prompts_per_step": arm_shape(settings, name, arms)[0],
        "num_generations": k,
        "curve": points,
        "validation_accuracy": points[-1]["validation_accuracy"],
        "test_accuracy": test_accuracy,
        "train_seconds": train_seconds,
        "cpu_seconds": cpu_seconds,
        "completions": sum(per_step.get(s, batch) for s in range(1, steps + 1)),
        "steps_without_log": missing_logs,  # their completions were counted as the batch size
        "metrics_not_logged": not_logged,
        "setup_seconds": setup_seconds,
        "eval_seconds": eval_seconds[0],
        "test_eval_seconds": test_seconds,
        "peak_rss_mb": peak_mb,
        "peak_rss_covers": peak_what,
        "log_history": log_history,
        "pid": os.getpid(),
        "host": _HOST,
        "started": started,
        "finished": time.time(),
        "fingerprint": expected,
    }
    result = _finite(result)
    _write_json(result_path, result)
    return result


# ---------------------------------------------------------------------------------------------------- the loop
def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


def run_all(
    root: Path,
    settings: TimeToAccuracySettings,
    names: Sequence[str],
    seeds: Sequence[int],
    arms: Mapping[str, Arm] | None = None,
    log=print,
) -> list[str]:
    """Every (seed, arm) run, seed-major; finished ones are skipped and runs locked by a live process left to it.
    Every finished run's fingerprint is checked before anything trains. Returns the failures (a failed run is
    reported and the others go on; its lock is released, so a later invocation tries it again)."""
    import traceback

    for seed in seeds:
        for name in names:
            check_finished(run_paths(root, name, seed)[0], fingerprint(settings, name, arms))
    failures = []
    for seed in seeds:
        for name in names:
            if not _arm(name, arms).runs_seed(seed):
                continue
            result_path, lock = run_paths(root, name, seed)
            expected = fingerprint(settings, name, arms)
            if check_finished(result_path, expected):
                log(f"skip {name} seed {seed}: finished ({result_path})")
                continue
            if not claim_run(lock):
                log(f"skip {name} seed {seed}: being trained by PID {lock_holder(lock)} (lock {lock})")
                continue
            try:
                if check_finished(result_path, expected):  # finished by another worker since the first look
                    log(f"skip {name} seed {seed}: finished ({result_path})")
                    continue
                log(f"train {name} seed {seed}: {_arm(name, arms).description}")
                result = run_one(root, name, seed, settings, arms, log=log)
            except (KeyboardInterrupt, SettingsMismatch):
                raise
            except Exception as err:  # one failed run must not stop the others
                traceback.print_exc()
                failures.append(f"{name} seed {seed}: {type(err).__name__}: {err}")
                log(f"FAILED {failures[-1]}")
                continue
            finally:
                release_run(lock)
            log(
                f"finished {name} seed {seed}: test {100 * result['test_accuracy']:.1f} %, validation "
                f"{100 * result['validation_accuracy']:.1f} %, training {_seconds(result['train_seconds'])} "
                f"(cpu {_seconds(result['cpu_seconds'])}), {result['completions']} completions -> {result_path}"
            )
    return failures


# ---------------------------------------------------------------------------------------------------- the report
def load_results(root: Path, settings: TimeToAccuracySettings, arms: Mapping[str, Arm] | None = None):
    """Finished runs under `root/runs`: ({arm: {seed: result}}, notes). A run with another fingerprint is a
    `SettingsMismatch`; directories of arms that are not in the table (or do not fit these settings) are noted."""
    arms = ARMS if arms is None else arms
    results: dict[str, dict[int, dict]] = {}
    notes = []
    for path in sorted((Path(root) / "runs").glob("*/seed*/result.json")):
        name = path.parent.parent.name
        match = re.fullmatch(r"seed(-?\d+)", path.parent.name)
        if match is None:
            continue
        if name not in arms:
            notes.append(f"{path}: arm {name!r} is not in the arm table, left out")
            continue
        try:
            expected = fingerprint(settings, name, arms)
        except ArmUnavailable as err:
            notes.append(f"{path}: left out ({err})")
            continue
        check_finished(path, expected)
        results.setdefault(name, {})[int(match.group(1))] = json.loads(path.read_text(encoding="utf-8"))
    return results, notes


def _mean_metric(run: dict, key: str) -> float | None:
    values = [e[key] for e in run.get("log_history", []) if e.get(key) is not None and "train_runtime" not in e]
    return sum(values) / len(values) if values else None


def _stat(values: Sequence[float]) -> dict:
    mean, se = mean_se(list(values))
    return {"n": len(values), "mean": mean, "se": se}


def summarise(
    results: Mapping[str, Mapping[int, dict]],
    settings: TimeToAccuracySettings,
    expected_arms: Sequence[str],
    seeds: Sequence[int],
    notes: Sequence[str] = (),
    running: Sequence[str] = (),
    arms: Mapping[str, Arm] | None = None,
) -> dict:
    """The report's numbers from finished runs: per arm, the paired comparisons, time ratios and group size."""
    arms = ARMS if arms is None else arms
    target = settings.validation_target
    reference = results.get(TIME_REFERENCE, {})
    # A seed whose reference run ended no higher than it started has no accuracy of the reference's to reach (its
    # step-0 accuracy would count as reaching it at time 0): it is left out of the fraction and said so.
    no_gain = sorted(
        s for s, r in reference.items() if not r["validation_accuracy"] > r["curve"][0]["validation_accuracy"]
    )
    per_arm = {}
    names = [n for n in arms if n in results or n in expected_arms]
    for name in names:
        runs = dict(sorted(results.get(name, {}).items()))
        to_target = {s: time_to_target(r["curve"], target, x=CLOCK) for s, r in runs.items()}
        to_target_completions = {s: time_to_target(r["curve"], target, x="completions") for s, r in runs.items()}
        fraction = {}
        for s, r in runs.items():
            if s in reference and s not in no_gain:
                ref = reference[s]
                fraction[s] = fraction_of_reference(r["curve"], ref["validation_accuracy"], ref[CLOCK], x=CLOCK)
        reached = [v for v in to_target.values() if v is not None]
        fraction_reached = [v for v in fraction.values() if v is not None]
        metrics = {}
        for key in BATCH_METRICS:
            means = [m for m in (_mean_metric(r, key) for r in runs.values()) if m is not None]
            metrics[key] = _stat(means) if means else None
        per_arm[name] = {
            "description": arms[name].description,
            "seeds": list(runs),
            "test_accuracy": {s: r["test_accuracy"] for s, r in runs.items()},
            "test": _stat([r["test_accuracy"] for r in runs.values()]),
            "validation_final": _stat([r["validation_accuracy"] for r in runs.values()]),
            "train_seconds": _stat([r["train_seconds"] for r in runs.values()]),
            "cpu_seconds": _stat([r["cpu_seconds"] for r in runs.values()]),
            "completions": _stat([r["completions"] for r in runs.values()]),
            "time_to_target": to_target,
            "time_to_target_reached": _stat(reached),
            "completions_to_target": to_target_completions,
            "completions_to_target_reached": _stat([v for v in to_target_completions.values() if v is not None]),
            "fraction_of_trl_time": fraction,
            "fraction_of_trl_time_reached": _stat(fraction_reached),
            "fraction_goal_met": sum(v <= 0.5 for v in fraction_reached),
            "fraction_stretch_met": sum(v <= 1 / 3 for v in fraction_reached),
            "metrics": metrics,
        }
    test_by_arm = {name: {s: r["test_accuracy"] for s, r in runs.items()} for name, runs in results.items()}
    comparisons = []
    for a, b in COMPARISONS:
        diff = paired_difference(test_by_arm.get(a, {}), test_by_arm.get(b, {}))
        comparisons.append({"a": a, "b": b, "difference": diff, "verdict": verdict(a, b, diff)})
    time_ratios = {}
    train_seconds = {name: {s: r[CLOCK] for s, r in runs.items()} for name, runs in results.items()}
    for name in names:
        if name != TIME_REFERENCE:
            time_ratios[f"{name}/{TIME_REFERENCE}"] = paired_ratio(
                train_seconds.get(name, {}), train_seconds.get(TIME_REFERENCE, {})
            )
    by_k = group_size_arms(settings, arms)
    group = {
        "arms": {str(k): name for k, name in by_k.items()},
        "test": {str(k): _stat(list(test_by_arm.get(name, {}).values())) for k, name in by_k.items()},
        "differences": {},
    }
    ks = list(by_k)
    for low, high in zip(reversed(ks[:-1]), reversed(ks[1:])):
        diff = paired_difference(test_by_arm.get(by_k[high], {}), test_by_arm.get(by_k[low], {}))
        group["differences"][f"K{high} - K{low}"] = diff
    ascending = dict(reversed(list(group["differences"].items())))
    group["verdict"] = group_size_verdict(ascending)
    finished = {(name, s) for name, runs in results.items() for s in runs}
    missing = [
        f"{name} seed {s}"
        for s in seeds
        for name in expected_arms
        if (name, s) not in finished and _arm(name, arms).runs_seed(s)
    ]
    return {
        "settings": asdict(settings),
        "validation_target": target,
        "arms": per_arm,
        "comparisons": comparisons,
        "time_ratios": time_ratios,
        "group_size": group,
        "reference_no_gain_seeds": no_gain,
        "missing": missing,
        "running": list(running),
        "notes": list(notes),
    }


def _pct(stat: dict | None) -> str:
    if not stat or not stat["n"]:
        return "–"
    if math.isnan(stat["se"]):
        return f"{100 * stat['mean']:.1f}"
    return f"{100 * stat['mean']:.1f} ± {100 * stat['se']:.1f}"


def _num(stat: dict | None, digits: int = 0) -> str:
    if not stat or not stat["n"]:
        return "–"
    if math.isnan(stat["se"]):
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['se']:.{digits}f}"


def _reached(stat: dict, total: int, digits: int = 0, scale: float = 1.0) -> str:
    if not total:
        return "–"
    if not stat["n"]:
        return f"not reached (0/{total})"
    scaled = {**stat, "mean": stat["mean"] * scale, "se": stat["se"] * scale}
    return f"{_num(scaled, digits)} ({stat['n']}/{total} reached)"


def markdown(summary: dict) -> str:
    """results.md: the tables, paired comparisons, time ratios, group size and what is missing."""
    s = summary["settings"]
    target = summary["validation_target"]
    lines = [
        "# Time to accuracy",
        "",
        f"{s['model']} (pretrained, LoRA r {s['lora_r']} / alpha {s['lora_alpha']} on every linear layer), the real "
        f"demo's chat addition task; GRPO {s['grpo_steps']} steps, {s['prompts_per_step']} prompts x "
        f"{s['num_generations']} completions per step (the group-size arms: the same {s['prompts_per_step'] * s['num_generations']} "
        f"completions as budget / K prompts x K), lr {s['learning_rate']:g} constant, beta 0, "
        f"{s['max_completion_length']} completion tokens, {s['threads']} thread(s). Greedy validation accuracy "
        f"({s['num_validation']} problems) at step 0, every {s['eval_every']} steps and at the end; greedy test "
        f"accuracy ({s['num_test']} problems) once per run. Training seconds exclude these evaluations. Times "
        "compared below are training CPU seconds of the run's one thread (the wall time on a dedicated core, and "
        "unaffected by other processes sharing it); wall seconds are shown beside them. Mean ± standard error over "
        "seeds.",
        "",
        "## Accuracy and cost",
        "",
        "| arm | seeds | test acc % | final val acc % | training wall s | training CPU s | completions |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, a in summary["arms"].items():
        seeds = ",".join(str(x) for x in a["seeds"]) or "none"
        lines.append(
            f"| {name} | {seeds} | {_pct(a['test'])} | {_pct(a['validation_final'])} | {_num(a['train_seconds'])} "
            f"| {_num(a['cpu_seconds'])} | {_num(a['completions'])} |"
        )
    lines += [
        "",
        "## Time to accuracy",
        "",
        f"Time to the validation target ({100 * target:.0f} %): the first crossing of the validation curve, linearly "
        "interpolated between evaluation points; the mean is over the seeds that reached it. Time to TRL's final "
        f"accuracy: per seed, the first time the arm's validation curve reaches the `{TIME_REFERENCE}` run's final "
        f"validation accuracy of that seed, as a fraction of that `{TIME_REFERENCE}` run's training time (goal <= 0.5, "
        "stretch <= 0.33)."
        + (
            f" Seeds where the `{TIME_REFERENCE}` run ended no higher than its step-0 accuracy (nothing of it to reach) "
            f"are left out of that fraction: {', '.join(map(str, summary['reference_no_gain_seeds']))}."
            if summary["reference_no_gain_seeds"]
            else ""
        ),
        "",
        f"| arm | training CPU s to {100 * target:.0f} % | completions to {100 * target:.0f} % | fraction of TRL time to "
        "TRL's final acc | goal <= 0.5 | stretch <= 0.33 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, a in summary["arms"].items():
        n, paired = len(a["seeds"]), len(a["fraction_of_trl_time"])
        lines.append(
            f"| {name} | {_reached(a['time_to_target_reached'], n)} | "
            f"{_reached(a['completions_to_target_reached'], n)} | "
            f"{_reached(a['fraction_of_trl_time_reached'], paired, 2)} | "
            f"{a['fraction_goal_met']}/{paired} | {a['fraction_stretch_met']}/{paired} |"
        )
    lines += [
        "",
        "## Batch statistics (mean over steps, then over seeds)",
        "",
        "| arm | " + " | ".join(BATCH_METRICS) + " |",
        "|---|" + "---:|" * len(BATCH_METRICS),
    ]
    for name, a in summary["arms"].items():
        cells = [_num(a["metrics"][key], 3) if a["metrics"][key] else "not logged" for key in BATCH_METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Paired comparisons of test accuracy (same seed)", ""]
    lines += [f"- {c['verdict']}" for c in summary["comparisons"]]
    lines += [
        "",
        f"## Training time ratios (paired over seeds, vs `{TIME_REFERENCE}`)",
        "",
        "Geometric mean of the per-seed ratios of training CPU seconds (one thread: the wall time on a dedicated core), "
        "with a 95 % t interval computed in log space.",
        "",
    ]
    for pair, r in summary["time_ratios"].items():
        if r["n"] == 0:
            lines.append(f"- {pair}: no paired seeds")
        elif r["n"] == 1:
            lines.append(f"- {pair}: {r['geometric_mean']:.2f} (1 seed, no interval)")
        else:
            lines.append(
                f"- {pair}: {r['geometric_mean']:.2f} (95% CI [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}], "
                f"{r['n']} seeds; per seed {', '.join(f'{x:.2f}' for x in r['ratios'])})"
            )
    group = summary["group_size"]
    lines += [
        "",
        "## Group size at an equal completion budget",
        "",
        "| K | arm | test acc % | seeds |",
        "|---:|---|---:|---:|",
    ]
    for k, name in group["arms"].items():
        lines.append(f"| {k} | {name} | {_pct(group['test'][k])} | {group['test'][k]['n']} |")
    lines.append("")
    for pair, d in group["differences"].items():
        lines.append(f"- {verdict(pair.split(' - ')[0], pair.split(' - ')[1], d)}")
    lines += ["", group["verdict"], ""]
    if summary["missing"]:
        lines += ["## Missing", "", f"Not finished: {', '.join(summary['missing'])}.", ""]
    else:
        lines += ["Every requested run is finished.", ""]
    if summary["running"]:
        lines += [f"Being trained now: {', '.join(summary['running'])}.", ""]
    if summary["notes"]:
        lines += ["Notes:", ""] + [f"- {note}" for note in summary["notes"]] + [""]
    return "\n".join(lines)


def _mean_curve(runs: Sequence[dict], x: str) -> tuple[list[float], list[float]]:
    """Mean over seeds at each evaluation step that every seed has: (mean x, mean validation accuracy)."""
    steps = set.intersection(*({p["step"] for p in r["curve"]} for r in runs))
    xs, ys = [], []
    for step in sorted(steps):
        at = [next(p for p in r["curve"] if p["step"] == step) for r in runs]
        xs.append(sum(p[x] for p in at) / len(at))
        ys.append(sum(p["validation_accuracy"] for p in at) / len(at))
    return xs, ys


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=80, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def plot(results: Mapping[str, Mapping[int, dict]], summary: dict, out: Path) -> list[Path]:
    """plots/validation_vs_time.png, validation_vs_completions.png and group_size.png under `out`."""
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    paths = []
    names = [name for name in summary["arms"] if results.get(name)]
    colors = {name: f"C{i % 10}" for i, name in enumerate(names)}
    target = summary["validation_target"]
    for x, label, filename in (
        (CLOCK, "training seconds, one thread (CPU seconds; evaluations excluded)", "validation_vs_time.png"),
        ("completions", "completions generated", "validation_vs_completions.png"),
    ):
        fig, ax = plt.subplots(figsize=(8, 5))
        for name in names:
            runs = list(results[name].values())
            for r in runs:
                ax.plot(
                    [p[x] for p in r["curve"]],
                    [100 * p["validation_accuracy"] for p in r["curve"]],
                    color=colors[name],
                    alpha=0.25,
                    linewidth=0.8,
                )
            xs, ys = _mean_curve(runs, x)
            ax.plot(
                xs,
                [100 * y for y in ys],
                color=colors[name],
                linewidth=2,
                marker="o",
                markersize=3,
                label=f"{name} ({len(runs)} seed{'' if len(runs) == 1 else 's'})",
            )
        ax.axhline(100 * target, color="black", linestyle="--", linewidth=1, label=f"target {100 * target:.0f} %")
        ax.set_xlabel(label)
        ax.set_ylabel("validation accuracy % (greedy)")
        ax.set_title("mean over seeds (thick), each seed (thin)", fontsize=10)
        ax.legend(fontsize=8)
        paths.append(_save(fig, out / filename))
        plt.close(fig)
    group = summary["group_size"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, name in group["arms"].items():
        values = [100 * v for v in summary["arms"].get(name, {}).get("test_accuracy", {}).values()]
        if not values:
            continue
        ax.scatter([int(k)] * len(values), values, color="C0", alpha=0.4, s=15)
        mean, se = mean_se(values)
        ax.errorbar([int(k)], [mean], yerr=[0 if math.isnan(se) else se], fmt="o", color="C3", capsize=4)
    ax.set_xscale("log", base=2)
    ks = [int(k) for k in group["arms"]]
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("group size K (same completions per step)")
    ax.set_ylabel("test accuracy %")
    ax.set_title("test accuracy vs K (dots: seeds; bar: mean ± se)", fontsize=10)
    paths.append(_save(fig, out / "group_size.png"))
    plt.close(fig)
    return paths


def write_report(
    root: Path,
    settings: TimeToAccuracySettings,
    names: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    arms: Mapping[str, Arm] | None = None,
) -> list[Path]:
    """results.json, results.md and the plots of whatever runs under `root` are finished; the requested `names` x
    `seeds` that are not are listed as missing. Returns the paths written."""
    root = Path(root)
    arms = ARMS if arms is None else arms
    names = list(default_arms(settings, arms)[0] if names is None else names)
    seeds = list(settings.seeds if seeds is None else seeds)
    results, notes = load_results(root, settings, arms)
    running = []
    for lock in sorted((root / "runs").glob("*/seed*/lock")):
        pid = lock_holder(lock)
        if pid is not None:
            running.append(f"{lock.parent.parent.name} {lock.parent.name.replace('seed', 'seed ')} (PID {pid})")
    summary = summarise(results, settings, names, seeds, notes, running, arms)
    json_path, md_path = root / "results.json", root / "results.md"
    _write_json(json_path, _finite(summary))
    md_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = md_path.with_name(f".{md_path.name}.tmp{os.getpid()}")
    tmp.write_text(markdown(summary), encoding="utf-8")
    os.replace(tmp, md_path)
    return [json_path, md_path, *plot(results, summary, root / "plots")]


# ---------------------------------------------------------------------------------------------------- the command
def default_arms(
    settings: TimeToAccuracySettings, arms: Mapping[str, Arm] | None = None
) -> tuple[list[str], list[str]]:
    """(`DEFAULT_ARMS` that fit these settings, the reasons of those that do not)."""
    kept, left_out = [], []
    for name in DEFAULT_ARMS:
        try:
            arm_shape(settings, name, arms)
        except ArmUnavailable as err:
            left_out.append(str(err))
        else:
            kept.append(name)
    return kept, left_out


def _parse_list(text: str, what: str, convert=str) -> list:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError(f"`--{what}` needs a comma-separated list, got {text!r}.")
    try:
        return list(dict.fromkeys(convert(item) for item in items))
    except ValueError:
        raise ValueError(f"`--{what}` must be comma-separated integers, got {text!r}.") from None


def main(argv: list[str] | None = None, arms: Mapping[str, Arm] | None = None) -> int:
    """`trl-grpo-ext time-to-accuracy ...`; returns the exit status (2: a usage or settings error, 1: a run failed).
    `arms` replaces the arm table (tests)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    arms = ARMS if arms is None else arms
    parser = argparse.ArgumentParser(
        prog="trl-grpo-ext time-to-accuracy",
        description="Held-out accuracy against training time and generated completions, per GRPO arm, on the real "
        "model smollm2:135m-instruct (chat two-digit addition). Resumable; two workers may share --output-dir.",
    )
    parser.add_argument("--output-dir", "--output_dir", required=True, help="Directory of the runs and the report.")
    parser.add_argument("--arms", default=None, help=f"Comma-separated arms (default: {','.join(DEFAULT_ARMS)}).")
    parser.add_argument("--seeds", default=None, help="Comma-separated seeds (default: 0,1,2,3,4; --quick: 0).")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: 1).")
    parser.add_argument("--quick", action="store_true", help="CI size: a few problems, 2 steps of 2 prompts x 4.")
    parser.add_argument("--report-only", action="store_true", help="Write the report of the finished runs only.")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    root = Path(args.output_dir)
    try:
        if args.threads is not None:
            settings = replace(settings, threads=args.threads)
        if args.arms is None:
            names, left_out = default_arms(settings, arms)
            for reason in left_out:
                print(f"note: left out under these settings: {reason}")
        else:
            names = _parse_list(args.arms, "arms")
            unknown = [name for name in names if name not in arms]
            if unknown:
                raise ArmUnavailable(f"unknown arm(s) {', '.join(unknown)}; valid arms: {', '.join(arms)}.")
        seeds = list(settings.seeds) if args.seeds is None else _parse_list(args.seeds, "seeds", int)
        for name in names:
            arm_shape(settings, name, arms)  # a group size that does not fit these settings: refused, report too
        failures = []
        if not args.report_only:
            for name in names:
                check_arm(settings, name, arms)
            print(
                f"time-to-accuracy: {len(names)} arm(s) x {len(seeds)} seed(s) (each arm on those of its seeds "
                f"requested) -> {root}/runs "
                f"({settings.model}, {settings.grpo_steps} steps, {settings.threads} thread(s), PID {os.getpid()})",
                flush=True,
            )
            failures = run_all(root, settings, names, seeds, arms, log=lambda line: print(line, flush=True))
        paths = write_report(root, settings, names, seeds, arms)
    except (ArmUnavailable, SettingsMismatch, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = json.loads(paths[0].read_text(encoding="utf-8"))
    requested = sum(arms[name].runs_seed(seed) for name in names for seed in seeds)
    print(f"{requested - len(summary['missing'])}/{requested} requested runs finished; report: {paths[1]}")
    for path in paths[2:]:
        print(f"  {path}")
    if failures:
        print(f"{len(failures)} run(s) failed: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
