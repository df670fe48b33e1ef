"""A tiny GRPOExtTrainer run with every step-derived schedule on, for the checkpoint / resume tests.

    python tests/dist/train_tiny.py OUTPUT_DIR MODEL_PATH [--max-steps 4] [--save-steps 1] [--resume]
                                    [--pause-at-step N --pause-seconds S]

The ladder's ends (`temperature_range` -> `temperature_range_final`) and the objective weights (`WeightedReward`
weights -> `objective_weights_final`) move with `state.global_step`; advantages are rank advantages. `--resume`
resumes from the latest checkpoint in OUTPUT_DIR. `--pause-at-step N` sleeps right after checkpoint-N is written,
so that a test can SIGKILL the process at a known point. At the end the script writes OUTPUT_DIR/log_history.json.
tests/test_resume.py imports `build_trainer` and the constants from here.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from tests.helpers import digit_reward, length_reward, prompt_dataset, tiny_args, tiny_tokenizer_cached
from trl_grpo_ext import GRPOExtTrainer
from trl_grpo_ext.rewards import WeightedReward

CONFIG = dict(
    temperature_schedule="linear",
    temperature_range=[0.5, 1.0],
    temperature_range_final=[0.9, 1.6],
    advantage_estimator="rank",
    objective_weights_final={"digits": 0.2, "length": 1.5},
    save_strategy="steps",
)
WEIGHTS = {"digits": 1.0, "length": 0.5}


def expected_ladder_ends(step: int, max_steps: int) -> tuple[float, float]:
    """(t_min, t_max) of the batch generated at global step `step`, written out from CONFIG."""
    (start_min, start_max), (final_min, final_max) = CONFIG["temperature_range"], CONFIG["temperature_range_final"]
    fraction = step / max_steps
    return start_min + (final_min - start_min) * fraction, start_max + (final_max - start_max) * fraction


def expected_weight(name: str, step: int, max_steps: int) -> float:
    return WEIGHTS[name] + (CONFIG["objective_weights_final"][name] - WEIGHTS[name]) * step / max_steps


def build_trainer(output_dir, model_path: str, callbacks=None, **overrides) -> GRPOExtTrainer:
    args = tiny_args(output_dir, **{**CONFIG, **overrides})
    return GRPOExtTrainer(
        model=model_path,
        reward_funcs=WeightedReward({"digits": digit_reward, "length": length_reward}, weights=WEIGHTS),
        args=args,
        train_dataset=prompt_dataset(16),
        processing_class=tiny_tokenizer_cached(),
        callbacks=callbacks,
    )


class PauseAfterSave(TrainerCallback):
    """Sleep once checkpoint-`step` is complete (HF calls `on_save` after writing trainer_state.json)."""

    def __init__(self, step: int, seconds: float):
        self.step, self.seconds = step, seconds

    def on_save(self, args, state, control, **kwargs):
        print(f"saved checkpoint-{state.global_step}", flush=True)
        if state.global_step == self.step:
            time.sleep(self.seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("model_path")
    parser.add_argument("--max-steps", type=int, default=4)
    parser.add_argument("--save-steps", type=int, default=1)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--pause-at-step", type=int, default=-1)
    parser.add_argument("--pause-seconds", type=float, default=0.0)
    cli = parser.parse_args()

    checkpoint = get_last_checkpoint(str(cli.output_dir)) if cli.resume else None
    if cli.resume and checkpoint is None:
        raise SystemExit(f"--resume: no checkpoint in {cli.output_dir}")
    trainer = build_trainer(
        cli.output_dir,
        cli.model_path,
        callbacks=[PauseAfterSave(cli.pause_at_step, cli.pause_seconds)],
        max_steps=cli.max_steps,
        save_steps=cli.save_steps,
    )
    trainer.train(resume_from_checkpoint=checkpoint)
    result = {"resumed_from": checkpoint, "log_history": trainer.state.log_history}
    (cli.output_dir / "log_history.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
