"""Faster than TRL with the same math: plain `trl.GRPOTrainer` vs `GRPOExtTrainer(share_prompt, skip_zero_advantage)`.

    trl: trl.GRPOTrainer, TRL's defaults (temperature 1.0, z-score), activation checkpointing off
    ext: GRPOExtTrainer with share_prompt=True and skip_zero_advantage=True, nothing else

Both train the same LoRA on the same model, data, reward and seed, so they sample the same completions (checked: each
run records a digest of every generated batch, and the row says whether the two arms' digests match) and take the
same optimizer steps up to float32 rounding. What differs is only how much is computed.

Two shapes on a `--model` checkpoint (default SmolLM2-135M-Instruct, the real demo's model):
- `demo`: the real demo's step: 4 chat-addition prompts x 8 completions, at most 16 new tokens (prompt ~47 tokens);
- `long`: few-shot prompts of >= 256 tokens (worked examples before the question), 2 prompts x 8, 32 new tokens.
`--quick` runs the tiny kit's small model at a demo-like shape instead (the CI size: it checks the plumbing).

Per run, in a fresh subprocess (its own peak RSS): the step time (steps after the first), the loss pass (each
`training_step` less its `_prepare_inputs`, which generates and scores: the loss's forward and backward), the
generation time, the peak RSS, and the skipped-row and shared-prompt fractions. Runs go in ABBA pairs; each pair
gives ext / trl ratios, and the medians are compared with the targets (step <= 0.5, loss pass <= 0.4 on the demo
shape and <= 0.25 on the long one, peak RSS < 1). Model FLOPs utilisation: the loss pass's model FLOPs as TRL counts
the work (4 x parameters x tokens: a forward, and a backward through frozen weights whose input gradient costs as
much; LoRA's own FLOPs are negligible) over its time, against the machine's measured fp32 matmul peak at the same
thread count. Both arms are charged TRL's FLOPs, so the ext's figure is "effective": it can exceed what the hardware
computes, because the ext does less work for the same result.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import statistics
import time
from typing import Any

from .. import kit
from ..demos.real import real_demo_reward
from .overhead import max_rss_mb, model_label, run_child

TRAINERS = ("ext", "trl")
STEP_TARGET = 0.5
LOSS_TARGETS = {"demo": 0.4, "long": 0.25, "quick": 0.4}
SHAPES = {
    "demo": {"prompts": 4, "num_generations": 8, "tokens": 16, "few_shot": 0, "steps": 4, "pairs": 2},
    "long": {"prompts": 2, "num_generations": 8, "tokens": 32, "few_shot": 12, "steps": 3, "pairs": 2},
    "quick": {"prompts": 4, "num_generations": 4, "tokens": 8, "few_shot": 0, "steps": 3, "pairs": 2},
}
TABLE_COLUMNS = [
    "model",
    "shape",
    "prompt_tokens",
    "rows",
    "pairs",
    "same_completions",
    "trl_step_s",
    "ext_step_s",
    "step_ratio",
    "step_pass",
    "trl_loss_s",
    "ext_loss_s",
    "loss_ratio",
    "loss_pass",
    "generate_ratio",
    "rss_ratio",
    "memory_pass",
    "skipped_rows",
    "trl_mfu",
    "ext_mfu",
]


def bench_speed(
    quick: bool = False, pairs: int | None = None, threads: int | None = 2, model: str | None = None
) -> list[dict]:
    """One row per shape: median ext / trl ratios of step time, loss-pass time, generation time and peak RSS.

    `quick`: the tiny kit's small model at the `quick` shape (seconds). Otherwise `model` (default
    `"smollm2:135m-instruct"`) at the `demo` and `long` shapes. `pairs` overrides each shape's number of ABBA pairs;
    `threads` is each child's thread count (the machine's 2 cores by default: a speed claim is about the whole box).
    """
    if pairs is not None and pairs < 1:
        raise ValueError(f"`pairs` should be >= 1, got {pairs}.")
    peak = matmul_peak_gflops(threads)
    if quick and model is None:
        return [_bench_shape({"tiny": "small"}, "tiny-small", "quick", pairs, threads, peak)]
    model = model or "smollm2:135m-instruct"
    path = kit.resolve_model_path(model)  # a kit name is converted once, here, not in each child
    shapes = ["demo"] if quick else ["demo", "long"]
    return [_bench_shape({"path": path}, model_label(model), shape, pairs, threads, peak) for shape in shapes]


def matmul_peak_gflops(threads: int | None, size: int = 1024, repeats: int = 20) -> float:
    """The machine's fp32 matmul throughput (GFLOP/s) at `threads` threads: the best of `repeats` square products."""
    import torch

    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        a @ b  # warm-up
        best = min(_timed(lambda: a @ b) for _ in range(repeats))
    finally:
        torch.set_num_threads(saved)
    return 2 * size**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _bench_shape(model_spec: dict, label: str, shape: str, pairs: int | None, threads, peak: float) -> dict:
    sizes = SHAPES[shape]
    spec = {"model": model_spec, "shape": shape, **sizes, "seed": 0, "threads": threads}
    runs = []
    for pair in range(pairs or sizes["pairs"]):
        order = TRAINERS if pair % 2 == 0 else TRAINERS[::-1]
        results = {trainer: run_child({**spec, "trainer": trainer}, entry=__name__) for trainer in order}
        runs += [{"pair": pair, "trainer": trainer, **results[trainer]} for trainer in TRAINERS]
    return summarize_speed({"bench": "speed", "model": label, "shape": shape, "threads": threads}, runs, peak)


