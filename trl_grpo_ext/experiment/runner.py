"""Run the grid: one warm start per seed (cached on disk), then one GRPO run per (condition, arm, seed), in workers.

Layout of the output directory:

    warmstart/seed{s}/weights.pt, warmstart.json      the SFT warm start of seed s, shared by every arm and condition
                                                        (warmstart.json records the settings it was built with)
    runs/{condition}[_{level}]/{arm}/seed{s}/result.json   one finished run (its presence makes the run skip)
    select/...                                          level selection runs (validation only)

Splits, explicit: the warm start stops on the *validation* split (as the demo's), the curves during GRPO and the level
selection use the *validation* split, and the *test* split is evaluated once per finished run, for the reported
numbers.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from multiprocessing import get_context
from pathlib import Path

from ..demos.common import demo_environment, exact_scores, greedy_accuracy, greedy_evaluation
from ..demos.tiny import DemoSettings, grpo_common_args, warm_start
from .arms import ARMS
from .conditions import CONDITIONS, ConditionReward

CURVE_SPLIT = "validation"  # accuracy and entropy over training; level selection
REPORT_SPLIT = "test"  # evaluated once at the end of each grid run, for the reported numbers


@dataclass(frozen=True)
class ExperimentSettings:
    """Sizes of the experiment; the warm start and the GRPO hyper-parameters are the demo's (`DemoSettings`)."""

    # The demo's warm start and learning rate; 8 prompts x 8 completions per GRPO step (the demo: 16 x 8), so that the
    # grid fits in an hour on 2 busy cores.
    demo: DemoSettings = field(default_factory=lambda: DemoSettings(grpo_batch_size=64))
    grpo_steps: int = 60
    eval_every: int = 15  # validation accuracy and entropy every this many GRPO steps (and at step 0)
    seeds: tuple[int, ...] = (0, 1, 2)
    select_seed: int = 100  # the level-selection runs use their own warm start, never a grid seed


FULL_SETTINGS = ExperimentSettings()
QUICK_SETTINGS = ExperimentSettings(
    demo=DemoSettings(
        num_train=128,
        num_validation=32,
        num_heldout=48,
        sft_max_steps=20,
        sft_target_accuracy=1.01,  # never reached: a fixed 20-step warm start
        sft_check_every=20,
        sft_batch_size=32,
        grpo_batch_size=32,
    ),
    grpo_steps=2,
    eval_every=1,
    seeds=(0, 1),
    select_seed=100,
)


def cell_name(condition: str, level: float | None) -> str:
    """`condition`, or `condition_level` with the level as six significant digits write it when they write it exactly
    (`outliers_0.1`), else as its exact repr (`outliers_0.1000001`): two levels never share a run directory."""
    if level is None:
        return condition
    short = f"{level:g}"
    return f"{condition}_{short if float(short) == level else repr(float(level))}"


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid for one seed."""

    condition: str
    level: float | None
    arm: str
    arm_config: dict
    seed: int
    split: str | None = REPORT_SPLIT  # evaluated at the end; None: validation only (level selection)

    @property
    def cell(self) -> str:
        return cell_name(self.condition, self.level)

    def directory(self, root: Path, group: str = "runs") -> Path:
        return root / group / self.cell / self.arm / f"seed{self.seed}"


# ---------------------------------------------------------------------------------------------------- evaluation
def _curve_callback(tokenizer, dataset, every: int, max_new_tokens: int):
    from transformers import TrainerCallback

    class Curve(TrainerCallback):
        """Validation accuracy and entropy at step 0, every `every` steps and at the last step."""

        def __init__(self):
            self.points: list[dict] = []

        def _measure(self, step, model):
            # One batch of the whole split; the entropy at T = 1 along the greedy completions, comparable between arms.
            measured = greedy_evaluation(model, tokenizer, dataset, max_new_tokens, exact_scores, entropy=True)
            self.points.append({"step": step, "accuracy": measured.accuracy, "entropy": measured.entropy})

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self._measure(0, model)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % every == 0 or state.global_step >= state.max_steps:
                self._measure(state.global_step, model)

    return Curve()


# ---------------------------------------------------------------------------------------------------- jobs
def tiny_datasets(settings: ExperimentSettings, seed: int):
    """(train, validation, test) digit-reversal problems of the demo's sizes: train of `seed`, the same validation and
    test problems for every seed."""
    from ..kit.tasks import reversal_dataset  # datasets: not at start-up

    demo = settings.demo
    lengths = {"min_length": demo.min_length, "max_length": demo.max_length}
    train = reversal_dataset(demo.num_train, seed=seed, split="train", **lengths)
    # The same validation and test problems for every seed, as in the demo.
    validation = reversal_dataset(demo.num_validation, seed=0, split="validation", **lengths)
    test = reversal_dataset(demo.num_heldout, seed=0, split="test", **lengths)
    return train, validation, test


def write_json(path: Path, data: dict) -> None:
    """Write atomically: a run is finished only once its whole result file exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


