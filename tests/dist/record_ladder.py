"""Train a tiny GRPOExtTrainer under torchrun and record, per process, what the ladder and the estimators did.

    torchrun --nproc_per_node 2 tests/dist/record_ladder.py OUTPUT_DIR MODEL_PATH

Launched by tests/test_distributed.py (CPU, gloo). Each process writes OUTPUT_DIR/rank{index}.json: one record per
generation batch with the temperature of every row as the logits processor saw it, the local completions, the
reward matrix as gathered by TRL, the reward weights, the local advantages, and the (prompt + completion, temperature)
pairs seen by the loss. The test recomputes all of it in one process from the global lists.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

from tests.helpers import digit_reward, prompt_dataset, tiny_args, tiny_tokenizer_cached
from trl_grpo_ext import GRPOExtTrainer
from trl_grpo_ext.rewards import WeightedReward, group_objective, novelty
from trl_grpo_ext.sampling import RowTemperatureLogitsProcessor
from trl_grpo_ext.trainer import TEMPERATURE_KEY

# Shared by the test: 2 processes x 6 rows in groups of 4, so group 1 (global rows 4-7) straddles the processes.
NUM_GENERATIONS = 4
PER_DEVICE_BATCH = 6
MAX_STEPS = 2
CONFIG = dict(
    per_device_train_batch_size=PER_DEVICE_BATCH,
    num_generations=NUM_GENERATIONS,
    max_steps=MAX_STEPS,
    max_completion_length=8,
    temperature_schedule="linear",
    temperature_range=[0.5, 1.5],
    temperature_range_final=[1.0, 2.0],
    advantage_estimator="rank",
    novelty_ngram=1,
    reward_error_policy="skip",
)
WEIGHTS = {"digits": 1.0, "novelty": 0.5, "prompt_novelty": 0.25, "flaky": 0.1}


@group_objective
def prompt_novelty(prompts, completions, num_generations=None, novelty_ngram=3, **kwargs):
    """`novelty` of prompt + completion: the group's shared prompt words make the values vary (random completions
    of the tiny model rarely share a word, so plain novelty is mostly 1.0)."""
    texts = [f"{p} {c}" for p, c in zip(prompts, completions)]
    return novelty(None, texts, num_generations=num_generations, novelty_ngram=novelty_ngram)


def flaky(completions, **kwargs):
    """NaN for every completion with a digit in it: under reward_error_policy='skip' those rows get None."""
    return [math.nan if any(ch.isdigit() for ch in c) else 1.0 for c in completions]


def objectives() -> dict:
    return {"digits": digit_reward, "novelty": novelty, "prompt_novelty": prompt_novelty, "flaky": flaky}


_processor_temperatures: list[list[float]] = []
_original_call = RowTemperatureLogitsProcessor.__call__


def _recording_call(self, input_ids, scores):
    if not getattr(self, "_recorded", False):
        self._recorded = True
        _processor_temperatures.append([float(t) for t in self.temperatures.tolist()])
    return _original_call(self, input_ids, scores)


def _rows(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    return [row[m.bool()].tolist() for row, m in zip(ids, mask)]


class RecordingTrainer(GRPOExtTrainer):
    records: list[dict]
    loss_rows: list

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self.records[-1].update(
            prompts=list(prompts),
            completions=list(completions),
            rewards_per_func=rewards_per_func.tolist(),
            reward_weights=self.reward_weights.tolist(),
            reward_func_names=list(self.reward_func_names),
        )
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        _processor_temperatures.clear()
        self.records.append(
            {
                "global_step": self.state.global_step,
                "max_steps": self.state.max_steps,
                "process_index": self.accelerator.process_index,
                "num_processes": self.accelerator.num_processes,
                "num_rows": len(inputs),
            }
        )
        output = super()._generate_and_score_completions(inputs)
        self.records[-1].update(
            processor_temperatures=list(_processor_temperatures),
            output_temperatures=output[TEMPERATURE_KEY].tolist(),
            advantages=output["advantages"].tolist(),
            sequences=[
                p + c
                for p, c in zip(
                    _rows(output["prompt_ids"], output["prompt_mask"]),
                    _rows(output["completion_ids"], output["completion_mask"]),
                )
            ],
        )
        return output

    def _compute_loss(self, model, inputs):
        sequences = [
            p + c
            for p, c in zip(
                _rows(inputs["prompt_ids"], inputs["prompt_mask"]),
                _rows(inputs["completion_ids"], inputs["completion_mask"]),
            )
        ]
        self.loss_rows.extend([s, t] for s, t in zip(sequences, inputs[TEMPERATURE_KEY].tolist()))
        return super()._compute_loss(model, inputs)


def main() -> None:
    output_dir, model_path = Path(sys.argv[1]), sys.argv[2]
    RowTemperatureLogitsProcessor.__call__ = _recording_call  # here, so that importing the constants patches nothing
    args = tiny_args(output_dir / "run", **CONFIG)
    trainer = RecordingTrainer(
        model=model_path,
        reward_funcs=WeightedReward(objectives(), weights=WEIGHTS),
        args=args,
        train_dataset=prompt_dataset(16),
        processing_class=tiny_tokenizer_cached(),
    )
    trainer.records, trainer.loss_rows = [], []
    trainer.train()
    rank = trainer.accelerator.process_index
    result = {"records": trainer.records, "loss_rows": trainer.loss_rows, "log_history": trainer.state.log_history}
    (output_dir / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
