"""GRPO on Qwen2.5-shaped models, bf16 LoRA vs 4-bit QLoRA, GRPOExtTrainer vs trl.GRPOTrainer: step time, generated
tokens/s and peak GPU memory.

The models have the shapes of Qwen2.5-0.5B, 1.5B and 7B (hidden / intermediate size, layers, attention and key-value
heads, vocabulary, tied embeddings, from the released `config.json` files) with random bf16 weights: memory and time
depend on the shapes, not on the values. Each shape is saved once to a temporary directory and every run loads it
the way TRL loads a Hub model (`model_init_kwargs={"dtype": "bfloat16"}`, plus `quantization_config` = nf4 with
double quantization and bf16 compute for QLoRA, which TRL passes to `from_pretrained`); LoRA r=16, alpha=32 on all
linear layers; gradient checkpointing on. The two trainers are configured as in `overhead.py` (ladder + rank + three
objectives vs the same objectives with `reward_weights`), each run in its own process.

The tiny kit's character tokenizer stands in for Qwen's (the machine may be offline): with a 152k vocabulary most
sampled ids decode to nothing, so the reward functions see short texts; `min_new_tokens` still makes every completion
exactly `max_completion_length` tokens, which is what the model's time and memory depend on.

Without CUDA, the same code runs at a toy shape labelled `cpu-toy` (4-bit only where bitsandbytes can run it on the
CPU); those rows check that the script works, they say nothing about GPUs.
"""

from __future__ import annotations

import statistics
import tempfile

from .overhead import TRAINERS, run_child

# From the `config.json` of Qwen/Qwen2.5-0.5B, -1.5B and -7B: (hidden, intermediate, layers, heads, kv heads, vocab,
# tied embeddings). All three: rope_theta 1e6, rms_norm_eps 1e-6, SiLU, q/k/v bias (Qwen2ForCausalLM's defaults).
QWEN25_SHAPES: dict[str, tuple[int, int, int, int, int, int, bool]] = {
    "0.5b": (896, 4864, 24, 14, 2, 151_936, True),
    "1.5b": (1536, 8960, 28, 12, 2, 151_936, True),
    "7b": (3584, 18944, 28, 28, 4, 152_064, False),
}
PEFT_MODES = {"lora": "bf16 LoRA", "qlora": "4-bit QLoRA (nf4)"}
# GRPO batch of the GPU runs: 2 prompts x 8 completions of 256 tokens per step; the first step is warm-up.
GPU_RUN = {"steps": 4, "batch_size": 16, "num_generations": 8, "completion_tokens": 256}
CPU_TOY_RUN = {"steps": 2, "batch_size": 4, "num_generations": 4, "completion_tokens": 8}
CPU_TOY_SHAPE = (64, 128, 2, 4, 2, None, True)  # vocabulary: the tokenizer's
TABLE_COLUMNS = [
    "model",
    "peft",
    "device",
    "params",
    "ext_step_s",
    "trl_step_s",
    "step_ratio",
    "ext_tok_s",
    "trl_tok_s",
    "ext_peak_gb",
    "trl_peak_gb",
    "memory_ratio",
    "note",
]


def bench_gpu(quick: bool = False, models: list[str] | None = None, pairs: int = 1) -> list[dict]:
    """One row per (model shape, LoRA / QLoRA): ext and trl step time, generated tokens/s, peak memory, ratios.

    On CUDA: the Qwen2.5 shapes in `models` (default all three; `quick`: 0.5b only), peak memory from
    `torch.cuda.max_memory_allocated`. Without CUDA: the `cpu-toy` shape only, peak memory = peak RSS of the run.
    `pairs` runs of each trainer, alternating; medians are reported.
    """
    import torch

    cuda = torch.cuda.is_available()
    if not cuda:
        names = ["cpu-toy"]
    else:
        names = models or (["0.5b"] if quick else list(QWEN25_SHAPES))
        unknown = [name for name in names if name not in QWEN25_SHAPES]
        if unknown:
            raise ValueError(f"`models` must be among {list(QWEN25_SHAPES)}, got {unknown}.")
    rows = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"trl-grpo-ext-{name}-") as model_dir:
            params = _save_random_model(name, model_dir, cuda)
            for peft in PEFT_MODES:
                rows.append(_bench_peft(name, model_dir, params, peft, cuda, pairs))
    return rows


