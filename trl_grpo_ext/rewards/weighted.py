r"""A weighted sum of named objectives: $r(x, y) = \sum_k w_k\, r_k(x, y)$.

`WeightedReward` is an ordinary TRL reward function (plain `trl.GRPOTrainer` calls it like any other), and
`WeightedReward.expand()` gives GRPOExtTrainer one reward function per objective plus the weights, so that TRL logs
`rewards/{name}/mean` per objective and computes the sum itself.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import numbers
import sys
from collections.abc import Callable, Mapping
from typing import Any

from ..checks import check_not_all_zero
from .guard import copy_attributes, guard_objective, is_async_callable, required_columns_of
from .objectives import is_group_objective

__all__ = ["WeightedReward", "named_objective"]


def _is_reward_model(objective: Any) -> bool:
    """A reward-model id/path, or a loaded model: TRL runs it itself, it is not a reward function."""
    if isinstance(objective, str):
        return True
    torch = sys.modules.get("torch")  # an object can't be an nn.Module if torch was never imported
    return torch is not None and isinstance(objective, torch.nn.Module)


class _NamedObjective:
    # A callable class rather than a closure: TRL's async rollout worker pickles reward functions.
    def __init__(self, name: str, fn: Callable, **bound_kwargs: Any):
        self._name = name
        self._fn = fn
        self._bound_kwargs = bound_kwargs
        copy_attributes(self, fn, name)

    def __call__(self, prompts=None, completions=None, **kwargs):
        return self._fn(prompts=prompts, completions=completions, **{**self._bound_kwargs, **kwargs})

    def __getstate__(self):
        return {"name": self._name, "fn": self._fn, "bound_kwargs": self._bound_kwargs}

    def __setstate__(self, state):
        self.__init__(state["name"], state["fn"], **state["bound_kwargs"])


class _AsyncNamedObjective(_NamedObjective):
    async def __call__(self, prompts=None, completions=None, **kwargs):
        return await self._fn(prompts=prompts, completions=completions, **{**self._bound_kwargs, **kwargs})


def named_objective(name: str, fn: Callable, **bound_kwargs: Any) -> Callable:
    """`fn` as the objective `name` (its `__name__`, its attributes kept), with `bound_kwargs` passed on every call; a
    picklable object (TRL's async rollout worker pickles reward functions), async when `fn` is."""
    cls = _AsyncNamedObjective if is_async_callable(fn) else _NamedObjective
    return cls(name, fn, **bound_kwargs)


async def _await(awaitable):
    return await awaitable


class WeightedReward:
    r"""The weighted sum of named objectives, $\sum_k w_k r_k$, as one TRL reward function.

    An objective that returns `None` for a completion is left out of that completion's sum; a completion that no
    objective scored gets `None` (TRL's `nansum` semantics: TRL then excludes it from the group baseline and gives it
    a zero advantage). Called by plain `trl.GRPOTrainer`, it also logs each objective's mean over the completions it
    scored as `objectives/{name}/mean` through the `log_metric` keyword argument, and raises `ObjectiveError` naming
    the objective and the completion when an objective raises, returns NaN/inf or the wrong number of rewards (wrap
    an objective in `guard_objective(name, fn, "skip")` to skip instead).

    GRPOExtTrainer does not call it: it `expand()`s it into one TRL reward function per objective, so that reward
    models (id/path strings) work too and TRL logs `rewards/{name}/mean` per objective.

    Args:
        objectives (`Mapping[str, Callable | str]`):
            Objectives by name: reward functions, or reward-model ids/paths that TRL loads itself.
        weights (`Mapping[str, float]`, *optional*):
            Weights by objective name; a missing name weighs 1.0. Finite, not all zero; negative weights penalise.

    Attributes:
        objectives (`dict[str, Callable | str]`): the objectives, in order.
        weights (`dict[str, float]`): one weight per objective, in the same order.
        needs_group (`bool`): whether an objective is a group objective (see `group_objective`).
        required_columns (`list[tuple[str, ...]]`): the dataset columns the objectives need.

    Example:
    ```python
    >>> def stub(value):
    ...     return lambda prompts, completions, **kwargs: [value] * len(completions)
    >>> reward = WeightedReward(
    ...     {"accuracy": stub(1.0), "readability": stub(0.9), "novelty": stub(0.7)},
    ...     weights={"accuracy": 0.7, "readability": 0.2, "novelty": 0.1},
    ... )
    >>> [round(r, 12) for r in reward(prompts=["120 miles in 2 hours?"], completions=["The speed is 60 mph."])]
    [0.95]

    ```
    """

    __name__ = "weighted_reward"

    def __init__(self, objectives: Mapping[str, Callable | str], weights: Mapping[str, float] | None = None):
        if not isinstance(objectives, Mapping) or not objectives:
            raise ValueError(
                f"`objectives` must be a non-empty mapping of name -> reward function, got {objectives!r}."
            )
        for name, objective in objectives.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"Objective names must be non-empty strings, got {name!r}.")
            if not (callable(objective) or (isinstance(objective, str) and objective)):
                raise TypeError(
                    f"The objective {name!r} must be a reward function or a reward-model id/path, got "
                    f"{type(objective).__name__}."
                )
        self.objectives: dict[str, Callable | str] = dict(objectives)
        self.weights: dict[str, float] = self._check_weights(weights or {})

    def _check_weights(self, weights: Mapping[str, float]) -> dict[str, float]:
        valid = list(self.objectives)
        unknown = [name for name in weights if name not in self.objectives]
        if unknown:
            raise ValueError(f"`weights` names unknown objectives {unknown}; valid names: {valid}.")
        checked = {}
        for name in valid:
            weight = weights.get(name, 1.0)
            if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
                raise ValueError(
                    f"The weight of {name!r} must be a finite number, got {weight!r}; valid names: {valid}."
                )
            checked[name] = float(weight)
        check_not_all_zero(checked, "weights", hint=f"; valid names: {valid}")
        return checked

    @property
    def needs_group(self) -> bool:
        return any(is_group_objective(fn) for fn in self.objectives.values() if not _is_reward_model(fn))

    @property
    def required_columns(self) -> list[tuple[str, ...]]:
        required: list[tuple[str, ...]] = []
        for fn in self.objectives.values():
            if not _is_reward_model(fn):
                required.extend(entry for entry in required_columns_of(fn) if entry not in required)
        return required

    def expand(self) -> tuple[list[Callable | str], list[float], list[str]]:
        """One TRL reward function per objective: `(reward_funcs, reward_weights, names)`, in objective order.

        Each callable is wrapped so that its `__name__` is the objective's name (TRL names `rewards/{name}/mean` by
        it), keeping its attributes (`needs_group`, `required_columns`); reward-model ids and models pass through
        unchanged (TRL names those after the model, so a trainer that wants the objective names uses `names`).

        Example:
        ```python
        >>> from trl_grpo_ext.rewards import accuracy, novelty
        >>> funcs, weights, names = WeightedReward({"acc": accuracy, "nov": novelty}, {"acc": 0.9, "nov": 0.1}).expand()
        >>> [f.__name__ for f in funcs], weights, names, funcs[1].needs_group
        (['acc', 'nov'], [0.9, 0.1], ['acc', 'nov'], True)

        ```
        """
        funcs = [fn if _is_reward_model(fn) else named_objective(name, fn) for name, fn in self.objectives.items()]
        return funcs, [self.weights[name] for name in self.objectives], list(self.objectives)

    def __call__(self, prompts=None, completions=None, **kwargs) -> list[float | None]:
        models = {name: fn for name, fn in self.objectives.items() if _is_reward_model(fn)}
        if models:
            raise TypeError(
                f"WeightedReward objectives {list(models)} are reward models ({list(models.values())!r}), which a "
                "reward function cannot run inside plain trl.GRPOTrainer. Pass the WeightedReward to GRPOExtTrainer, "
                "which expands it into one reward function or model per objective, or pass trl.GRPOTrainer the "
                "reward functions and model ids as `reward_funcs` with `reward_weights`."
            )
        n = len(completions)
        totals: list[float | None] = [None] * n
        log_metric = kwargs.get("log_metric")
        for name, fn in self.objectives.items():
            rewards = guard_objective(name, fn, "raise")(prompts=prompts, completions=completions, **kwargs)
            if inspect.isawaitable(rewards):
                rewards = asyncio.run(_await(rewards))
            weight = self.weights[name]
            scored = [r for r in rewards if r is not None]
            for i, reward in enumerate(rewards):
                if reward is not None:
                    totals[i] = (totals[i] or 0.0) + weight * reward
            if callable(log_metric) and scored:
                log_metric(f"objectives/{name}/mean", sum(scored) / len(scored))
        return totals

    def __repr__(self) -> str:
        parts = ", ".join(f"{name!r}: {self.weights[name]:g}" for name in self.objectives)
        return f"WeightedReward({{{parts}}})"
