"""Train a tiny GRPOExtTrainer with the online reward model from the config under torchrun; record what it learnt from.

    torchrun --nproc_per_node 2 tests/dist/record_online_rm.py OUTPUT_DIR MODEL_PATH

Launched by tests/test_distributed_online_rm.py (CPU, gloo). 6 rows per process in groups of 4, so a group straddles
the processes. The gold labeler (`flaky_gold`) fails on some completions (a fault under `skip`, counted in
`rm/label_errors`) and counts its calls per process. Each process writes OUTPUT_DIR/rank{index}.json (the global
batches the reward model scored, the gold's calls, what a raising labeler did after training under each policy) and
its reward model's state to OUTPUT_DIR/rank{index}/; the main process adds the log history.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from tests.helpers import prompt_dataset, tiny_args, tiny_tokenizer_cached
from trl_grpo_ext import GRPOExtTrainer
from trl_grpo_ext.rewards import OnlineRewardModel

PER_DEVICE_BATCH = 6
NUM_GENERATIONS = 4
MAX_STEPS = 3
ONLINE_REWARD_MODEL = {
    "model": "tiny:tiny",
    "pairs_per_update": 5,
    "label_budget": 12,
    "update_steps": 2,
    "learning_rate": 3e-3,
    "heldout_fraction": 0.2,
    "seed": 11,
    "error_policy": "skip",
    "labeler": {"type": "gold", "objective": "tests.dist.record_online_rm:flaky_gold"},
}
GOLD_CALLS: list[int] = []


def flaky_gold(completions, **kwargs):
    """Digit count, and NaN (a labeler fault) for a completion whose first character has an even code point."""
    GOLD_CALLS.append(len(completions))
    return [math.nan if c and ord(c[0]) % 2 == 0 else float(sum(ch.isdigit() for ch in c)) for c in completions]


def _labeler_faults(rm: OnlineRewardModel, batch: dict) -> dict:
    """After training: a labeler that raises, called by the objective on the last global batch, under each policy."""
    calls = []

    def broken(prompts, completions_a, completions_b, **columns):
        calls.append(len(completions_a))
        raise RuntimeError("labeler down")

    rm.labeler, rm.label_budget = broken, None  # the budget is spent: lift it so that the objective asks again
    outcome = {}
    for policy in ("raise", "skip"):
        rm.error_policy = policy
        logged = {}
        try:
            rm(**batch, num_generations=NUM_GENERATIONS, log_metric=logged.__setitem__)
            outcome[policy] = {"logged": logged}
        except Exception as exc:  # the test asserts that every process raises
            outcome[policy] = {"error": f"{type(exc).__name__}: {exc}"}
    outcome["calls"] = calls
    return outcome


def main(output_dir: str, model_path: str) -> None:
    output_dir = Path(output_dir)
    args = tiny_args(
        output_dir / "run",
        per_device_train_batch_size=PER_DEVICE_BATCH,
        num_generations=NUM_GENERATIONS,
        max_steps=MAX_STEPS,
        reward_objectives={"learned_preference": 1.0},
        online_reward_model=ONLINE_REWARD_MODEL,
        reward_error_policy="skip",
    )
    trainer = GRPOExtTrainer(
        model=model_path, args=args, train_dataset=prompt_dataset(24), processing_class=tiny_tokenizer_cached()
    )
    rm = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, OnlineRewardModel))
    scored: list[dict] = []
    score = rm.score

    def recording_score(prompts, completions):  # the global batch of each reward call, as the model scores it
        scored.append({"prompts": list(prompts), "completions": list(completions)})
        return score(prompts, completions)

    rm.score = recording_score
    trainer.train()
    rank = trainer.accelerator.process_index
    rm.save_state(output_dir / f"rank{rank}")
    rm.score = score  # stop recording: the calls below are not training's
    faults = _labeler_faults(rm, scored[-1])
    import tests.dist.record_online_rm as gold_module  # the labeler imported this module by name; this is __main__

    record = {
        "process_index": rank,
        "num_processes": trainer.accelerator.num_processes,
        "scored": scored,
        "gold_calls": gold_module.GOLD_CALLS,
        "labels_used": rm.labels_used,
        "faults": faults,
        "log_history": trainer.state.log_history if trainer.accelerator.is_main_process else None,
    }
    (output_dir / f"rank{rank}.json").write_text(json.dumps(record))
    import torch.distributed as dist  # tear gloo down before exit (tests/dist/group_guard.py)

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