def _qwen2_config(name: str):
    from transformers import Qwen2Config

    from ..kit.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    hidden, intermediate, layers, heads, kv_heads, vocab, tied = QWEN25_SHAPES.get(name, CPU_TOY_SHAPE)
    return Qwen2Config(
        vocab_size=vocab or len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=32_768,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tied,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def _save_random_model(name: str, model_dir: str, cuda: bool) -> int:
    """Write a randomly initialised bf16 Qwen2 of shape `name` to `model_dir`; returns its parameter count."""
    import torch
    from transformers import GenerationConfig, Qwen2ForCausalLM
    from transformers.utils import logging as hf_logging

    config = _qwen2_config(name)
    # Initialised on the GPU when there is one: a 7B random init on the CPU takes minutes.
    with torch.device("cuda" if cuda else "cpu"):
        model = Qwen2ForCausalLM._from_config(config, dtype=torch.bfloat16)
    model.generation_config = GenerationConfig(
        pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id
    )
    params = model.num_parameters()
    hf_logging.disable_progress_bar()  # no "Writing model shards" bar in the middle of the tables
    try:
        model.save_pretrained(model_dir)
    finally:
        hf_logging.enable_progress_bar()
    del model
    if cuda:
        torch.cuda.empty_cache()
    return params


def _bench_peft(name: str, model_dir: str, params: int, peft: str, cuda: bool, pairs: int) -> dict:
    run = GPU_RUN if cuda else CPU_TOY_RUN
    spec = {
        "model": {"path": model_dir},
        **run,
        "num_prompts": 64,
        "seed": 0,
        "threads": None,
        "bf16": True,
        "gradient_checkpointing": True,
        "peft": peft,
    }
    row = {
        "bench": "gpu",
        "model": f"qwen2.5-{name}-shape" if cuda else "cpu-toy",
        "peft": PEFT_MODES[peft],
        "device": None,
        "params": params,
        "steps": run["steps"],
        "batch": run["batch_size"],
        "K": run["num_generations"],
        "tokens": run["completion_tokens"],
        "gradient_checkpointing": True,
    }
    runs: dict[str, list[dict]] = {trainer: [] for trainer in TRAINERS}
    for pair in range(pairs):
        for trainer in TRAINERS if pair % 2 == 0 else TRAINERS[::-1]:
            try:
                runs[trainer].append(run_child({**spec, "trainer": trainer}))
            except RuntimeError as err:
                if cuda or peft != "qlora":
                    raise
                last_line = str(err).strip().splitlines()[-1]
                return {**row, "device": "cpu", "note": f"skipped: bitsandbytes 4-bit failed on CPU ({last_line})"}
    memory_key = "peak_gpu_mb" if cuda else "peak_rss_mb"
    for trainer in TRAINERS:
        results = runs[trainer]
        row["device"] = results[0]["device"]
        row[f"{trainer}_step_s"] = statistics.median(_steady_step_s(r) for r in results)
        row[f"{trainer}_tok_s"] = statistics.median(r["generated_tokens"] / r["generate_s"] for r in results)
        row[f"{trainer}_peak_gb"] = statistics.median(r[memory_key] for r in results) / 1024
    row["step_ratio"] = row["ext_step_s"] / row["trl_step_s"]
    row["memory_ratio"] = row["ext_peak_gb"] / row["trl_peak_gb"]
    row["memory"] = "torch.cuda.max_memory_allocated" if cuda else "peak RSS (cpu-toy)"
    row["note"] = "" if cuda else "cpu-toy: checks the script, not a GPU figure"
    row["runs"] = runs
    return row


def _steady_step_s(result: dict) -> float:
    """Median step time without the first step (CUDA / allocator warm-up) when there is more than one."""
    steps = result["step_s"]
    return statistics.median(steps[1:] if len(steps) > 1 else steps)
