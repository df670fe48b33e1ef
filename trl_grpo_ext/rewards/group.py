"""Group objectives under several processes: score the gathered global batch, check it, keep this process's slice.

TRL lays a group's K completions on consecutive global rows, so a group may straddle two processes. A group
objective (`needs_group = True`) is therefore called on the prompts, completions and per-completion columns of
every process (`accelerate.utils.gather_object`), and the reward error policy is applied to that *global* result,
before slicing: every process sees the same result, so all of them raise, or all skip the same rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from accelerate.utils import gather_object

from .guard import copy_attributes, guard_objective, is_async_callable

__all__ = ["global_group_objective"]


def global_group_objective(
    name: str, fn: Callable, policy: str, layout: Callable[[], tuple[int, int, int]], **bound_kwargs: Any
) -> Callable:
    """Wrap the group objective `fn` into a TRL reward function that scores the global batch.

    The returned function (async when `fn` is) gathers its inputs, calls `guard_objective(name, fn, policy)` on
    them with `num_generations` and `bound_kwargs`, and returns rows `p * B .. p * B + B - 1` of the checked global
    result, B the local batch. Every process logs the same global error count, so `rewards/{name}/errors` is divided
    by the number of processes: the trainer multiplies that count by it and TRL averages over processes.

    Args:
        name (`str`):
            The objective's name (metric and error names).
        fn (`Callable`):
            The group objective.
        policy (`str`):
            `"raise"` or `"skip"` (`reward_error_policy`).
        layout (`Callable[[], tuple[int, int, int]]`):
            Returns `(process_index, num_processes, num_generations)` at call time.
        **bound_kwargs:
            Passed to `fn` on every call (e.g. `novelty_ngram`).

    Example:
    ```python
    >>> from trl_grpo_ext.rewards import novelty
    >>> reward = global_group_objective("novelty", novelty, "raise", lambda: (0, 1, 2), novelty_ngram=1)
    >>> reward(prompts=[None] * 4, completions=["a b", "a b", "a b", "c d"])
    [0.0, 0.0, 1.0, 1.0]

    ```
    """
    guarded = guard_objective(name, fn, policy)
    errors_key = f"rewards/{name}/errors"

    def global_inputs(prompts, completions, kwargs: dict[str, Any]) -> tuple[slice, dict[str, Any]]:
        # Collectives only here, in the same order on every process (before any `await`).
        process_index, num_processes, num_generations = layout()
        n_local = len(prompts)
        columns = {k: gather_object(v) for k, v in kwargs.items() if isinstance(v, list) and len(v) == n_local}
        others = {k: v for k, v in kwargs.items() if k not in columns}
        log_metric = others.get("log_metric")
        if callable(log_metric):
            others["log_metric"] = lambda key, value: log_metric(
                key, value / num_processes if key == errors_key else value
            )
        inputs = {
            **bound_kwargs,
            **columns,
            **others,
            "prompts": gather_object(prompts),
            "completions": gather_object(completions),
            "num_generations": num_generations,
        }
        return slice(process_index * n_local, (process_index + 1) * n_local), inputs

    if is_async_callable(fn):

        async def call_on_global_batch(prompts=None, completions=None, **kwargs):
            rows, inputs = global_inputs(prompts, completions, kwargs)
            return (await guarded(**inputs))[rows]

    else:

        def call_on_global_batch(prompts=None, completions=None, **kwargs):
            rows, inputs = global_inputs(prompts, completions, kwargs)
            return guarded(**inputs)[rows]

    copy_attributes(call_on_global_batch, fn, name)
    return call_on_global_batch
