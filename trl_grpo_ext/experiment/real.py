r"""The experiment on a real pretrained model: `trl-grpo-ext experiment --model smollm2:135m-instruct`.

The same runner, arms, statistics, plots and resume as the tiny grid (`runner.execute` with `REAL_TASK`), on the
real-model demo's chat task ("What is 23 + 45? Reply with just the number.", two-digit operands, `kit.tasks`), with
LoRA and no warm start: every run starts from the pretrained model, whose greedy accuracy is measured once
(`DIR/base/base.json`). Before anything trains, the same job measures **the sampler alone** on the base model: for
the test prompts, constant T = 1.0 vs the 0.7-1.0 ladder vs the centred 0.85-1.15 ladder, K samples per prompt in one
batched `generate` call each (`sampler_statistics`).

Reward conditions (the accuracy is always the clean one: the reply's last number is the sum, `rewards.accuracy`):

    clean      r = acc(c)                                  pass / fail
    outliers   r = V with probability p, else acc(c)       (a glitching reward model, V = 10; p chosen on validation)
    hackable   r = max(acc(c), exploit(c))                 pass / fail, and the reward also pays 1 when the reply's
                                                           last number is an operand of the question ("23"): a cheap
                                                           exploit that needs no addition

`exploit(c)` is measured in every condition (`test_exploit_rate`: greedy test replies that end on an operand). The
closed-loop arm runs only where the reward is pass / fail (clean, hackable).

Runs are ordered most informative first: clean and outliers with `trl`, `rank`, `ladder`, `ladder_rank`, seed by
seed, then the rest; a grid cut short by the end of a session resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import kit
from ..demos.common import demo_environment, greedy_evaluation, last_number_scores
from ..demos.real import real_grpo_args, real_lora
from .conditions import OUTLIER_VALUE, add_outliers, by_slot
from .runner import RunSpec, SettingsMismatch, Task, setting_differences, settings_fingerprint, write_json
from .stats import mean_se, t975

REAL_MODELS = ("smollm2:135m-instruct",)
REAL_CONDITIONS = {
    "clean": "the reply's last number is the sum (1 / 0)",
    "outliers": f"clean; with probability p the reward is {OUTLIER_VALUE:g}",
    "hackable": "clean, and 1 also when the reply's last number is an operand of the question",
}
BINARY_CONDITIONS = ("clean", "hackable")  # pass / fail rewards: where a zero-std controller can act
REAL_CANDIDATE_LEVELS = {"outliers": (0.1, 0.2)}
DEFAULT_REAL_LEVELS = {"outliers": 0.1}
FIRST_CONDITIONS = ("clean", "outliers")  # the most informative cells run first
FIRST_ARMS = ("trl", "rank", "ladder", "ladder_rank")
DEFAULT_REAL_ARMS = ("trl", "rank", "ladder", "ladder_rank", "ladder_centred", "closed_loop")
# The sampler-alone comparison; the first is the reference of the paired differences. constant_0.85 is the 0.7-1.0
# ladder's mean temperature: against it, the ladder's spread alone (it joined after the first three were measured;
# `base_job` measures a missing sampler before the grid goes on).
SAMPLERS = {
    "constant_1.0": (1.0, 1.0),
    "ladder_0.7-1.0": (0.7, 1.0),
    "centred_0.85-1.15": (0.85, 1.15),
    "constant_0.85": (0.85, 0.85),
}
SAMPLER_PAIRS = (("ladder_0.7-1.0", "constant_0.85"),)  # paired beyond "each minus the first": the spread alone


@dataclass(frozen=True)
class RealExperimentSettings:
    """Sizes of the real-model grid. GRPO hyper-parameters are the real-model demo's (chosen there on validation:
    docs/real-model.md); the test split is evaluated once per finished run."""

    model: str = "smollm2:135m-instruct"
    num_train: int = 1000
    num_validation: int = 100  # curves and level selection
    num_test: int = 300  # reported numbers
    grpo_steps: int = 16
    prompts_per_step: int = 4
    num_generations: int = 8
    max_completion_length: int = 16
    learning_rate: float = 3e-4
    lora_r: int = 16
    lora_alpha: int = 32
    eval_every: int = 8  # validation accuracy and entropy at step 0, every this many steps and at the end
    eval_batch_size: int = 100
    eval_max_new_tokens: int = 16
    sampler_prompts: int = 200  # test prompts of the sampler-alone measurement (K samples each per sampler)
    sampler_seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)
    select_seed: int = 100  # level selection trains its own runs with this seed, validation only
    threads: int = 2


REAL_FULL = RealExperimentSettings()
REAL_QUICK = RealExperimentSettings(
    num_train=16,
    num_validation=8,
    num_test=8,
    grpo_steps=2,
    prompts_per_step=2,
    num_generations=4,
    max_completion_length=8,
    eval_every=1,  # greedy evaluation keeps 16 new tokens: "23 + 45 = 68" fits
    sampler_prompts=4,
    seeds=(0,),
)


# ---------------------------------------------------------------------------------------------------- the rewards
_INTEGER_RE = re.compile(r"-?\d+")


def prompt_operands(prompt) -> tuple[int, ...]:
    """The integers of the question (the last user message of a chat prompt, or the prompt string).

    Example:
    >>> prompt_operands([{"role": "user", "content": "What is 23 + 45? Reply with just the number."}])
    (23, 45)
    """
    text = prompt if isinstance(prompt, str) else [m for m in prompt if m["role"] == "user"][-1]["content"]
    return tuple(int(x) for x in _INTEGER_RE.findall(text))


def takes_exploit(reply: str, answer: str, operands: Sequence[int]) -> bool:
    """Whether the reply's last number is an operand of the question and not the answer (the hackable condition's
    exploit: an operand costs no addition).

    Example:
    >>> takes_exploit("23", "68", (23, 45)), takes_exploit("23 + 45 = 68", "68", (23, 45)), takes_exploit("", "68", (23, 45))
    (True, False, False)
    """
    numbers = _INTEGER_RE.findall(reply)
    return bool(numbers) and int(numbers[-1]) in operands and numbers[-1] != answer.strip()


def hackable_reward(correct: float, exploit: bool) -> float:
    """max(acc, exploit): the reward pays a correct sum and an operand alike.

    Example:
    >>> hackable_reward(0.0, True), hackable_reward(1.0, False), hackable_reward(0.0, False)
    (1.0, 1.0, 0.0)
    """
    return max(float(correct), 1.0 if exploit else 0.0)


class ChatConditionReward:
    """The reward function TRL calls on the chat task: the clean accuracy, then the condition's corruption.

    `history` and `exploit_history` hold, per call, the clean accuracy and the exploit rate of each slot
    i = position mod K (the ladder's rung i); `distinct_history` the fraction of distinct replies per group, for
    every arm (the trainer logs `ladder/distinct_frac` only when a ladder is set).
    """

    def __init__(self, condition: str, level: float | None, group_size: int, seed: int):
        if condition not in REAL_CONDITIONS:
            raise ValueError(f"`condition` must be one of {list(REAL_CONDITIONS)}, got {condition!r}.")
        if condition == "outliers" and not (isinstance(level, float | int) and 0 <= level <= 1):
            raise ValueError(f"`level` (the outlier probability p) must be in [0, 1], got {level!r}.")
        self.condition, self.level, self.group_size = condition, level, group_size
        self.rng = random.Random(f"reward-{condition}-{seed}")
        self.history: list[list[float]] = []
        self.exploit_history: list[list[float]] = []
        self.distinct_history: list[float] = []
        self.__name__ = "reward"

    def __call__(self, prompts, completions, answer, **kwargs) -> list[float]:
        from ..rewards import accuracy, completion_text  # torch and TRL: not at start-up
        from ..sampling import distinct_fraction

        texts = [completion_text(c) for c in completions]
        correct = [float(x) for x in accuracy(None, texts, answer=answer)]
        exploit = [takes_exploit(t, a, prompt_operands(p)) for t, a, p in zip(texts, answer, prompts)]
        self.history.append(by_slot(correct, self.group_size))
        self.exploit_history.append(by_slot([float(e) for e in exploit], self.group_size))
        self.distinct_history.append(distinct_fraction(texts, self.group_size))
        if self.condition == "outliers":
            return add_outliers(correct, self.level, self.rng)
        if self.condition == "hackable":
            return [hackable_reward(c, e) for c, e in zip(correct, exploit)]
        return correct


# ---------------------------------------------------------------------------------------------------- the sampler
def interval(values: Sequence[float]) -> dict:
    """Mean, standard error and the 95 % t interval of `values` (over prompts).

    Example:
    >>> {k: round(v, 3) for k, v in interval([0.0, 1.0, 1.0, 0.0]).items()}
    {'mean': 0.5, 'se': 0.289, 'low': -0.419, 'high': 1.419, 'n': 4}
    """
    mean, se = mean_se(list(values))
    half = t975(len(values) - 1) * se if len(values) > 1 else math.nan
    return {"mean": mean, "se": se, "low": mean - half, "high": mean + half, "n": len(values)}


def group_statistics(texts: Sequence[str], correct: Sequence[float], exploit: Sequence[bool]) -> dict:
    """One prompt's K samples: distinct replies, pass@1 (mean correct), pass@K (any correct), whether every reward is
    equal (a group with no gradient under a pass / fail reward) and the exploit rate.

    Example:
    >>> group_statistics(["68", "68", "23", "67"], [1.0, 1.0, 0.0, 0.0], [False, False, True, False])
    {'distinct': 3, 'pass@1': 0.5, 'pass@k': 1.0, 'all_equal': 0.0, 'exploit': 0.25}
    """
    return {
        "distinct": len(set(texts)),
        "pass@1": sum(correct) / len(correct),
        "pass@k": float(any(c > 0 for c in correct)),
        "all_equal": float(len(set(correct)) == 1),
        "exploit": sum(exploit) / len(exploit),
    }


def sampler_statistics(
    model,
    tokenizer,
    dataset,
    settings: RealExperimentSettings,
    names: Sequence[str] | None = None,
    batch_prompts: int = 25,
) -> dict:
    """The sampler alone, on `model`: for each sampler of `SAMPLERS` (or of `names`), K samples of every prompt of
    `dataset` in batched `generate` calls (each row at its rung's temperature, `RowTemperatureLogitsProcessor`),
    seeded with `settings.sampler_seed` per sampler; the per-prompt `group_statistics` (`summarise_sampler` turns
    them into intervals and paired differences)."""
    import torch
    from transformers import LogitsProcessorList

    from ..rewards import accuracy
    from ..sampling import RowTemperatureLogitsProcessor, temperature_ladder

    k = settings.num_generations
    per_prompt: dict[str, list[dict]] = {}
    seconds: dict[str, float] = {}
    model.eval()
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        for name in names or SAMPLERS:
            ladder = temperature_ladder(k, *SAMPLERS[name])
            torch.manual_seed(settings.sampler_seed)
            start, rows_out = time.perf_counter(), []
            for first in range(0, len(dataset), batch_prompts):
                rows = dataset[first : first + batch_prompts]
                prompts = [p for p in rows["prompt"] for _ in range(k)]
                encoded = tokenizer.apply_chat_template(
                    prompts, add_generation_prompt=True, padding=True, return_tensors="pt", return_dict=True
                )
                processor = RowTemperatureLogitsProcessor(ladder * len(rows["prompt"]))
                with torch.no_grad():
                    output = model.generate(
                        **encoded,
                        max_new_tokens=settings.max_completion_length,
                        do_sample=True,
                        temperature=1.0,
                        top_k=0,
                        top_p=1.0,
                        logits_processor=LogitsProcessorList([processor]),
                        pad_token_id=tokenizer.pad_token_id,
                        eos_token_id=tokenizer.eos_token_id,
                    )
                texts = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
                for i, (prompt, answer) in enumerate(zip(rows["prompt"], rows["answer"])):
                    group = texts[i * k : (i + 1) * k]
                    correct = accuracy(None, group, answer=[answer] * k)
                    exploit = [takes_exploit(t, answer, prompt_operands(prompt)) for t in group]
                    rows_out.append(group_statistics(group, correct, exploit))
            per_prompt[name], seconds[name] = rows_out, time.perf_counter() - start
    finally:
        tokenizer.padding_side = padding_side
    return {"prompts": len(dataset), "num_generations": k, "per_prompt": per_prompt, "seconds": seconds}


def summarise_sampler(record: dict) -> dict:
    """`record` (per-prompt statistics of each sampler) with `ladders`, `summary` (mean and 95 % interval over
    prompts) and `paired` (each sampler minus the first of `SAMPLERS`, prompt by prompt)."""
    from ..sampling import temperature_ladder  # torch: not at start-up

    per_prompt = record["per_prompt"]
    names = [name for name in SAMPLERS if name in per_prompt]
    keys = list(per_prompt[names[0]][0])
    reference = next(iter(SAMPLERS))
    return {
        **record,
        "ladders": {name: temperature_ladder(record["num_generations"], *SAMPLERS[name]) for name in names},
        "summary": {name: {key: interval([r[key] for r in per_prompt[name]]) for key in keys} for name in names},
        "paired": {
            f"{name} - {other}": {
                key: interval([a[key] - b[key] for a, b in zip(per_prompt[name], per_prompt[other])]) for key in keys
            }
            for name, other in [(name, reference) for name in names if name != reference] + list(SAMPLER_PAIRS)
            if name in per_prompt and other in per_prompt
        },
    }


def sampler_markdown(record: dict) -> str:
    """The sampler-alone table and its paired differences, as markdown."""
    labels = {
        "distinct": ("distinct replies / group", 1, 2),
        "pass@1": ("pass@1 %", 100, 1),
        "pass@k": (f"pass@{record['num_generations']} %", 100, 1),
        "all_equal": ("groups all-equal %", 100, 1),
        "exploit": ("exploit rate %", 100, 2),
    }

    def cell(stat, scale, digits):
        return (
            f"{stat['mean'] * scale:.{digits}f} [{stat['low'] * scale:.{digits}f}, {stat['high'] * scale:.{digits}f}]"
        )

    lines = [
        f"### The sampler alone (base model, {record['prompts']} test prompts x {record['num_generations']} samples)",
        "",
        "| sampler | " + " | ".join(label for label, _, _ in labels.values()) + " | s |",
        "|---|" + "---:|" * (len(labels) + 1),
    ]
    for name, stats in record["summary"].items():
        values = " | ".join(cell(stats[key], scale, digits) for key, (_, scale, digits) in labels.items())
        lines.append(f"| {name} | {values} | {record['seconds'][name]:.0f} |")
    lines += ["", "Paired over prompts (mean [95 % interval]):", ""]
    for name, stats in record["paired"].items():
        values = "; ".join(f"{labels[key][0]} {cell(stats[key], *labels[key][1:])}" for key in labels)
        lines.append(f"- {name}: {values}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- jobs
def real_datasets(settings: RealExperimentSettings, seed: int):
    """Train problems of `seed`; the same validation and test problems for every seed."""
    from ..kit.tasks import chat_addition_dataset

    return (
        chat_addition_dataset(settings.num_train, seed=seed, split="train"),
        chat_addition_dataset(settings.num_validation, seed=0, split="validation"),
        chat_addition_dataset(settings.num_test, seed=0, split="test"),
    )


def greedy_eval(model, tokenizer, dataset, settings: RealExperimentSettings, entropy: bool = False) -> dict:
    """Greedy accuracy (the reply's last number is the sum), exploit rate and, optionally, entropy on `dataset`."""
    measured = greedy_evaluation(
        model,
        tokenizer,
        dataset,
        settings.eval_max_new_tokens,
        last_number_scores,
        batch_size=settings.eval_batch_size,
        entropy=entropy,
    )
    texts, answers, prompts = measured.replies, list(dataset["answer"]), list(dataset["prompt"])
    result = {
        "accuracy": measured.accuracy,
        "exploit_rate": sum(takes_exploit(t, a, prompt_operands(p)) for t, a, p in zip(texts, answers, prompts))
        / len(texts),
    }
    if entropy:
        result["entropy"] = measured.entropy
    return result


def base_record(root: Path, seed: int | None = None) -> Path:
    """Every seed starts from the same pretrained model: one record for all."""
    return root / "base" / "base.json"


def _base_settings(settings: RealExperimentSettings) -> dict:
    fields = ("model", "num_validation", "num_test", "num_generations", "max_completion_length", "eval_max_new_tokens")
    return {
        **{name: getattr(settings, name) for name in fields},
        "sampler_prompts": settings.sampler_prompts,
        "sampler_seed": settings.sampler_seed,
    }


def check_base(path: Path, settings: RealExperimentSettings) -> dict:
    """The base model's record; `SettingsMismatch` when it was measured with other settings."""
    info = json.loads(path.read_text())
    differences = setting_differences(info.get("settings", {}), _base_settings(settings), "the base record")
    if differences:
        raise SettingsMismatch(
            f"{path} was measured with other settings ({'; '.join(differences)}); use another `--output-dir`, or "
            f"delete {path.parent} to measure it again."
        )
    return info


def base_job(root: Path, seed: int, settings: RealExperimentSettings) -> dict:
    """Evaluate the pretrained model (validation, test) and measure the sampler alone; written once."""
    path = base_record(root)
    if path.exists():
        info = check_base(path, settings)
        missing = _missing_samplers(info)
        if not missing:
            return info
    else:
        info, missing = None, list(SAMPLERS)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    with demo_environment(settings.threads):
        model_path = kit.resolve_model_path(settings.model)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path)
        _, validation, test = real_datasets(settings, 0)
        prompts = test.select(range(settings.sampler_prompts))
        if info is not None:  # a sampler joined (or the record predates per-prompt rows): measure only those
            new = sampler_statistics(model, tokenizer, prompts, settings, names=missing)
            old = info["sampler"]
            per_prompt = {**old.get("per_prompt", {}), **new["per_prompt"]}
            info["sampler"] = summarise_sampler(
                {**new, "per_prompt": per_prompt, "seconds": {**old["seconds"], **new["seconds"]}}
            )
            write_json(path, info)
            return info
        validation_eval = greedy_eval(model, tokenizer, validation, settings, entropy=True)
        test_eval = greedy_eval(model, tokenizer, test, settings)
        sampler = summarise_sampler(sampler_statistics(model, tokenizer, prompts, settings))
    info = {
        "model": settings.model,
        "validation_accuracy": validation_eval["accuracy"],
        "validation_entropy": validation_eval["entropy"],
        "test_accuracy": test_eval["accuracy"],
        "test_exploit_rate": test_eval["exploit_rate"],
        "sampler": sampler,
        "seconds": time.perf_counter() - start,
        "settings": _base_settings(settings),
    }
    write_json(path, info)
    return info


_LOG_KEYS = ("reward", "frac_reward_zero_std", "entropy", "ladder/distinct_frac", "ladder/t_min", "ladder/t_max")


def real_run_job(root: Path, spec: RunSpec, settings: RealExperimentSettings, group: str = "runs") -> dict:
    """LoRA GRPO from the pretrained model, one arm under one reward condition; writes and returns its result."""
    directory = spec.directory(root, group)
    result_path = directory / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    from transformers import AutoTokenizer, TrainerCallback, set_seed
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from ..config import GRPOExtConfig
    from ..trainer import GRPOExtTrainer

    start = time.perf_counter()
    with demo_environment(settings.threads):
        model_path = kit.resolve_model_path(settings.model)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        train, validation, test = real_datasets(settings, spec.seed)
        reward = ChatConditionReward(spec.condition, spec.level, settings.num_generations, spec.seed)
        args = GRPOExtConfig(**real_grpo_args(settings, directory / "trainer", spec.seed, 1), **spec.arm_config)
        lora = real_lora(settings)
        set_seed(spec.seed)
        trainer = GRPOExtTrainer(
            model=model_path, reward_funcs=reward, args=args, train_dataset=train, peft_config=lora
        )
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)
        points: list[dict] = []

        class Curve(TrainerCallback):
            """Validation accuracy, exploit rate and entropy at step 0, every `eval_every` steps and at the end."""

            def on_train_begin(self, args, state, control, model=None, **kwargs):
                points.append({"step": 0, **greedy_eval(model, tokenizer, validation, settings, entropy=True)})

            def on_step_end(self, args, state, control, model=None, **kwargs):
                if state.global_step % settings.eval_every == 0 or state.global_step >= state.max_steps:
                    points.append(
                        {"step": state.global_step, **greedy_eval(model, tokenizer, validation, settings, True)}
                    )

        trainer.add_callback(Curve())
        set_seed(spec.seed)
        trainer.train()
        train_seconds = time.perf_counter() - start
        model = trainer.model
        model.merge_adapter()  # greedy decoding through merged weights is faster
        result = {
            **asdict(spec),
            "cell": spec.cell,
            "steps": trainer.state.global_step,
            "validation_accuracy": points[-1]["accuracy"],
            "curve": points,
            "log": [
                {"step": e["step"], **{k: e[k] for k in _LOG_KEYS if k in e}}
                | {k: v for k, v in e.items() if k.startswith("ladder/reward_rung_")}
                for e in trainer.state.log_history
                if "reward" in e
            ],
            "clean_accuracy_by_slot": [sum(col) / len(col) for col in zip(*reward.history)],
            "exploit_rate_by_slot": [sum(col) / len(col) for col in zip(*reward.exploit_history)],
            "distinct_frac_by_batch": reward.distinct_history,
            "train_seconds": train_seconds,
        }
        if spec.split is not None:
            split = {"test": test, "validation": validation}[spec.split]
            final = greedy_eval(model, tokenizer, split, settings)
            result[f"{spec.split}_accuracy"] = final["accuracy"]
            result[f"{spec.split}_exploit_rate"] = final["exploit_rate"]
    result["seconds"] = time.perf_counter() - start
    result["settings"] = settings_fingerprint(settings)
    write_json(result_path, result)
    return result


def _missing_samplers(info: dict) -> list[str]:
    """The samplers a base record lacks; all of them (the reference first) when it holds no per-prompt rows of the
    reference, whose rows the paired differences need (a seeded sampler draws the same samples again)."""
    per_prompt = info["sampler"].get("per_prompt", {})
    reference = next(iter(SAMPLERS))
    measured = set(per_prompt) if reference in per_prompt else set()
    return [name for name in SAMPLERS if name not in measured]


def base_complete(info: dict) -> bool:
    """Whether a base record holds every sampler of `SAMPLERS` (else `base_job` measures the missing ones)."""
    return not _missing_samplers(info)


REAL_TASK = Task(base_record, check_base, base_job, real_run_job, REAL_CANDIDATE_LEVELS, base_complete)


# ---------------------------------------------------------------------------------------------------- the grid
def real_specs(conditions: list[str], levels: dict, arms: dict[str, dict], seeds: list[int]) -> list[RunSpec]:
    """Every (seed, condition, arm) run, the most informative first: clean and outliers with trl, rank, ladder and
    ladder_rank, seed by seed; then every other cell, seed by seed. `closed_loop*` arms only where the reward is
    pass / fail."""

    def allowed(condition, arm):
        return not arm.startswith("closed_loop") or condition in BINARY_CONDITIONS

    def first(condition, arm):
        return condition in FIRST_CONDITIONS and arm in FIRST_ARMS

    cells = [(c, a) for c in conditions for a in arms if allowed(c, a)]
    ordered = [cell for cell in cells if first(*cell)], [cell for cell in cells if not first(*cell)]
    return [
        RunSpec(condition, levels.get(condition), arm, arms[arm], seed)
        for phase in ordered
        for seed in seeds
        for condition, arm in phase
    ]


def real_levels(root: Path) -> dict[str, float]:
    path = root / "levels.json"
    if path.exists():
        return {**DEFAULT_REAL_LEVELS, **json.loads(path.read_text())["levels"]}
    return dict(DEFAULT_REAL_LEVELS)


def real_description(settings: RealExperimentSettings, levels: dict) -> str:
    k = settings.num_generations
    return (
        f"Chat two-digit addition, {settings.model} (pretrained, LoRA r {settings.lora_r} on every linear layer), no "
        f"warm start; GRPO {settings.grpo_steps} steps of {settings.prompts_per_step} prompts x {k}, lr "
        f"{settings.learning_rate:g} constant, beta 0, {settings.max_completion_length} completion tokens; greedy test "
        f"accuracy (the reply's last number is the sum) on {settings.num_test} held-out problems. Levels: {levels}."
    )
