"""Cost of the `principles` objective with a local judge: seconds per 1,000 completions, judged on 3 principles.

The judge is the tiny kit's Qwen2 (character-level tokenizer, so a judge prompt of the default template is ~250
tokens), loaded before timing (the load is reported apart), with the cache off so every (completion, principle) pair
is a forward pass. Completions are ~80-character texts, all different. The objective is called once on all of them
(batches of `batch_size` texts), `repeats` times; the median is reported and scaled to 1,000 completions. The row
also gives judge texts per second, the mean judge-prompt length in tokens, the 1-minute load average before and after
the timed runs, and every run's seconds (`runs`). A row whose model an earlier row loaded shows `load_s` 0: the
loaded judge is shared within the process.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from ..kit.tiny import MODEL_SIZES
from ..rewards import LocalJudge, PrinciplesObjective

PRINCIPLES = ["Is the answer correct?", "Is the response polite?", "Is the response concise?"]
FULL = {"models": ("tiny", "small"), "completions": 1000, "batch_sizes": (16, 64), "repeats": 2}
QUICK = {"models": ("tiny",), "completions": 64, "batch_sizes": (16,), "repeats": 1}
TABLE_COLUMNS = (
    "model",
    "params",
    "principles",
    "completions",
    "batch_size",
    "prompt_tokens",
    "load_s",
    "seconds",
    "s_per_1k_completions",
    "judge_texts_per_s",
    "threads",
)


def _completions(n: int) -> tuple[list[str], list[str]]:
    prompts = [f"What is {i} + {i * 7 % 13}?" for i in range(n)]
    completions = [
        f"The sum of {i} and {i * 7 % 13} is {i + i * 7 % 13}; I added the two numbers. (#{i})" for i in range(n)
    ]
    return prompts, completions


def bench_judge(quick: bool = False) -> list[dict]:
    """One row per (judge model, batch size): the objective's wall time on `completions` completions."""
    plan = QUICK if quick else FULL
    prompts, completions = _completions(plan["completions"])
    rows = []
    for size in plan["models"]:
        for batch_size in plan["batch_sizes"]:
            judge = LocalJudge(f"tiny:{size}", batch_size=batch_size, cache_size=0, device="cpu")
            start = time.perf_counter()
            model, tokenizer, _, _ = judge.load()
            load_s = time.perf_counter() - start
            objective = PrinciplesObjective(PRINCIPLES, judge)
            objective(prompts[:batch_size], completions[:batch_size])  # warm-up: first-call allocations
            times = []
            load_before = os.getloadavg()[0]
            for _ in range(plan["repeats"]):
                start = time.perf_counter()
                rewards = objective(prompts, completions)
                times.append(time.perf_counter() - start)
            if not all(r is not None and 0.0 <= r <= 1.0 for r in rewards):
                raise RuntimeError(f"the judge returned rewards outside [0, 1]: {rewards[:8]}")
            seconds = statistics.median(times)
            texts = [
                objective.template.format(prompt=p, completion=c, principle=q)
                for p, c in zip(prompts[:64], completions[:64])
                for q in PRINCIPLES
            ]
            rows.append(
                {
                    "bench": "judge",
                    "model": f"tiny:{size}",
                    "params": model.num_parameters(),
                    "shape": MODEL_SIZES[size],
                    "principles": len(PRINCIPLES),
                    "completions": len(completions),
                    "batch_size": batch_size,
                    "prompt_tokens": round(statistics.mean(len(ids) for ids in tokenizer(texts).input_ids)),
                    "load_s": round(load_s, 2),
                    "seconds": round(seconds, 3),
                    "s_per_1k_completions": round(seconds * 1000 / len(completions), 2),
                    "judge_texts_per_s": round(len(completions) * len(PRINCIPLES) / seconds, 1),
                    "threads": torch.get_num_threads(),
                    "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                    "runs": [round(t, 3) for t in times],
                }
            )
    return rows
