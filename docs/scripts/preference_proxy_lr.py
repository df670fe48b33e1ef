"""The proxy's learning rate, chosen on seed 100's warm-start samples (validation seed of the preference experiment).

Trains the seed-set proxy (`experiment.preference.build_proxy` + `train_pairs`, 10 epochs) on N random decided pairs
of the seed-100 warm-start samples at each learning rate, and measures its pair accuracy on the decided pairs of the
held-out `extra_groups` samples (other train prompts). Writes docs/scripts/preference_proxy_lr.json.

    python docs/scripts/preference_proxy_lr.py runs/preference
"""

import json
import random
import sys
from dataclasses import replace
from pathlib import Path

import torch

from trl_grpo_ext.experiment.preference import (
    FULL_SETTINGS,
    as_labelled,
    build_proxy,
    decided_pairs,
    pair_accuracy,
    train_pairs,
)
from trl_grpo_ext.kit.tiny import build_tiny_tokenizer

torch.set_num_threads(1)
root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/preference")
samples = json.loads(next((root / "proxy" / "seed100").glob("size128-*/samples.json")).read_text())
pool = [
    p for g in samples["seed_groups"] for p in decided_pairs(g["prompt"], g["completions"], g["gold"], g["answer"])
]
held = [
    p for g in samples["extra_groups"] for p in decided_pairs(g["prompt"], g["completions"], g["gold"], g["answer"])
]
tokenizer = build_tiny_tokenizer()
weights = torch.load(root / "warmstart" / "seed100" / "weights.pt", weights_only=True)
rows = []
for size, lr in [(128, 1e-3), (128, 3e-4), (128, 1e-4), (512, 1e-4)]:
    model = build_proxy(tokenizer, weights, 100)
    pairs = random.Random(0).sample(pool, size)
    loss = train_pairs(model, tokenizer, as_labelled(pairs), replace(FULL_SETTINGS, rm_learning_rate=lr), 0)
    rows.append(
        {
            "pairs": size,
            "learning_rate": lr,
            "final_loss": loss,
            "train_pair_accuracy": pair_accuracy(model, tokenizer, pairs),
            "heldout_pair_accuracy": pair_accuracy(model, tokenizer, held),
            "heldout_pairs": len(held),
        }
    )
    print(rows[-1], flush=True)
out = Path(__file__).with_suffix(".json")
out.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
