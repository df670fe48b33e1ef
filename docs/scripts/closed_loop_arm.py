"""Only the closed-loop arm of `trl-grpo-ext demo`, from the warm start a full demo run saved (DIR/sft, same seed).

    python docs/scripts/closed_loop_arm.py SFT_DIR OUTPUT_DIR TARGET SEED

The same settings, data and `set_seed(SEED)` as the demo's `--closed-loop` arm (`demos.tiny.train_grpo`), without repeating
the warm start and the fixed-ladder arm. Prints and writes OUTPUT_DIR/arm.json (held-out and validation accuracy).
"""

import functools
import json
import sys
from pathlib import Path

from transformers import AutoModelForCausalLM, set_seed

from trl_grpo_ext.demos import tiny
from trl_grpo_ext.demos.common import demo_environment, greedy_accuracy
from trl_grpo_ext.kit.tasks import reversal_dataset
from trl_grpo_ext.kit.tiny import build_tiny_tokenizer

sft_dir, out_dir, target, seed = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
settings = tiny.FULL
with demo_environment(1):
    tokenizer = build_tiny_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(sft_dir)
    lengths = {"min_length": settings.min_length, "max_length": settings.max_length}
    train = reversal_dataset(settings.num_train, seed=seed, split="train", **lengths)
    validation = reversal_dataset(settings.num_validation, seed=0, split="validation", **lengths)
    heldout = reversal_dataset(settings.num_heldout, seed=0, split="test", **lengths)
    evaluate = functools.partial(greedy_accuracy, max_new_tokens=settings.max_completion_length)
    before = evaluate(model, tokenizer, heldout)
    set_seed(seed)
    trainer, seconds = tiny.train_grpo(
        model, tokenizer, train, settings, out_dir, seed, closed_loop=True, control_target=target
    )
    result = {
        "target": target,
        "seed": seed,
        "heldout_before": before,
        "heldout_after": evaluate(model, tokenizer, heldout),
        "validation_after": evaluate(model, tokenizer, validation),
        "seconds": seconds,
    }
print(json.dumps(result))
(out_dir / "arm.json").write_text(json.dumps(result))
