"""Cost of the advantage estimators: the vectorised torch code of `trl_grpo_ext.advantages` against the seeds' naive
per-group Python loop, on the same rewards.

The naive z-score, run once per group: `(g - np.mean(g)) / (np.std(g) + 1e-8)`; the vectorised one
is timed with the same settings (`std="population", eps=1e-8`), which cost the same as TRL's defaults. The naive rank is
the definition, a double loop per group: A_i = sum_j sign(r_i - r_j) / (K - 1). The naive loops are timed on the first
`NAIVE_GROUPS` groups only and scaled linearly to all groups (each group costs the same); the row says so. Both sides
are checked to agree on the timed groups before anything is reported.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from ..advantages import rank_advantages, zscore_advantages

FULL = {"groups": 65_536, "group_sizes": (8, 16, 64), "repeats": 5}
QUICK = {"groups": 1_024, "group_sizes": (8, 16), "repeats": 3}
NAIVE_GROUPS = {"zscore": 4_096, "rank": 512}  # per K = 8; scaled down as K grows, so each naive run stays under ~1 s


def _naive_zscore(rewards: np.ndarray, group_size: int) -> np.ndarray:
    out = np.empty_like(rewards)
    for start in range(0, len(rewards), group_size):
        group = rewards[start : start + group_size]
        out[start : start + group_size] = (group - np.mean(group)) / (np.std(group) + 1e-8)
    return out


def _naive_rank(rewards: np.ndarray, group_size: int) -> np.ndarray:
    out = np.empty_like(rewards)
    values = rewards.tolist()
    for start in range(0, len(values), group_size):
        group = values[start : start + group_size]
        for i, r_i in enumerate(group):
            out[start + i] = sum((r_i > r_j) - (r_i < r_j) for r_j in group) / (group_size - 1)
    return out


def _median_ms(fn: Callable[..., object], args: tuple, repeats: int) -> float:
    fn(*args)  # warm-up: first-call allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def bench_estimators(quick: bool = False) -> list[dict]:
    """Time each estimator, vectorised and naive, for every group size; one row per (estimator, K)."""
    plan = QUICK if quick else FULL
    num_groups, repeats = plan["groups"], plan["repeats"]
    estimators = {
        "zscore": (lambda r, k: zscore_advantages(r, k, std="population", eps=1e-8), _naive_zscore),
        "rank": (rank_advantages, _naive_rank),
    }
    rows = []
    for group_size in plan["group_sizes"]:
        generator = torch.Generator().manual_seed(group_size)
        rewards = torch.rand(num_groups * group_size, generator=generator)
        for name, (vectorised, naive) in estimators.items():
            naive_groups = min(num_groups, max(32, NAIVE_GROUPS[name] * 8 // group_size))
            subset = rewards[: naive_groups * group_size].numpy()
            expected = naive(subset, group_size)
            got = vectorised(rewards, group_size)[: naive_groups * group_size].numpy()
            if not np.allclose(got, expected, atol=1e-4):
                raise RuntimeError(f"{name}: vectorised and naive advantages differ for K={group_size}.")

            vectorised_ms = _median_ms(vectorised, (rewards, group_size), repeats)
            naive_ms = _median_ms(naive, (subset, group_size), max(1, repeats // 2)) * num_groups / naive_groups
            scaled = naive_groups < num_groups
            note = f"naive timed on {naive_groups:,} groups, scaled linearly" if scaled else ""
            row = {
                "bench": "estimators",
                "estimator": name,
                "groups": num_groups,
                "K": group_size,
                "threads": torch.get_num_threads(),
                "vectorised_ms": round(vectorised_ms, 2),
                "naive_ms": round(naive_ms, 1),
                "speedup": round(naive_ms / vectorised_ms, 1),
                "note": note,
            }
            rows.append(row)
    return rows
