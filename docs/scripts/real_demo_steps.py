"""How many GRPO steps the real demo takes, chosen on the validation split (never the test split).

With `share_prompt` and `skip_zero_advantage` a step of the real demo costs a fraction of TRL's, so the demo can take
more steps in the same time. This trains the demo's arm once (seed 100, a seed no reported run uses) for `--steps`
steps and measures greedy accuracy on 300 validation problems every `--every` steps; it writes
docs/scripts/real_demo_steps.json.

    python docs/scripts/real_demo_steps.py [--steps 48] [--every 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from transformers import AutoTokenizer, TrainerCallback, set_seed

import trl_grpo_ext.demos.real as real
from trl_grpo_ext.demos.common import demo_environment, greedy_evaluation, last_number_scores
from trl_grpo_ext.demos.real import FULL, MODEL, train_real_grpo
from trl_grpo_ext.kit import resolve_model_path
from trl_grpo_ext.kit.tasks import chat_addition_dataset

SEED = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--every", type=int, default=8)
    parser.add_argument("--out", default="docs/scripts/real_demo_steps.json")
    cli = parser.parse_args()
    settings = dataclasses.replace(FULL, grpo_steps=cli.steps)
    curve = []
    with demo_environment(2):
        path = resolve_model_path(MODEL)
        tokenizer = AutoTokenizer.from_pretrained(path)
        validation = chat_addition_dataset(300, seed=0, split="validation")
        train = chat_addition_dataset(settings.num_train, seed=SEED, split="train")
        clock = {"start": time.perf_counter(), "eval": 0.0}

        class Evaluate(TrainerCallback):
            def on_step_end(self, args, state, control, model=None, **kwargs):
                if state.global_step % cli.every == 0:
                    begin = time.perf_counter()
                    accuracy = greedy_evaluation(
                        model, tokenizer, validation, 16, last_number_scores, batch_size=100
                    ).accuracy
                    clock["eval"] += time.perf_counter() - begin
                    train_seconds = time.perf_counter() - clock["start"] - clock["eval"]
                    curve.append(
                        {"step": state.global_step, "validation_accuracy": accuracy, "train_seconds": train_seconds}
                    )
                    print(curve[-1], flush=True)

        quiet = real.quiet_trainer

        def quiet_and_evaluate(trainer, description):  # train_real_grpo's one place to reach the trainer
            trainer.add_callback(Evaluate())
            return quiet(trainer, description)

        real.quiet_trainer = quiet_and_evaluate
        set_seed(SEED)
        train_real_grpo(path, train, settings, Path("runs/real-demo-steps"), SEED, plain=False)
    result = {"seed": SEED, "validation_size": 300, "settings": dataclasses.asdict(settings), "curve": curve}
    Path(cli.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
