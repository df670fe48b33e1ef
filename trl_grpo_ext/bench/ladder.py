"""Cost of the temperature ladder: one batched `generate` with per-row temperatures, against the same batch at one
temperature, and against the seeds' K separate calls (one per rung).

All three generate exactly `new_tokens` tokens per row (`min_new_tokens == max_new_tokens`, so EOS never stops a row
early) from the same prompts, with TRL's default filters (top_k=0, top_p=1.0). The three are timed in rotating order,
`repeats` times, and the median is reported.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch
from transformers import LogitsProcessorList

from .. import kit
from ..kit.tiny import build_tiny_model, build_tiny_tokenizer
from ..sampling import RowTemperatureLogitsProcessor, row_temperatures, temperature_ladder
from .overhead import max_rss_mb, model_label

PROMPTS = ["12+3=", "7*8=", "100-1=", "What is 4/2?", "Solve x+1=3.", "2**5=", "9-4=", "6*7="]
LADDER_VS_CONSTANT_TARGET = 1.05  # at most: the ladder costs (almost) nothing over one constant-temperature call
K_CALLS_FRACTION_TARGET = 0.8  # at least: K separate calls take >= 0.8 * K times one ladder call
TABLE_COLUMNS = (
    "model",
    "params",
    "prompts",
    "K",
    "new_tokens",
    "ladder_s",
    "constant_s",
    "k_calls_s",
    "ladder_vs_constant",
    "ladder_vs_constant_pass",
    "k_calls_vs_ladder",
    "k_calls_vs_ladder_target",
    "k_calls_vs_ladder_pass",
)
CONSTANT_TEMPERATURE = 0.9  # != 1.0, so the constant run pays for transformers' TemperatureLogitsWarper


def median_seconds(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each run; the order rotates every repeat so no run always goes first."""
    names = list(runs)
    for name in names:  # warm-up: first-call allocations and lazy initialisation
        runs[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            torch.manual_seed(repeat)
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def chat_prompts(tokenizer, num_prompts: int) -> list[str]:
    """`num_prompts` validation questions of `chat_addition_dataset`, rendered by the tokenizer's chat template."""
    from ..kit.tasks import chat_addition_dataset

    return [
        tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        for row in chat_addition_dataset(num_prompts, seed=0, split="validation")
    ]


def _bench_model(
    name: str,
    model,
    tokenizer,
    num_prompts: int,
    k: int,
    new_tokens: int,
    repeats: int,
    prompts: Sequence[str] = PROMPTS,
    add_special_tokens: bool = True,
) -> dict:
    """One row; `prompts` rendered by a chat template already hold their special tokens (`add_special_tokens=False`)."""
    prompts = list(prompts[:num_prompts])
    ladder = temperature_ladder(k, 0.7, 1.0)
    # TRL's layout: each prompt repeated K times, contiguously.
    encode = {"padding": True, "return_tensors": "pt", "add_special_tokens": add_special_tokens}
    grouped = tokenizer([p for p in prompts for _ in range(k)], **encode)
    single = tokenizer(prompts, **encode)
    common = {
        "do_sample": True,
        "top_k": 0,
        "top_p": 1.0,
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "pad_token_id": tokenizer.pad_token_id,
    }
    processor = RowTemperatureLogitsProcessor(row_temperatures(ladder, num_rows=num_prompts * k))

    def ladder_call():
        return model.generate(**grouped, temperature=1.0, logits_processor=LogitsProcessorList([processor]), **common)

    def constant_call():
        return model.generate(**grouped, temperature=CONSTANT_TEMPERATURE, **common)

    def k_calls():
        # The seeds' way: one call per rung, one row per prompt.
        return [model.generate(**single, temperature=t, **common) for t in ladder]

    with torch.inference_mode():
        seconds = median_seconds({"ladder": ladder_call, "constant": constant_call, "k_calls": k_calls}, repeats)
    ladder_vs_constant = seconds["ladder"] / seconds["constant"]
    k_calls_vs_ladder = seconds["k_calls"] / seconds["ladder"]
    return {
        "bench": "ladder",
        "model": name,
        "params": model.num_parameters(),
        "prompts": num_prompts,
        "K": k,
        "new_tokens": new_tokens,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "ladder_s": seconds["ladder"],
        "constant_s": seconds["constant"],
        "k_calls_s": seconds["k_calls"],
        "ladder_vs_constant": ladder_vs_constant,
        "ladder_vs_constant_target": LADDER_VS_CONSTANT_TARGET,
        "ladder_vs_constant_pass": ladder_vs_constant <= LADDER_VS_CONSTANT_TARGET,
        "k_calls_vs_ladder": k_calls_vs_ladder,
        "k_calls_vs_ladder_target": K_CALLS_FRACTION_TARGET * k,
        "k_calls_vs_ladder_pass": k_calls_vs_ladder >= K_CALLS_FRACTION_TARGET * k,
        "peak_rss_mb": max_rss_mb(),  # of the whole process so far (ru_maxrss): earlier rows and benchmarks count
    }


def bench_ladder(quick: bool = False, threads: int | None = 1, model: str | None = None) -> list[dict]:
    """Time ladder vs constant vs K separate calls on the tiny kit model (and a ~50M-parameter Qwen2 unless `quick`).

    Returns one row per model: `{"bench": "ladder", "model", "prompts", "K", "ladder_s", "constant_s", "k_calls_s",
    "ladder_vs_constant", "k_calls_vs_ladder", ...}` with `*_target` and `*_pass` for the targets
    ladder_vs_constant <= 1.05 and k_calls_vs_ladder >= 0.8 * K. `threads` (default 1; None keeps torch's setting) is restored afterwards: on a
    shared, busy CPU, several intra-op threads spin against each other and make small matmuls ~30x slower.

    `model` (a kit name such as `"smollm2:135m-instruct"`, or a checkpoint directory) replaces the tiny models with
    one row for that checkpoint and its tokenizer, on 4 chat prompts rendered by its chat template (`chat_prompts`):
    K 8, 16 new tokens, 5 repeats (`quick`: 8 tokens, 2 repeats).
    """
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _bench_models(quick) if model is None else [_bench_checkpoint(model, quick)]
    finally:
        torch.set_num_threads(previous_threads)


def _bench_checkpoint(name: str, quick: bool) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = kit.resolve_model_path(name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"  # decoder-only generation: prompts end where the completion starts
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    num_prompts = 4
    row = _bench_model(
        model_label(name),
        model,
        tokenizer,
        num_prompts=num_prompts,
        k=8,
        new_tokens=8 if quick else 16,
        repeats=2 if quick else 5,
        prompts=chat_prompts(tokenizer, num_prompts),
        add_special_tokens=False,
    )
    return {**row, "model_path": path}


def _bench_models(quick: bool) -> list[dict]:
    tokenizer = build_tiny_tokenizer()
    # The tiny model's calls take milliseconds, so more repeats buy a steadier median on a shared CPU.
    rows = [
        _bench_model(
            "tiny",
            build_tiny_model(tokenizer, size="tiny").eval(),
            tokenizer,
            num_prompts=4,
            k=8,
            new_tokens=8 if quick else 16,
            repeats=11 if quick else 21,
        )
    ]
    if not quick:
        model = build_tiny_model(tokenizer, size="50m", vocab_size=32_000).eval()
        rows.append(_bench_model("qwen2-50m", model, tokenizer, num_prompts=4, k=8, new_tokens=16, repeats=5))
    return rows