def summarize_speed(row: dict, runs: list[dict], peak_gflops: float) -> dict:
    """Median ext / trl ratios over the pairs in `runs`, pass / fail against the targets, and each arm's MFU."""
    by_pair: dict[int, dict[str, dict]] = {}
    for run in runs:
        by_pair.setdefault(run["pair"], {})[run["trainer"]] = run
    pairs = [by_pair[p] for p in sorted(by_pair)]

    def median_ratio(key):
        return statistics.median(p["ext"][key] / p["trl"][key] for p in pairs)

    def median(trainer, key):
        return statistics.median(p[trainer][key] for p in pairs)

    first = pairs[0]["trl"]
    loss_target = LOSS_TARGETS[row["shape"]]
    step_ratio, loss_ratio, rss_ratio = median_ratio("step_s"), median_ratio("loss_s"), median_ratio("peak_rss_mb")
    flops = 4 * first["params"] * first["loss_tokens_per_step"]  # TRL's count of the loss pass's work, per step
    row.update(
        {
            "pairs": len(pairs),
            "prompt_tokens": first["prompt_tokens"],
            "rows": first["rows"],
            "same_completions": all(p["ext"]["completion_digest"] == p["trl"]["completion_digest"] for p in pairs),
            "trl_step_s": median("trl", "step_s"),
            "ext_step_s": median("ext", "step_s"),
            "step_ratio": step_ratio,
            "step_target": STEP_TARGET,
            "step_pass": step_ratio <= STEP_TARGET,
            "trl_loss_s": median("trl", "loss_s"),
            "ext_loss_s": median("ext", "loss_s"),
            "loss_ratio": loss_ratio,
            "loss_target": loss_target,
            "loss_pass": loss_ratio <= loss_target,
            "generate_ratio": median_ratio("generate_s"),
            "trl_rss_mb": median("trl", "peak_rss_mb"),
            "ext_rss_mb": median("ext", "peak_rss_mb"),
            "rss_ratio": rss_ratio,
            "memory_pass": rss_ratio < 1.0,
            "skipped_rows": statistics.median(p["ext"]["skipped_rows_frac"] for p in pairs),
            "peak_gflops": peak_gflops,
            "trl_mfu": flops / median("trl", "loss_s") / 1e9 / peak_gflops,
            "ext_mfu": flops / median("ext", "loss_s") / 1e9 / peak_gflops,
            "final_weight_max_diff": statistics.median(
                _max_abs_diff(p["ext"]["final_weights"], p["trl"]["final_weights"]) for p in pairs
            ),
            "runs": [{k: v for k, v in run.items() if k != "final_weights"} for run in runs],
        }
    )
    return row


def _max_abs_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b)) if a else 0.0


# ------------------------------------------------------------------------------------------------------ child runs
def few_shot_dataset(num_examples: int, seed: int, shots: int):
    """Chat addition with `shots` worked examples before the question in the user message (a long, shared prompt)."""
    import random

    from ..kit.tasks import chat_addition_dataset

    rows = chat_addition_dataset(num_examples, seed=seed)
    if not shots:
        return rows
    rng = random.Random(seed)
    examples = [(rng.randint(10, 99), rng.randint(10, 99)) for _ in range(shots)]
    preamble = "Here are worked examples of two-digit addition.\n" + "\n".join(
        f"Question: What is {a} + {b}? Answer: {a + b}" for a, b in examples
    )

    def lengthen(row):
        message = dict(row["prompt"][0])
        message["content"] = f"{preamble}\nNow the real question. {message['content']}"
        return {"prompt": [message]}

    return rows.map(lengthen)