class SettingsMismatch(ValueError):
    """A finished run or a cached warm start in the output directory was made with other settings than these."""


def setting_differences(recorded: dict, expected: dict, there: str, prefix: str = "") -> list[str]:
    """`key: value in {there}, value here` for each setting that differs (nested keys dotted)."""
    out = []
    for key in sorted(set(recorded) | set(expected), key=str):
        old, new = recorded.get(key), expected.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            out += setting_differences(old, new, there, f"{prefix}{key}.")
        elif old != new:
            out.append(f"{prefix}{key}: {old} in {there}, {new} here")
    return out


def warm_start_dir(root: Path, seed: int) -> Path:
    """Where seed `seed`'s warm start is cached (`weights.pt`, `warmstart.json`)."""
    return root / "warmstart" / f"seed{seed}"


# The fields of `DemoSettings` that shape the warm start: its data, and the SFT schedule and stopping rule.
_WARM_START_FIELDS = (
    "num_train",
    "num_validation",
    "num_heldout",
    "min_length",
    "max_length",
    "sft_max_steps",
    "sft_target_accuracy",
    "sft_check_every",
    "sft_batch_size",
    "sft_learning_rate",
)


def warm_start_settings(settings: ExperimentSettings) -> dict:
    """The settings a warm start is built with, as warmstart.json records them (the GRPO ones do not matter)."""
    return json.loads(json.dumps({name: getattr(settings.demo, name) for name in _WARM_START_FIELDS}))


def check_warm_start(info_path: Path, settings: ExperimentSettings) -> dict:
    """The cached warm start's record; `SettingsMismatch` when it was built with other settings, or records none."""
    info = json.loads(info_path.read_text())
    directory = info_path.parent
    remedy = (
        f"use another `--output-dir` for these settings, or delete {directory} to build it again (the runs trained "
        "from it then have to be trained again too)"
    )
    recorded = info.get("settings")
    if recorded is None:
        raise SettingsMismatch(
            f"{info_path} records no settings (it was written before warm starts recorded them), so it cannot be "
            f"checked against these; {remedy}."
        )
    differences = setting_differences(recorded, warm_start_settings(settings), "the warm start")
    if differences:
        raise SettingsMismatch(f"{directory} was built with other settings ({'; '.join(differences)}); {remedy}.")
    return info


def warm_start_job(root: Path, seed: int, settings: ExperimentSettings, threads: int = 1) -> dict:
    """The demo's SFT warm start for `seed`, saved once as `weights.pt` (reused if already there with the same
    settings; `SettingsMismatch` if there with other settings)."""
    directory = warm_start_dir(root, seed)
    info_path = directory / "warmstart.json"
    if info_path.exists():
        return check_warm_start(info_path, settings)
    import torch
    from transformers import set_seed

    from ..kit.tiny import build_tiny_model, build_tiny_tokenizer

    with demo_environment(threads):
        tokenizer = build_tiny_tokenizer()
        model = build_tiny_model(tokenizer, size="small", seed=seed)
        train, validation, test = tiny_datasets(settings, seed)
        set_seed(seed)
        sft = warm_start(model, tokenizer, train, validation, settings.demo, directory / "sft", seed)
        torch.save(model.state_dict(), directory / "weights.pt")
        max_new = settings.demo.max_completion_length
        info = {
            "seed": seed,
            **sft,
            "validation_accuracy": greedy_accuracy(model, tokenizer, validation, max_new),
            "settings": warm_start_settings(settings),
        }
        if seed != settings.select_seed:
            info["test_accuracy"] = greedy_accuracy(model, tokenizer, test, max_new)
    write_json(info_path, info)
    return info


_LOG_KEYS = ("reward", "frac_reward_zero_std", "entropy", "ladder/distinct_frac", "ladder/t_min", "ladder/t_max")


