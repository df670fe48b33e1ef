"""Objectives by name: the built-ins, the ones users register, and `"package.module:function"` import paths.

The online reward model registers its `learned_preference` objective itself (`online_config.py`), as a plugin would:
it depends on this registry (its gold labeler names an objective), so this module cannot import it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..loading import load_callable
from .configured import ConfiguredObjective
from .objectives import accuracy, format_objective, length_objective, novelty, readability
from .principles import principles
from .weighted import WeightedReward, named_objective

__all__ = ["get_objective", "list_objectives", "register_objective", "weighted_reward_from_spec"]

_OBJECTIVES: dict[str, Callable] = {
    "accuracy": accuracy,
    "format": format_objective(),
    "length": length_objective(),
    "novelty": novelty,
    "principles": principles,
    "readability": readability,
}


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

    The objective registered as `"novelty"` gets `novelty_ngram` bound as a keyword argument; an objective the config
    builds from `principles` and `judge` (`"principles"`, a `ConfiguredObjective`) is built here, a
    `PrinciplesObjective` (the judge is built, not loaded). `"learned_preference"` stays a placeholder: it is built from
    `online_reward_model` by the trainer (`bind_learned_preference`), which loads its reward model.

    Example:
    ```python
    >>> reward = weighted_reward_from_spec({"accuracy": 0.7, "readability": 0.2, "novelty": 0.1})
    >>> reward.weights, reward.needs_group, reward.required_columns
    ({'accuracy': 0.7, 'readability': 0.2, 'novelty': 0.1}, True, [('answer', 'solution')])

    ```
    """
    if not isinstance(spec, Mapping) or not spec:
        raise ValueError(f"`reward_objectives` must be a non-empty mapping of objective name -> weight, got {spec!r}.")
    fields = {"principles": principles, "judge": judge}
    objectives = {}
    for name in spec:
        fn = get_objective(name)
        if name == "novelty":
            fn = named_objective(name, fn, novelty_ngram=novelty_ngram)
        elif isinstance(fn, ConfiguredObjective) and fn.builds_from(fields):
            fn = fn.build_from(name, fields)
        objectives[name] = fn
    return WeightedReward(objectives, weights=dict(spec))