def train_once(spec: dict) -> dict[str, Any]:
    """Train one arm of `spec` (in the child); returns its timings, digests and final trainable weights."""
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from trl_grpo_ext import GRPOExtConfig, GRPOExtTrainer
    from trl_grpo_ext.kit.tiny import build_tiny_model, build_tiny_tokenizer

    k, prompts = spec["num_generations"], spec["prompts"]
    common = dict(
        output_dir=spec["output_dir"],
        per_device_train_batch_size=prompts * k,
        num_generations=k,
        max_completion_length=spec["tokens"],
        max_steps=spec["steps"],
        learning_rate=3e-4,
        lr_scheduler_type="constant",
        beta=0.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=spec["seed"],
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
    )
    dataset = few_shot_dataset(64, seed=spec["seed"], shots=spec["few_shot"])
    if "path" in spec["model"]:
        model, tokenizer = spec["model"]["path"], AutoTokenizer.from_pretrained(spec["model"]["path"])
    else:
        tokenizer = build_tiny_tokenizer()
        model = build_tiny_model(tokenizer, size=spec["model"]["tiny"], seed=0)
        dataset = dataset.map(lambda row: {"prompt": row["prompt"][0]["content"][-24:]})  # the tiny vocabulary
    if spec["trainer"] == "ext":
        args, trainer_cls = GRPOExtConfig(**common, share_prompt=True, skip_zero_advantage=True), GRPOExtTrainer
    else:
        args, trainer_cls = GRPOConfig(**common), GRPOTrainer
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = trainer_cls(
        model=model,
        reward_funcs=_plain_reward(real_demo_reward()),  # one function for both: the same rewards to the bit
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
    )
    timings = {"generate": [], "prepare": [], "step": []}
    digest = hashlib.sha256()
    shapes: dict[str, int] = {}

    def timed(name, method, record=None):
        @functools.wraps(method)
        def wrapper(*a, **kw):
            start = time.perf_counter()
            result = method(*a, **kw)
            timings[name].append(time.perf_counter() - start)
            if record is not None:
                record(result)
            return result

        return wrapper

    def record_batch(batch):
        shapes.update(rows=batch["prompt_ids"].size(0), prompt_tokens=batch["prompt_ids"].size(1))
        shapes["loss_tokens"] = batch["prompt_ids"].size(1) + batch["completion_ids"].size(1)

    trainer._generate_single_turn = timed(
        "generate", trainer._generate_single_turn, lambda out: digest.update(json.dumps(out[0]).encode())
    )
    trainer._prepare_inputs = timed("prepare", trainer._prepare_inputs, record_batch)
    trainer.training_step = timed("step", trainer.training_step)
    start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - start
    steady = slice(1, None)  # the first step also pays one-time warm-up
    steps, prepares = timings["step"][steady], timings["prepare"][steady]
    log = [e for e in trainer.state.log_history if "reward" in e]
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    trainable = [p.detach().flatten() for p in unwrapped.parameters() if p.requires_grad]
    return {
        "trainer": spec["trainer"],
        "train_s": train_s,
        "step_s": statistics.mean(steps),
        "loss_s": statistics.mean(s - p for s, p in zip(steps, prepares)),
        "generate_s": statistics.mean(timings["generate"][steady]),
        "peak_rss_mb": max_rss_mb(),
        "params": sum(p.numel() for p in unwrapped.parameters()),
        "rows": shapes["rows"],
        "prompt_tokens": shapes["prompt_tokens"],
        "loss_tokens_per_step": shapes["rows"] * shapes["loss_tokens"],
        "completion_digest": digest.hexdigest(),
        "skipped_rows_frac": statistics.mean(e.get("efficiency/skipped_rows_frac", 0.0) for e in log),
        "frac_reward_zero_std": statistics.mean(e["frac_reward_zero_std"] for e in log),
        "final_weights": torch.cat(trainable)[::997].tolist(),  # a sample, to compare the arms' weights
        "threads": torch.get_num_threads(),
        "load_avg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def _plain_reward(weighted):
    """The demo's weighted reward as one plain function (`trl.GRPOTrainer` knows no `WeightedReward`)."""

    def reward(prompts, completions, **kwargs):
        return weighted(prompts=prompts, completions=completions, **kwargs)

    reward.__name__ = "weighted_reward"
    return reward


def child_main(argv: list[str]) -> int:
    """The child process of `run_child(..., entry=__name__)`: this module's `train_once` of the JSON spec at
    `argv[0]`, its result written to `argv[1]`."""
    spec_path, out_path = argv
    with open(spec_path) as f:
        spec = json.load(f)
    with open(out_path, "w") as f:
        json.dump(train_once(spec), f)
    return 0