def tiny_grpo_trainer(model, tokenizer, reward, train, validation, settings, directory: Path, seed: int, **arm_config):
    """`(trainer, curve)`: `GRPOExtTrainer` with the demo's GRPO settings (`settings.demo`, `settings.grpo_steps`
    steps, logging every step) and `arm_config`, quiet, with the validation curve every `settings.eval_every` steps."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from ..config import GRPOExtConfig
    from ..trainer import GRPOExtTrainer

    demo = settings.demo
    common = grpo_common_args(demo, directory / "trainer", seed, max_steps=settings.grpo_steps, logging_steps=1)
    args = GRPOExtConfig(**common, **arm_config)
    trainer = GRPOExtTrainer(
        model=model, reward_funcs=reward, args=args, train_dataset=train, processing_class=tokenizer
    )
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    curve = _curve_callback(tokenizer, validation, settings.eval_every, demo.max_completion_length)
    trainer.add_callback(curve)
    return trainer, curve


def run_job(root: Path, spec: RunSpec, settings: ExperimentSettings, group: str = "runs", threads: int = 1) -> dict:
    """Train one arm from the seed's warm start under one reward condition; writes and returns its result."""
    directory = spec.directory(root, group)
    result_path = directory / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    import torch
    from transformers import set_seed

    from ..kit.tiny import build_tiny_model, build_tiny_tokenizer

    demo = settings.demo
    start = time.perf_counter()
    with demo_environment(threads):
        tokenizer = build_tiny_tokenizer()
        model = build_tiny_model(tokenizer, size="small", seed=spec.seed)
        model.load_state_dict(torch.load(warm_start_dir(root, spec.seed) / "weights.pt", weights_only=True))
        train, validation, test = tiny_datasets(settings, spec.seed)
        reward = ConditionReward(spec.condition, spec.level, demo.num_generations, spec.seed)
        trainer, curve = tiny_grpo_trainer(
            model, tokenizer, reward, train, validation, settings, directory, spec.seed, **spec.arm_config
        )
        set_seed(spec.seed)
        trainer.train()
        result = {
            **asdict(spec),
            "cell": spec.cell,
            "steps": trainer.state.global_step,
            "validation_accuracy": curve.points[-1]["accuracy"],
            "curve": curve.points,
            "log": [
                {"step": e["step"], **{k: e[k] for k in _LOG_KEYS if k in e}}
                | {k: v for k, v in e.items() if k.startswith("ladder/reward_rung_")}
                for e in trainer.state.log_history
                if "reward" in e
            ],
            "clean_accuracy_by_slot": [sum(col) / len(col) for col in zip(*reward.history)],
            "distinct_frac_by_batch": reward.distinct_history,
        }
        if spec.split is not None:
            split = {"test": test, "validation": validation}[spec.split]
            result[f"{spec.split}_accuracy"] = greedy_accuracy(model, tokenizer, split, demo.max_completion_length)
    result["seconds"] = time.perf_counter() - start
    result["settings"] = settings_fingerprint(settings)
    write_json(result_path, result)
    return result


# ---------------------------------------------------------------------------------------------------- the grid
def grid_specs(
    conditions: list[str], levels: dict[str, float], arms: dict[str, dict], seeds: list[int]
) -> list[RunSpec]:
    """Every (seed, condition, arm) run, seed-major: if time runs out, the finished seeds are complete.

    The arms of the fixed table (`arms.ARMS`) come first; arms that join later (the closed-loop ladder) after them, so
    a grid cut short misses whole runs of the newest arm rather than a seed of every arm.
    """
    order = [name for name in arms if name in ARMS] + [name for name in arms if name not in ARMS]
    return [
        RunSpec(condition, levels.get(condition), arm, arms[arm], seed)
        for group in ([a for a in order if a in ARMS], [a for a in order if a not in ARMS])
        for seed in seeds
        for condition in conditions
        for arm in group
    ]


def settings_fingerprint(settings) -> dict:
    """The settings that shape a run (not the list of seeds, which only says which runs the grid holds)."""
    data = json.loads(json.dumps(asdict(settings) if is_dataclass(settings) else settings))
    data.pop("seeds", None)
    return data


def run_finished(path: Path, settings: ExperimentSettings, arm_config: dict | None = None) -> bool:
    """Whether a run's result exists; one written with other settings or another arm config, or one that records no
    settings, is an error, not a silent mix."""
    if not path.exists():
        return False
    result = json.loads(path.read_text())
    recorded = result.get("settings")
    if recorded is None:
        raise SettingsMismatch(
            f"{path} records no settings, so it cannot be checked against these; use another `--output-dir` for "
            f"these settings, or delete {path.parent} to train the run again."
        )
    if settings_fingerprint(recorded) != settings_fingerprint(settings):
        raise SettingsMismatch(
            f"{path} was written with other settings ({recorded}); use another `--output-dir` for these settings "
            f"({settings_fingerprint(settings)})."
        )
    if arm_config is not None and json.loads(json.dumps(arm_config)) != result.get("arm_config"):
        raise SettingsMismatch(
            f"{path} was trained with arm config {result.get('arm_config')}, the table now says {arm_config}; give "
            "the changed arm a new name (or use another `--output-dir`)."
        )
    return True


