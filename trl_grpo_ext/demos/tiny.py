"""`trl-grpo-ext demo` (the tiny demo): GRPO lifts a ~1 M-parameter model's held-out accuracy, offline, in about two minutes on a CPU.

    trl-grpo-ext demo [--output-dir DIR] [--compare] [--closed-loop] [--quick] [--seed N]

1. Builds the tiny kit's character-level Qwen2 (`tiny.build_tiny_model(size="small")`, ~0.8 M parameters) and the
   `trl_grpo_ext.kit.tasks` digit-reversal task ("rev 58213=" -> "31285", 3 to 7 digits): the train, validation and
   held-out test problems are disjoint (split by a hash of the problem).
2. Warm start: supervised fine-tuning with `trl.SFTTrainer` on the train problems, stopped as soon as greedy accuracy
   on the *validation* problems reaches 25 % (checked every 10 steps): the model knows the format and reverses short
   strings, and leaves GRPO room on the long ones.
3. GRPO with `GRPOExtTrainer`: a linear temperature ladder 0.7 -> 1.0 across the 8 completions of each prompt, rank
   advantages, and a `WeightedReward` of two named objectives, `accuracy` (0.9: the completion's number is the
   answer) and `format` (0.1: the completion is only digits).
4. Greedy accuracy on 500 held-out test problems before and after GRPO (never trained or tuned on), a summary table,
   `DIR/summary.json`, and the plots of `trl-grpo-ext report` for the GRPO run.

`--compare` also trains plain `trl.GRPOTrainer` from the same warm start, seed, data and hyper-parameters, with the
same weighted sum as one reward function and TRL's defaults for sampling (temperature 1.0) and advantages (z-score),
and prints both results side by side. `--closed-loop` also trains `GRPOExtTrainer` from the same warm start with the
closed-loop ladder (`temperature_control="zero_std"`, the config's default target, rate and bounds): the ladder
starts at 0.7 -> 1.0 and moves with the fraction of groups whose rewards are all equal (docs/ladder.md). `--quick` is
the CI size (a short GRPO phase, under a minute in all).

Why reversal and not the addition task of `tasks.arithmetic_dataset`: on addition the same model's GRPO gain depended
on the seed (+5 to +34 points on the validation split over five seeds, docs/demo.md); its errors are missing facts
(the units digit of a sum), which a binary reward teaches slowly. Reversal errors are near misses on long strings,
which GRPO fixes.

The last line printed states the held-out result, e.g.
`held-out accuracy: 32.0% -> 79.8% (+47.8 points) after 250 GRPO steps`.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..report import write_report
from .common import (
    common_training_args,
    demo_environment,
    final_objectives,
    greedy_accuracy,
    grpo_arm,
    print_table,
    quiet_trainer,
)

DEFAULT_OUTPUT_DIR = "runs/demo"
FORMAT_PATTERN = r"^\d+\Z"  # digits only: what `tasks.is_correct` accepts, so the format objective teaches it
OBJECTIVE_WEIGHTS = {"accuracy": 0.9, "format": 0.1}


@dataclass(frozen=True)
class DemoSettings:
    """Sizes and hyper-parameters of one demo run (tuned on the validation split, never on the test split)."""

    num_train: int = 4000  # training problems (SFT and GRPO)
    num_validation: int = 200  # to stop the warm start (and to tune on)
    num_heldout: int = 500  # reported; the same problems for every seed
    min_length: int = 3
    max_length: int = 7
    sft_max_steps: int = 600
    sft_target_accuracy: float = 0.25  # stop the warm start at this greedy accuracy on the validation split
    sft_check_every: int = 10
    sft_batch_size: int = 64
    sft_learning_rate: float = 3e-3
    grpo_steps: int = 250
    grpo_batch_size: int = 128  # completions per step: 16 prompts x 8
    num_generations: int = 8
    grpo_learning_rate: float = 2e-4
    temperature_range: tuple[float, float] = (0.7, 1.0)
    logging_steps: int = 10

    @property
    def max_completion_length(self) -> int:
        return self.max_length + 1  # the digits and the end-of-sequence token


FULL = DemoSettings()
QUICK = DemoSettings(grpo_steps=50, logging_steps=5)


# ---------------------------------------------------------------------------------------------------- reward
def demo_reward():
    """The demo's `WeightedReward`: 0.9 x `accuracy` (last number equals `answer`) + 0.1 x `format` (digits only)."""
    from ..rewards import WeightedReward, accuracy, format_objective

    return WeightedReward(
        {"accuracy": accuracy, "format": format_objective(FORMAT_PATTERN, name="format")}, weights=OBJECTIVE_WEIGHTS
    )


