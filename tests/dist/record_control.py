"""Train a tiny GRPOExtTrainer with the closed-loop ladder under torchrun and record, per process, what it did.

    torchrun --nproc_per_node 2 tests/dist/record_control.py OUTPUT_DIR MODEL_PATH

Launched by tests/test_ladder_control.py (CPU, gloo). 2 processes x 6 rows in groups of 4, so group 1 (global rows
4-7) straddles the processes. Each process writes OUTPUT_DIR/rank{index}.json: per generation batch, the row
temperatures it sampled at, the reward matrix as gathered by TRL, and the controller's scale after the update.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.helpers import digit_reward, prompt_dataset, tiny_args, tiny_tokenizer_cached
from trl_grpo_ext import GRPOExtTrainer
from trl_grpo_ext.trainer import TEMPERATURE_KEY

NUM_GENERATIONS = 4
PER_DEVICE_BATCH = 6
MAX_STEPS = 3
CONFIG = dict(
    per_device_train_batch_size=PER_DEVICE_BATCH,
    num_generations=NUM_GENERATIONS,
    max_steps=MAX_STEPS,
    max_completion_length=8,
    temperature_schedule="linear",
    temperature_range=[0.01, 0.02],
    temperature_control="zero_std",
    temperature_control_target=0.2,
    temperature_control_rate=2.0,
    temperature_bounds=[0.01, 2.0],
)


class RecordingTrainer(GRPOExtTrainer):
    records: list[dict]

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self.records.append({"rewards_per_func": rewards_per_func.tolist()})
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        self.records[-1].update(
            process_index=self.accelerator.process_index,
            temperatures=output[TEMPERATURE_KEY].tolist(),
            scale_after=self.ladder_controller.scale,
            reward_weights=self.reward_weights.tolist(),
        )
        return output


def main() -> None:
    output_dir, model_path = Path(sys.argv[1]), sys.argv[2]
    trainer = RecordingTrainer(
        model=model_path,
        reward_funcs=[digit_reward],
        args=tiny_args(output_dir / "run", **CONFIG),
        train_dataset=prompt_dataset(24),
        processing_class=tiny_tokenizer_cached(),
    )
    trainer.records = []
    trainer.train()
    rank = trainer.accelerator.process_index
    result = {"records": trainer.records, "log_history": trainer.state.log_history}
    (output_dir / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