def mismatch(result: dict, settings: ExperimentSettings, arm_config: dict) -> str | None:
    """What differs between a finished run's `result` and these settings and arm config (`None`: nothing)."""
    recorded = result.get("settings")
    if recorded is None:
        differences = ["settings: none recorded in the run"]
    else:
        differences = setting_differences(settings_fingerprint(recorded), settings_fingerprint(settings), "the run")
    arm = json.loads(json.dumps(arm_config))
    if result.get("arm_config") != arm:
        differences.append(f"arm config: {result.get('arm_config')} in the run, {arm} here")
    return "; ".join(differences) or None


@dataclass(frozen=True)
class Task:
    """What `execute` trains: the record each seed starts from (a warm start, or the base model's evaluation), and
    one run. Module-level functions, so that the spawned workers can unpickle them."""

    start_record: Callable  # (root, seed) -> Path of the start's JSON record (seeds may share one)
    check_start: Callable  # (record path, settings) -> the record; SettingsMismatch when made with other settings
    start_job: Callable  # (root, seed, settings) -> the record, written once
    run_job: Callable  # (root, spec, settings, group) -> the run's result, written once
    candidate_levels: dict = field(default_factory=dict)  # condition -> levels `--select-levels` tries
    start_complete: Callable = lambda record: True  # False: start_job runs again to complete an existing record


def _warm_start_record(root: Path, seed: int) -> Path:
    return warm_start_dir(root, seed) / "warmstart.json"


def execute(root: Path, settings, specs: list[RunSpec], workers: int, group: str = "runs", task: Task | None = None):
    """Starts first (the tiny task: one SFT warm start per seed), then the runs; finished ones are skipped. Yields
    each finished result.

    A cached start or a finished run made with other settings raises `SettingsMismatch` before anything trains.
    """
    from tqdm.auto import tqdm

    task = task or TINY_TASK
    starts: dict[Path, int] = {}
    for seed in sorted({spec.seed for spec in specs}):
        starts.setdefault(task.start_record(root, seed), seed)
    complete = {path: path.exists() and task.start_complete(task.check_start(path, settings)) for path in starts}
    todo_warm = [seed for path, seed in starts.items() if not complete[path]]
    todo = [
        spec
        for spec in specs
        if not run_finished(spec.directory(root, group) / "result.json", settings, spec.arm_config)
    ]
    done = [json.loads((s.directory(root, group) / "result.json").read_text()) for s in specs if s not in todo]
    yield from done
    bar = tqdm(total=len(specs), initial=len(done), desc="experiment runs", unit="run", dynamic_ncols=True)
    context = get_context("spawn")  # fresh interpreters: no torch state shared with the parent
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_quiet_worker) as pool:
        for future in as_completed([pool.submit(task.start_job, root, s, settings) for s in todo_warm]):
            future.result()
        futures = {pool.submit(task.run_job, root, spec, settings, group): spec for spec in todo}
        for future in as_completed(futures):
            spec = futures[future]
            try:
                result = future.result()
            except Exception as err:  # one failed run must not stop the grid; it is reported and stays to do
                bar.write(f"FAILED {spec.cell} {spec.arm} seed {spec.seed}: {type(err).__name__}: {err}")
                bar.update(1)
                continue
            bar.set_postfix_str(f"{spec.cell}/{spec.arm}/seed{spec.seed} {result.get('seconds', 0):.0f}s")
            bar.update(1)
            yield result
    bar.close()


def _quiet_worker() -> None:
    """Workers print nothing (no per-phase bars of the warm start: tqdm reads TQDM_DISABLE when first imported), and
    on Linux they end with the command: a killed `experiment` (a timeout, a session's end) leaves no run training."""
    os.environ["TQDM_DISABLE"] = "1"
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _tiny_candidate_levels() -> dict:
    return {name: c.candidate_levels for name, c in CONDITIONS.items() if c.candidate_levels}


TINY_TASK = Task(_warm_start_record, check_warm_start, warm_start_job, run_job, _tiny_candidate_levels())


def with_steps(settings, steps: int | None):
    return settings if steps is None else replace(settings, grpo_steps=steps)