# ---------------------------------------------------------------------------------------------------- warm start
def stop_at_accuracy(tokenizer, dataset, target: float, every: int, max_new_tokens: int):
    """A `TrainerCallback` that stops training once greedy accuracy on a (validation) dataset reaches `target`,
    checked every `every` steps and at the last step; `.accuracy` is the last measured, `.history` every
    `(step, accuracy)`."""
    from transformers import TrainerCallback

    class StopAtAccuracy(TrainerCallback):
        def __init__(self):
            self.accuracy = None
            self.history: list[tuple[int, float]] = []

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % every == 0 or state.global_step >= state.max_steps:
                self.accuracy = greedy_accuracy(model, tokenizer, dataset, max_new_tokens)
                self.history.append((state.global_step, self.accuracy))
                if self.accuracy >= target:
                    control.should_training_stop = True

    return StopAtAccuracy()


def warm_start(model, tokenizer, train, validation, settings: DemoSettings, output_dir: Path, seed: int) -> dict:
    """Supervised fine-tuning with `trl.SFTTrainer` until the validation accuracy reaches the target."""
    from trl import SFTConfig, SFTTrainer

    stopper = stop_at_accuracy(
        tokenizer,
        validation,
        settings.sft_target_accuracy,
        settings.sft_check_every,
        settings.max_completion_length,
    )
    args = SFTConfig(
        **common_training_args(output_dir, seed),
        max_steps=settings.sft_max_steps,
        per_device_train_batch_size=settings.sft_batch_size,
        learning_rate=settings.sft_learning_rate,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=30,
        logging_steps=settings.sft_check_every,
        max_length=32,
    )
    sft_data = train.map(lambda row: {"completion": row["answer"]}, remove_columns=["answer"])
    trainer = SFTTrainer(model=model, args=args, train_dataset=sft_data, processing_class=tokenizer)
    trainer.add_callback(stopper)
    quiet_trainer(trainer, f"SFT warm start (until {settings.sft_target_accuracy:.0%} validation accuracy)")
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.save_state()
    trainer.save_model()  # the warm start: GRPO's starting point, to inspect or to start other runs from
    return {
        "steps": trainer.state.global_step,
        "seconds": seconds,
        "validation_accuracy": stopper.accuracy,
        "validation_curve": stopper.history,
    }


def grpo_common_args(settings: DemoSettings, output_dir: Path, seed: int, **overrides) -> dict:
    """The demo's GRPO settings as config keyword arguments (`overrides` win: e.g. `max_steps`, `logging_steps`)."""
    return {
        **common_training_args(output_dir, seed),
        "max_steps": settings.grpo_steps,
        "per_device_train_batch_size": settings.grpo_batch_size,
        "num_generations": settings.num_generations,
        "learning_rate": settings.grpo_learning_rate,
        "lr_scheduler_type": "constant",
        "max_completion_length": settings.max_completion_length,
        "logging_steps": settings.logging_steps,
        **overrides,
    }


def train_grpo(
    model,
    tokenizer,
    train,
    settings: DemoSettings,
    output_dir: Path,
    seed: int,
    plain: bool = False,
    closed_loop: bool = False,
    control_target: float | None = None,
):
    """GRPO on `train`: `GRPOExtTrainer` (ladder + rank + objectives), or plain `trl.GRPOTrainer` if `plain`;
    `closed_loop` moves the ladder with `temperature_control="zero_std"` (toward `control_target`, else the
    config's default target)."""
    common = grpo_common_args(settings, output_dir, seed)
    extra = {"temperature_control": "zero_std" if closed_loop else "none"}
    if control_target is not None:
        extra["temperature_control_target"] = control_target
    args, trainer_cls, description = grpo_arm(common, plain, settings.temperature_range, **extra)
    if closed_loop:
        description += " (closed-loop ladder)"
    trainer = trainer_cls(
        model=model, reward_funcs=demo_reward(), args=args, train_dataset=train, processing_class=tokenizer
    )
    quiet_trainer(trainer, description)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.save_state()  # trainer_state.json, for `trl-grpo-ext report`
    trainer.save_model()
    return trainer, seconds


