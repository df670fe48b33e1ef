"""2 processes, each with its own colocated vLLM engine, one group of K = 4 straddling them every step.

    torchrun --nproc_per_node 2 tests/vllm/dist_ladder.py OUT_DIR   -> OUT_DIR/rank{0,1}.json

Rank 0 holds global rows 0-1 of each group (slots 0-1, at 0.01) and rank 1 rows 2-3 (slots 2-3, at 1.9): the slots
follow global positions, so rank 0's pairs must be greedy and equal and rank 1's must vary.
"""

import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from datasets import Dataset  # noqa: E402

from trl_grpo_ext import GRPOExtConfig, GRPOExtTrainer  # noqa: E402
from trl_grpo_ext.tiny import resolve_model_path  # noqa: E402


def main(out):
    seen = []

    def reward(prompts, completions, **kw):
        seen.extend(completions)
        return [sum(c.isdigit() for c in t) / max(len(t), 1) for t in completions]

    ds = Dataset.from_list([{"prompt": f"{i % 7}+{i % 5}="} for i in range(16)])
    args = GRPOExtConfig(
        out + "/run",
        per_device_train_batch_size=2,
        num_generations=4,
        max_completion_length=8,
        max_steps=3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=0,
        disable_tqdm=True,
        use_vllm=True,
        vllm_mode="colocate",
        vllm_max_model_length=128,
        learning_rate=0.0,
        group_temperatures=[0.01, 0.01, 1.9, 1.9],
    )
    tr = GRPOExtTrainer(resolve_model_path("tiny:small"), reward_funcs=reward, args=args, train_dataset=ds)
    tr.train()
    rank = tr.accelerator.process_index
    json.dump({"completions": seen, "log_history": tr.state.log_history}, open(f"{out}/rank{rank}.json", "w"))


if __name__ == "__main__":
    main(sys.argv[1])
