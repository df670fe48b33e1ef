"""Train the tiny kit for a few steps with or without `share_prompt` + `skip_zero_advantage`, under torchrun.

    torchrun --nproc_per_node 2 tests/dist/train_efficiency.py OUTPUT_DIR MODEL_PATH [--options]
    accelerate launch --config_file tests/dist/fsdp2_cpu.yaml tests/dist/train_efficiency.py ...   (FSDP2)

6 rows per process in groups of 4, so the second group of every batch straddles the two processes; a pass / fail
reward ties most groups, so some process's micro-batch is entirely skipped. Process 0 writes the trained weights to
OUTPUT_DIR/weights.pt; every process writes OUTPUT_DIR/rows{rank}.json: per loss pass, how many of its rows it computed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import trl_grpo_ext.trainer as trainer_module
from tests.helpers import prompt_dataset, tiny_args, tiny_tokenizer_cached
from trl_grpo_ext import GRPOExtTrainer

NUM_GENERATIONS, PER_DEVICE_BATCH, MAX_STEPS = 4, 6, 4


def pass_fail(completions, **kwargs):
    return [float(any(ch.isdigit() for ch in c[:2])) for c in completions]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("model_path")
    parser.add_argument("--options", action="store_true")
    cli = parser.parse_args()
    options = dict(share_prompt=True, skip_zero_advantage=True) if cli.options else {}
    computed: list[list[int]] = []
    rows_with_signal = trainer_module.rows_with_signal

    def recorded(advantages):
        keep = rows_with_signal(advantages)
        computed.append([int(keep.sum()), int((advantages != 0).sum()), keep.numel()])
        return keep

    trainer_module.rows_with_signal = recorded
    args = tiny_args(
        cli.output_dir,
        per_device_train_batch_size=PER_DEVICE_BATCH,
        num_generations=NUM_GENERATIONS,
        max_steps=MAX_STEPS,
        optim="sgd",
        gradient_checkpointing=False,
        **options,
    )
    trainer = GRPOExtTrainer(
        cli.model_path,
        reward_funcs=pass_fail,
        args=args,
        train_dataset=prompt_dataset(32),
        processing_class=tiny_tokenizer_cached(),
    )
    trainer.train()
    rank = trainer.accelerator.process_index
    (cli.output_dir / f"rows{rank}.json").write_text(json.dumps(computed))
    model = trainer.accelerator.unwrap_model(trainer.model)
    # FSDP2 shards each parameter as a DTensor: every process takes part in gathering it whole
    weights = {
        n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone() for n, p in model.named_parameters()
    }
    if rank == 0:
        torch.save(weights, cli.output_dir / "weights.pt")


if __name__ == "__main__":
    main()
