"""Objectives by name: the built-ins, the ones users register, and `"package.module:function"` import paths."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..loading import load_callable
from .objectives import accuracy, format_objective, length_objective, novelty, readability
from .online_config import learned_preference
from .principles import PrinciplesObjective, principles
from .weighted import WeightedReward, _named

__all__ = ["get_objective", "list_objectives", "register_objective", "weighted_reward_from_spec"]

_OBJECTIVES: dict[str, Callable] = {
    "accuracy": accuracy,
    "format": format_objective(),
    "learned_preference": learned_preference,
    "length": length_objective(),
    "novelty": novelty,
    "principles": principles,
    "readability": readability,
}


_OBJECTIVES_BUILTIN_PRINCIPLES = principles


def register_objective(name: str, fn: Callable, overwrite: bool = False) -> Callable:
    """Register the reward function `fn` as the objective `name` (usable in `reward_objectives`); returns `fn`.

    Example:
    ```python
    >>> def shout(prompts, completions, **kwargs):
    ...     return [float(c.isupper()) for c in completions]
    >>> _ = register_objective("shout", shout)
    >>> get_objective("shout") is shout
    True

    ```
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"`name` must be a non-empty string without ':', got {name!r}.")
    if not callable(fn):
        raise TypeError(f"The objective {name!r} must be callable, got {type(fn).__name__}.")
    if name in _OBJECTIVES and not overwrite:
        raise ValueError(f"The objective {name!r} is already registered; pass `overwrite=True` to replace it.")
    _OBJECTIVES[name] = fn
    return fn


def list_objectives() -> list[str]:
    """Names of the registered objectives, sorted."""
    return sorted(_OBJECTIVES)


def get_objective(name: str) -> Callable:
    """The objective registered as `name`, or the function an import path `"package.module:function"` names.

    Example:
    ```python
    >>> get_objective("accuracy").required_columns
    [('answer', 'solution')]
    >>> get_objective("trl.rewards:think_format_reward").__name__
    'think_format_reward'

    ```
    """
    if isinstance(name, str) and name in _OBJECTIVES:
        return _OBJECTIVES[name]
    if isinstance(name, str) and (":" in name or "." in name):
        return load_callable(name, "reward_objectives")
    raise ValueError(
        f"Unknown objective {name!r}; registered objectives: {list_objectives()}, "
        "or use an import path 'package.module:function'."
    )


def weighted_reward_from_spec(
    spec: Mapping[str, float],
    novelty_ngram: int = 3,
    principles: list | None = None,
    judge: Mapping | None = None,
) -> WeightedReward:
    """The `WeightedReward` of a recipe's `reward_objectives`: objective names (or import paths) -> weights.

    The objective registered as `"novelty"` gets `novelty_ngram` bound as a keyword argument; `"principles"` becomes
    a `PrinciplesObjective` of `principles` and the `judge` block (the judge is built, not loaded).

    Example:
    ```python
    >>> reward = weighted_reward_from_spec({"accuracy": 0.7, "readability": 0.2, "novelty": 0.1})
    >>> reward.weights, reward.needs_group, reward.required_columns
    ({'accuracy': 0.7, 'readability': 0.2, 'novelty': 0.1}, True, [('answer', 'solution')])

    ```
    """
    if not isinstance(spec, Mapping) or not spec:
        raise ValueError(f"`reward_objectives` must be a non-empty mapping of objective name -> weight, got {spec!r}.")
    objectives = {}
    for name in spec:
        fn = get_objective(name)
        if name == "novelty":
            fn = _named(name, fn, novelty_ngram=novelty_ngram)
        elif name == "principles" and fn is _OBJECTIVES_BUILTIN_PRINCIPLES:
            if principles is None or judge is None:
                raise ValueError(
                    "`reward_objectives` names 'principles', which needs the `principles` (questions) and `judge` "
                    f"fields; got principles={principles!r}, judge={judge!r}."
                )
            fn = PrinciplesObjective(principles, judge, name=name)
        objectives[name] = fn
    return WeightedReward(objectives, weights=dict(spec))
