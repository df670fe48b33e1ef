"""Call expanded group objectives that fail at one global row, under torchrun, and record what each process got.

    torchrun --nproc_per_node 2 tests/dist/group_guard.py OUTPUT_DIR MODEL_PATH

Launched by tests/test_distributed.py (CPU, gloo). Each process builds a GRPOExtTrainer per reward error policy and
calls the expanded reward functions as TRL's `_calculate_rewards` does, with its own 6 rows of a 12-row global
batch in groups of 4. Each process writes OUTPUT_DIR/guard{index}.json: per policy and objective, the rewards it
got or the error it raised, and the values it passed to `log_metric`.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from tests.helpers import digit_reward, prompt_dataset, tiny_args, tiny_tokenizer_cached
from trl_grpo_ext import GRPOExtTrainer
from trl_grpo_ext.rewards import WeightedReward, group_objective

NUM_GENERATIONS = 4
PER_DEVICE_ROWS = 6
NAN_INDEX = 5  # global row 5: held by process 0 (rows 0-5), inside the group that straddles the processes


@group_objective
def short(prompts, completions, num_generations=None, **kwargs):
    """One reward short of the global batch: the last global row has none."""
    return [1.0] * (len(completions) - 1)


@group_objective
def nan_at_global_row(prompts, completions, num_generations=None, **kwargs):
    return [math.nan if i == NAN_INDEX else 1.0 for i in range(len(completions))]


def completions(rank: int) -> list[str]:
    return [f"completion {rank * PER_DEVICE_ROWS + i}" for i in range(PER_DEVICE_ROWS)]


def main() -> None:
    output_dir, model_path = Path(sys.argv[1]), sys.argv[2]
    result = {}
    for policy in ("raise", "skip"):
        trainer = GRPOExtTrainer(
            model=model_path,
            reward_funcs=WeightedReward({"digits": digit_reward, "short": short, "nan": nan_at_global_row}),
            args=tiny_args(
                output_dir / policy,
                per_device_train_batch_size=PER_DEVICE_ROWS,
                num_generations=NUM_GENERATIONS,
                reward_error_policy=policy,
            ),
            train_dataset=prompt_dataset(12),
            processing_class=tiny_tokenizer_cached(),
        )
        rank = trainer.accelerator.process_index
        for name, func in zip(trainer.reward_func_names, trainer.reward_funcs):
            if name == "digits":
                continue
            logged = []
            outcome = {"logged": logged}
            try:
                outcome["rewards"] = func(
                    prompts=["1+1="] * PER_DEVICE_ROWS,
                    completions=completions(rank),
                    log_metric=lambda key, value: logged.append([key, value]),
                )
            except Exception as exc:  # the test asserts which processes raise
                outcome["error"] = f"{type(exc).__name__}: {exc}"
            result[f"{policy}/{name}"] = outcome
    (output_dir / f"guard{rank}.json").write_text(json.dumps(result))
    # Tear gloo down before exit: left to interpreter shutdown, its threads occasionally abort the process
    # ("terminate called without an active exception", SIGABRT after all work was done; seen once in 3 runs).
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
