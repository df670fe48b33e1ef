"""Named objectives turned into what TRL takes: one reward function per objective, with its weight.

TRL's `GRPOTrainer` takes a list of reward functions and `reward_weights`. A `WeightedReward` (or the config's
`reward_objectives`) is a set of named objectives with weights; `expand_objectives` flattens it into TRL's list (each
objective behind the fault-policy guard, group objectives computed on the global batch) so that TRL computes, logs and
weighs each objective as one of its own reward functions. The trainer calls these once, in its `__init__`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from trl.trainer.utils import get_callable_name

from ..checks import check_not_all_zero

# Through the package, which exports every name used here (and never imports this module).
from . import (
    WeightedReward,
    bind_learned_preference,
    global_group_objective,
    guard_objective,
    weighted_reward_from_spec,
)


@dataclass
class ExpandedRewards:
    """The reward functions, weights and names TRL gets, and what they came from.

    Attributes:
        funcs: TRL's `reward_funcs` (the caller's, unchanged, when nothing was expanded).
        weights: TRL's `reward_weights`, one per function; None when nothing was expanded.
        names: the objective names, one per function; None when nothing was expanded.
        objectives: objective name -> the (guarded) function TRL calls.
        counts: how many functions each of the caller's functions became; None when nothing was expanded.
    """

    funcs: object
    weights: list[float] | None = None
    names: list[str] | None = None
    objectives: dict[str, Callable] = field(default_factory=dict)
    counts: list[int] | None = None


def build_reward_funcs(reward_funcs, args):
    """The reward functions the trainer starts from: the caller's, or the config's `reward_objectives` when the
    caller gave none, with the `learned_preference` objective built from `online_reward_model`."""
    if reward_funcs is None and args.reward_objectives:
        reward_funcs = weighted_reward_from_spec(
            args.reward_objectives, args.novelty_ngram, principles=args.principles, judge=args.judge
        )
    return bind_learned_preference(reward_funcs, args)


def reward_func_name(func) -> str:
    """The name TRL gives a reward function: a model's id, a path's last part, or the callable's name.

    Example:
    >>> reward_func_name("org/my-reward-model"), reward_func_name(len)
    ('my-reward-model', 'len')
    """
    if isinstance(func, str):
        return func.rstrip("/").split("/")[-1]
    config = getattr(func, "config", None)
    if config is not None:
        return str(config._name_or_path).rstrip("/").split("/")[-1]
    return get_callable_name(func)


def expand_objectives(reward_funcs, args, group_layout: Callable[[], tuple[int, int, int]]) -> ExpandedRewards:
    """Expand every `WeightedReward` of `reward_funcs` into one TRL reward function per objective, with its weight.

    `args.reward_weights`, when set, is aligned with the caller's list and multiplies a WeightedReward's weights;
    `args.objective_weights` replaces weights by objective name. `group_layout` gives (process index, number of
    processes, group size) at call time, for the objectives that need the whole group.
    """
    funcs_in = reward_funcs if isinstance(reward_funcs, list) else [reward_funcs]
    if not any(isinstance(f, WeightedReward) for f in funcs_in):
        for field_name in ("objective_weights", "objective_weights_final"):
            if getattr(args, field_name):
                raise ValueError(
                    f"`{field_name}` sets weights by objective name, but no WeightedReward or "
                    "`reward_objectives` defines named objectives; use `reward_weights` for plain reward functions."
                )
        return ExpandedRewards(reward_funcs)
    outer = args.reward_weights or [1.0] * len(funcs_in)
    if len(outer) != len(funcs_in):
        raise ValueError(f"`reward_weights` has {len(outer)} entries but {len(funcs_in)} reward functions were given.")
    expanded = ExpandedRewards([], [], [], {}, [])
    for func, outer_weight in zip(funcs_in, outer):
        if isinstance(func, WeightedReward):
            parts = list(zip(*func.expand()))
        else:
            parts = [(func, 1.0, reward_func_name(func))]
        expanded.counts.append(len(parts))
        for sub_func, weight, name in parts:
            if name in expanded.objectives:
                raise ValueError(f"Objective name {name!r} appears twice; objective names must be unique.")
            if callable(sub_func) and isinstance(func, WeightedReward):
                if getattr(sub_func, "needs_group", False):
                    sub_func = global_group_objective(
                        name, sub_func, args.reward_error_policy, group_layout, novelty_ngram=args.novelty_ngram
                    )
                else:
                    sub_func = guard_objective(name, sub_func, args.reward_error_policy)
            expanded.objectives[name] = sub_func
            expanded.funcs.append(sub_func)
            expanded.weights.append(float(outer_weight) * float(weight))
            expanded.names.append(name)
    for name, weight in (args.objective_weights or {}).items():
        if name not in expanded.objectives:
            raise ValueError(
                f"`objective_weights` names unknown objective {name!r}; valid names: {sorted(expanded.objectives)}."
            )
        expanded.weights[expanded.names.index(name)] = weight
    # The product of the caller's (`reward_weights`) and the objectives' weights, after `objective_weights`.
    field_name = "objective_weights" if args.objective_weights else "reward_weights"
    check_not_all_zero(dict(zip(expanded.names, expanded.weights)), field_name)
    return expanded


def final_weights(args, names: list[str], initial: torch.Tensor) -> torch.Tensor | None:
    """The weight vector at the last step: `initial` with `objective_weights_final` applied by name (None: no
    schedule)."""
    final = args.objective_weights_final
    if not final:
        return None
    unknown = set(final) - set(names)
    if unknown:
        raise ValueError(
            f"`objective_weights_final` names unknown objectives {sorted(unknown)}; valid names: {names}."
        )
    weights = initial.clone()
    for name, weight in final.items():
        weights[names.index(name)] = weight
    check_not_all_zero(dict(zip(names, weights.tolist())), "objective_weights_final", hint=" at the last step")
    return weights


def expand_aligned(reward_processing_classes, counts: list[int]):
    """Repeat the caller's entry i `counts[i]` times: one reward processing class per expanded reward function.

    Example:
    >>> expand_aligned(["tok_a", "tok_b"], [2, 1])
    ['tok_a', 'tok_a', 'tok_b']
    """
    if reward_processing_classes is None:
        return None
    classes = reward_processing_classes if isinstance(reward_processing_classes, list) else [reward_processing_classes]
    if len(classes) != len(counts):
        raise ValueError(
            f"`reward_processing_classes` has {len(classes)} entries but {len(counts)} reward functions were given; "
            "give one per reward function (a WeightedReward counts as one: its entry serves each of its objectives)."
        )
    return [entry for entry, count in zip(classes, counts) for _ in range(count)]
