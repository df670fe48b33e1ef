"""Train the tiny kit with `dynamic_sampling` under torchrun, recording what dynamic sampling decided.

    torchrun --nproc_per_node N tests/dist/train_dynamic.py OUTPUT_DIR MODEL_PATH

12 rows per generation batch in groups of 4 over N processes (N = 2: 6 rows each, so the second group straddles the
two processes). Whether a group teaches depends on its prompt only (`prompt_decides`), so 1 and 2 processes, which
sample different completions, must take the same decisions. Process 0 writes OUTPUT_DIR/decisions.json: per
generation batch, the prompts of the final global batch (row by row) and the dynamic-sampling metrics.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from accelerate.utils import gather_object

from tests.helpers import prompt_dataset, tiny_args, tiny_tokenizer_cached
from trl_grpo_ext import GRPOExtTrainer
from trl_grpo_ext.sampling import RefillSampler

NUM_GENERATIONS, GLOBAL_ROWS, MAX_STEPS = 4, 12, 4


def prompt_decides(prompts, completions, **kwargs):
    """Prompts whose first operand is odd: 1 for every completion (a tied group); else a reward that varies with the
    completion's text (a random model's 4 completions of 8 tokens differ: the group teaches)."""
    return [
        1.0 if int(p.split("+")[0]) % 2 else float(sum(map(ord, c)) % 97) / 97 for p, c in zip(prompts, completions)
    ]


class Recording(GRPOExtTrainer):
    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.model.training:
            texts = self.processing_class.batch_decode(output["prompt_ids"], skip_special_tokens=True)
            self.decisions.append({"prompts": gather_object(texts), "rows": len(texts)})
        return output


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("model_path")
    cli = parser.parse_args()
    world = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's; the process group starts with the trainer
    args = tiny_args(
        cli.output_dir,
        per_device_train_batch_size=GLOBAL_ROWS // world,
        num_generations=NUM_GENERATIONS,
        max_steps=MAX_STEPS,
        dynamic_sampling=True,
        dynamic_sampling_max_rounds=2,
    )
    trainer = Recording(
        cli.model_path,
        reward_funcs=prompt_decides,
        args=args,
        train_dataset=prompt_dataset(32),
        processing_class=tiny_tokenizer_cached(),
    )
    trainer.decisions = []
    trainer.train()
    if trainer.accelerator.process_index == 0:
        keys = ("dynamic_sampling/rounds", "dynamic_sampling/groups_generated", "dynamic_sampling/teaching_frac")
        metrics = [{k: e[k] for k in keys} for e in trainer.state.log_history if keys[0] in e]
        sampler = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, RefillSampler))
        record = {"world": world, "batches": trainer.decisions, "metrics": metrics, "sampler": sampler.state()}
        (cli.output_dir / "decisions.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
