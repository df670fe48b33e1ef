"""Train a tiny GRPOExtTrainer with the principles objective (a local judge) under torchrun; record what it judged.

    torchrun --nproc_per_node 2 tests/dist/record_principles.py OUTPUT_DIR MODEL_PATH

Launched by tests/test_distributed_principles.py (CPU, gloo). Each process judges its own completions with its own
judge; the main process writes OUTPUT_DIR/principles.json: the log history and the last generation batch's prompts,
completions and principle rewards as TRL gathered them from all processes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.helpers import prompt_dataset, tiny_args, tiny_tokenizer_cached
from trl_grpo_ext import GRPOExtTrainer

PER_DEVICE_BATCH = 4
MAX_STEPS = 2
PRINCIPLES = [{"question": "Is the answer a number?", "weight": 3, "name": "number"}, "Is it short?"]
JUDGE = {"model": "tiny:tiny", "batch_size": 3}


def main(output_dir: str, model_path: str) -> None:
    args = tiny_args(
        output_dir,
        per_device_train_batch_size=PER_DEVICE_BATCH,
        max_steps=MAX_STEPS,
        reward_objectives={"principles": 1.0},
        principles=PRINCIPLES,
        judge=JUDGE,
        reward_error_policy="skip",
    )
    trainer = GRPOExtTrainer(
        model=model_path, args=args, train_dataset=prompt_dataset(16), processing_class=tiny_tokenizer_cached()
    )
    trainer.train()
    if trainer.accelerator.is_main_process:
        record = {
            "num_processes": trainer.accelerator.num_processes,
            "log_history": trainer.state.log_history,
            "prompts": list(trainer._logs["prompt"]),
            "completions": list(trainer._logs["completion"]),
            "rewards": list(trainer._logs["rewards"]["principles"]),
        }
        (Path(output_dir) / "principles.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(*sys.argv[1:3])