def run_demo(
    output_dir: str | Path,
    compare: bool = False,
    quick: bool = False,
    seed: int = 0,
    threads: int = 1,
    closed_loop: bool = False,
    control_target: float | None = None,
):
    """Run the demo; returns the summary dict it also writes to `output_dir/summary.json`."""
    from transformers import set_seed

    from ..kit.tasks import reversal_dataset
    from ..kit.tiny import build_tiny_model, build_tiny_tokenizer

    settings = QUICK if quick else FULL
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    total_start = time.perf_counter()
    cpu_start = time.process_time()

    with demo_environment(threads):
        tokenizer = build_tiny_tokenizer()
        model = build_tiny_model(tokenizer, size="small", seed=seed)
        lengths = {"min_length": settings.min_length, "max_length": settings.max_length}
        train = reversal_dataset(settings.num_train, seed=seed, split="train", **lengths)
        # The same validation and held-out problems for every seed, so that runs compare.
        validation = reversal_dataset(settings.num_validation, seed=0, split="validation", **lengths)
        heldout = reversal_dataset(settings.num_heldout, seed=0, split="test", **lengths)
        evaluate = functools.partial(greedy_accuracy, max_new_tokens=settings.max_completion_length)
        print(
            f"task: reverse {settings.min_length} to {settings.max_length} digits, e.g. "
            f"{train[0]['prompt']}{train[0]['answer']}; {len(train)} train, {len(validation)} validation, "
            f"{len(heldout)} held-out test problems (disjoint)\n"
            f"model: tiny Qwen2 'small', {model.num_parameters() / 1e6:.2f} M parameters, seed {seed}"
            + (" (quick)" if quick else "")
        )

        set_seed(seed)
        sft = warm_start(model, tokenizer, train, validation, settings, output_dir / "sft", seed)
        # A copy of the weights only: a deep copy of a model that a Trainer touched carries its hooks along.
        warm_weights = (
            {k: v.detach().clone() for k, v in model.state_dict().items()} if compare or closed_loop else None
        )
        before = evaluate(model, tokenizer, heldout)
        print(
            f"warm start: {sft['steps']} SFT steps, validation accuracy {sft['validation_accuracy']:.1%}, "
            f"held-out accuracy {before:.1%}"
        )

        grpo_dir = output_dir / "grpo"
        set_seed(seed)
        trainer, train_seconds = train_grpo(model, tokenizer, train, settings, grpo_dir, seed)

        def record(run_model, run_trainer, seconds, run_dir) -> dict:
            """What the summary keeps of one trained run."""
            return {
                "heldout_accuracy_after": evaluate(run_model, tokenizer, heldout),
                "validation_accuracy_after": evaluate(run_model, tokenizer, validation),
                "train_seconds": seconds,
                "steps": run_trainer.state.global_step,
                "final_rewards": final_objectives(run_trainer),
                "output_dir": str(run_dir),
            }

        runs = {"GRPOExtTrainer (ladder 0.7-1.0, rank)": record(model, trainer, train_seconds, grpo_dir)}
        after = runs["GRPOExtTrainer (ladder 0.7-1.0, rank)"]["heldout_accuracy_after"]
        if compare:
            plain_dir = output_dir / "grpo-trl"
            warm_model = build_tiny_model(tokenizer, size="small", seed=seed)
            warm_model.load_state_dict(warm_weights)
            set_seed(seed)
            plain_trainer, plain_seconds = train_grpo(
                warm_model, tokenizer, train, settings, plain_dir, seed, plain=True
            )
            runs["trl.GRPOTrainer (T=1.0, z-score)"] = record(warm_model, plain_trainer, plain_seconds, plain_dir)

        if closed_loop:
            loop_dir = output_dir / "grpo-closed-loop"
            loop_model = build_tiny_model(tokenizer, size="small", seed=seed)
            loop_model.load_state_dict(warm_weights)
            set_seed(seed)
            loop_trainer, loop_seconds = train_grpo(
                loop_model, tokenizer, train, settings, loop_dir, seed, closed_loop=True, control_target=control_target
            )
            runs["GRPOExtTrainer (closed-loop ladder, rank)"] = record(
                loop_model, loop_trainer, loop_seconds, loop_dir
            )

    report_files = [str(path) for path in write_report(grpo_dir)]
    if compare:
        report_files += [str(path) for path in write_report(output_dir / "grpo-trl")]
    if closed_loop:
        report_files += [str(path) for path in write_report(output_dir / "grpo-closed-loop")]

    summary = {
        "heldout_accuracy_before": before,
        "heldout_accuracy_after": after,
        "heldout_gain_points": round(100 * (after - before), 2),
        "train_seconds": train_seconds,
        "steps": trainer.state.global_step,
        "sft_steps": sft["steps"],
        "sft_seconds": sft["seconds"],
        "sft_validation_accuracy": sft["validation_accuracy"],
        "sft_validation_curve": sft["validation_curve"],
        "heldout_size": len(heldout),
        "total_seconds": time.perf_counter() - total_start,
        "cpu_seconds": time.process_time() - cpu_start,
        "seed": seed,
        "quick": quick,
        "threads": threads,
        "settings": {**asdict(settings), "max_completion_length": settings.max_completion_length},
        "objective_weights": OBJECTIVE_WEIGHTS,
        "runs": runs,
        "report_files": report_files,
    }
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

    print_table(summary)
    print("plots:")
    for path in report_files:
        if path.endswith(".png"):
            print(f"  {path}")
    print(f"summary: {output_dir / 'summary.json'}")
    print(
        f"held-out accuracy: {before:.1%} -> {after:.1%} ({100 * (after - before):+.1f} points) "
        f"after {summary['steps']} GRPO steps"
    )
    return summary
